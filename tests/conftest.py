"""Shared fixtures: isolated caches, tiny generated datasets, and one tiny trained run.

Everything runs offline on CPU in seconds, through the real code paths.
"""

from __future__ import annotations

import os
import subprocess
import sys
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


def run_cli(*args: str, check: bool = True, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real ``nextclass`` CLI in a subprocess (``python -m nextclass``)."""
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([sys.executable, "-m", "nextclass", *args], capture_output=True, text=True, timeout=timeout, env=e)
    if check and p.returncode != 0:
        raise AssertionError(f"nextclass {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One tiny trained run (simple_cnn, 3 classes x 30 images at 32 px, 4 epochs) shared by many tests."""
    import nextclass

    base = tmp_path_factory.mktemp("tinyrun")
    data = make_folder(base / "data", n=30)
    run = nextclass.train(data=str(data), model="simple_cnn", epochs=4, output=str(base / "runs"), name="tiny",
                          batch_size=16, lr=3e-3, progress=False)
    return Path(run)
