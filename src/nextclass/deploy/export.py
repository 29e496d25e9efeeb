"""``nextclass.export``: a run's bundle to ONNX with a parity check against PyTorch, optionally int8.

The steps live in :mod:`.onnx` (graph export, ONNX Runtime sessions, parity) and :mod:`.quantize`
(static int8); this module runs them in order and records the result in the bundle's ``model.json``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from nextclass.deploy.onnx import DEFAULT_OPSET, INT8_NAME, ONNX_NAME, comparison, run_session, session, torch_to_onnx
from nextclass.rundir import RunDir
from nextclass.utils import file_sha256, log

__all__ = ["export_onnx"]


def _run_dir(bundle_dir: Path) -> Path:
    """The run folder holding ``config.yaml``/``split.csv`` for a bundle (itself if standalone)."""
    return bundle_dir.parent if RunDir(bundle_dir.parent).is_run() else bundle_dir


def _fp32(model, folder: Path, val, pp, compare, opts: dict) -> tuple[dict, np.ndarray]:
    """Export ``model.onnx``, run it on the validation images, compare with PyTorch (``compare``: the bundle's
    :func:`~nextclass.deploy.onnx.comparison`); (info block, ONNX logits)."""
    t0 = time.time()
    used = torch_to_onnx(model, torch.from_numpy(val.x[:2]), folder / ONNX_NAME, opset=opts["opset"],
                         exporter=opts["exporter"])
    export_s = time.time() - t0
    with torch.no_grad():
        ref = torch.cat([model(torch.from_numpy(val.x[i:i + 64])) for i in range(0, len(val.x), 64)]).numpy()
    sess = session(folder / ONNX_NAME, opts["threads"])
    got = run_session(sess, val.x)
    par = compare(ref, got, val.labels)
    par["images"] = f"{val.split} split of the run" if val.real else "random inputs (no run data)"
    info = {"file": ONNX_NAME, "exporter": used, "opset": min(opts["opset"], 17) if used == "legacy" else opts["opset"],
            "input": {"name": sess.get_inputs()[0].name, "shape": ["batch", pp.channels, pp.crop, pp.crop],
                      "dtype": "float32", "normalised": True},
            "bytes": (folder / ONNX_NAME).stat().st_size, "export_seconds": round(export_s, 2),
            "weights_sha256": file_sha256(folder / "model.safetensors"), "parity": par}
    log(f"onnx: {folder / ONNX_NAME} ({info['bytes'] / 1e6:.2f} MB, {used} exporter, opset {info['opset']}); "
        f"parity on {par['n']} {par['images']}: max |dp| {par['max_abs_prob_diff']:.2e}, "
        f"top-1 agreement {par['top1_agreement']:.4f}"
        + (f", label decisions agree {par['decision_agreement']:.4f}" if "decision_agreement" in par else ""))
    return info, got


def export_onnx(run: str | os.PathLike, format: str = "onnx", int8: bool = False, *, opset: int = DEFAULT_OPSET,
                exporter: str = "auto", parity_images: int = 256, calib_images: int = 256,
                threads: int | None = None) -> dict:
    """Export a run's bundle to ``model.onnx`` (and ``model.int8.onnx`` with ``int8=True``).

    Args:
        run: a run directory or a bundle directory.
        format: only ``onnx`` for now.
        int8: also write a statically quantised model calibrated on the run's training images
            and report its validation accuracy, size and speed against fp32.
        opset: ONNX opset (the legacy exporter caps it at 17).
        exporter: ``auto`` | ``dynamo`` | ``legacy`` (see :func:`torch_to_onnx`).
        parity_images: validation images used for the parity check (and the int8 accuracy).
        calib_images: training images used to calibrate int8 activation ranges.

    Returns:
        The ``onnx`` block also stored in ``model.json``: file, exporter, opset, size, parity,
        and ``int8`` (file, size, accuracy vs fp32, speed) when requested. A multi-label bundle's parity
        compares per-label sigmoid probabilities and label decisions (:func:`~nextclass.deploy.onnx.multilabel_parity`).

    Example:
        >>> info = nextclass.export("runs/tiny", int8=True)       # doctest: +SKIP
        >>> info["parity"]["top1_agreement"], info["int8"]["accuracy_delta"]  # doctest: +SKIP
        (1.0, 0.0)
    """
    from nextclass.bundle import load_model, resolve_bundle_dir, update_meta
    from nextclass.data.transforms import Preprocess
    from nextclass.deploy.samples import split_images

    if format != "onnx":
        raise ValueError(f"--format {format!r}: only 'onnx' is supported")
    folder = resolve_bundle_dir(run)
    model, meta = load_model(folder)
    pp = Preprocess.from_dict(meta["preprocess"])
    compare = comparison(meta)  # softmax after the temperature; per-label sigmoids for a multi-label bundle
    val = split_images(_run_dir(folder), pp, "val", limit=parity_images)
    info, got = _fp32(model, folder, val, pp, compare, dict(opset=opset, exporter=exporter, threads=threads))
    if int8:
        from nextclass.deploy.quantize import int8_report

        train = split_images(_run_dir(folder), pp, "train", limit=calib_images, seed=1)
        info["int8"] = int8_report(folder / ONNX_NAME, folder / INT8_NAME, calib=train.x, val=val,
                                   fp32_logits=got, compare=compare, threads=threads)
    else:
        old = (meta.get("onnx") or {}).get("int8")
        if old and old.get("weights_sha256") == info["weights_sha256"] and (folder / INT8_NAME).is_file():
            info["int8"] = old  # same weights: the earlier int8 model is still valid
    update_meta(folder, onnx=info)
    return info
