"""Trust (issue 15): abstain, nearest training images, the model card - through the real CLI, API and server."""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import cli


def _files(run: Path, n: int = 6) -> list[str]:
    files = sorted((run.parent.parent / "data").rglob("*.png"))
    return [str(f) for f in files[:: max(1, len(files) // n)][:n]]


def _bundle_copy(run: Path, dest: Path, unfamiliar: float | None = None, **abstain) -> Path:
    """A copy of the run's bundle with ``abstain`` fields (and the ``unfamiliar`` distance) overridden in model.json."""
    shutil.copytree(run / "model", dest)
    meta = json.loads((dest / "model.json").read_text())
    meta["abstain"].update(abstain)
    if unfamiliar is not None:
        meta["neighbors"]["unfamiliar"]["distance"] = unfamiliar
    (dest / "model.json").write_text(json.dumps(meta))
    return dest


def _median_distance(run: Path, files: list[str]) -> tuple[float, list[bool]]:
    """A distance threshold that half of ``files`` exceed, and which ones do (from the real nearest distances)."""
    import torch

    import nextclass

    pred = nextclass.load(run)
    d = pred.nearest_distance(torch.stack([pred.to_tensor(f) for f in files]))
    th = float(np.median(d))
    return th, [bool(x > th) for x in d]


def test_threshold_meets_the_target_with_the_largest_coverage():
    from nextclass.metrics.selective import abstain_entry, choose_threshold, scores_from_logits, threshold_from_curve

    rng = np.random.default_rng(0)
    scores = rng.random(500)
    correct = rng.random(500) < scores  # confident predictions are right more often
    t, cov, acc = choose_threshold(scores, correct, 0.9)
    keep = scores >= t
    assert correct[keep].mean() >= 0.9 and keep.mean() == pytest.approx(cov) and acc == pytest.approx(correct[keep].mean())
    lower = scores[scores < t].max()  # the next lower threshold misses the target
    assert correct[scores >= lower].mean() < 0.9
    t_none, cov_none, _ = choose_threshold(scores, np.zeros(500, bool), 0.5)
    assert cov_none == 0.0 and t_none > scores.max()
    logits = rng.normal(size=(200, 4)) * 3
    labels = rng.integers(0, 4, 200)
    entry = abstain_entry(logits, labels, 1.5, 0.6)
    assert entry["threshold"] == pytest.approx(threshold_from_curve(entry["curve"], 0.6)[0])
    s = scores_from_logits(logits, 1.5)
    assert set(s) == {"probability", "margin", "energy"} and (s["margin"] <= s["probability"]).all()


def test_distance_threshold_is_the_conformal_quantile():
    from nextclass.metrics.selective import distance_threshold

    rng = np.random.default_rng(1)
    val = rng.gamma(2.0, 0.1, 199)
    th = distance_threshold(val, 0.95)
    assert th == np.sort(val)[189]  # ceil(200 * 0.95) = 190th smallest
    assert (val > th).mean() <= 0.05
    # the guarantee, on average over val draws: a new image drawn like val is flagged with probability <= 5%
    # (uniform distances: P(new > th) = 1 - th; E[190th smallest of 199] = 190/200, so exactly 5% here)
    miss = [1 - distance_threshold(rng.random(199), 0.95) for _ in range(4000)]
    assert 0.048 < np.mean(miss) <= 0.0505
    assert distance_threshold(val[:18], 0.95) == float("inf")  # too few for the 95% rank: never flag
    assert distance_threshold(val[:19], 0.95) == val[:19].max()
    with pytest.raises(ValueError, match="quantile"):
        distance_threshold(val, 1.0)


def test_run_keeps_threshold_index_and_card(trust_run: Path):
    meta = json.loads((trust_run / "model" / "model.json").read_text())
    metrics = json.loads((trust_run / "metrics.json").read_text())
    a = meta["abstain"]
    assert a["target_accuracy"] == 0.9 and a["threshold"] is not None and 0 <= a["val_coverage"] <= 1 and a["curve"]
    for split in ("val", "test"):
        assert set(metrics[split]["selective"]["auroc"]) == {"probability", "margin", "energy"}
        assert metrics[split]["selective"]["risk_coverage"]
    assert "at_threshold" in metrics["test"]["selective"]
    nb = metrics["test"]["neighbors"]
    assert 0 <= nb["knn_accuracy"] <= 1 and nb["index_n"] == meta["neighbors"]["n"] > 0
    assert (trust_run / "model" / "neighbors.safetensors").stat().st_size == meta["neighbors"]["bytes"]
    card = (trust_run / "model" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: nextclass\n")
    acc = metrics["test"]["accuracy"]
    assert f"value: {round(acc, 6)}" in card and f"test accuracy: {100 * acc:.2f}%" in card
    u = meta["neighbors"]["unfamiliar"]
    assert u["score"] == "knn_distance" and u["quantile"] == 0.95 and u["val_n"] == metrics["val"]["n"]
    assert 0 < u["distance"] < 2 and u["val_rate"] <= 0.05 and 0 <= nb["unfamiliar_rate"] <= 1
    assert f"is above {u['distance']:.4f}" in card and "AUROC 0.880" in card  # the threshold and why this score
    assert f"calibration error on test ({metrics['test']['calibration']['n']} images)" in card  # test's n, not val's
    issues = json.loads((trust_run / "audit.json").read_text())["label_issues"]
    if issues["skipped"]:  # the gate: too few val/test images or too weak a model for the flags to mean much
        assert issues["skipped"] in card
    else:
        assert f"disagrees with {issues['n']} of {issues['checked']} images' labels" in card and "label_issues.csv" in card
    assert "**The bundle holds small copies of training images**: a 32x32-pixel thumbnail" in card
    assert (trust_run / "label_issues.csv").exists()


def test_unfamiliar_python_cli_and_http(trust_run: Path, tmp_path: Path):
    import httpx

    import nextclass
    from test_serve import LiveServer

    files = _files(trust_run)
    th, want = _median_distance(trust_run, files)
    assert any(want) and not all(want)
    bundle = _bundle_copy(trust_run, tmp_path / "bundle", unfamiliar=th)
    pred = nextclass.load(bundle)
    assert [p.unfamiliar for p in pred.predict(files)] == want  # on by default when the bundle keeps a threshold
    with_nb = pred.predict(files, neighbors=2)  # the same flag from the neighbours' search
    assert [p.unfamiliar for p in with_nb] == want == [p.neighbors[0].distance > th for p in with_nb]
    assert [p.unfamiliar for p in pred.predict(files, unfamiliar=False)] == [None] * len(files)
    rows = json.loads(cli("predict", str(bundle), *files, "--format", "json").stdout)
    assert [r["unfamiliar"] for r in rows] == want
    table = list(csv.DictReader(io.StringIO(cli("predict", str(bundle), *files, "--format", "csv").stdout)))
    assert [r["unfamiliar"] for r in table] == [str(int(w)) for w in want]
    off = cli("predict", str(bundle), *files, "--format", "csv", "--no-unfamiliar").stdout
    assert [r["unfamiliar"] for r in csv.DictReader(io.StringIO(off))] == [""] * len(files)
    with LiveServer(str(bundle), backend="torch", max_batch=4) as srv:  # several micro-batches
        up = [("files", (Path(f).name, open(f, "rb"), "image/png")) for f in files]
        body = httpx.post(srv.url + "/v1/predict", files=up, timeout=60).json()
        assert [r["unfamiliar"] for r in body["results"]] == want
        info = httpx.get(srv.url + "/v1/models").json()["models"][0]["neighbors"]["unfamiliar"]
        assert info["distance"] == pytest.approx(th) and info["quantile"] == 0.95


def test_abstain_python_cli_and_http(trust_run: Path, tmp_path: Path):
    import httpx

    import nextclass
    from test_serve import LiveServer

    files = _files(trust_run)
    probs = [p.probability for p in nextclass.load(trust_run).predict(files)]
    th = float(np.median(probs))  # half the images fall below it
    bundle = _bundle_copy(trust_run, tmp_path / "bundle", threshold=th)
    preds = nextclass.load(bundle).predict(files)
    want = [p < th for p in probs]
    assert [p.abstained for p in preds] == want and any(want) and not all(want)
    assert [p.label for p in preds] == [p.label for p in nextclass.load(trust_run).predict(files)]  # best guess kept
    rows = json.loads(cli("predict", str(bundle), *files, "--format", "json").stdout)
    assert [r["abstained"] for r in rows] == want
    table = list(csv.DictReader(io.StringIO(cli("predict", str(bundle), *files, "--format", "csv").stdout)))
    assert [r["abstained"] == "1" for r in table] == want
    # a target given at predict time overrides the bundle's threshold
    t99 = nextclass.load(bundle).abstain_threshold(0.5)
    assert [p.abstained for p in nextclass.load(bundle).predict(files, target_accuracy=0.5)] == [p < t99 for p in probs]
    with LiveServer(str(bundle), backend="torch") as srv:
        up = [("files", (Path(f).name, open(f, "rb"), "image/png")) for f in files]
        body = httpx.post(srv.url + "/v1/predict", files=up, timeout=60).json()
        assert [r["abstained"] for r in body["results"]] == want and body["threshold"] == pytest.approx(th)
        health = httpx.get(srv.url + "/healthz").json()
        assert health["name"] == "trust" and "/" not in health["model"]  # the model's name, not a server path


def _check_neighbors(items: list[dict], k: int, classes: list[str]) -> None:
    from PIL import Image

    assert len(items) == k
    assert [n["distance"] for n in items] == sorted(n["distance"] for n in items)
    for n in items:
        assert n["label"] in classes and n["id"].endswith(".png")
        png = base64.b64decode(n["thumbnail"].split(",", 1)[1])
        assert Image.open(io.BytesIO(png)).size == (32, 32)


def test_neighbors_from_cli_api_and_server(trust_run: Path):
    import httpx

    import nextclass
    from test_serve import LiveServer

    files = _files(trust_run, 3)
    pred = nextclass.load(trust_run)
    res = pred.predict(files, neighbors=3)
    for p in res:
        assert len(p.neighbors) == 3 and p.neighbors[0].thumbnail.shape == (32, 32, 3)
        _check_neighbors(p.to_dict()["neighbors"], 3, pred.classes)
    rows = json.loads(cli("predict", str(trust_run), *files, "--format", "json", "--neighbors", "3").stdout)
    for r, p in zip(rows, res):
        _check_neighbors(r["neighbors"], 3, pred.classes)
        assert [n["id"] for n in r["neighbors"]] == [n.id for n in p.neighbors]
    with LiveServer(str(trust_run), backend="torch") as srv:
        up = [("files", (Path(f).name, open(f, "rb"), "image/png")) for f in files]
        body = httpx.post(srv.url + "/v1/predict", files=up, data={"neighbors": "3"}, timeout=60).json()
        for r in body["results"]:
            _check_neighbors(r["neighbors"], 3, pred.classes)
        up = [("files", (Path(f).name, open(f, "rb"), "image/png")) for f in files[:1]]
        assert len(httpx.post(srv.url + "/v1/predict?neighbors=2", files=up, timeout=60).json()["results"][0]["neighbors"]) == 2


def test_bundle_without_the_new_fields_still_loads_and_predicts(trust_run: Path, tmp_path: Path):
    import nextclass

    old = tmp_path / "old"
    shutil.copytree(trust_run / "model", old)
    meta = json.loads((old / "model.json").read_text())
    for key in ("abstain", "neighbors"):
        del meta[key]
    (old / "model.json").write_text(json.dumps(meta))
    (old / "neighbors.safetensors").unlink()
    (old / "README.md").unlink()
    files = _files(trust_run, 3)
    preds = nextclass.load(old).predict(files)
    assert [p.label for p in preds] == [p.label for p in nextclass.load(trust_run).predict(files)]
    assert not any(p.abstained for p in preds) and all(p.neighbors is None for p in preds)
    assert all(p.unfamiliar is None for p in preds)
    with pytest.raises(ValueError, match="no 'unfamiliar' distance threshold"):
        nextclass.load(old).predict(files, unfamiliar=True)
    rows = list(csv.DictReader(io.StringIO(cli("predict", str(old), *files, "--format", "csv").stdout)))
    assert [r["unfamiliar"] for r in rows] == [""] * len(files)
    kept_index = tmp_path / "kept"  # a bundle with an index from before the threshold: neighbours, no flag
    shutil.copytree(trust_run / "model", kept_index)
    meta = json.loads((kept_index / "model.json").read_text())
    del meta["neighbors"]["unfamiliar"]
    (kept_index / "model.json").write_text(json.dumps(meta))
    res = nextclass.load(kept_index).predict(files, neighbors=2)
    assert all(p.unfamiliar is None and len(p.neighbors) == 2 for p in res)
    with pytest.raises(ValueError, match="no nearest-neighbour index"):
        nextclass.load(old).predict(files, neighbors=3)
    with pytest.raises(ValueError, match="no validation curve"):
        nextclass.load(old).predict(files, target_accuracy=0.9)
    p = cli("predict", str(old), files[0], "--neighbors", "2", check=False)
    assert p.returncode == 2 and "nearest-neighbour index" in p.stderr


def test_evaluate_keeps_the_trust_numbers_the_card_and_the_report_sections(trust_run: Path, tmp_path: Path):
    import nextclass

    run = tmp_path / "run"
    shutil.copytree(trust_run, run)
    before = json.loads((run / "metrics.json").read_text())["test"]
    card = (run / "model" / "README.md").read_text()
    nextclass.evaluate(run, progress=False, robustness=False)  # replaces the test block, re-renders report.html
    after = json.loads((run / "metrics.json").read_text())["test"]
    assert after["selective"]["auroc"] == pytest.approx(before["selective"]["auroc"])
    assert after["selective"]["at_threshold"] == pytest.approx(before["selective"]["at_threshold"])
    for key in ("k", "knn_accuracy", "head_accuracy", "wrong_total", "unfamiliar_rate", "index_n", "index_bytes"):
        assert after["neighbors"][key] == pytest.approx(before["neighbors"][key]), key
    assert after["neighbors"]["wrong"] == before["neighbors"]["wrong"]
    assert (run / "model" / "README.md").read_text() == card  # the card describes the bundle as trained
    html = (run / "report.html").read_text()
    trust = html[html.index('<section id="trust">'):html.index('<section id="robustness">')]
    assert "Nearest training images" in trust and 'id="unfamiliar"' in trust and "risk-coverage curve" in trust
    assert "No nearest-neighbour index" not in trust and "No selective-classification" not in trust


def test_store_keeps_the_card_and_index(trust_run: Path, tmp_path: Path):
    from nextclass.deploy import store as st

    v1 = st.add(trust_run, "trusty", store=tmp_path / "store")
    assert (v1 / "README.md").read_text() == (trust_run / "model" / "README.md").read_text()
    assert (v1 / "neighbors.safetensors").is_file()


def test_explain_feature_maps_writes_a_grid_per_stage(trust_run: Path, tmp_path: Path):
    from PIL import Image

    import nextclass
    from nextclass.report.feature_maps import stage_activations

    f = _files(trust_run, 1)[0]
    cli("explain", str(trust_run), f, "--feature-maps", "-o", str(tmp_path / "fm"))
    out = tmp_path / "fm" / f"{Path(f).stem}_features.png"
    assert Image.open(out).size[0] > 9 * 90  # the input + 8 channels per row
    pred = nextclass.load(trust_run)
    stages = stage_activations(pred.model, pred.to_tensor(f).unsqueeze(0))
    assert [tuple(t.shape[1:]) for _, t in stages] == [(32, 32), (16, 16), (8, 8), (4, 4)]  # simple_cnn at 32 px
