"""suggest marks picks ``unfamiliar`` as predict does, and --skip-unfamiliar leaves them out (issue 23: 8 of the top
20 picks on Fashion-MNIST were noise or flat grey images)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import cli, shape_image


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    """New pictures like the training data (shapes), and noise and flat grey images unlike any of it."""
    from PIL import Image

    root = tmp_path_factory.mktemp("pool")
    rng = np.random.default_rng(11)
    for i in range(12):
        Image.fromarray(shape_image(i % 3, rng)).save(root / f"shape_{i:02d}.png")
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / f"noise_{i}.png")
    for i, g in enumerate((40, 90, 128, 170, 220, 250)):
        Image.fromarray(np.full((32, 32, 3), g, np.uint8)).save(root / f"grey_{i}.png")
    return root


@pytest.fixture(scope="module")
def flagged(trust_run, pool) -> dict[str, bool]:
    """What ``predict`` says of each pool image: unfamiliar or not (the reference for suggest)."""
    import nextclass

    paths = sorted(str(p.resolve()) for p in pool.glob("*.png"))
    preds = nextclass.load(trust_run).predict(paths)
    out = {p: r.unfamiliar for p, r in zip(paths, preds)}
    assert all(v is not None for v in out.values())  # the trust run keeps a threshold: every image is judged
    assert sum(out.values()) >= 3, out  # the noise / grey images are beyond it (else this test proves nothing)
    return out


def test_picks_marked_unfamiliar_as_predict_marks_them(trust_run, pool, flagged, tmp_path):
    import nextclass

    res = nextclass.suggest(trust_run, str(pool), n=len(flagged), strategy="uncertainty",
                            output=tmp_path / "next.csv", progress=False)
    rows = res["rows"]
    assert rows and all(r["unfamiliar"] is flagged[r["path"]] for r in rows), [(r["path"], r["unfamiliar"])
                                                                                 for r in rows]
    assert res["unfamiliar_picks"] == sum(r["unfamiliar"] for r in rows) > 0
    assert res["unfamiliar_left_out"] == 0 and res["unfamiliar_distance"] > 0
    with open(tmp_path / "next.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == ["rank", "path", "predicted", "probability", "margin", "score", "reason", "unfamiliar"]
    assert [t["unfamiliar"] for t in table] == [str(int(r["unfamiliar"])) for r in rows]


def test_skip_unfamiliar_leaves_them_out_and_says_how_many(trust_run, pool, flagged, tmp_path):
    import nextclass

    res = nextclass.suggest(trust_run, str(pool), n=len(flagged), skip_unfamiliar=True, progress=False)
    picked = {r["path"] for r in res["rows"]}
    far = {p for p, v in flagged.items() if v}
    assert picked and not picked & far and not any(r["unfamiliar"] for r in res["rows"])
    skipped = set(res["skipped"])  # near-duplicates of training images are counted there, not twice
    assert res["unfamiliar_left_out"] == len(far - skipped) > 0 and res["skip_unfamiliar"]
    assert len(res["rows"]) == res["candidates"] - res["skipped_duplicates"] - res["unfamiliar_left_out"]

    out = tmp_path / "cli.csv"
    r = cli("suggest", str(trust_run), str(pool), "-n", "30", "-o", str(out), "-q", "--skip-unfamiliar")
    assert f"left out {res['unfamiliar_left_out']} unfamiliar image(s)" in r.stdout, r.stdout
    r = cli("suggest", str(trust_run), str(pool), "-n", "30", "-o", str(out), "-q", "--strategy", "uncertainty")
    n_far = sum(flagged[p] for p in flagged if p not in skipped)
    assert f"{n_far} of " in r.stdout and "pick(s) unfamiliar" in r.stdout and "--skip-unfamiliar" in r.stdout, r.stdout
    assert "unfamiliar" in r.stdout.splitlines()[[i for i, ln in enumerate(r.stdout.splitlines()) if "rank" in ln][0]]
    r = cli("suggest", str(trust_run), str(pool), "-n", "3", "-o", str(out), "-q", "--json")
    assert all("unfamiliar" in row for row in json.loads(r.stdout)["rows"])


def test_a_bundle_without_a_threshold(tiny_run, pool, tmp_path):
    import nextclass

    meta = json.loads((tiny_run / "model" / "model.json").read_text())
    assert not (meta.get("neighbors") or {}).get("unfamiliar")  # 18 val images: too few for the 95% quantile
    res = nextclass.suggest(tiny_run, str(pool), n=4, output=tmp_path / "n.csv", progress=False)
    assert res["unfamiliar_distance"] is None and all(r["unfamiliar"] is None for r in res["rows"])
    with open(tmp_path / "n.csv", newline="") as fh:
        assert {t["unfamiliar"] for t in csv.DictReader(fh)} == {""}
    r = cli("suggest", str(tiny_run), str(pool), "-n", "4", "-o", str(tmp_path / "m.csv"), "--skip-unfamiliar",
            check=False)
    assert r.returncode == 2 and "--skip-unfamiliar needs" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "m.csv").exists()


def test_select_leave_out_is_not_counted_as_duplicates():
    from nextclass.curation.selection import select

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8))
    probs = rng.dirichlet(np.ones(3), 40)
    sel = select(probs, x, x[:0], 40, leave_out=[1, 2, 3])
    assert sorted(sel.left_out.tolist()) == [1, 2, 3] and len(sel.skipped) == 0
    assert len(sel.order) == 37 and not {1, 2, 3} & set(sel.order.tolist())
