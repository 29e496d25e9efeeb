"""Loading and serving a multi-label bundle (issue 26): the Python API, ``nextclass predict``, ONNX export and its
runtime, the HTTP server and its web page, all on one tiny bundle written directly with ``save_bundle``.

The bundle's network is a small ``simple_cnn`` with 3 outputs whose biases put every image's raw logits near
``cat +6``, ``dog +2.5``, ``bird -6``; with temperatures ``[1, 2, 0.5]`` the calibrated probabilities are about
1.0, 0.78 and 0.0. The thresholds ``[0.5, 0.99, 0.3]`` then predict ``cat`` only: ``dog`` is above 0.5 but below
its own 0.99. Expected numbers are computed here by hand from the model's logits (``sigmoid(z / T)``).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, cli, invoke

LABELS = ["cat", "dog", "bird"]
TEMPERATURES = [1.0, 2.0, 0.5]
THRESHOLDS = [0.5, 0.99, 0.3]
ML = {"task": "multi-label", "temperatures": TEMPERATURES, "thresholds": THRESHOLDS, "threshold_rule": "max-f1"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A bare multi-label bundle folder (no run around it)."""
    from nextclass.bundle import save_bundle
    from nextclass.data.transforms import Preprocess
    from nextclass.models.factory import build

    arch = {"name": "simple_cnn", "kwargs": {"num_classes": 3, "widths": [8, 16], "hidden": 16, "drop_rate": 0.0}}
    torch.manual_seed(0)
    model = build(arch).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(0.2)
        model.classifier.bias.copy_(torch.tensor([6.0, 2.5, -6.0]))
    folder = tmp_path_factory.mktemp("ml") / "model"
    save_bundle(folder, model, arch=arch, classes=LABELS, preprocess=Preprocess(32, 32), temperature=1.0, extra=ML)
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[str]:
    """Four random 40x40 PNGs (resized to 32 by the bundle's preprocessing)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("ml-images")
    rng = np.random.default_rng(0)
    out = []
    for i in range(4):
        p = root / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(p)
        out.append(str(p))
    return out


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> str:
    p = tmp_path_factory.mktemp("ml-broken") / "broken.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return str(p)


@pytest.fixture(scope="module")
def expected(bundle, images) -> np.ndarray:
    """Calibrated probabilities computed by hand: the bundle's network, then ``sigmoid(z / T_label)``."""
    import nextclass

    pred = nextclass.load(bundle)
    with torch.no_grad():
        z = pred.model(torch.stack([pred.to_tensor(f) for f in images])).numpy().astype(np.float64)
    return 1 / (1 + np.exp(-z / np.array(TEMPERATURES)))


@pytest.fixture(scope="module")
def exported(bundle, tmp_path_factory) -> Path:
    import nextclass

    dest = tmp_path_factory.mktemp("ml-onnx") / "model"
    shutil.copytree(bundle, dest)
    nextclass.export(dest, parity_images=8)
    return dest


def test_predict_answers_the_labels_above_their_thresholds(bundle, images, broken, expected):
    import nextclass

    pred = nextclass.load(bundle)
    assert pred.task == "multi-label" and pred.multilabel
    assert np.all(expected[:, 1] > 0.5) and np.all(expected[:, 1] < 0.99)  # dog: above 0.5, below its 0.99
    assert np.all(expected[:, 0] > 0.5) and np.all(expected[:, 2] < 0.3)
    rows = pred.predict(images + [broken])
    for r, p in zip(rows, expected):
        assert r.error is None and r.label is None and r.index is None and r.topk is None  # no single answer
        assert [l for l, _ in r.labels] == ["cat"]  # dog (0.78) stays out: its threshold is 0.99
        assert r.labels[0][1] == pytest.approx(p[0], abs=1e-6)
        assert list(r.probabilities) == LABELS
        assert list(r.probabilities.values()) == pytest.approx(p, abs=1e-6)
        d = r.to_dict()
        assert set(d) == {"source", "task", "labels", "probabilities", "unfamiliar"} and d["task"] == "multi-label"
        assert d["labels"] == [{"label": "cat", "probability": pytest.approx(p[0], abs=1e-6)}]
    bad = rows[-1].to_dict()
    assert bad["error"] and bad["labels"] is None and bad["probabilities"] is None
    json.dumps([r.to_dict() for r in rows])  # JSON-ready
    probs = pred.predict_proba(torch.stack([pred.to_tensor(f) for f in images]))
    assert probs.shape == (4, 3) and not np.allclose(probs.sum(1), 1)  # per-label sigmoids, not a softmax


