"""audit --labels (embeddings -> cross-validated heads -> cleanlab -> label_issues.csv) and a run's label issues."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cleanlab")


def _mislabel(root: Path, n: int = 4) -> set[str]:
    """Copy ``n`` circles into the hbar folder (new names): their given label is wrong."""
    planted = set()
    for i in range(n):
        dst = root / "hbar" / f"planted_{i}.png"
        shutil.copy(root / "circle" / f"circle_{i:03d}.png", dst)
        planted.add(str(dst.resolve()))
    return planted


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_audit_labels_finds_planted_wrong_labels(tmp_path):
    import nextclass
    from conftest import make_folder

    data = make_folder(tmp_path / "d", n=40)
    planted = _mislabel(data)
    rep = nextclass.audit(str(data), labels=True, output=tmp_path / "out", progress=False, cache_dir=tmp_path / "c")
    block = rep["label_issues"]
    rows = _rows(tmp_path / "out" / "label_issues.csv")
    assert list(rows[0]) == ["path", "given_label", "suggested_label", "score", "rank"]
    flagged = {r["path"] for r in rows}
    assert planted <= flagged and len(flagged) <= len(planted) + 2, (flagged - planted)
    assert all(r["given_label"] == "hbar" and r["suggested_label"] == "circle" for r in rows if r["path"] in planted)
    assert block["checked"] == 124 and block["n"] == len(rows) and "pixels 32x32x3" in block["method"]
    assert block["pairs"][0] == {"label": "hbar", "suggested": "circle", "n": 4}
    saved = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert saved["label_issues"]["n"] == block["n"] and any("look mislabelled" in f for f in saved["findings"])
    clean = make_folder(tmp_path / "clean", n=40, seed=3)  # nothing planted: (almost) nothing flagged
    rep2 = nextclass.audit(str(clean), labels=True, output=tmp_path / "clean.json", progress=False,
                           cache_dir=tmp_path / "c")
    assert rep2["label_issues"]["n"] <= 2 and (tmp_path / "label_issues.csv").exists()  # beside the JSON report


def test_audit_labels_cli_backbone_and_errors(tmp_path):
    from typer.testing import CliRunner

    from conftest import make_folder
    from nextclass.cli import app

    data = make_folder(tmp_path / "d", n=12)
    r = CliRunner().invoke(app, ["audit", str(data), "--labels", "--backbone", "test_resnet", "-o", str(tmp_path / "o"),
                                 "-q", "--cache-dir", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    assert "label issues" in r.output and (tmp_path / "o" / "label_issues.csv").exists()
    assert "test_resnet (random weights)" in json.loads((tmp_path / "o" / "audit.json").read_text())["label_issues"]["method"]
    r = CliRunner().invoke(app, ["audit", str(data), "--backbone", "test_resnet"])
    assert r.exit_code == 2 and "add --labels" in r.output
    r = CliRunner().invoke(app, ["audit", "--help"])
    assert "--labels" in r.output and "--picture-tolerance" in r.output and "hf:DIR" in r.output


def test_audit_labels_with_a_run_trunk(tiny_run, tmp_path):
    import nextclass
    from nextclass.rundir import RunDir

    data = RunDir(tiny_run).read_config().data
    rep = nextclass.audit(data, labels=True, model=str(tiny_run), output=tmp_path / "a.json", progress=False)
    assert rep["label_issues"]["checked"] == 90 and "trunk of" in rep["label_issues"]["method"]
    assert (tmp_path / "label_issues.csv").exists()


def _write_run(run: Path, classes: list[str], rows: list[tuple]) -> None:
    (run / "model").mkdir(parents=True)
    (run / "model" / "model.json").write_text(json.dumps({"classes": classes}))
    for split, name in (("val", "predictions_val.csv"), ("test", "predictions.csv")):
        with open(run / name, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "split", "true", "predicted", "probability", "correct", "true_probability", "topk"])
            for path, sp, y, p in rows:
                if sp != split:
                    continue
                order = np.argsort(-p)[:5]
                w.writerow([path, sp, classes[y], classes[order[0]], f"{p[order[0]]:.5f}", int(order[0] == y),
                            f"{p[y]:.5f}", ";".join(f"{classes[j]}:{p[j]:.4f}" for j in order)])


def test_attach_label_issues_reads_a_runs_predictions(tmp_path):
    from nextclass.data.label_issues import attach_label_issues, read_run_probabilities

    rng = np.random.default_rng(0)
    classes = [f"c{k}" for k in range(8)]  # more than the 5 classes predictions.csv lists per row
    rows, flip = [], set(rng.choice(400, 10, replace=False).tolist())  # 10 confidently "wrong" labels
    wrong = {f"img{i}" for i in flip}
    for i in range(400):
        y = i % 8
        p = rng.dirichlet(np.full(8, 0.3)) * 0.1
        p[y] += 0.9
        given = (y + int(rng.integers(1, 8))) % 8 if i in flip else y
        rows.append((f"img{i}", "val" if i % 2 else "test", given, p / p.sum()))
    _write_run(tmp_path / "run", classes, rows)
    _, probs, labels, names = read_run_probabilities(tmp_path / "run")
    assert probs.shape == (400, 8) and np.allclose(probs.sum(1), 1) and names == classes
    found = attach_label_issues(tmp_path / "run")
    assert len(found) >= 8  # measured 9 of the 10, no false flag
    rep = json.loads((tmp_path / "run" / "audit.json").read_text())["label_issues"]
    assert {it["path"] for it in rep["items"]} <= wrong and rep["checked"] == 400 and rep["csv"] == "label_issues.csv"
    assert {r["path"] for r in _rows(tmp_path / "run" / "label_issues.csv")} == {it["path"] for it in rep["items"]}
    assert attach_label_issues(tmp_path / "nothing") == []  # never raises at the end of a run


def test_attach_label_issues_on_a_real_run(tiny_run_copy):
    from nextclass.data.label_issues import attach_label_issues

    run = tiny_run_copy  # attach_label_issues writes audit.json and label_issues.csv into the run
    (run / "label_issues.csv").unlink(missing_ok=True)
    found = attach_label_issues(run)
    rep = json.loads((run / "audit.json").read_text())
    assert rep["quick"] and rep["label_issues"]["checked"] > 0 and rep["label_issues"]["n"] == len(found)
    assert (run / "label_issues.csv").exists()
