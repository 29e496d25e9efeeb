"""The audit of multi-label data (issue 26): label counts per split, images with no label, duplicates whose label
sets differ (and ``--fix`` dropping identical copies labelled two ways, writing ``path,labels,split``), and cleanlab's
multi-label finder flagging planted label flips with the label to add or remove, through ``audit --labels`` and the
run-level entry point the finish step calls."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import nextclass
from planted_multilabel import LABELS, SHARE, draw, make_folder

pytest.importorskip("cleanlab")


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _set(cell: str) -> set[str]:
    return set(filter(None, cell.split(";")))


def test_audit_counts_labels_unlabelled_images_and_copies_labelled_two_ways(tmp_path):
    manifest = make_folder(tmp_path / "d", n=60)
    rows = _rows(manifest)
    # an identical copy of image 1 with another label set (a conflict), and one of image 2 with the same labels (none)
    other = "red" if rows[1]["labels"] != "red" else "blue"
    shutil.copy(manifest.parent / rows[1]["path"], manifest.parent / "img" / "copy_other.png")
    shutil.copy(manifest.parent / rows[2]["path"], manifest.parent / "img" / "copy_same.png")
    with open(manifest, "a", encoding="utf-8") as fh:
        fh.write(f"img/copy_other.png,{other}\nimg/copy_same.png,{rows[2]['labels']}\n")
    rows = _rows(manifest)
    rep = nextclass.audit(str(manifest), progress=False, fix=tmp_path / "fixed.csv", cache_dir=tmp_path / "c")

    assert rep["task"] == "multi-label" and rep["classes"]["names"] == list(LABELS)
    want = {c: sum(c in r["labels"].split(";") for r in rows) for c in LABELS}
    assert rep["classes"]["totals"] == want and set(rep["classes"]["counts"]) == {"train", "val", "test"}
    assert rep["classes"]["counts"]["train"]["blue"] > 0  # images carrying a label, not the label index -1
    no_label = sum(not r["labels"] for r in rows)
    ls = rep["label_sets"]
    assert no_label > 5 and ls["no_label"] == no_label and sum(ls["no_label_per_split"].values()) == no_label
    assert ls["cooccurrence"][0][0] == want["blue"] and any(f"{no_label} of {len(rows)} image(s) carry no label" in f
                                                           for f in rep["findings"])
    conflicts = [g for g in rep["duplicates"] if g["label_conflict"]]
    assert rep["summary"]["label_conflict_groups"] == 1 and len(conflicts) == 1
    members = {Path(m["path"]).name: m["label"] for m in conflicts[0]["members"]}
    assert members["copy_other.png"] == other and _set(members[Path(rows[1]["path"]).name]) == _set(rows[1]["labels"])
    same = [g for g in rep["duplicates"] if any(Path(m["path"]).name == "copy_same.png" for m in g["members"])]
    assert len(same) == 1 and not same[0]["label_conflict"]

    fixed = _rows(tmp_path / "fixed.csv")
    assert list(fixed[0]) == ["path", "labels", "split"]
    kept = {Path(r["path"]).name: r["labels"] for r in fixed}
    assert "copy_other.png" not in kept and Path(rows[1]["path"]).name not in kept  # neither label set is trusted
    assert _set(kept["0.png"]) == _set(rows[0]["labels"]) and len(fixed) == rep["n_images"] - rep["summary"]["fix_would_drop"]
    back = nextclass.audit(str(tmp_path / "fixed.csv"), progress=False, cache_dir=tmp_path / "c")
    assert back["task"] == "multi-label" and back["summary"]["label_conflict_groups"] == 0
    empty = sum(not r["labels"] for r in fixed)  # empty label cells are written back as empty (no label, not missing)
    assert empty > 5 and back["label_sets"]["no_label"] == empty


def _planted_flips(root: Path, n: int = 200, flips: int = 10, seed: int = 0) -> tuple[Path, dict]:
    """``n`` planted images whose marks are unmistakable; ``flips`` rows get one label removed or added.
    Returns the manifest and {path: (given labels, true labels)} of the flipped rows."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    sets = [[name for name, p in SHARE.items() if rng.random() < p] for _ in range(n)]
    (root / "img").mkdir(parents=True)
    for i, s in enumerate(sets):
        Image.fromarray(draw(s, rng)).save(root / "img" / f"{i}.png")
    given = [set(s) for s in sets]
    planted = {}
    for i in rng.choice(n, flips, replace=False):
        name = LABELS[int(rng.integers(3))]
        given[i] ^= {name}
        planted[str((root / "img" / f"{i}.png").resolve())] = (given[i], set(sets[i]))
    lines = ["path,labels"] + [f"img/{i}.png,{';'.join(sorted(g))}" for i, g in enumerate(given)]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv", planted


