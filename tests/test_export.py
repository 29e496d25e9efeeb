"""ONNX export, parity with PyTorch, int8, and the ONNX Runtime predictor (real ONNX Runtime)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import cli


def exported_copy(tmp_path_factory, tiny_run: Path) -> Path:
    """A copy of the shared tiny run with model.onnx and model.int8.onnx (exported once per session)."""
    import nextclass

    dest = tmp_path_factory.getbasetemp() / "exported-tiny"
    if not (dest / "model" / "model.int8.onnx").is_file():
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(tiny_run, dest)
        nextclass.export(dest, int8=True)
    return dest


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_run) -> Path:
    return exported_copy(tmp_path_factory, tiny_run)


def images_of(run: Path, n: int = 9) -> list[str]:
    data = run.parent.parent / "data" if (run.parent.parent / "data").is_dir() else None
    cfg_data = __import__("yaml").safe_load((run / "config.yaml").read_text())["data"]
    files = sorted(str(p) for p in Path(data or cfg_data).rglob("*.png"))
    return files[:: max(1, len(files) // n)][:n]


def test_export_writes_onnx_with_parity_on_real_val_images(exported: Path):
    import onnxruntime as ort

    meta = json.loads((exported / "model" / "model.json").read_text())
    info = meta["onnx"]
    assert info["exporter"] in ("dynamo", "legacy") and info["file"] == "model.onnx"
    par = info["parity"]
    assert par["images"] == "val split of the run"
    assert par["n"] == json.loads((exported / "metrics.json").read_text())["val"]["n"]
    assert par["top1_agreement"] == 1.0 and par["max_abs_prob_diff"] < 1e-4
    assert par["accuracy"] == par["accuracy_reference"]
    sess = ort.InferenceSession(str(exported / "model" / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 7):  # dynamic batch axis
        out = sess.run(None, {sess.get_inputs()[0].name: np.zeros((batch, 3, 32, 32), np.float32)})[0]
        assert out.shape == (batch, 3)


def test_int8_is_smaller_and_keeps_accuracy(exported: Path):
    import nextclass

    q = json.loads((exported / "model" / "model.json").read_text())["onnx"]["int8"]
    assert (exported / "model" / "model.int8.onnx").is_file()
    assert q["bytes"] < 0.5 * q["fp32_bytes"]
    assert q["calibration_images"] > 0 and q["split"] == "val"
    assert q["accuracy"] is not None and q["accuracy_delta"] >= -0.12  # 18 val images: at most 2 flips
    assert q["int8_img_per_s"] > 0 and q["fp32_img_per_s"] > 0
    from nextclass.deploy.runtime import OnnxPredictor

    pred = OnnxPredictor.from_bundle(exported, int8=True)
    assert pred.backend == "onnx-int8"
    files = images_of(exported, 6)
    ref = nextclass.load(exported).predict(files)
    got = pred.predict(files)
    agree = np.mean([a.label == b.label for a, b in zip(ref, got)])
    assert agree >= 5 / 6


def test_onnx_predictor_matches_torch_predictor(exported: Path, tmp_path: Path):
    import nextclass

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    files = images_of(exported) + [str(bad)]
    torch_pred = nextclass.load(exported)
    onnx_pred = nextclass.load(exported, backend="onnx")
    assert type(onnx_pred).__name__ == "OnnxPredictor" and onnx_pred.backend == "onnx"
    assert onnx_pred.classes == torch_pred.classes and onnx_pred.preprocess == torch_pred.preprocess
    a, b = torch_pred.predict(files, topk=3), onnx_pred.predict(files, topk=3)
    for x, y in zip(a, b):
        assert x.label == y.label and x.error == y.error
        if x.error is None:
            assert abs(x.probability - y.probability) < 1e-5
            assert [l for l, _ in x.topk] == [l for l, _ in y.topk]
    assert b[-1].error and "not an image" in b[-1].error
    ta = torch_pred.predict_proba(torch_pred.to_tensor(files[0]).unsqueeze(0), tta=True)
    tb = onnx_pred.predict_proba(onnx_pred.to_tensor(files[0]).unsqueeze(0), tta=True)
    np.testing.assert_allclose(ta, tb, atol=1e-5)


def test_temperature_applies_to_both_backends(exported: Path, tmp_path: Path):
    import nextclass
    from nextclass.bundle import update_meta

    run = tmp_path / "run"
    shutil.copytree(exported, run)
    f = images_of(run, 1)[0]
    p1 = nextclass.load(run, backend="onnx").predict(f)[0].probability
    update_meta(run / "model", temperature=3.0)
    pt, po = nextclass.load(run).predict(f)[0], nextclass.load(run, backend="onnx").predict(f)[0]
    assert abs(pt.probability - po.probability) < 1e-5
    assert po.probability < p1  # a higher temperature flattens the distribution


def test_stale_or_missing_onnx_is_detected(exported: Path, tiny_run: Path, tmp_path: Path):
    import nextclass
    from nextclass.bundle import update_meta
    from nextclass.deploy.runtime import OnnxUnavailable

    # missing: a copy of the run without ONNX files, whatever other tests did to the shared run
    never = tmp_path / "never-exported"
    shutil.copytree(tiny_run, never)
    for name in ("model.onnx", "model.int8.onnx"):
        (never / "model" / name).unlink(missing_ok=True)
    with pytest.raises(OnnxUnavailable, match="has no model.onnx; run `nextclass export"):
        nextclass.load(never, backend="onnx")
    with pytest.raises(OnnxUnavailable, match="nextclass export"):
        nextclass.load(never / "model", backend="onnx")  # the bundle folder itself, too
    assert nextclass.load(never, backend="auto").backend == "torch"
    # stale: model.onnx from other weights
    run = tmp_path / "stale"
    shutil.copytree(exported, run)
    meta = json.loads((run / "model" / "model.json").read_text())
    update_meta(run / "model", onnx={**meta["onnx"], "weights_sha256": "sha256:" + "0" * 64})
    with pytest.raises(OnnxUnavailable, match="other weights"):
        nextclass.load(run, backend="onnx")
    assert nextclass.load(run, backend="auto").backend == "torch"  # auto falls back, logged
    with pytest.raises(ValueError, match="choose torch, onnx or auto"):
        nextclass.load(run, backend="tensorrt")


@pytest.mark.slow
def test_legacy_exporter_and_cli(tiny_run: Path, tmp_path: Path):
    import nextclass

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    p = cli("export", str(run), "--exporter", "legacy", "--opset", "17")
    assert "legacy exporter" in p.stdout and "model.onnx" in p.stdout
    info = json.loads((run / "model" / "model.json").read_text())["onnx"]
    assert info["exporter"] == "legacy" and info["opset"] == 17 and info["parity"]["top1_agreement"] == 1.0
    f = images_of(run, 3)
    a = json.loads(cli("predict", str(run), *f, "--format", "json", "--backend", "onnx").stdout)
    b = [r.to_dict() for r in nextclass.load(run, backend="torch").predict(f)]
    assert [r["label"] for r in a] == [r["label"] for r in b]
    assert max(abs(x["probability"] - y["probability"]) for x, y in zip(a, b)) < 1e-5
    bad = cli("export", str(tmp_path / "nope"), check=False)
    assert bad.returncode == 2 and "not a bundle" in " ".join(bad.stderr.split())
