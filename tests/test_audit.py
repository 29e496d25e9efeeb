"""nextclass audit: planted problems are found, clean images are not flagged, --fix trains, label issues after a run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import cli


def texture(rng: np.random.Generator, size: int = 48) -> Image.Image:
    """A smooth random colour field plus fine noise: photo-like spectrum, and no two alike."""
    g = int(rng.integers(3, 7))
    coarse = Image.fromarray(rng.integers(0, 256, (g, g, 3)).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    noise = rng.integers(-8, 8, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(coarse).astype(int) + noise, 0, 255).astype(np.uint8))


def texture_folder(root, n: int, seed: int, classes=("x", "y"), size: int = 32) -> None:
    """root/<class>/<i>.png: ``n`` distinct textures per class."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            texture(rng, size).save(root / c / f"{i}.png")


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, dict]:
    return make_planted(tmp_path_factory.mktemp("planted") / "data")


def make_planted(root: Path) -> tuple[Path, dict]:
    """Split folder (train 8 / val 3 / test 3 per class a, b, c) plus one planted instance of each problem."""
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


@pytest.mark.slow
def test_fix_manifest_drops_leaks_and_bad_files_and_trains(planted, tmp_path):
    import nextclass

    root, names = planted
    out = tmp_path / "clean.csv"
    rep = nextclass.audit(str(root), fix=out, progress=False)
    rows = list(csv.DictReader(out.open()))
    kept = {Path(r["path"]).name for r in rows}
    for gone in ("resized_a0.png", "reencoded_b1.jpg", "copy_of_val_c0.bmp", "truncated.png", "empty.jpg"):
        assert gone not in kept
    # one picture labelled a and c (identical pixels): neither copy is kept, since nothing says which label is right
    rel = {Path(r["path"]).relative_to(root).as_posix() for r in rows}
    assert "train/c/flipped_a2.png" not in rel and "train/a/a2.png" not in rel
    assert {"a0.png", "only_one.png"} <= kept  # train is otherwise never thinned
    assert rep["fix"] == {"path": str(out), "rows": len(rows), "dropped": 7}
    assert {r["split"] for r in rows} == {"train", "val", "test"} and all(Path(r["path"]).is_file() for r in rows)
    assert (root / "test" / "a" / "resized_a0.png").exists()  # the user's files are untouched
    again = nextclass.audit(str(out), progress=False)["summary"]
    assert all(v == {"exact": 0, "near": 0} for v in again["cross_split"].values()) and again["unreadable"] == 0
    run = nextclass.train(data=str(out), model="simple_cnn", epochs=1, output=str(tmp_path / "runs"), batch_size=16,
                          progress=False)
    quick = json.loads((Path(run) / "audit.json").read_text())  # the run's own audit at the start of train
    assert quick["quick"] and quick["n_images"] == len(rows)
    assert all(v == {"exact": 0, "near": 0} for v in quick["summary"]["cross_split"].values())
    assert quick["summary"]["label_conflict_groups"] == 0  # both copies of the twice-labelled picture left out
    issues = quick["label_issues"]  # finish_run judged the val/test labels (cleanlab) into the same file
    n_eval = sum(1 for r in rows if r["split"] in ("val", "test"))
    assert issues["checked"] == n_eval and "cleanlab" in issues["method"] and "label_suspects" not in quick
    assert len(list(csv.DictReader((Path(run) / "label_issues.csv").open()))) == issues["n"]


def test_cli_audit_summary_json_and_fix(planted, tmp_path):
    root, _ = planted
    p = cli("audit", str(root), "-o", str(tmp_path / "a.json"), "--fix", str(tmp_path / "fixed.csv"), "-q",
            env={"COLUMNS": "200"})
    out = p.stdout
    assert "leak train-test: exact / near" in out and "unreadable" in out and "labels differ" in out
    assert "cleaned manifest" in out and (tmp_path / "fixed.csv").exists()
    assert json.loads((tmp_path / "a.json").read_text())["summary"]["unreadable"] == 2
    bad = cli("audit", str(tmp_path / "missing"), check=False)
    assert bad.returncode == 2 and "no such folder" in " ".join(bad.stderr.split())


