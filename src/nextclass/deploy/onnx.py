"""``nextclass export RUN --format onnx [--int8]``: ONNX beside the bundle, with a parity check.

The exported graph takes the *normalised* NCHW float32 batch (dynamic batch size) and returns
logits; preprocessing and the calibration temperature stay in ``model.json`` so every backend
shares them (:class:`~nextclass.deploy.runtime.OnnxPredictor` applies both).

Parity is measured on real validation images of the run (probabilities after the bundle's
temperature; max absolute difference and top-1 agreement; for a multi-label bundle the per-label sigmoid
probabilities after its per-label temperatures and the label decisions at its thresholds, see
:func:`multilabel_parity`) and stored in ``model.json`` under
``onnx``, with the exporter used and a hash of the weights it was exported from (a stale
``model.onnx`` is then detected at load time).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

from typing import Callable

import numpy as np
import torch

from nextclass.deploy.multilabel import MULTI_LABEL, LabelCalibration, bundle_task
from nextclass.utils import log

__all__ = ["torch_to_onnx", "session", "run_session", "parity", "multilabel_parity", "comparison", "ONNX_NAME",
           "INT8_NAME", "DEFAULT_OPSET"]

ONNX_NAME = "model.onnx"
INT8_NAME = "model.int8.onnx"
#: opset 18 is the lowest the dynamo exporter emits without a version-conversion pass.
DEFAULT_OPSET = 18


def _dynamo_export(model, sample, path: Path, opset: int) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    # The dynamo exporter prints progress to stdout; keep stdout clean for the CLI's own output.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(model, (sample,), None, dynamo=True, external_data=False, opset_version=opset,
                                 input_names=["input"], output_names=["logits"],
                                 dynamic_shapes={"x": {0: batch}} if _arg_name(model) == "x" else ({0: batch},))
        prog.save(str(path), external_data=False)


def _arg_name(model) -> str:
    import inspect

    params = list(inspect.signature(model.forward).parameters)
    return params[0] if params else "x"


def _legacy_export(model, sample, path: Path, opset: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (sample,), str(path), dynamo=False, opset_version=min(opset, 17),
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def torch_to_onnx(model: torch.nn.Module, sample: torch.Tensor, path: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                  exporter: str = "auto") -> str:
    """Export ``model`` (eval mode, fp32) to one self-contained ONNX file with a dynamic batch axis.

    Args:
        exporter: ``dynamo`` (torch.export based), ``legacy`` (TorchScript based) or ``auto``:
            dynamo first, then legacy when dynamo fails for this model (logged).

    Returns:
        The exporter that produced the file.

    Example:
        >>> torch_to_onnx(model, torch.zeros(2, 3, 32, 32), "m.onnx")  # doctest: +SKIP
        'dynamo'
    """
    import onnx

    if exporter not in ("auto", "dynamo", "legacy"):
        raise ValueError(f"exporter {exporter!r}: choose auto, dynamo or legacy")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    model = model.eval().float()
    sample = sample.float()
    used = "legacy" if exporter == "legacy" else "dynamo"
    try:
        if used == "dynamo":
            try:
                _dynamo_export(model, sample, tmp, opset)
            except Exception as e:  # noqa: BLE001 - any exporter failure means "try the other one"
                if exporter == "dynamo":
                    raise
                log(f"[yellow]NOTE[/]: dynamo exporter failed ({type(e).__name__}: {str(e)[:200]}); using the legacy exporter")
                used = "legacy"
        if used == "legacy":
            _legacy_export(model, sample, tmp, opset)
        onnx.checker.check_model(str(tmp), full_check=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return used


def session(path: str | os.PathLike, threads: int | None = None, spin: bool = True):
    """An ONNX Runtime CPU session with full graph optimisation.

    Args:
        spin: let idle intra-op threads spin-wait for work (ONNX Runtime's default). Turn it off
            when other threads of the process need the cores between runs (a server decoding
            uploads, a predictor decoding the next batch): spinning threads steal that CPU.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = int(threads)
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def run_session(sess, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Logits for every row of ``x`` (float32 NCHW), in batches."""
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: x[i:i + batch_size]})[0] for i in range(0, len(x), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def parity(ref_logits: np.ndarray, logits: np.ndarray, temperature: float = 1.0, labels: np.ndarray | None = None) -> dict:
    """Agreement of two models' outputs on the same inputs (probabilities after ``temperature``).

    Example:
        >>> parity(torch_logits, onnx_logits, 1.0)["top1_agreement"]  # doctest: +SKIP
        1.0
    """
    from nextclass.metrics.classification import softmax

    p, q = softmax(ref_logits, temperature), softmax(logits, temperature)
    out = {"n": int(len(p)), "max_abs_prob_diff": float(np.abs(p - q).max()) if len(p) else 0.0,
           "max_abs_logit_diff": float(np.abs(ref_logits - logits).max()) if len(p) else 0.0,
           "top1_agreement": float((p.argmax(1) == q.argmax(1)).mean()) if len(p) else 1.0}
    if labels is not None and len(labels):
        out["accuracy_reference"] = float((p.argmax(1) == labels).mean())
        out["accuracy"] = float((q.argmax(1) == labels).mean())
    return out


def multilabel_parity(ref_logits: np.ndarray, logits: np.ndarray, calibration: LabelCalibration,
                      targets: np.ndarray | None = None) -> dict:
    """Agreement of two multi-label models' outputs: per-label sigmoid probabilities after the bundle's per-label
    temperatures, and the label decisions at its thresholds (never a softmax across labels).

    Returns ``n``, ``task``, ``max_abs_prob_diff``, ``max_abs_logit_diff``, ``top1_agreement`` (same most
    probable label), ``decision_agreement`` (share of image-label decisions that agree), ``same_labels`` (share of
    images given the same label set) and, with (N, L) 0/1 ``targets``, ``exact_match_reference`` / ``exact_match``
    (share of images whose every label is right).

    Example:
        >>> c = LabelCalibration(np.ones(2), np.full(2, 0.5))
        >>> multilabel_parity(np.array([[2.0, -1.0]]), np.array([[2.0, 0.1]]), c)["decision_agreement"]
        0.5
    """
    p, q = calibration.probs(ref_logits), calibration.probs(logits)
    dp, dq = calibration.decisions(p), calibration.decisions(q)
    n = len(p)
    out = {"n": int(n), "task": MULTI_LABEL, "max_abs_prob_diff": float(np.abs(p - q).max()) if n else 0.0,
           "max_abs_logit_diff": float(np.abs(ref_logits - logits).max()) if n else 0.0,
           "top1_agreement": float((p.argmax(1) == q.argmax(1)).mean()) if n else 1.0,
           "decision_agreement": float((dp == dq).mean()) if n else 1.0,
           "same_labels": float((dp == dq).all(1).mean()) if n else 1.0}
    if targets is not None and np.ndim(targets) == 2 and len(targets):
        y = np.asarray(targets).astype(bool)
        out["exact_match_reference"] = float((dp == y).all(1).mean())
        out["exact_match"] = float((dq == y).all(1).mean())
    return out


def comparison(meta: dict) -> Callable[..., dict]:
    """The parity check a bundle's outputs need, as ``f(ref_logits, logits, labels=None) -> dict``:
    :func:`parity` (softmax after ``temperature``) for a single-label bundle, :func:`multilabel_parity` (per-label
    sigmoid after ``temperatures``, decisions at ``thresholds``) for a multi-label one.

    Example:
        >>> comparison({"classes": ["a"], "temperature": 1.0})(np.zeros((1, 1)), np.zeros((1, 1)))["top1_agreement"]
        1.0
    """
    if bundle_task(meta) == MULTI_LABEL:
        calibration = LabelCalibration.from_meta(meta)
        return lambda ref, got, labels=None: multilabel_parity(ref, got, calibration, labels)
    temperature = float(meta.get("temperature", 1.0))
    return lambda ref, got, labels=None: parity(ref, got, temperature, labels)