def test_audit_labels_finds_planted_label_flips_and_says_what_to_change(tmp_path):
    manifest, planted = _planted_flips(tmp_path / "d")
    rep = nextclass.audit(str(manifest), labels=True, output=tmp_path / "out", progress=False,
                          cache_dir=tmp_path / "c")
    block = rep["label_issues"]
    rows = _rows(tmp_path / "out" / "label_issues.csv")
    assert list(rows[0]) == ["path", "given_labels", "suggested_labels", "add", "remove", "score", "rank"]
    flagged = {r["path"] for r in rows}
    found = flagged & set(planted)
    # measured: 10 of 10 at this seed, 0.88 on average over six seeds (never below 0.6), no false flag in any
    assert len(found) >= 8 and len(flagged - found) <= 2, (len(found), flagged - set(planted))
    for r in rows:
        if r["path"] in planted:  # the suggestion undoes the flip: the true label set
            assert _set(r["suggested_labels"]) == planted[r["path"]][1], r
    assert block["task"] == "multi-label" and block["checked"] == 200 and block["n"] == len(rows)
    assert block["gate"]["ok"] and set(block["gate"]["judged"]) == set(LABELS) and "one-vs-rest" in block["method"]
    assert sum(v["add"] + v["remove"] for v in block["per_label"].values()) >= len(found)
    assert block["items"][0]["rank"] == 1 and block["items"][0]["added"] + block["items"][0]["removed"]
    saved = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert any("look mislabelled" in f for f in saved["findings"])


def test_run_label_issues_judges_label_sets_from_the_finish_steps_probabilities(tmp_path):
    """The call the finish step makes: ``attach_label_issues(run_dir, Judged.of({split: (probs (N, L), labels
    (N, L), ids)}, labels))``; a label whose probabilities carry no signal is not judged (the gate per label)."""
    from nextclass.data.label_issues import Judged, attach_label_issues

    rng = np.random.default_rng(0)
    y = (rng.random((120, 3)) < [0.3, 0.5, 0.4]).astype(np.uint8)
    p = np.where(y == 1, rng.uniform(0.85, 0.99, y.shape), rng.uniform(0.01, 0.15, y.shape))
    p[:, 2] = rng.uniform(0, 1, 120)  # label "c": no signal
    given = y.copy()
    given[[3, 50], 0] ^= 1  # two wrong "a" labels
    given[[7], 1] ^= 1  # one wrong "b" label
    # the model is sure of the true value there (cleanlab counts an image as confidently of a value when its probability
    # reaches the mean of that value's images: 1 - 0.10 = 0.90 against a mean of 0.92 would not count)
    p[[3, 50], 0], p[7, 1] = np.where(y[[3, 50], 0] == 1, 0.97, 0.03), 0.97 if y[7, 1] else 0.03
    ids = [f"img{i}.png" for i in range(120)]
    judged = Judged.of({"val": (p[:60], given[:60], ids[:60]), "test": (p[60:], given[60:], ids[60:])},
                       ["a", "b", "c"])
    assert judged.multilabel and judged.labels.shape == (120, 3) and judged.splits[60] == "test"
    run = tmp_path / "run"
    run.mkdir()
    found = attach_label_issues(run, judged)
    assert {ids[i.position] for i in found} == {"img3.png", "img50.png", "img7.png"}
    audit = json.loads((run / "audit.json").read_text())["label_issues"]
    assert audit["source"] == "model" and audit["gate"]["not_judged"] == ["c"] and audit["skipped"] is None
    assert audit["per_label"]["a"]["add"] + audit["per_label"]["a"]["remove"] == 2
    rows = {r["path"]: r for r in _rows(run / "label_issues.csv")}
    assert rows["img7.png"]["suggested_labels"] == ";".join(
        n for n, v in zip("abc", given[7] ^ np.array([0, 1, 0])) if v)