def test_unsplit_folder_gets_the_runs_split(tmp_path):
    import nextclass
    from nextclass.data.sources import load_source
    from nextclass.data.splits import assign_splits

    texture_folder(tmp_path / "d", n=10, seed=3)
    rep = nextclass.audit(str(tmp_path / "d"), progress=False)
    assert rep["splits"]["mode"] == "assigned" and "seed 0" in rep["splits"]["note"]
    src = load_source(tmp_path / "d")
    want = assign_splits(src, (0.7, 0.2, 0.1), 0)  # what `nextclass train` would use
    got = {sp: sum(d.values()) for sp, d in rep["classes"]["counts"].items()}
    assert got == {sp: want.count(sp) for sp in ("train", "val", "test")}
    flat = nextclass.audit(str(tmp_path / "d"), splits="none", progress=False)
    assert list(flat["classes"]["counts"]) == ["all"] and flat["findings"] == []


def test_near_pairs_equals_brute_force():
    from nextclass.data.hashing import near_pairs

    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 3000, dtype=np.int64).astype(np.uint64)
    clumpy = base & np.uint64(0xFFFF_0000_FFFF_FFFF)  # a constant band, as phash's low frequencies are
    for h in (base, clumpy):
        flips = rng.integers(0, 64, (600, 6))
        near = h[:600].copy()
        for k in range(6):  # copies 0..6 bits away
            near ^= np.where(np.arange(600) % 7 > k, np.uint64(1) << flips[:, k].astype(np.uint64), np.uint64(0))
        h = np.concatenate([h, near])
        for t in (3, 8, 11):
            i, j, d = near_pairs(h, threshold=t)
            dd = np.bitwise_count(h[:, None] ^ h[None, :])
            bi, bj = np.nonzero(np.triu(dd <= t, 1))
            assert sorted(zip(i.tolist(), j.tolist())) == sorted(zip(bi.tolist(), bj.tolist()))
            assert (d == dd[i, j]).all()


def test_fingerprints_match_imagehash_and_ignore_container(tmp_path):
    import imagehash

    from nextclass.data.hashing import hash_arrays, hash_one_file

    rng = np.random.default_rng(5)
    img = texture(rng, 64)
    img.save(tmp_path / "a.png")
    img.save(tmp_path / "a.bmp")
    img.convert("L").save(tmp_path / "g.png")
    img.convert("L").convert("RGB").save(tmp_path / "g_rgb.tif")
    a, b = hash_one_file(str(tmp_path / "a.png")), hash_one_file(str(tmp_path / "a.bmp"))
    assert a[0] == b[0] and a[1] == int(str(imagehash.phash(img)), 16)
    assert hash_one_file(str(tmp_path / "g.png"))[0] == hash_one_file(str(tmp_path / "g_rgb.tif"))[0]
    assert a[3:7] == (64, 64, "RGB", "PNG")
    arr = hash_arrays(np.asarray(img)[None])  # the in-memory path: same algorithm, float resampling
    assert bin(int(arr.phash[0]) ^ a[1]).count("1") <= 4
    bad = hash_one_file(str(tmp_path / "nope.png"))
    assert bad[0] is None and bad[-1].startswith("cannot read")


def test_quick_audit_on_array_source_and_never_raises(tmp_path):
    from nextclass.data.quick_audit import audit_decoded
    from nextclass.data.cache import DecodedImages
    from nextclass.data.sources import DataSource, Sample

    rng = np.random.default_rng(2)
    arr = np.stack([np.asarray(texture(rng, 28).convert("L")) for _ in range(40)])
    arr[39] = arr[3]  # test copy of a train image
    samples = [Sample(f"mem/{i}", i % 2, "test" if i >= 36 else "train", i) for i in range(40)]
    src = DataSource("mem", "mem", "fashion-mnist", ["p", "q"], samples, arr)
    ok = np.ones(40, bool)
    ok[5] = False
    images = DecodedImages(arr[..., None], ok, {5: "cannot decode: test"})
    rep = audit_decoded(src, images, tmp_path / "audit.json")
    assert rep["summary"]["cross_split"]["train-test"] == {"exact": 1, "near": 0}
    assert rep["summary"]["unreadable"] == 1 and rep["summary"]["near_pairs"] == 0
    assert rep["duplicates"][0]["members"][0]["index"] == 3
    assert audit_decoded(src, None, tmp_path / "x.json") is None and not (tmp_path / "x.json").exists()


