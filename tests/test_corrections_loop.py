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


def test_evaluate_a_corrected_run_uses_the_rows_it_trained_with(corrected_run, corrections_file, tmp_path):
    run = Path(shutil.copytree(corrected_run, tmp_path / "run"))
    extra = tmp_path / "later.jsonl"  # the review went on after training: the run still evaluates as trained
    shutil.copy(corrections_file, extra)
    append_correction(extra, Correction("c0/c0_001.png", "", "drop"))
    cfg = run / "config.yaml"
    cfg.write_text(cfg.read_text().replace(str(corrections_file), str(extra)))
    r = cli("evaluate", str(run), "-q")
    assert "using its first 13" in r.stderr
    block = json.loads((run / "metrics.json").read_text())["test"]
    assert (block["corrections"]["n_rows"], block["corrections"]["dropped"]) == (13, 1)


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


def test_compare_pairs_the_runs_and_answers_in_one_line(six_class_run, corrected_run, tmp_path):
    out = tmp_path / "cmp.html"
    r = cli("compare", str(six_class_run), str(corrected_run), "--html", str(out), "--n-boot", "300")
    verdict = r.stdout.strip().splitlines()[-1]
    assert verdict.startswith(("B is better than A", "B is worse than A", "No significant difference")), r.stdout
    assert "McNemar p =" in verdict and "95% CI" in verdict
    assert "scored against RUN_B's labels" in r.stdout  # the corrected test labels are used for both runs
    page = out.read_text()
    assert "Is B better than A" in page and str(_data_of(six_class_run)) not in page
    js = json.loads(cli("compare", str(six_class_run), str(corrected_run), "--json", "--no-html",
                        "--n-boot", "300").stdout)
    assert js["n"] == sum(1 for line in (corrected_run / "predictions.csv").read_text().splitlines()[1:])
    m = js["mcnemar"]
    assert m["discordant"] == len(js["flipped"]["right_to_wrong"]) + len(js["flipped"]["wrong_to_right"])
    assert m["a_wrong_b_right"] == len(js["flipped"]["wrong_to_right"])
    assert not any("/" in f and f.startswith("/") for rows in js["flipped"].values() for f in (x["id"] for x in rows))
    assert "path" not in json.dumps(js["flipped"])
    lo, hi = js["overall"]["accuracy"]["ci"]
    assert lo <= js["overall"]["accuracy"]["delta"] <= hi
    default_page = corrected_run / f"compare-{six_class_run.name}.html"
    cli("compare", str(six_class_run), str(corrected_run), "--n-boot", "100")
    assert default_page.is_file()  # written beside RUN_B by default
    default_page.unlink()


def test_compare_refuses_runs_not_tested_on_the_same_images(six_class_run, corrected_run, tiny_run, tmp_path):
    assert_one_line_error(invoke("compare", tiny_run, corrected_run, "--no-html"), "not the same data")
    other = Path(shutil.copytree(corrected_run, tmp_path / "seed1"))
    cfg = other / "config.yaml"
    cfg.write_text(cfg.read_text().replace("seed: 0", "seed: 1"))
    assert_one_line_error(invoke("compare", six_class_run, other, "--no-html"), "not the same split", "seed 0",
                          "seed 1")
    fewer = Path(shutil.copytree(corrected_run, tmp_path / "fewer"))
    lines = (fewer / "predictions.csv").read_text().splitlines()
    (fewer / "predictions.csv").write_text("\n".join(lines[:-3]) + "\n")
    assert_one_line_error(invoke("compare", fewer, six_class_run, "--no-html"), "not the same test images",
                          "3 only in RUN_B")


def test_paired_statistics_match_scipy_and_sklearn():
    import numpy as np
    from scipy.stats import binomtest
    from sklearn.metrics import f1_score

    from nextclass.evaluation.compare import _bootstrap, _macro_f1, _mcnemar

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 500)
    pa = np.where(rng.random(500) < 0.7, y, rng.integers(0, 4, 500))
    pb = np.where(rng.random(500) < 0.8, y, rng.integers(0, 4, 500))
    m = _mcnemar(pa == y, pb == y)
    b, c = int(np.sum((pa == y) & (pb != y))), int(np.sum((pa != y) & (pb == y)))
    assert (m["a_right_b_wrong"], m["a_wrong_b_right"]) == (b, c)
    assert m["p_value"] == pytest.approx(binomtest(c, b + c, 0.5).pvalue)
    assert _macro_f1(y, pb, 4) == pytest.approx(f1_score(y, pb, average="macro"))
    boot = _bootstrap(y, pa, pb, 4, 500, seed=0)
    assert boot == _bootstrap(y, pa, pb, 4, 500, seed=0)  # seeded
    lo, hi = boot["accuracy"]
    assert lo < float(np.mean(pb == y) - np.mean(pa == y)) < hi
