"""Data sources, natural class order, splits and the split file."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import make_folder
from nextclass.data.sources import DataError, load_source
from nextclass.data.splits import assign_splits, parse_ratios, read_split_csv, write_split_csv


def test_class_folder_layout_natural_order(tmp_path):
    make_folder(tmp_path / "d", classes=("class10", "class2", "Class1"), n=3)
    src = load_source(tmp_path / "d")
    assert src.kind == "folder"
    assert src.classes == ["Class1", "class2", "class10"]
    assert len(src.samples) == 9 and not src.has_splits


def test_split_folder_layout_keeps_splits_and_aliases(tmp_path):
    make_folder(tmp_path / "d", n=0, splits={"train": 4, "valid": 2, "test": 2})
    src = load_source(tmp_path / "d")
    assert src.kind == "split-folder"
    assert {s.split for s in src.samples} == {"train", "val", "test"}
    assign_splits(src)  # nothing to carve
    counts = {sp: sum(s.split == sp for s in src.samples) for sp in ("train", "val", "test")}
    assert counts == {"train": 12, "val": 6, "test": 6}


def test_missing_val_is_carved_from_train_never_from_test(tmp_path, capsys):
    make_folder(tmp_path / "d", n=0, splits={"train": 10, "test": 3})
    src = load_source(tmp_path / "d")
    test_before = {s.path for s in src.samples if s.split == "test"}
    assign_splits(src, (0.7, 0.2, 0.1))
    assert {s.path for s in src.samples if s.split == "test"} == test_before
    val = [s for s in src.samples if s.split == "val"]
    assert len(val) > 0 and {s.label for s in val} == {0, 1, 2}  # stratified
    assert "carved" in capsys.readouterr().err


def test_csv_manifest_relative_paths_and_splits(tmp_path):
    make_folder(tmp_path / "imgs", n=4)
    rows = ["path,label,split"]
    for i, p in enumerate(sorted((tmp_path / "imgs").rglob("*.png"))):
        rows.append(f"imgs/{p.parent.name}/{p.name},{p.parent.name},{['train', 'train', 'val', 'test'][i % 4]}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    src = load_source(tmp_path / "m.csv")
    assert src.kind == "csv" and src.classes == ["circle", "hbar", "vbar"]
    assert all(Path(s.path).exists() for s in src.samples)
    assert {s.split for s in src.samples} == {"train", "val", "test"}
    (tmp_path / "bad.csv").write_text("file,cls\na.png,x\n")
    with pytest.raises(DataError, match="path"):
        load_source(tmp_path / "bad.csv")


def test_builtin_digits_written_once_as_pngs(tmp_path):
    src = load_source("digits", cache_dir=tmp_path)
    assert len(src.samples) == 1797 and src.classes == [str(i) for i in range(10)]
    assert all(s.path.endswith(".png") for s in src.samples[:5])
    mtime = (tmp_path / "datasets" / "digits" / ".complete").stat().st_mtime_ns
    load_source("digits", cache_dir=tmp_path)
    assert (tmp_path / "datasets" / "digits" / ".complete").stat().st_mtime_ns == mtime


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_from_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (20, 28, 28)))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(20) % 10)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (10, 28, 28)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(10))
    src = load_source(f"fashion-mnist:{tmp_path}")
    assert src.array.shape == (30, 28, 28) and len(src.classes) == 10
    assert sum(s.split == "train" for s in src.samples) == 20 and sum(s.split == "test" for s in src.samples) == 10
    with pytest.raises(DataError, match="--download"):
        load_source(f"fashion-mnist:{tmp_path / 'nowhere'}")


def test_split_is_deterministic_stratified_and_seeded(tmp_path):
    make_folder(tmp_path / "d", n=20)

    def split(seed):
        src = load_source(tmp_path / "d")
        assign_splits(src, "70/20/10", seed)
        return src, [s.split for s in src.samples]

    a, sa = split(0)
    _, sb = split(0)
    _, sc = split(1)
    assert sa == sb and sa != sc
    for k in range(3):
        lab = [s.split for s in a.samples if s.label == k]
        assert (lab.count("train"), lab.count("val"), lab.count("test")) == (14, 4, 2)
    write_split_csv(tmp_path / "split.csv", a)
    fresh = load_source(tmp_path / "d")
    read_split_csv(tmp_path / "split.csv", fresh)
    assert [s.split for s in fresh.samples] == sa


def test_parse_ratios():
    assert parse_ratios("80/10/10") == pytest.approx((0.8, 0.1, 0.1))
    assert parse_ratios("0.6,0.2,0.2") == pytest.approx((0.6, 0.2, 0.2))
    with pytest.raises(DataError):
        parse_ratios("80/20")


def test_errors_are_clear(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        load_source(tmp_path / "missing")
    (tmp_path / "one" / "only").mkdir(parents=True)
    with pytest.raises(DataError, match="one folder per class"):
        load_source(tmp_path / "one")


def test_a_folder_with_only_train_gets_val_and_test_carved(tmp_path):
    """root/train/<class>/* alone is split folders with val and test missing (they are carved from train), not one
    class called 'train' (issue 24's benchmark hit this)."""
    from conftest import make_folder

    from nextclass.data.sources import load_source
    from nextclass.data.splits import assign_splits

    make_folder(tmp_path / "photos", n=10, splits={"train": 10})
    src = load_source(str(tmp_path / "photos"))
    assert src.kind == "split-folder" and src.classes == ["circle", "hbar", "vbar"]
    splits = assign_splits(src, (0.7, 0.2, 0.1))
    assert {"train", "val", "test"} == set(splits)


def test_a_large_default_val_is_capped_and_the_rest_trains():
    """Left at its default, the split's val is capped at MAX_CARVED_VAL images (drawn or carved from a given train);
    small sets keep their fractions, and an explicit split (val_cap None) is never touched."""
    from collections import Counter

    from nextclass.data.samples import DataSource, Sample
    from nextclass.data.splits import MAX_CARVED_VAL, assign_splits

    def source(n: int, given: bool) -> DataSource:
        return DataSource("s", "/", "csv", ["a", "b"], [Sample(f"/{i}.png", i % 2, "train" if given else None)
                                                         for i in range(n)])

    big = Counter(assign_splits(source(40_000, False), (0.7, 0.2, 0.1), 0, val_cap=MAX_CARVED_VAL))
    assert big["val"] == MAX_CARVED_VAL and big["test"] == 4000 and big["train"] == 31_000
    carved = Counter(assign_splits(source(40_000, True), (0.7, 0.2, 0.1), 0, val_cap=MAX_CARVED_VAL))
    assert carved["val"] == MAX_CARVED_VAL and carved["test"] == 4000 and carved["train"] == 31_000
    small = Counter(assign_splits(source(1000, False), (0.7, 0.2, 0.1), 0, val_cap=MAX_CARVED_VAL))
    assert small["val"] == 200
    explicit = Counter(assign_splits(source(40_000, False), (0.7, 0.2, 0.1), 0))
    assert explicit["val"] == 8000