def test_no_label_several_labels_and_single_label_features_refused(bundle, images, expected):
    from nextclass.bundle import load_model
    from nextclass.deploy.predictor import Predictor

    model, meta = load_model(bundle)
    none = Predictor(model, {**meta, "thresholds": [0.9999, 0.9999, 0.9999]}).predict(images[:2])
    assert [r.labels for r in none] == [[], []] and none[0].to_dict()["labels"] == []
    two = Predictor(model, {**meta, "thresholds": [0.5, 0.5, 0.3]}).predict(images[:1])[0]
    assert [l for l, _ in two.labels] == ["cat", "dog"]  # most probable first
    pred = Predictor(model, meta)
    assert pred.set_threshold() is None and pred.abstain_threshold() is None
    with pytest.raises(ValueError, match="prediction sets are for single-label models; this bundle is multi-label"):
        pred.predict(images[:1], coverage=0.9)
    with pytest.raises(ValueError, match="single-label models; this bundle is multi-label"):
        pred.predict(images[:1], target_accuracy=0.9)
    with pytest.raises(ValueError, match="'thresholds' has 2 values for 3 labels"):
        Predictor(model, {**meta, "thresholds": [0.5, 0.5]})
    single = Predictor(model, {k: v for k, v in meta.items() if k not in ML})  # same network read as single-label
    assert single.task == "single-label" and single.predict(images[:1])[0].label == "cat"


def test_cli_predict_json_csv_table(bundle, images, broken, expected):
    r = cli("predict", str(bundle), *images, broken, "--format", "csv", check=False)
    assert r.returncode == 0, r.stderr
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows[0] == ["path", "labels", "cat", "dog", "bird", "unfamiliar", "error"]
    for row, f, p in zip(rows[1:], images, expected):
        assert row[:2] == [f, "cat"] and row[5:] == ["", ""]
        assert [float(x) for x in row[2:5]] == pytest.approx(p, abs=1e-5)
    assert rows[-1][0] == broken and rows[-1][1:5] == ["", "", "", ""] and rows[-1][6]
    got = json.loads(cli("predict", str(bundle), *images[:2], "--format", "json").stdout)
    assert [g["labels"][0]["label"] for g in got] == ["cat", "cat"] and "label" not in got[0]
    assert list(got[0]["probabilities"].values()) == pytest.approx(expected[0], abs=1e-6)
    table = cli("predict", str(bundle), images[0]).stdout
    assert f"cat {expected[0, 0]:.3f}" in table and f"dog {expected[0, 1]:.2f}, bird 0.00" in table
    assert_one_line_error(invoke("predict", bundle, images[0], "--coverage", "0.9"),
                          "prediction sets are for single-label models; this bundle is multi-label")


def test_multilabel_parity_compares_decisions_not_softmax():
    from nextclass.deploy.onnx import comparison

    compare = comparison({"classes": LABELS, **ML})
    ref = np.array([[6.0, 2.5, -6.0], [6.0, 4.0, -6.0]])
    got = ref + np.array([[0.0, 7.0, 0.0], [0.0, 0.0, 0.0]])  # dog of image 0 crosses its 0.99 threshold
    par = compare(ref, got, np.array([[1, 0, 0], [1, 1, 0]]))
    assert par["task"] == "multi-label" and par["top1_agreement"] == 1.0  # a top-1 check alone sees no difference
    assert par["decision_agreement"] == pytest.approx(5 / 6) and par["same_labels"] == 0.5
    assert par["exact_match_reference"] == 0.5 and par["exact_match"] == 0.0
    assert par["max_abs_prob_diff"] == pytest.approx(1 / (1 + np.exp(-9.5 / 2)) - 1 / (1 + np.exp(-1.25)))


