"""DDP training (2 real gloo processes), resume under DDP, and sharded prediction.

Runs through the public paths: ``nextclass.train(..., nproc=2)`` and ``nextclass predict --nproc 2``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

import nextclass
from conftest import cli, make_folder
from nextclass import dist


def _history(run: Path) -> list[dict]:
    with open(run / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_shard_and_unshard_cover_every_item_once():
    items = np.arange(11)
    parts = [dist.shard(items, r, 3) for r in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(11))
    assert (dist.unshard(parts, 11) == items).all()
    few = [dist.shard(np.arange(2.0).reshape(2, 1), r, 3) for r in range(3)]  # more ranks than rows
    assert len(few[2]) == 0
    assert dist.unshard([few[0], few[1], np.zeros((0, 0))], 2).ravel().tolist() == [0.0, 1.0]


@pytest.mark.slow
def test_predict_nproc_2_covers_every_file_once_in_one_csv(tiny_run: Path, tmp_path):
    data = make_folder(tmp_path / "imgs", n=3, seed=5)  # 9 files + 1 broken: shards of 5 and 5
    (data / "circle" / "broken.png").write_bytes(b"not a png")
    files = sorted(str(p) for p in data.rglob("*.png"))
    out = tmp_path / "preds.csv"
    cli("predict", str(tiny_run), str(data), "--nproc", "2", "--topk", "2", "--batch-size", "4",
        "--format", "csv", "--output", str(out))
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["path"] for r in rows) == files  # one merged CSV: none lost, none duplicated
    assert [r["path"] for r in rows if r["error"]] == [str(data / "circle" / "broken.png")]
    single = {p.source: p for p in nextclass.load(tiny_run).predict(files, topk=2)}
    for r in rows:
        s = single[r["path"]]
        assert (r["label"] or None) == s.label
        if s.probability is not None:
            assert float(r["probability"]) == pytest.approx(s.probability, abs=1e-4)
            assert len(r["topk"].split(";")) == 2


# What makes 2 processes x 8 images exactly 1 process x 16: the ranks take alternate images of the same global
# batch and DDP averages their gradients; ConvNeXt's LayerNorm works per image (batch norm would normalise over 8
# instead of 16), and nothing in the step draws random numbers (no augmentation, no dropout); a constant learning
# rate keeps the schedule the same when the resumed run's epochs are raised by hand; SGD (Adam would blow the
# all-reduce's float rounding of a gradient that is zero in exact arithmetic up to a full step).
EXACT = dict(model="test_convnext", img_size=32, augment="none", drop_rate=0.0, optimizer="sgd", lr=0.02,
             scheduler="none", warmup_epochs=0, ema=False, seed=0, report=False)
NUMBERS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")  # history columns that are not timings


@pytest.mark.slow
def test_ddp_two_processes_match_one_and_resume(tmp_path):
    data = make_folder(tmp_path / "data", n=24)
    common = dict(data=str(data), **EXACT, output=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"))
    # same global batch: 1 x 16 vs 2 ranks x 8
    one = nextclass.train(common, epochs=4, batch_size=16, name="one", progress=False)
    two = nextclass.train({**common, "epochs": 2, "batch_size": 8, "name": "two"}, nproc=2, progress=False)
    assert two == Path(common["output"]) / "two"  # rank 0 named the run; no second run directory
    assert sorted(p.name for p in Path(common["output"]).iterdir()) == ["one", "two"]
    first = _history(two)
    assert [r["epoch"] for r in first] == ["1", "2"]

    # resume the DDP run for two more epochs, still on 2 processes
    cfg_path = two / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())  # a user editing the saved config by hand before resuming
    assert cfg["batch_size"] == 8 and cfg["threads"] >= 1
    cfg["epochs"] = 4
    cfg_path.write_text(yaml.safe_dump(cfg))
    nextclass.train(resume=two, nproc=2, progress=False)
    hist = _history(two)
    assert [r["epoch"] for r in hist] == ["1", "2", "3", "4"]
    assert hist[:2] == first  # resumed, not retrained
    n_train = sum(1 for r in csv.DictReader(open(two / "split.csv")) if r["split"] == "train")
    assert n_train > 16 and n_train // 16 >= 3  # several steps an epoch

    # every epoch took the single process's steps: the same numbers, epoch by epoch (history rounds to 5 digits)
    h1 = _history(one)
    for a, b in zip(hist, h1, strict=True):
        for col in NUMBERS:
            assert float(a[col]) == pytest.approx(float(b[col]), rel=1e-4, abs=2e-5), (a["epoch"], col)
    # ... and the same weights at the end (float rounding of the all-reduce only)
    w1, w2 = load_file(str(one / "model" / "model.safetensors")), load_file(str(two / "model" / "model.safetensors"))
    assert w1.keys() == w2.keys() and not any(k.startswith("module.") for k in w2)  # the single-process form
    for k in w1:
        assert torch.allclose(w1[k].float(), w2[k].float(), atol=1e-5, rtol=1e-4), (k, (w1[k] - w2[k]).abs().max())

    m1 = json.loads((one / "metrics.json").read_text())
    m2 = json.loads((two / "metrics.json").read_text())
    for split in ("val", "test"):
        assert m1[split]["n"] == m2[split]["n"]  # sharded val gathered back: every image counted once
        assert m2[split]["accuracy"] == m1[split]["accuracy"] >= 0.8  # and it learned: not a trivial match
        assert m2[split]["confusion_matrix"] == m1[split]["confusion_matrix"]

    # the DDP bundle has exactly the single-process form and loads in this (non-distributed) process
    meta1, meta2 = (json.loads((r / "model" / "model.json").read_text()) for r in (one, two))
    assert set(meta1) == set(meta2) and meta1["arch"] == meta2["arch"] and meta1["preprocess"] == meta2["preprocess"]
    files = sorted(str(p) for p in data.rglob("*.png"))
    p1, p2 = nextclass.load(one).predict(files), nextclass.load(two).predict(files)
    assert [p.label for p in p2] == [p.label for p in p1]
    assert [p.probability for p in p2] == pytest.approx([p.probability for p in p1], abs=1e-5)
