"""The one data probe (size, channels, count) and its one definition of grayscale, used by every caller."""

from __future__ import annotations

import numpy as np
from PIL import Image

from nextclass.data.probe import FALLBACK_SIDE, probe_data, is_gray_mode
from nextclass.data.samples import DataSource, Sample


def _folder(tmp_path, modes: list[str], size=(20, 30)) -> DataSource:
    samples = []
    for i, mode in enumerate(modes):
        p = tmp_path / f"{i}.{'tif' if mode in ('F', 'I;16') else 'png'}"
        Image.new(mode, size).save(p)
        samples.append(Sample(str(p), i % 2))
    return DataSource("t", str(tmp_path), "folder", ["a", "b"], samples)


def test_grayscale_is_one_luma_band():
    assert all(is_gray_mode(m) for m in ("1", "L", "LA", "La", "I", "I;16", "I;16B", "F"))
    assert not any(is_gray_mode(m) for m in ("P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "nonsense"))


def test_files_gray_with_alpha_16_bit_and_float_are_gray(tmp_path):
    p = probe_data(_folder(tmp_path, ["L", "LA", "I;16", "F", "1"]))
    assert (p.side, p.channels, p.count, p.probed, p.gray) == (20, 1, 5, 5, True)


def test_one_colour_file_makes_it_colour_and_unreadable_files_are_skipped(tmp_path):
    src = _folder(tmp_path, ["L", "RGB", "L"])
    (tmp_path / "bad.png").write_bytes(b"not an image")
    src.samples.append(Sample(str(tmp_path / "bad.png"), 0))
    p = probe_data(src)
    assert (p.channels, p.count, p.probed) == (3, 4, 3)


def test_nothing_readable_and_arrays(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    p = probe_data(DataSource("t", str(tmp_path), "folder", ["a"], [Sample(str(tmp_path / "x.png"), 0)]))
    assert (p.side, p.channels, p.probed) == (FALLBACK_SIDE, 3, 0)
    gray = DataSource("a", "", "digits", ["a"], [Sample("m/0", 0, index=0)], array=np.zeros((5, 8, 9), np.uint8))
    rgb = DataSource("a", "", "x", ["a"], [Sample("m/0", 0, index=0)], array=np.zeros((5, 12, 9, 3), np.uint8))
    assert (probe_data(gray).side, probe_data(gray).channels, probe_data(gray).count) == (8, 1, 1)
    assert (probe_data(rgb).side, probe_data(rgb).channels) == (9, 3)


def test_every_caller_uses_the_probe(tmp_path, monkeypatch):
    """The training defaults and the curation embedding read the same probe (one call each)."""
    from nextclass.config import make_config
    from nextclass.curation import embed
    from nextclass.training import defaults

    src = _folder(tmp_path, ["LA"] * 4, size=(40, 40))
    calls = []
    real = probe_data
    for mod in (defaults, embed):
        monkeypatch.setattr(mod, "probe_data", lambda s, *a, **k: calls.append(s) or real(s, *a, **k))
    res = defaults.resolve(make_config(data=str(tmp_path), model="simple_cnn"), src, 4)
    assert res.cfg.in_chans == 1 and res.cfg.img_size == 40 and len(calls) == 1
    assert embed.default_embedding(src)[0] == "pixels" and len(calls) == 2
    assert defaults.resolve(res.cfg, src, 4).cfg == res.cfg and len(calls) == 2  # resolved: no probe at all
