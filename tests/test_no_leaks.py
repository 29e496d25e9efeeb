"""No filesystem path reaches a client, and a bundle holds pictures of its training data only when asked (issue 23:
the neighbour index shipped absolute training paths and the API returned them to any client)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import cli, make_folder


def _data_root(run: Path) -> str:
    from nextclass.rundir import RunDir

    return str(Path(RunDir(run).read_config().data).resolve())


def test_index_ids_are_relative_to_the_data_root(trust_run):
    from nextclass.neighbors import NeighborIndex

    index = NeighborIndex.load(trust_run / "model")
    root = _data_root(trust_run)
    assert len(index.ids) == len(index) > 0
    assert all(not Path(i).is_absolute() and root not in i and (Path(root) / i).is_file() for i in index.ids)
    assert index.thumbs.shape[1:3] == (32, 32)  # on by default


def test_predictions_with_neighbors_carry_no_path_in_api_and_cli_json(trust_run, tmp_path):
    import nextclass

    root = _data_root(trust_run)
    img = next(Path(root).rglob("*.png"))
    preds = nextclass.load(trust_run).predict([str(img)], neighbors=3)
    ids = [n.id for n in preds[0].neighbors]
    assert len(ids) == 3 and not any(Path(i).is_absolute() or root in i for i in ids)
    out = cli("predict", str(trust_run), str(img), "--neighbors", "3", "--format", "json").stdout
    rows = json.loads(out)
    nbs = rows[0]["neighbors"]
    assert len(nbs) == 3 and all(n["thumbnail"].startswith("data:image/png;base64,") for n in nbs)
    text = json.dumps(nbs)
    assert root not in text and str(tmp_path.anchor + "tmp") not in text


@pytest.fixture(scope="module")
def no_thumbs_run(tmp_path_factory) -> Path:
    import nextclass

    base = tmp_path_factory.mktemp("nothumbs")
    data = make_folder(base / "data", n=12, size=16)
    return Path(nextclass.train(data=str(data), model="simple_cnn", epochs=1, output=str(base / "runs"), name="nt",
                                batch_size=8, report=False, robustness=False, neighbor_thumbnails=False,
                                progress=False))


def test_no_neighbor_thumbnails_keeps_no_pictures_in_the_bundle(no_thumbs_run):
    import nextclass
    from nextclass.neighbors import NeighborIndex

    index = NeighborIndex.load(no_thumbs_run / "model")
    assert index.thumbs.size == 0 and len(index) > 0
    meta = json.loads((no_thumbs_run / "model" / "model.json").read_text())
    assert meta["neighbors"]["thumbnail"] == 0
    img = next(Path(_data_root(no_thumbs_run)).rglob("*.png"))
    nbs = nextclass.load(no_thumbs_run).predict([np.asarray(__import__("PIL.Image").Image.open(img))], neighbors=2)[0]
    assert [n.to_dict()["thumbnail"] for n in nbs.neighbors] == [None, None]


def test_train_help_offers_no_neighbor_thumbnails():
    out = " ".join(cli("train", "--help", env={"COLUMNS": "250"}).stdout.split())
    assert "--no-neighbor-thumbnails" in out


def test_card_says_what_of_the_training_data_the_bundle_holds(no_thumbs_run, trust_run):
    with_thumbs = (trust_run / "model" / "README.md").read_text()
    without = (no_thumbs_run / "model" / "README.md").read_text()
    assert "holds small copies of training images" in with_thumbs and "--no-neighbor-thumbnails" in with_thumbs
    assert "no pictures (trained with `--no-neighbor-thumbnails`)" in without
    assert "small copies" not in without
