"""Prediction sets end to end (issue 26): the bundle keeps the val scores, sets come back from Python, the CLI
and the server with ``coverage``, the trained coverage writes a ``sets`` block (tests/test_scorer.py checks that
``evaluate`` writes the same one), the report and the model card state the promise, and a val split too small for
a coverage gives every class and says so."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error, cli, invoke


def _files(run: Path, n: int = 6) -> list[str]:
    files = sorted((run.parent.parent / "data").rglob("*.png"))
    return [str(f) for f in files[:: max(1, len(files) // n)][:n]]


def _expected_sets(pred, files: list[str], coverage: float) -> list[list[str]]:
    """Each file's set recomputed from its calibrated probabilities with the building block (randomised APS: the
    bundle's seeded tie-breaks in input order)."""
    from nextclass.metrics.conformal import prediction_sets, threshold_for, tie_breaks

    e = pred.meta["sets"]
    probs = np.array([[dict(p.topk)[c] for c in pred.classes] for p in pred.predict(files, topk=len(pred.classes))])
    mask = prediction_sets(probs, threshold_for(e, coverage), u=tie_breaks(e, len(files)))  # the call's stream
    return [[pred.classes[j] for j in np.argsort(-pr, kind="stable") if m[j]] for pr, m in zip(probs, mask)]


def test_sets_from_python_cli_and_http(trust_run: Path):
    """trust_run was trained without a coverage: its bundle keeps the val scores, so any coverage can be asked for."""
    import httpx

    import nextclass
    from test_serve import LiveServer

    files, pred = _files(trust_run), nextclass.load(trust_run)
    e = pred.meta["sets"]
    assert e["coverage"] is None and e["val_n"] == len(e["val_scores"]) == 24 and e["score"] == "aps"
    assert e["randomized"] and e["seed"] == 0
    assert all(p.set is None for p in pred.predict(files)) and "set" not in pred.predict(files)[0].to_dict()
    want = _expected_sets(pred, files, 0.9)
    got = [p.set for p in pred.predict(files, coverage=0.9)]
    assert got == want
    for p, s in zip(pred.predict(files, coverage=0.9, topk=3), got):
        assert s == [t for t, _ in p.topk][:len(s)]  # a prefix of the ranking
    rows = json.loads(cli("predict", str(trust_run), *files, "--coverage", "0.9", "--format", "json").stdout)
    assert [r["set"] for r in rows] == want
    table = list(csv.DictReader(io.StringIO(cli("predict", str(trust_run), *files, "--coverage", "0.9",
                                                "--format", "csv").stdout)))
    assert [r["set"].split(";") if r["set"] else [] for r in table] == want
    assert "set" in cli("predict", str(trust_run), *files[:2], "--coverage", "0.9").stdout  # the table's column
    with LiveServer(str(trust_run), backend="torch") as srv:
        up = [("files", (Path(f).name, open(f, "rb"), "image/png")) for f in files]
        body = httpx.post(srv.url + "/v1/predict", params={"coverage": 0.9}, files=up, timeout=60).json()
        assert [r["set"] for r in body["results"]] == want
        assert body["coverage"]["coverage"] == 0.9 and body["coverage"]["val_n"] == 24
        up = [("files", (Path(f).name, open(f, "rb"), "image/png")) for f in files]
        form = httpx.post(srv.url + "/v1/predict", data={"coverage": "0.9"}, files=up, timeout=60).json()
        assert [r["set"] for r in form["results"]] == want  # the form field works like the query parameter
        plain = httpx.post(srv.url + "/v1/predict", files=[("files", ("a.png", open(files[0], "rb"), "image/png"))])
        assert plain.json()["results"][0]["set"] is None and plain.json()["coverage"] is None
        for bad in ("1.5", "0", "x"):
            r = httpx.post(srv.url + "/v1/predict", params={"coverage": bad},
                           files=[("files", ("a.png", open(files[0], "rb"), "image/png"))])
            assert r.status_code == 422 and "coverage" in r.json()["detail"], r.text


