"""Shared fixtures: isolated caches, tiny generated datasets, the shared trained runs, and the CLI in-process.

Everything runs offline on CPU in seconds, through the real code paths. The CLI runs in this process
(:func:`cli`, Typer's ``CliRunner``); a real ``nextclass`` process only where the process is what is tested
(start-up imports, a SIGKILL, a server's signals). The session's trained runs are read-only (checked at the end).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(tmp_path_factory):
    """Point every cache (nextclass, matplotlib, torch inductor, XDG) at a temp dir."""
    base = tmp_path_factory.mktemp("env")
    for var, sub in (("XDG_CACHE_HOME", "xdg"), ("NEXTCLASS_CACHE", "nextclass"), ("MPLCONFIGDIR", "mpl"),
                     ("TORCHINDUCTOR_CACHE_DIR", "inductor")):
        os.environ[var] = str(base / sub)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    os.environ["MPLBACKEND"] = "Agg"
    yield


def shape_image(cls: int, rng: np.random.Generator, size: int = 32, channels: int = 3) -> np.ndarray:
    """A synthetic but learnable image: class k draws a distinct shape/colour with noise."""
    img = np.full((size, size, 3), 235, np.uint8)
    img += rng.integers(0, 20, img.shape, dtype=np.uint8)
    c0 = rng.integers(size // 4, size // 2 + 2, 2)
    r = size // 4 + rng.integers(-2, 3)
    yy, xx = np.mgrid[:size, :size]
    colours = [(200, 30, 30), (30, 160, 40), (30, 60, 200), (200, 160, 20), (120, 30, 160), (20, 160, 160)]
    col = colours[cls % len(colours)]
    if cls % 3 == 0:  # disc
        mask = (yy - c0[0] - 4) ** 2 + (xx - c0[1] - 4) ** 2 < r * r
    elif cls % 3 == 1:  # horizontal bar
        mask = (abs(yy - c0[0] - 4) < r // 2) & (abs(xx - size // 2) < size // 2 - 3)
    else:  # vertical bar
        mask = (abs(xx - c0[1] - 4) < r // 2) & (abs(yy - size // 2) < size // 2 - 3)
    img[mask] = col
    if channels == 1:
        return img.mean(axis=2).astype(np.uint8)
    return img


def make_folder(root: Path, classes=("circle", "hbar", "vbar"), n: int = 24, size: int = 32, seed: int = 0,
                splits: dict | None = None, fmt: str = "png", channels: int = 3) -> Path:
    """Write ``root/<class>/*.png`` (or ``root/<split>/<class>/*`` when ``splits={'train': n, ...}``)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    layout = splits or {None: n}
    for split, count in layout.items():
        for k, c in enumerate(classes):
            d = root / split / c if split else root / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                arr = shape_image(k, rng, size, channels)
                Image.fromarray(arr).save(d / f"{c}_{i:03d}.{fmt}")
    return root


@pytest.fixture
def tiny_folder(tmp_path) -> Path:
    return make_folder(tmp_path / "data")


@dataclass
class CliResult:
    """What a ``nextclass`` command did: the exit code and what it printed (as ``subprocess.CompletedProcess``)."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def _process_state_kept():
    """Give back what a command may change in this process: environment, cwd, torch threads/RNG/grad mode,
    numpy's and Python's global RNG, logging handlers and warning filters (a subprocess changed none of them)."""
    import logging
    import random
    import warnings

    import torch

    env, cwd = dict(os.environ), os.getcwd()
    threads, grad, dtype = torch.get_num_threads(), torch.is_grad_enabled(), torch.get_default_dtype()
    rng = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        with warnings.catch_warnings():
            yield
    finally:
        os.environ.clear()
        os.environ.update(env)
        os.chdir(cwd)
        torch.set_num_threads(threads)
        torch.set_grad_enabled(grad)
        torch.set_default_dtype(dtype)
        torch.set_rng_state(rng[0])
        np.random.set_state(rng[1])
        random.setstate(rng[2])
        root.handlers[:], root.level = handlers, level


def cli(*args: str, check: bool = True, env: dict | None = None) -> CliResult:
    """Run the real ``nextclass`` CLI in this process (Typer's ``CliRunner`` on :data:`nextclass.cli.app`).

    stdout and stderr are kept apart as a terminal shows them; an uncaught exception ends with exit code 1
    and its traceback on stderr, as ``python -m nextclass`` would print it. ``env`` is set for the call only.
    With ``check``, a non-zero exit code fails the test with everything the command printed.
    """
    from typer.testing import CliRunner

    from nextclass.cli import app

    with _process_state_kept():
        r = CliRunner().invoke(app, list(args), env=env, prog_name="nextclass")
    stderr = r.stderr
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        stderr += "".join(traceback.format_exception(*r.exc_info))
    res = CliResult(tuple(args), r.exit_code, r.stdout, stderr)
    if check and res.returncode != 0:
        raise AssertionError(f"nextclass {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


def run_cli(*args: str, check: bool = True, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real ``nextclass`` CLI in a subprocess (``python -m nextclass``): only where the process itself is
    under test (start-up imports, a kill, a server's signals); everything else uses :func:`cli`."""
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([sys.executable, "-m", "nextclass", *args], capture_output=True, text=True, timeout=timeout, env=e)
    if check and p.returncode != 0:
        raise AssertionError(f"nextclass {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def _files_state(root: Path) -> dict[str, tuple[int, int]]:
    return {str(f.relative_to(root)): (f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(root.rglob("*"))
            if f.is_file()}


@contextlib.contextmanager
def _left_as_trained(run: Path):
    """Fail at the end of the session if any test wrote into the shared run or its data (order dependence)."""
    before = _files_state(run.parent.parent)
    yield
    after = _files_state(run.parent.parent)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"a test wrote into the shared run {run.name} (copy it first): {changed}"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Iterator[Path]:
    """One tiny trained run (simple_cnn, 3 classes x 30 images at 32 px, 4 epochs) shared by many tests.

    Read-only for every test (a test that writes into a run takes :func:`tiny_run_copy`): at the end of the
    session it must be as training left it, so no test depends on another having run first.
    """
    import nextclass

    base = tmp_path_factory.mktemp("tinyrun")
    data = make_folder(base / "data", n=30)
    run = Path(nextclass.train(data=str(data), model="simple_cnn", epochs=4, output=str(base / "runs"), name="tiny",
                               batch_size=16, lr=3e-3, progress=False))
    with _left_as_trained(run):
        yield run


@pytest.fixture
def tiny_run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    """A private copy of the shared tiny run, for a test that writes into its run (its data stays shared)."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


@pytest.fixture(scope="session")
def trust_run(tmp_path_factory) -> Iterator[Path]:
    """The shared run's trust variant: trained with ``target_accuracy`` (the bundle keeps an abstain threshold)
    on 40 images a class (24 val images: enough for the 95% 'unfamiliar' quantile, 19+); no report."""
    import nextclass

    base = tmp_path_factory.mktemp("trust")
    data = make_folder(base / "data", n=40)
    run = Path(nextclass.train(data=str(data), model="simple_cnn", epochs=2, output=str(base / "runs"), name="trust",
                               batch_size=16, lr=3e-3, progress=False, report=False, target_accuracy=0.9))
    with _left_as_trained(run):
        yield run


SIX_CLASSES = ("c0", "c1", "c2", "c3", "c4", "c5")  # more than five: predictions.csv keeps only the top 5


@pytest.fixture(scope="session")
def six_class_run(tmp_path_factory) -> Iterator[Path]:
    """A run on six classes with two planted wrong labels a class (files named ``flip_*``), a model strong enough
    for the end-of-run label check to flag (120 val/test images), TTA on, prediction sets for coverage 0.9 (fitted
    on its 60 val images), no report (the numbers do not depend on it). Read-only: copy it to write."""
    import nextclass

    base = tmp_path_factory.mktemp("six")
    data = make_folder(base / "data", classes=SIX_CLASSES, n=40, size=24, seed=1)
    for k, c in enumerate(SIX_CLASSES):  # move two images of each class into the next class's folder
        for f in sorted((data / c).glob("*.png"))[:2]:
            shutil.move(str(f), data / SIX_CLASSES[(k + 1) % len(SIX_CLASSES)] / f"flip_{f.name}")
    run = Path(nextclass.train(data=str(data), model="simple_cnn", epochs=8, output=str(base / "runs"), name="six",
                               batch_size=32, lr=3e-3, split=(0.5, 0.25, 0.25), report=False, tta=True,
                               coverage=0.9, progress=False))
    with _left_as_trained(run):
        yield run


def invoke(*args, **kwargs):
    """``nextclass ARGS`` in-process as Typer's ``CliRunner`` leaves it: ``exit_code``, ``output`` (stdout and
    stderr together) and ``exception`` (what escaped), for tests of what a user sees when a command fails."""
    from typer.testing import CliRunner

    from nextclass.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], **kwargs)


def assert_one_line_error(r, *needles: str) -> str:
    """A non-zero exit, no traceback (no exception escaped), exactly one ``error`` line holding every needle."""
    assert r.exit_code != 0, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output, r.output
    errors = [line for line in r.output.splitlines() if line.lstrip().lower().startswith("error")]
    assert len(errors) == 1, r.output
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]
