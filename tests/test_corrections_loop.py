"""The data loop (issue 25): `train`, `evaluate` and `audit` with --corrections on the six-class run's planted
flips, then `compare` of the run without and the run with them (same test images), and its refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import assert_one_line_error, cli, invoke
from nextclass.data.corrections import Correction, append_correction, sample_ids, sample_shas
from nextclass.data.sources import load_source


def _data_of(run: Path) -> Path:
    return run.parent.parent / "data"


@pytest.fixture(scope="module")
def corrections_file(six_class_run, tmp_path_factory) -> Path:
    """The planted flips relabelled to the class their name says, one image dropped: what a reviewer writes."""
    src = load_source(_data_of(six_class_run))
    f = tmp_path_factory.mktemp("review") / "corrections.jsonl"
    for i, h in zip(sample_ids(src), sample_shas(src)):
        name = i.rsplit("/", 1)[-1]
        if name.startswith("flip_"):
            append_correction(f, Correction(i, h, "relabel", label=name[5:7], reason="label issue"))
    append_correction(f, Correction("c3/c3_010.png", sample_shas(src)[sample_ids(src).index("c3/c3_010.png")],
                                    "drop", reason="unreadable"))
    return f


@pytest.fixture(scope="module")
def corrected_run(six_class_run, corrections_file, tmp_path_factory) -> Path:
    """The six-class run trained again with the corrections (same split and seed, a short schedule)."""
    out = tmp_path_factory.mktemp("fixed")
    cli("train", str(_data_of(six_class_run)), "--model", "simple_cnn", "--epochs", "3", "--batch-size", "32",
        "--lr", "3e-3", "--split", "50/25/25", "--tta", "--corrections", str(corrections_file), "--output", str(out),
        "--name", "fixed", "-q", "--set", "report=false", "--set", "robustness=false")
    return out / "fixed"


def test_train_applies_corrections_after_the_split_and_says_so(six_class_run, corrected_run, corrections_file):
    applied = json.loads((corrected_run / "corrections.applied.json").read_text())
    assert (applied["relabeled"], applied["dropped"], applied["missing"]) == (12, 1, 0)
    assert applied["file"] == "corrections.jsonl" and len(applied["left_out"]) == 1
    cfg = (corrected_run / "config.yaml").read_text()
    assert f"corrections: {corrections_file}" in cfg
    meta = json.loads((corrected_run / "model" / "model.json").read_text())
    assert meta["corrections"]["relabeled"] == 12 and "/" not in meta["corrections"]["file"]
    assert json.loads((corrected_run / "audit.json").read_text())["corrections"]["dropped"] == 1
    card = (corrected_run / "model" / "README.md").read_text()
    assert "12 image(s) relabeled" in card and "`corrections.jsonl`" in card and str(corrections_file) not in card

    def rows(run):
        return {line.split(",")[0]: line.split(",") for line in (run / "split.csv").read_text().splitlines()[1:]}

    a, b = rows(six_class_run), rows(corrected_run)
    assert set(a) - set(b) == {applied["left_out"][0]} and not set(b) - set(a)
    assert all(a[p][3] == b[p][3] for p in b)  # every image keeps its split
    flips = [p for p in b if "/flip_" in p]
    assert len(flips) == 12 and all(b[p][2] == Path(p).name[5:7] != a[p][2] for p in flips)
    assert not any(p.stat().st_mtime_ns > corrections_file.stat().st_mtime_ns
                   for p in _data_of(six_class_run).rglob("*"))  # the data folder untouched


def test_evaluate_with_corrections_scores_against_the_corrected_labels(six_class_run, corrections_file, tmp_path):
    run = Path(shutil.copytree(six_class_run, tmp_path / "run"))
    r = cli("evaluate", str(run), "--corrections", str(corrections_file), "-q")
    assert "12 relabeled" in r.stderr
    block = json.loads((run / "metrics.json").read_text())["test"]
    assert block["corrections"]["relabeled"] == 12
    preds = (run / "predictions.csv").read_text()
    flipped = [line for line in preds.splitlines() if "/flip_" in line]
    assert flipped and all(line.split(",")[2] == Path(line.split(",")[0]).name[5:7] for line in flipped)


def test_audit_with_corrections(six_class_run, corrections_file, tmp_path):
    r = cli("audit", str(_data_of(six_class_run)), "--corrections", str(corrections_file), "-o", str(tmp_path / "a.json"),
            "-q")
    rep = json.loads((tmp_path / "a.json").read_text())
    assert rep["corrections"]["relabeled"] == 12 and rep["n_images"] == 239
    assert "12 relabeled" in r.stderr


def test_corrections_of_another_dataset_is_one_clear_error(six_class_run, tmp_path):
    f = tmp_path / "other.jsonl"
    for i in range(3):
        append_correction(f, Correction(f"x/{i}.png", f"{i:064x}", "drop"))
    r = invoke("audit", str(_data_of(six_class_run)), "--corrections", str(f), "-q")
    assert_one_line_error(r, "0 of 3")
    r = invoke("train", str(_data_of(six_class_run)), "--corrections", str(tmp_path / "nope.jsonl"), "--output",
               str(tmp_path / "runs"), "-q")
    assert_one_line_error(r, "no such corrections file")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
