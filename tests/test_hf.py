"""Hugging Face datasets as a source: save_to_disk folders, parquet folders, the Hub path (mocked),
column detection and its errors, and `nextclass audit` / `nextclass train` on hf:DIR. Offline."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import cli, shape_image

datasets = pytest.importorskip("datasets")

CLASSES = ["circle", "hbar", "vbar"]
PER_SPLIT = {"train": 20, "validation": 6, "test": 6}  # images per class


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def make_dict(seed: int = 0) -> "datasets.DatasetDict":
    """train/validation/test with a ClassLabel; one corrupt row in train, one unlabelled (-1) row in test."""
    rng = np.random.default_rng(seed)
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES),
                               "caption": datasets.Value("string")})
    out = {}
    for split, n in PER_SPLIT.items():
        rows = [(_png(shape_image(k, rng, 24)), k) for k in range(3) for _ in range(n)]
        if split == "train":
            rows.append((b"\x89PNG\r\n\x1a\n not really a png", 1))
        if split == "test":
            rows.append((_png(shape_image(0, rng, 24)), -1))
        out[split] = datasets.Dataset.from_dict(
            {"image": [{"bytes": b, "path": None} for b, _ in rows], "label": [y for _, y in rows],
             "caption": ["x"] * len(rows)}, features=feats)
    return datasets.DatasetDict(out)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hf") / "shapes"
    make_dict().save_to_disk(str(d))
    return d


def _stamp(root: Path) -> list:
    """Every entry under root with its size and mtime: the user's data folder must not change."""
    return sorted((p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


def _counts(src) -> dict:
    return {sp: sum(c.values()) for sp, c in src.counts().items()}


def test_save_to_disk_folder_keeps_classes_splits_and_skips_the_corrupt_row(saved, tmp_path):
    from nextclass.data.cache import DecodeSpec, decode_all
    from nextclass.data.sources import load_source

    src = load_source(f"hf:{saved}", cache_dir=tmp_path / "c")
    assert src.kind == "hf" and src.name == "shapes" and src.classes == CLASSES
    assert _counts(src) == {"train": 61, "val": 18, "test": 18}  # the unlabelled test row is left out
    assert src.counts()["val"] == {c: 6 for c in CLASSES}
    assert all(Path(s.path).is_file() and str(tmp_path / "c") in s.path for s in src.samples)
    images = decode_all(src, list(range(len(src.samples))), DecodeSpec(24, 3), use_cache=False, progress=False)
    assert len(images.errors) == 1
    (bad,) = images.errors
    assert src.samples[bad].split == "train" and src.samples[bad].label == 1
    assert images.ok.sum() == 96
    index = next((tmp_path / "c" / "datasets" / "hf").glob("*/index.json"))
    mtime = index.stat().st_mtime_ns
    again = load_source(f"hf:{saved}", cache_dir=tmp_path / "c")  # reuses the written images
    assert [s.path for s in again.samples] == [s.path for s in src.samples] and index.stat().st_mtime_ns == mtime


def test_parquet_folders_by_file_name_and_by_split_folder(tmp_path):
    from nextclass.data.sources import load_source

    dd = make_dict(1)
    for split, ds in dd.items():
        ds.to_parquet(str(tmp_path / "flat" / "data" / f"{split}-00000-of-00001.parquet"))
        ds.to_parquet(str(tmp_path / "nested" / split / "part0.parquet"))
    for name in ("flat", "nested"):
        src = load_source(f"hf:{tmp_path / name}", cache_dir=tmp_path / "c")
        assert src.classes == CLASSES and _counts(src) == {"train": 61, "val": 18, "test": 18}
    one = load_source(f"hf:{tmp_path / 'nested' / 'train' / 'part0.parquet'}", cache_dir=tmp_path / "c")
    assert not one.has_splits and len(one.samples) == 61  # a single file: unsplit, the run splits it


def test_plain_columns_string_labels_and_binary_images(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nextclass.data.sources import load_source

    rng = np.random.default_rng(3)
    labels = ["class10", "class2"] * 6
    imgs = [_png(shape_image(int(y == "class2"), rng, 16)) for y in labels]
    (tmp_path / "p").mkdir()
    pq.write_table(pa.table({"pixels": pa.array(imgs, pa.binary()), "target": labels}),
                   tmp_path / "p" / "train.parquet")  # no Hugging Face metadata at all
    src = load_source(f"hf:{tmp_path / 'p'}", cache_dir=tmp_path / "c")
    assert src.classes == ["class2", "class10"] and len(src.samples) == 12  # natural sort
    assert all(s.path.endswith(".png") for s in src.samples)


def test_columns_missing_ambiguous_or_chosen(tmp_path):
    from nextclass.data.hf import find_columns
    from nextclass.data.samples import DataError
    from nextclass.data.sources import load_source

    img = datasets.Image()
    with pytest.raises(DataError, match=r"no label column \(columns found: image \(Image\), caption \(string\)\)"):
        find_columns(datasets.Features({"image": img, "caption": datasets.Value("string")}))
    with pytest.raises(DataError, match=r"no image column \(columns found: label \(int\)\)"):
        find_columns(datasets.Features({"label": datasets.Value("int64")}))
    two = datasets.Features({"img": img, "fine": datasets.ClassLabel(names=["a"]), "coarse": datasets.ClassLabel(names=["b"])})
    with pytest.raises(DataError, match=r"2 possible label columns \['fine', 'coarse'\].*\?label=COLUMN"):
        find_columns(two)
    assert find_columns(two, label="coarse") == ("img", "coarse")
    with pytest.raises(DataError, match=r"\?label=img: not a label column"):
        find_columns(two, label="img")
    d = tmp_path / "nolabel"
    datasets.Dataset.from_dict({"image": [{"bytes": _png(np.zeros((8, 8), np.uint8)), "path": None}]},
                               features=datasets.Features({"image": img})).save_to_disk(str(d))
    with pytest.raises(DataError, match=rf"hf:{d}: no label column"):
        load_source(f"hf:{d}", cache_dir=tmp_path / "c")
    with pytest.raises(DataError, match=r"unknown option\(s\) \['lable'\]; the choices are"):
        load_source(f"hf:{d}?lable=x")
    with pytest.raises(DataError, match="no such folder"):
        load_source(f"hf:{tmp_path / 'missing'}")


def test_hub_name_goes_through_load_dataset_and_falls_back_offline(monkeypatch, tmp_path):
    from nextclass.data.hf import parse_hf_spec
    from nextclass.data.samples import DataError
    from nextclass.data.sources import load_source

    assert parse_hf_spec("hf:owner/name:cfg?image=img").config == "cfg"
    import nextclass.utils

    monkeypatch.setattr(nextclass.utils, "can_reach", lambda *a, **k: True)  # "online": the quick check passes
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config=None, **kw: calls.append((name, config)) or make_dict(2))
    src = load_source("hf:owner/shapes:small", cache_dir=tmp_path / "c")
    assert calls == [("owner/shapes", "small")] and src.name == "owner/shapes" and src.classes == CLASSES

    def offline(*a, **k):
        raise ConnectionError("no route to huggingface.co")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    again = load_source("hf:owner/shapes:small", cache_dir=tmp_path / "c")  # the copy made above
    assert [s.path for s in again.samples] == [s.path for s in src.samples]
    with pytest.raises(DataError, match="cannot load it from the Hugging Face Hub.*save_to_disk"):
        load_source("hf:owner/other", cache_dir=tmp_path / "c")


def test_cli_audit_and_train_on_hf_dir(saved, tmp_path):
    env = {"COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    before = _stamp(saved)
    p = cli("audit", f"hf:{saved}", "-o", str(tmp_path / "a.json"), "-q", env=env)
    rep = json.loads((tmp_path / "a.json").read_text())
    assert rep["summary"]["unreadable"] == 1 and rep["classes"]["names"] == CLASSES
    assert rep["splits"]["mode"] == "given" and set(rep["classes"]["counts"]) == {"train", "val", "test"}
    assert "unreadable" in p.stdout
    cli("train", f"hf:{saved}", "--epochs", "1", "--model", "simple_cnn", "--batch-size", "16",
        "--output", str(tmp_path / "runs"), "--name", "hf", "-q", env=env)
    run = tmp_path / "runs" / "hf"
    split = (run / "split.csv").read_text().splitlines()
    assert len(split) == 1 + 97 and sum(",val" in r for r in split) == 18
    assert len((run / "skipped.csv").read_text().strip().splitlines()) == 2  # header + the corrupt row
    assert (run / "model" / "model.safetensors").exists()
    assert json.loads((run / "model" / "model.json").read_text())["classes"] == CLASSES
    assert _stamp(saved) == before  # nextclass only read the dataset folder


def test_train_help_and_config_name_the_hf_spec():
    from typer.testing import CliRunner

    from nextclass.cli import app
    from nextclass.config import TrainConfig

    r = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    text = " ".join(r.output.split())
    assert r.exit_code == 0 and "hf:DIR" in text and "hf:OWNER/NAME[:CONFIG]" in text and "?image=COL&label=COL" in text
    assert "hf:zh-plus/tiny-imagenet" in text  # an example
    desc = TrainConfig.model_fields["data"].description
    assert "hf:DIR" in desc and "hf:OWNER/NAME[:CONFIG]" in desc
