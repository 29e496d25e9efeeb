"""A run killed with SIGKILL mid-epoch resumes and ends where an uninterrupted run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from conftest import make_folder, run_cli


def _history(run: Path) -> list[str]:
    p = run / "history.csv"
    return p.read_text().splitlines()[1:] if p.exists() else []


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    data = make_folder(tmp_path / "data", n=120, size=32)
    args = ["train", str(data), "--epochs", "3", "--batch-size", "8", "--output", str(tmp_path / "runs"), "-q",
            "--set", "threads=1"]
    # the uninterrupted reference
    run_cli(*args, "--name", "ref")
    ref = tmp_path / "runs" / "ref"
    # the same run, killed during epoch 2
    cmd = [sys.executable, "-m", "nextclass", *args, "--name", "killed"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    run = tmp_path / "runs" / "killed"
    deadline = time.time() + 300
    while len(_history(run)) < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.4)  # well inside epoch 2 (an epoch here takes seconds)
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "metrics.json").exists()
    assert len(_history(run)) < 3
    # resume
    run_cli("train", "--resume", str(run), "-q")
    assert len(_history(run)) == 3
    assert [r.split(",")[:6] for r in _history(run)] == [r.split(",")[:6] for r in _history(ref)]
    a = load_file(str(run / "model" / "model.safetensors"))
    b = load_file(str(ref / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k
