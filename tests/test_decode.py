"""Safe decoding, and a training run through a folder salted with bad and awkward files."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import cli, make_folder
from nextclass.data.decode import DecodeError, open_image


def _exif_rotated(path: Path) -> None:
    """A 40x20 image whose EXIF says 'rotate 90 CW' (orientation 6): upright it is 20x40."""
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)  # left half red
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(path, "JPEG", exif=exif.tobytes(), quality=95)


def salt(folder: Path) -> dict[str, str]:
    """Add bad and awkward files to class 'circle'; return {bad file name: expected reason fragment}."""
    d = folder / "circle"
    good = Image.fromarray(np.full((32, 32, 3), 128, np.uint8))
    buf = io.BytesIO()
    good.save(buf, "JPEG", quality=90)
    (d / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (d / "zero.png").write_bytes(b"")
    (d / "notes.png").write_text("this is not an image\n")
    Image.fromarray(np.full((32, 32, 4), 100, np.uint8), "CMYK").save(d / "cmyk.jpg")
    Image.fromarray((np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16)).save(d / "sixteen.png")
    pal = Image.fromarray(np.tile(np.arange(32, dtype=np.uint8), (32, 1))).convert("P")
    pal.info["transparency"] = 0
    pal.save(d / "palette.png", transparency=0)
    _exif_rotated(d / "rotated.jpg")
    good.save(d / "png_named_jpg.jpg", "PNG")  # wrong extension that still decodes: fine
    return {"truncated.jpg": "truncated", "zero.png": "empty", "notes.png": "not an image"}


def test_open_image_conversions(tmp_path):
    salt(make_folder(tmp_path, n=1))
    d = tmp_path / "circle"
    rot = open_image(d / "rotated.jpg", 3)
    assert rot.size == (20, 40)  # EXIF transpose applied
    a = np.asarray(rot)
    assert a[:5, :, 0].mean() > 200 and a[-5:, :, 0].mean() < 60  # red half is now on top
    assert open_image(d / "cmyk.jpg", 3).mode == "RGB"
    s16 = np.asarray(open_image(d / "sixteen.png", 1))
    assert s16.dtype == np.uint8 and s16.max() == 255 and s16.min() == 0  # rescaled, not clipped to white
    pal = np.asarray(open_image(d / "palette.png", 3))
    assert (pal[:, 0] == 255).all()  # transparent index composited on white
    assert open_image(d / "png_named_jpg.jpg", 3).size == (32, 32)
    for name, reason in {"truncated.jpg": "truncated", "zero.png": "empty", "notes.png": "not an image"}.items():
        with pytest.raises(DecodeError, match=reason):
            open_image(d / name, 3)


def test_decompression_bomb_refused(tmp_path, monkeypatch):
    import nextclass.data.decode as dec

    Image.fromarray(np.zeros((100, 100), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(dec, "MAX_PIXELS", 5000)
    with pytest.raises(DecodeError, match="too many pixels"):
        dec.open_image(tmp_path / "big.png", 1)


@pytest.mark.slow
def test_training_survives_bad_files_and_lists_exactly_them(tmp_path):
    data = make_folder(tmp_path / "data", n=12)
    bad = salt(data)
    p = cli("train", str(data), "--epochs", "2", "--output", str(tmp_path / "runs"), "--name", "salted", "-q",
            "--batch-size", "8")
    run = tmp_path / "runs" / "salted"
    assert "skipped 3" in p.stderr
    with open(run / "skipped.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(Path(r["path"]).name for r in rows) == sorted(bad)
    for r in rows:
        assert bad[Path(r["path"]).name] in r["reason"]
    m = json.loads((run / "metrics.json").read_text())
    assert m["skipped"] == 3 and m["test"]["n"] > 0
    assert (run / "model" / "model.safetensors").exists()
