"""hflip auto: the mirrored-nearest-neighbour check on every kind of data we have (issue 24)."""

from __future__ import annotations

import numpy as np
import pytest


def _arrows(n=400, seed=0):
    """Orientation-sensitive: arrows pointing left (class 0) or right (class 1)."""
    rng = np.random.default_rng(seed)
    y, a = np.arange(n) % 2, np.zeros((n, 32, 32, 3), np.uint8)
    for i in range(n):
        r, c = rng.integers(6, 24), rng.integers(4, 12)
        a[i, r - 2:r + 2, c:c + 16] = 200
        tip = c + 16 if y[i] else c
        for k in range(5):
            a[i, r - k:r + k + 1, (tip - k) if y[i] else (tip + k)] = 255
    return a, y


def _letters(seed=0):
    """Rendered letters with mirror twins (b/d, p/q) and others: class changes or vanishes when mirrored."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    try:
        font = lambda s: ImageFont.truetype("DejaVuSans.ttf", s)  # noqa: E731
        font(12)
    except OSError:
        font = lambda s: ImageFont.load_default()  # noqa: E731
    imgs, ys = [], []
    for li, ch in enumerate("bdpqgjaesz"):
        for _ in range(50):
            im = Image.new("L", (28, 28), 0)
            ImageDraw.Draw(im).text((int(rng.integers(2, 10)), int(rng.integers(0, 6))), ch, fill=255,
                                    font=font(int(rng.integers(14, 22))))
            imgs.append(np.asarray(im))
            ys.append(li)
    return np.stack(imgs)[..., None], np.array(ys)


def _symmetric_blobs(n=300, seed=0):
    """Class = colour of a centred disc: a mirror image is the same class."""
    rng = np.random.default_rng(seed)
    y, a = np.arange(n) % 3, np.zeros((n, 24, 24, 3), np.uint8)
    yy, xx = np.mgrid[:24, :24]
    for i in range(n):
        a[i] = rng.integers(0, 60, (24, 24, 3))
        mask = (yy - 12 + rng.integers(-3, 4)) ** 2 + (xx - 12) ** 2 < rng.integers(20, 40)
        a[i][mask] = (np.eye(3)[y[i]] * 200 + 40).astype(np.uint8)
    return a, y


@pytest.mark.parametrize("make,flips", [(_arrows, False), (_letters, False), (_symmetric_blobs, True)])
def test_mirror_check_decides_from_the_data(make, flips):
    from nextclass.data.mirror import mirror_check

    a, y = make()
    check = mirror_check(a, np.arange(len(y)), y)
    assert check.hflip is flips, check.why
    assert ("do not look like" in check.why) is (not flips) or check.kept is None


def test_digits_turn_flips_off_and_no_signal_keeps_the_default():
    from sklearn.datasets import load_digits

    from nextclass.data.mirror import mirror_check

    d = load_digits()
    arr = (d.images * 16).clip(0, 255).astype(np.uint8)[..., None]
    check = mirror_check(arr, np.arange(len(arr)), d.target)
    assert check.hflip is False and check.kept < 0.5
    noise = np.random.default_rng(0).integers(0, 255, (200, 16, 16, 1), dtype=np.uint8)
    unsure = mirror_check(noise, np.arange(200), np.arange(200) % 4)
    assert unsure.hflip is True and unsure.kept is None and "inconclusive" in unsure.why


def test_the_verdict_is_kept_by_the_pixels_key_and_read_back(tmp_path, monkeypatch):
    """A rerun on the same decoded pixels, rows, labels and seed reads the verdict back (the check cost ~1.5 s of a
    cached probe rerun); other labels or a damaged file compute it again."""
    from nextclass.data import mirror

    arrows, y = _arrows()
    first = mirror.kept_mirror_check(arrows, np.arange(len(y)), y, 0, "pixels-key", tmp_path)
    assert first == mirror.mirror_check(arrows, np.arange(len(y)), y, 0) and not first.hflip
    kept = list((tmp_path / "mirror").glob("*.json"))
    assert len(kept) == 1
    monkeypatch.setattr(mirror, "mirror_check", lambda *a: (_ for _ in ()).throw(AssertionError("computed again")))
    assert mirror.kept_mirror_check(arrows, np.arange(len(y)), y, 0, "pixels-key", tmp_path) == first
    monkeypatch.undo()
    kept[0].write_text("{not json")
    assert mirror.kept_mirror_check(arrows, np.arange(len(y)), y, 0, "pixels-key", tmp_path) == first
    mirror.kept_mirror_check(arrows, np.arange(len(y)), 1 - y, 0, "pixels-key", tmp_path)  # other labels: a new file
    assert len(list((tmp_path / "mirror").glob("*.json"))) == 2
