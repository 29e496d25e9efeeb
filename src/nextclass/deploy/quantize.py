"""int8: ONNX Runtime static quantisation (QDQ), calibrated on the run's training images.

Static quantisation fixes activation ranges ahead of time from calibration batches (MinMax),
so inference runs integer kernels without measuring ranges per request. The QDQ format keeps
the graph readable and is what ONNX Runtime's CPU kernels fuse best. Weights are quantised per
channel. On AVX2 CPUs without VNNI, u8s8 products can saturate; ``reduce_range`` (7-bit
weights) avoids that at a small accuracy cost, see
https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html#when-and-why-do-i-need-to-try-u8u8
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from nextclass.utils import log

__all__ = ["quantize_int8", "int8_report", "throughput"]


class _Reader:
    """``CalibrationDataReader`` over a float32 NCHW array, in small batches."""

    def __init__(self, name: str, x: np.ndarray, batch: int = 16):
        self.batches = iter([{name: x[i:i + batch]} for i in range(0, len(x), batch)])

    def get_next(self):
        return next(self.batches, None)


def _has_vnni() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags or "amx_int8" in flags


def quantize_int8(fp32_path: str | os.PathLike, out_path: str | os.PathLike, calib: np.ndarray, *,
                  per_channel: bool = True, reduce_range: bool | None = None) -> Path:
    """Write a statically quantised (QDQ, u8 activations / s8 weights) copy of an fp32 ONNX model.

    Args:
        calib: float32 NCHW calibration inputs (already normalised, as the model takes them).
        reduce_range: 7-bit weights; default on for CPUs without VNNI (see the module docstring).

    Example:
        >>> quantize_int8("model.onnx", "model.int8.onnx", train_batch)  # doctest: +SKIP
    """
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calib) == 0:
        raise ValueError("int8 calibration needs at least one image")
    out_path = Path(out_path)
    reduce_range = (not _has_vnni()) if reduce_range is None else reduce_range
    name = ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:  # shape inference + fusions first, as ONNX Runtime recommends; optional
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        except Exception as e:  # noqa: BLE001
            log(f"[yellow]NOTE[/]: quantisation pre-processing skipped ({type(e).__name__}: {str(e)[:120]})")
            pre = Path(fp32_path)
        out_tmp = Path(tmp) / "int8.onnx"
        quantize_static(str(pre), str(out_tmp), _Reader(name, calib), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=per_channel,
                        reduce_range=reduce_range, calibrate_method=CalibrationMethod.MinMax)
        os.replace(out_tmp, out_path)
    return out_path


def throughput(sess, x: np.ndarray, batch: int = 32, seconds: float = 1.5, min_reps: int = 3) -> float:
    """Images per second of ``sess`` on batches of ``x`` (median of repeated timed runs)."""
    name = sess.get_inputs()[0].name
    b = x[:batch] if len(x) >= batch else np.concatenate([x] * (batch // max(len(x), 1) + 1))[:batch]
    sess.run(None, {name: b})  # warm-up
    times: list[float] = []
    t_end = time.perf_counter() + seconds
    while len(times) < min_reps or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        sess.run(None, {name: b})
        times.append(time.perf_counter() - t0)
    return float(len(b) / np.median(times))


def int8_report(fp32_path: Path, int8_path: Path, *, calib: np.ndarray, val, fp32_logits: np.ndarray,
                temperature: float = 1.0, threads: int | None = None, compare=None) -> dict:
    """Quantise, then compare int8 with fp32 on the validation images: accuracy, agreement, size, speed.

    ``compare``: the bundle's parity check (:func:`~nextclass.deploy.onnx.comparison`; None: softmax after
    ``temperature``). A multi-label bundle's report adds ``decision_agreement``, ``same_labels`` and, with val
    labels, ``exact_match`` / ``exact_match_fp32`` (its ``accuracy`` fields stay None).

    Example:
        >>> int8_report(Path("model.onnx"), Path("model.int8.onnx"), calib=x_train, val=val, fp32_logits=lg)  # doctest: +SKIP
    """
    from nextclass.deploy.onnx import parity, run_session, session
    from nextclass.utils import file_sha256

    t0 = time.time()
    quantize_int8(fp32_path, int8_path, calib)
    q_s = time.time() - t0
    s32, s8 = session(fp32_path, threads), session(int8_path, threads)
    lg8 = run_session(s8, val.x)
    par = compare(fp32_logits, lg8, val.labels) if compare else parity(fp32_logits, lg8, temperature, val.labels)
    speed32, speed8 = throughput(s32, val.x), throughput(s8, val.x)
    out = {
        "file": int8_path.name, "format": "QDQ u8/s8 per-channel, MinMax", "calibration_images": int(len(calib)),
        "bytes": int8_path.stat().st_size, "fp32_bytes": fp32_path.stat().st_size,
        "size_ratio": round(int8_path.stat().st_size / fp32_path.stat().st_size, 4),
        "accuracy_fp32": par.get("accuracy_reference"), "accuracy": par.get("accuracy"),
        "accuracy_delta": (par["accuracy"] - par["accuracy_reference"]) if "accuracy" in par else None,
        "top1_agreement": par["top1_agreement"], "max_abs_prob_diff": par["max_abs_prob_diff"],
        "images": int(len(val.x)), "split": val.split,
        "fp32_img_per_s": round(speed32, 1), "int8_img_per_s": round(speed8, 1),
        "speedup": round(speed8 / speed32, 3), "quantize_seconds": round(q_s, 2),
        "weights_sha256": file_sha256(fp32_path.parent / "model.safetensors"),
    }
    out.update({k: par[k] for k in ("decision_agreement", "same_labels", "exact_match") if k in par})
    if "exact_match_reference" in par:
        out["exact_match_fp32"] = par["exact_match_reference"]
    acc = (f"val accuracy {out['accuracy']:.4f} vs fp32 {out['accuracy_fp32']:.4f} ({out['accuracy_delta']:+.4f})"
           if out["accuracy"] is not None else f"top-1 agreement with fp32 {out['top1_agreement']:.4f}")
    if "decision_agreement" in out:  # multi-label: the label decisions at the bundle's thresholds
        acc += f", label decisions agree {out['decision_agreement']:.4f}"
    log(f"int8: {int8_path} ({out['bytes'] / 1e6:.2f} MB, {out['size_ratio']:.2f}x fp32); {acc}; "
        f"speed {speed8:.0f} vs {speed32:.0f} img/s ({out['speedup']:.2f}x) at batch 32")
    return out