def test_val_too_small_gives_every_class_and_says_so(trust_run: Path):
    import nextclass

    files, pred = _files(trust_run, 3), nextclass.load(trust_run)
    assert pred.set_threshold(0.99) == float("inf")  # 24 val images < 99 needed
    assert all(p.set and sorted(p.set) == sorted(pred.classes) for p in pred.predict(files, coverage=0.99))
    r = cli("predict", str(trust_run), *files, "--coverage", "0.99", "--format", "json")
    assert "too few for coverage 0.99" in r.stderr and "every set is every class" in r.stderr
    from nextclass.card import card_text
    from nextclass.metrics.conformal import sets_entry

    p = np.full((24, 3), 1 / 3)
    meta = {**pred.meta, "sets": sets_entry(p, np.zeros(24, int), 0.99)}
    text = card_text(meta, json.loads((trust_run / "metrics.json").read_text()))
    assert "too small for this promise" in text and "needs at least 99" in text and "24 images" in text


@pytest.mark.parametrize("bad", ["1.5", "0", "-1"])
def test_bad_coverage_names_the_field(trust_run: Path, bad: str):
    import nextclass
    from nextclass.config import ConfigError, make_config

    assert_one_line_error(invoke("predict", trust_run, _files(trust_run, 1)[0], "--coverage", bad), "coverage")
    with pytest.raises(ValueError, match="coverage"):
        nextclass.load(trust_run).predict(_files(trust_run, 1), coverage=float(bad))
    with pytest.raises(ConfigError, match="coverage"):
        make_config(data="digits", coverage=float(bad))
    assert_one_line_error(invoke("train", "digits", "--coverage", bad), "coverage")


def test_a_bundle_without_val_scores_says_retrain(trust_run: Path, tmp_path: Path):
    import nextclass

    bundle = Path(shutil.copytree(trust_run / "model", tmp_path / "model"))
    meta = json.loads((bundle / "model.json").read_text())
    meta.pop("sets")  # a bundle from before nextclass kept the scores
    (bundle / "model.json").write_text(json.dumps(meta))
    assert nextclass.load(bundle).predict(_files(trust_run, 1))[0].set is None
    with pytest.raises(ValueError, match="keeps no validation scores"):
        nextclass.load(bundle).predict(_files(trust_run, 1), coverage=0.9)
    assert_one_line_error(invoke("predict", bundle, _files(trust_run, 1)[0], "--coverage", "0.9"), "retrain")


def test_trained_coverage_writes_the_block_card_and_report(six_class_run: Path, tmp_path: Path):
    """six_class_run was trained with coverage 0.9: the bundle's threshold is used by default, the test block holds
    the empirical coverage per class and the set sizes, the card states the promise, the report shows them."""
    import nextclass
    from nextclass.report.html import build_report

    meta = json.loads((six_class_run / "model" / "model.json").read_text())
    e, m = meta["sets"], json.loads((six_class_run / "metrics.json").read_text())
    assert e["coverage"] == 0.9 and e["threshold"] is not None and e["val_n"] == m["val"]["n"]
    s = m["test"]["sets"]
    assert s["target"] == 0.9 and s["n"] == m["test"]["n"] and sum(s["size_histogram"]) == s["n"]
    assert sum(v["n"] for v in s["per_class"].values()) == s["n"] and s["coverage_ci"][0] <= s["coverage"]
    hits = sum(round(v["coverage"] * v["n"]) for v in s["per_class"].values() if v["n"])
    assert hits == round(s["coverage"] * s["n"])
    pred = nextclass.load(six_class_run)
    files = _files(six_class_run, 4)
    assert [p.set for p in pred.predict(files)] == _expected_sets(pred, files, 0.9)  # the bundle's own coverage
    card = (six_class_run / "model" / "README.md").read_text()
    assert "## Prediction sets" in card and "exchangeable with the validation images" in card
    assert f"fitted on the {e['val_n']} validation images" in card and "at least 90.00%" in card
    run = Path(shutil.copytree(six_class_run, tmp_path / "run"))
    html = build_report(run, cam_images=0).read_text()
    assert 'id="sets"' in html and "prediction sets: coverage per class and set sizes" in html
    assert (run / "plots" / "sets.png").is_file()
    from rich.console import Console

    from nextclass.report.console import sets_table

    con = Console(record=True, width=200)
    con.print(sets_table(m["test"]))  # what `nextclass evaluate` prints after the metrics table
    text = con.export_text()
    assert "prediction sets for coverage 0.9" in text and all(c in text for c in s["per_class"])

