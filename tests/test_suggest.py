"""suggest: which unlabelled images to label next (pure selection, a real run, the CLI)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest


def _clusters(n_per: int, centres: np.ndarray, rng, spread: float = 0.05) -> np.ndarray:
    return np.concatenate([c + rng.normal(0, spread, (n_per, centres.shape[1])) for c in centres])


def test_select_skips_copies_of_labelled_images_and_spreads_picks():
    from nextclass.curation.selection import select

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (6, 16))
    labelled = _clusters(20, centres, rng)
    pool = _clusters(30, centres, rng)
    copies = labelled[:10] + rng.normal(0, 1e-3, (10, 16))  # re-encoded copies of labelled images
    x = np.concatenate([pool, copies])
    probs = np.full((len(x), 3), 1 / 3)  # all equally uncertain: copies are the most uncertain of all below
    probs[:180] = [0.6, 0.3, 0.1]
    sel = select(probs, x, labelled, 30)
    assert set(sel.skipped.tolist()) == set(range(180, 190)) and sel.threshold > 0
    assert not set(sel.order.tolist()) & set(sel.skipped.tolist()) and len(set(sel.order.tolist())) == 30
    assert len({int(i) // 30 for i in sel.order}) == 6  # every cluster gets picks, not one confusing region
    unc = select(probs, x, labelled, 5, strategy="uncertainty")
    assert not set(unc.order.tolist()) & set(range(180, 190))  # copies skipped whatever the strategy
    rnd = select(probs, x, labelled, 5, strategy="random", seed=1)
    assert len(rnd.order) == 5 and rnd.reason[0] in ("uncertain", "far from labelled", "uncertain + far from labelled",
                                                      "diversity")
    with pytest.raises(ValueError, match="choose one of suggest, uncertainty, random"):
        select(probs, x, labelled, 5, strategy="nope")


def test_uncertainty_weighting_prefers_uncertain_images():
    from nextclass.curation.selection import margins, select

    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (400, 8))
    probs = np.tile([0.98, 0.01, 0.01], (400, 1))
    probs[::4] = [0.4, 0.38, 0.22]  # a quarter are uncertain
    sel = select(probs, x, x[:0], 40)
    assert (margins(probs[sel.order]) < 0.1).mean() > 0.7  # a quarter of the pool, ~80 % of the picks (measured)


def _copy_training_images(run: Path, dest: Path, k: int) -> list[str]:
    from PIL import Image

    with open(run / "split.csv", newline="") as fh:
        train = [r["path"] for r in csv.DictReader(fh) if r["split"] == "train"][:k]
    out = []
    for i, p in enumerate(train[:2]):  # exact copies under another name
        q = dest / f"exact_{i}.png"
        Image.open(p).save(q)
        out.append(str(q.resolve()))
    for i, p in enumerate(train[2:]):  # resized JPEG copies: the same picture, re-encoded
        q = dest / f"copy_{i}.jpg"
        Image.open(p).convert("RGB").resize((40, 40)).save(q, quality=92)
        out.append(str(q.resolve()))
    return out


def test_suggest_on_a_real_run_and_cli(tiny_run, tmp_path):
    import nextclass
    from typer.testing import CliRunner

    from nextclass.cli import app

    from PIL import Image

    pool = tmp_path / "pool"
    pool.mkdir()
    rng = np.random.default_rng(7)
    for i in range(30):  # new, distinct pictures (the shape generator's images are look-alikes by the audit's test)
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((32, 32), Image.BICUBIC).save(pool / f"new_{i}.png")
    copies = _copy_training_images(tiny_run, pool, 5)
    res = nextclass.suggest(tiny_run, str(pool), n=8, output=tmp_path / "next.csv", progress=False)
    assert res["candidates"] == 35 and len(res["rows"]) == 8
    assert set(copies) <= set(res["skipped"]) and res["skipped_duplicates"] <= 7, res["skipped"]
    assert not {r["path"] for r in res["rows"]} & set(copies)
    with open(tmp_path / "next.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["rank", "path", "predicted", "probability", "margin", "score", "reason", "unfamiliar"]
    assert [int(r["rank"]) for r in rows] == list(range(1, 9)) and rows[0]["predicted"] in ("circle", "hbar", "vbar")
    man = tmp_path / "pool.csv"
    man.write_text("path\n" + "\n".join(str(p) for p in sorted(pool.glob("new_*.png"))[:6]) + "\n")
    r = CliRunner().invoke(app, ["suggest", str(tiny_run), str(man), "-n", "3", "-o", str(tmp_path / "n2.csv"), "-q"])
    assert r.exit_code == 0, r.output
    assert "suggest" in r.output and len((tmp_path / "n2.csv").read_text().splitlines()) == 4
    r = CliRunner().invoke(app, ["suggest", str(tiny_run), str(tmp_path / "nowhere")])
    assert r.exit_code == 2 and "not a folder of images" in r.output