def test_onnx_export_parity_and_runtime_match_torch(exported, images, expected):
    import nextclass
    import onnxruntime as ort

    info = json.loads((exported / "model.json").read_text())["onnx"]
    par = info["parity"]
    assert par["task"] == "multi-label" and par["decision_agreement"] == 1.0 and par["same_labels"] == 1.0
    assert par["max_abs_prob_diff"] < 1e-5 and "accuracy" not in par
    sess = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.stack([nextclass.load(exported).to_tensor(f).numpy() for f in images])
    assert sess.run(None, {sess.get_inputs()[0].name: x})[0][:, 0].min() > 1  # raw logits out, no sigmoid inside
    onnx = nextclass.load(exported, backend="onnx")
    assert onnx.backend == "onnx" and onnx.task == "multi-label"
    torch_rows = [r.to_dict() for r in nextclass.load(exported).predict(images)]
    for o, t, p in zip((r.to_dict() for r in onnx.predict(images)), torch_rows, expected):
        assert [x["label"] for x in o["labels"]] == [x["label"] for x in t["labels"]] == ["cat"]
        assert list(o["probabilities"].values()) == pytest.approx(list(t["probabilities"].values()), abs=1e-5)
        assert list(o["probabilities"].values()) == pytest.approx(p, abs=1e-5)


@pytest.fixture(scope="module")
def live(exported):
    from test_serve import LiveServer

    with LiveServer(str(exported), backend="onnx") as srv:
        yield srv


def test_http_answers_the_multilabel_shape(live, images, broken, expected):
    import httpx

    files = [("files", (Path(f).name, Path(f).read_bytes(), "image/png")) for f in images[:2] + [broken]]
    r = httpx.post(f"{live.url}/v1/predict", files=files, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["task"] == "multi-label" and body["backend"] == "onnx"
    good, bad = body["results"][:2], body["results"][2]
    for g, f, p in zip(good, images, expected):
        assert set(g) == {"file", "error", "labels", "probabilities", "unfamiliar", "neighbors"}
        assert g["file"] == Path(f).name and [x["label"] for x in g["labels"]] == ["cat"]
        assert list(g["probabilities"].values()) == pytest.approx(p, abs=1e-5)  # = torch's numbers
    assert bad["error"] and bad["labels"] is None and "label" not in bad
    info = httpx.get(f"{live.url}/v1/models").json()["models"][0]
    assert info["task"] == "multi-label" and info["classes"] == LABELS
    assert info["multilabel"]["thresholds"] == dict(zip(LABELS, THRESHOLDS)) and info["multilabel"]["rule"] == "max-f1"
    r = httpx.post(f"{live.url}/v1/predict", files=files[:1], params={"coverage": 0.9}, timeout=60)
    assert r.status_code == 422 and "this bundle is multi-label" in r.json()["detail"]


def test_web_page_shows_the_labels_above_threshold(live, images, expected):
    from test_webpage import CHROMIUM, browser_page

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (make sysdeps)")
    from playwright.sync_api import expect

    with browser_page() as (page, errors):
        page.goto(live.url + "/")
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        expect(page.locator("#model-info")).to_contain_text("3 labels (multi-label, thresholds max-f1)")
        assert not page.locator("#topk-option").is_visible()
        page.set_input_files("#picker", images[0])
        done = page.locator(".result.done")
        expect(done).to_have_count(1, timeout=30_000)
        assert done.locator(".label").inner_text() == "cat"
        assert done.locator(".bars li").count() == 1  # cat only: dog is below its threshold
        assert done.locator(".bars li").inner_text().split() == ["cat", f"{100 * expected[0, 0]:.1f}%"]
        assert not errors, errors