def test_quick_audit_is_kept_by_content_and_split(tmp_path):
    """A rerun on the same decoded pixels and split reads the quick audit back; another split recomputes it."""
    from nextclass.data.quick_audit import audit_decoded
    from nextclass.data.cache import DecodedImages
    from nextclass.data.sources import DataSource, Sample

    rng = np.random.default_rng(3)
    arr = np.stack([np.asarray(texture(rng, 28).convert("L")) for _ in range(30)])
    arr[29] = arr[2]
    samples = [Sample(f"mem/{i}", i % 2, "test" if i >= 26 else "train", i) for i in range(30)]
    src = DataSource("mem", "mem", "fashion-mnist", ["p", "q"], samples, arr)
    images = DecodedImages(arr[..., None], np.ones(30, bool), {}, key="pixels-v1")
    first = audit_decoded(src, images, tmp_path / "a.json", cache_dir=tmp_path / "cache")
    again = audit_decoded(src, images, tmp_path / "b.json", cache_dir=tmp_path / "cache")
    assert (first["cached"], again["cached"]) == (False, True)
    assert again["summary"] == first["summary"] and again["summary"]["cross_split"]["train-test"]["exact"] == 1
    samples[29] = Sample("mem/29", 1, "train", 29)  # the copy moves to train: the leak is gone
    moved = audit_decoded(src, images, tmp_path / "c.json", cache_dir=tmp_path / "cache")
    assert moved["cached"] is False and moved["summary"]["cross_split"]["train-test"]["exact"] == 0
    other = DecodedImages(arr[..., None], np.ones(30, bool), {}, key="pixels-v2")  # other pixels, other key
    assert audit_decoded(src, other, tmp_path / "d.json", cache_dir=tmp_path / "cache")["cached"] is False


def _plant_wrong_label(run: Path) -> str:
    """Give the most confidently right val prediction of a finished run another label (in its
    predictions_val.csv, as if the file on disk had been mislabelled); returns its path."""
    f = run / "predictions_val.csv"
    rows = list(csv.DictReader(f.open(newline="")))
    best = max((r for r in rows if r["correct"] == "1"), key=lambda r: float(r["probability"]))
    probs = {k: float(v) for k, _, v in (part.rpartition(":") for part in best["topk"].split(";"))}
    wrong = min((c for c in probs if c != best["true"]), key=probs.get)
    best.update(true=wrong, correct="0", true_probability=f"{probs[wrong]:.5f}")
    with f.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return best["path"]


def test_finished_run_label_check_is_gated_on_the_models_strength(tiny_run, tmp_path):
    """The end-of-run label check flags nothing, and says why, when the model is too weak (or val/test too small)
    for its disagreements to point at labels rather than at its own mistakes (issue 23: a 77.7% model listed 18
    clean images). That a strong model finds planted flips, and only them: tests/test_scorer.py."""
    import shutil

    import numpy as np

    from nextclass.data.label_issues import Judged, attach_label_issues

    rep = json.loads((tiny_run / "audit.json").read_text())  # written by finish_run, not by this test
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert rep["quick"] and rep["n_images"] == 90  # the quick audit of train's prepare() is kept beside it
    block = rep["label_issues"]
    assert block["checked"] == metrics["val"]["n"] + metrics["test"]["n"] < 30
    assert block["n"] == 0 and block["skipped"].startswith("label check skipped") and not block["gate"]["ok"]
    assert len(list(csv.DictReader((tiny_run / "label_issues.csv").open()))) == 0
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    rng = np.random.default_rng(0)
    y = np.arange(300) % 10
    weak = np.full((300, 10), 0.02)
    weak[np.arange(300), np.where(rng.random(300) < 0.78, y, (y + 1) % 10)] = 0.82  # right on ~78%: too weak
    judged = Judged(weak, y, [f"img{i}.png" for i in range(300)], ["val"] * 300, [str(c) for c in range(10)])
    assert attach_label_issues(run, judged) == []
    saved = json.loads((run / "audit.json").read_text())
    assert "the model is right on" in saved["label_issues"]["skipped"]
    assert not any("disagrees with" in f for f in saved["findings"])


def test_fingerprints_cached_until_a_file_changes(tmp_path):
    import os

    import nextclass

    texture_folder(tmp_path / "d", n=6, seed=9)
    first = nextclass.audit(str(tmp_path / "d"), progress=False, cache_dir=tmp_path / "cache")
    again = nextclass.audit(str(tmp_path / "d"), progress=False, cache_dir=tmp_path / "cache")
    assert not first["hashes_cached"] and again["hashes_cached"] and again["summary"] == first["summary"]
    Image.open(tmp_path / "d" / "x" / "0.png").save(tmp_path / "d" / "y" / "5.png")  # now a duplicate
    os.utime(tmp_path / "d" / "y" / "5.png", ns=(1, 1))
    changed = nextclass.audit(str(tmp_path / "d"), progress=False, cache_dir=tmp_path / "cache")
    assert not changed["hashes_cached"] and changed["summary"]["label_conflict_groups"] == 1
