"""nextclass audit: planted problems are found, clean images are not flagged, --fix trains, label suspects."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli


def texture(rng: np.random.Generator, size: int = 48) -> Image.Image:
    """A smooth random colour field plus fine noise: photo-like spectrum, and no two alike."""
    g = int(rng.integers(3, 7))
    coarse = Image.fromarray(rng.integers(0, 256, (g, g, 3)).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    noise = rng.integers(-8, 8, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(coarse).astype(int) + noise, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, dict]:
    """Split folder (train 8 / val 3 / test 3 per class a, b, c) plus one planted instance of each problem."""
    root = tmp_path_factory.mktemp("planted") / "data"
    rng = np.random.default_rng(7)
    for sp, n in (("train", 8), ("val", 3), ("test", 3)):
        for c in ("a", "b", "c"):
            (root / sp / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                texture(rng).save(root / sp / c / f"{c}{i}.png")
    t = root / "train"
    src = Image.open(t / "a" / "a0.png")
    src.resize((40, 40), Image.BILINEAR).save(root / "test" / "a" / "resized_a0.png")  # near leak train->test
    Image.open(t / "b" / "b1.png").save(root / "val" / "b" / "reencoded_b1.jpg", quality=75)  # near leak train->val
    Image.open(t / "a" / "a2.png").save(t / "c" / "flipped_a2.png")  # exact copy, other label
    Image.open(root / "val" / "c" / "c0.png").save(root / "test" / "c" / "copy_of_val_c0.bmp")  # exact val->test
    full = (t / "b" / "b0.png").read_bytes()
    (t / "b" / "truncated.png").write_bytes(full[: len(full) // 2])  # corrupt
    (root / "test" / "b" / "empty.jpg").write_bytes(b"")  # corrupt
    (t / "d").mkdir()
    texture(rng).save(t / "d" / "only_one.png")  # a 1-image class
    names = {"resized": "resized_a0.png", "reencoded": "reencoded_b1.jpg", "flipped": "flipped_a2.png",
             "bmp": "copy_of_val_c0.bmp"}
    return root, names


def _paths_in_groups(rep: dict, root: Path) -> set[str]:
    return {Path(m["path"]).relative_to(root.resolve()).as_posix() for g in rep["duplicates"] for m in g["members"]}


def test_planted_problems_found_and_nothing_clean_flagged(planted, tmp_path):
    import nextclass

    root, names = planted
    rep = nextclass.audit(str(root), output=tmp_path / "audit.json", progress=False)
    assert json.loads((tmp_path / "audit.json").read_text())["summary"] == rep["summary"]
    s = rep["summary"]
    assert sorted(Path(u["path"]).name for u in rep["unreadable"]) == ["empty.jpg", "truncated.png"]
    assert {Path(u["path"]).name: u["reason"] for u in rep["unreadable"]}["empty.jpg"].startswith("empty file")
    assert s["cross_split"]["train-test"] == {"exact": 0, "near": 1}
    assert s["cross_split"]["train-val"] == {"exact": 0, "near": 1}
    assert s["cross_split"]["val-test"] == {"exact": 1, "near": 0}
    assert s["exact_groups"] == 2 and s["exact_extra_copies"] == 2
    assert s["label_conflict_groups"] == 1
    # every flagged image is a planted one or its original: nothing clean is flagged
    assert _paths_in_groups(rep, root) == {
        "test/a/resized_a0.png", "train/a/a0.png", "val/b/reencoded_b1.jpg", "train/b/b1.png",
        "train/c/flipped_a2.png", "train/a/a2.png", "test/c/copy_of_val_c0.bmp", "val/c/c0.png"}
    conflict = [g for g in rep["duplicates"] if g["label_conflict"]]
    assert len(conflict) == 1 and conflict[0]["kind"] == "exact"
    assert sorted(m["label"] for m in conflict[0]["members"]) == ["a", "c"]
    near = {Path(m["path"]).name: g for g in rep["duplicates"] for m in g["members"] if g["kind"] == "near"}
    assert near["resized_a0.png"]["max_distance"] <= 8 and near["reencoded_b1.jpg"]["cross_split"]
    assert rep["classes"]["few_images"] == {"d": 1}
    assert rep["classes"]["counts"]["train"]["d"] == 1 and rep["classes"]["imbalance_ratio"] == 9.0
    assert rep["images"]["formats"] == {"PNG": 45, "JPEG": 1, "BMP": 1}
    assert rep["images"]["sizes"]["48x48"] == 46 and rep["images"]["sizes"]["40x40"] == 1
    assert any("leak train-test" in f for f in rep["findings"])


def test_fix_manifest_drops_leaks_and_bad_files_and_trains(planted, tmp_path):
    import nextclass

    root, names = planted
    out = tmp_path / "clean.csv"
    rep = nextclass.audit(str(root), fix=out, progress=False)
    rows = list(csv.DictReader(out.open()))
    kept = {Path(r["path"]).name for r in rows}
    for gone in ("resized_a0.png", "reencoded_b1.jpg", "copy_of_val_c0.bmp", "truncated.png", "empty.jpg"):
        assert gone not in kept
    assert {"flipped_a2.png", "a2.png", "a0.png", "only_one.png"} <= kept  # train is never thinned
    assert rep["fix"] == {"path": str(out), "rows": len(rows), "dropped": 5}
    assert {r["split"] for r in rows} == {"train", "val", "test"} and all(Path(r["path"]).is_file() for r in rows)
    assert (root / "test" / "a" / "resized_a0.png").exists()  # the user's files are untouched
    again = nextclass.audit(str(out), progress=False)["summary"]
    assert all(v == {"exact": 0, "near": 0} for v in again["cross_split"].values()) and again["unreadable"] == 0
    run = nextclass.train(data=str(out), model="simple_cnn", epochs=1, output=str(tmp_path / "runs"), batch_size=16,
                          progress=False)
    quick = json.loads((Path(run) / "audit.json").read_text())  # the run's own audit at the start of train
    assert quick["quick"] and quick["n_images"] == len(rows)
    assert all(v == {"exact": 0, "near": 0} for v in quick["summary"]["cross_split"].values())
    assert quick["summary"]["label_conflict_groups"] == 1  # the flipped copy stays in train, reported
    from nextclass.data.audit import attach_label_suspects

    attach_label_suspects(run)  # what finish_run calls at the end of a run
    assert "label_suspects" in json.loads((Path(run) / "audit.json").read_text())
