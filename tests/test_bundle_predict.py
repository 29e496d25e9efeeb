"""The bundle round-trips in a new process; predict takes files, folders, globs, PIL and arrays."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import nextclass
from conftest import cli
from nextclass.bundle import BundleError, read_meta


def test_bundle_is_self_describing_and_pickle_free(tiny_run):
    files = sorted(p.name for p in (tiny_run / "model").iterdir())
    # metadata (JSON), weights and the neighbour index (safetensors), the model card (markdown): nothing pickled
    assert files == ["README.md", "model.json", "model.safetensors", "neighbors.safetensors"]
    meta = read_meta(tiny_run)
    assert meta["classes"] == ["circle", "hbar", "vbar"]
    assert meta["arch"]["name"] == "simple_cnn" and meta["arch"]["kwargs"]["num_classes"] == 3
    assert meta["preprocess"]["crop"] == 32 and meta["preprocess"]["channels"] == 3
    assert meta["metrics"]["test"]["n"] > 0 and meta["data_hash"].startswith("sha256:")
    assert {"torch", "timm", "nextclass"} <= set(meta["versions"])


@pytest.mark.slow
def test_same_predictions_after_reload_in_new_process(tiny_run):
    imgs = sorted((tiny_run.parent.parent / "data").rglob("*.png"))[:12]
    here = [(r.label, round(r.probability, 5)) for r in nextclass.load(tiny_run).predict(imgs)]
    code = ("import json,sys,nextclass;"
            "r=nextclass.load(sys.argv[1]).predict(sys.argv[2:]);"
            "print(json.dumps([(x.label, round(x.probability, 5)) for x in r]))")
    out = subprocess.run([sys.executable, "-c", code, str(tiny_run), *map(str, imgs)], capture_output=True, text=True, check=True)
    assert [tuple(x) for x in json.loads(out.stdout)] == here


def test_predict_api_accepts_paths_pil_arrays_and_reports_bad_input(tiny_run, tmp_path):
    p = nextclass.load(tiny_run)
    img_path = sorted((tiny_run.parent.parent / "data" / "hbar").glob("*.png"))[0]
    pil = Image.open(img_path)
    arr = np.asarray(pil)
    (tmp_path / "bad.png").write_text("nope")
    res = p.predict([img_path, pil, arr, str(tmp_path / "bad.png")], topk=2)
    assert res[0].label == res[1].label == res[2].label == "hbar"
    assert res[0].probability == pytest.approx(res[2].probability, abs=1e-6)
    assert len(res[0].topk) == 2 and res[0].topk[0][0] == res[0].label
    assert res[3].error and "not an image" in res[3].error and res[3].label is None


@pytest.mark.slow
def test_predict_cli_files_folders_globs_and_unreadable(tiny_run, tmp_path):
    data = tiny_run.parent.parent / "data"
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "pred.csv"
    p = cli("predict", str(tiny_run), str(data / "circle"), str(data / "hbar" / "*.png"), str(tmp_path / "broken.jpg"),
            "--format", "csv", "--output", str(out))
    rows = out.read_text().splitlines()
    assert len(rows) == 1 + 30 + 30 + 1
    assert "1 unreadable" in p.stderr
    j = json.loads(cli("predict", str(tiny_run), str(data / "vbar" / "vbar_000.png"), "--format", "json").stdout)
    assert j[0]["label"] == "vbar"  # the class the image was drawn as (the tiny run gets all 90 images right)
    assert j[0]["topk"][0]["label"] == "vbar" and j[0]["probability"] == pytest.approx(j[0]["topk"][0]["probability"])
    t = cli("predict", str(tiny_run), str(data / "vbar" / "vbar_001.png"))
    assert "vbar_001.png" in t.stdout


@pytest.mark.slow
def test_evaluate_cli_labels_split_and_size(tiny_run, tmp_path):
    # on a copy whose metrics.json lacks "val": evaluate must write it back (and leave the shared run alone)
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({k: v for k, v in before.items() if k != "val"}))
    p = cli("evaluate", str(run), "--split", "val", "-q")
    assert "val:" in p.stdout and "macro avg" in p.stdout
    m = json.loads((run / "metrics.json").read_text())
    assert m["test"] == before["test"]  # merged, not replaced
    assert m["val"]["split"] == "val" and m["val"]["n"] == 18
    assert m["val"]["accuracy"] == pytest.approx(before["val"]["accuracy"])  # same weights, same split
    assert set(m["val"]["per_class"]) == {"circle", "hbar", "vbar"}
    assert len(m["val"]["confusion_matrix"]) == 3


def test_not_a_bundle_is_a_clear_error(tmp_path):
    with pytest.raises(BundleError, match="not a bundle"):
        nextclass.load(tmp_path)
