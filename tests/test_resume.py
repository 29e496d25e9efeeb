"""A run killed with SIGKILL during epoch 2 resumes and ends where an uninterrupted run ends."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import cli, make_folder
from nextclass.engine.checkpoint import load_checkpoint


def _history(run: Path) -> list[str]:
    p = run / "history.csv"
    return p.read_text().splitlines()[1:] if p.exists() else []


def _checkpoint_epoch(run: Path) -> int | None:
    """The epoch recorded in ``checkpoints/last.safetensors`` (written atomically), None before the first."""
    path = run / "checkpoints" / "last.safetensors"
    return load_checkpoint(path).get("epoch") if path.exists() else None


def _wait_for_epoch_1(proc: subprocess.Popen, run: Path, timeout: float = 300) -> None:
    """Poll until the epoch-1 checkpoint and its history row exist; fail if the run ends or the deadline passes.

    The history row is written after the checkpoint, so once both are there the process is past epoch 1
    and, with epochs taking seconds, far from the end of epoch 2.
    """
    deadline = time.monotonic() + timeout
    while not (_checkpoint_epoch(run) == 1 and len(_history(run)) == 1):
        assert proc.poll() is None, f"training exited ({proc.returncode}) before the epoch-1 checkpoint was seen"
        assert _checkpoint_epoch(run) in (None, 1), "missed the end of epoch 1"
        assert time.monotonic() < deadline, f"no epoch-1 checkpoint in {run} after {timeout:.0f} s"
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be killed"


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    data = make_folder(tmp_path / "data", n=120, size=32)
    args = ["train", str(data), "--epochs", "3", "--batch-size", "8", "--output", str(tmp_path / "runs"), "-q",
            "--set", "threads=1"]
    # the uninterrupted reference
    cli(*args, "--name", "ref")
    ref = tmp_path / "runs" / "ref"
    # the same run, killed during epoch 2: as soon as epoch 1 is on disk (its checkpoint, then its history row)
    cmd = [sys.executable, "-m", "nextclass", *args, "--name", "killed"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    run = tmp_path / "runs" / "killed"
    try:
        _wait_for_epoch_1(proc, run)
    finally:
        proc.kill()  # SIGKILL; a no-op when it already exited
        proc.wait()
    # what the resume starts from: epoch 1 complete, nothing of a later epoch, no finished run
    assert _checkpoint_epoch(run) == 1
    assert len(_history(run)) == 1
    assert not (run / "metrics.json").exists()
    # resume
    cli("train", "--resume", str(run), "-q")
    assert len(_history(run)) == 3
    assert [r.split(",")[:6] for r in _history(run)] == [r.split(",")[:6] for r in _history(ref)]
    a = load_file(str(run / "model" / "model.safetensors"))
    b = load_file(str(ref / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k
