"""The endpoints of the server (registered by :func:`nextclass.serve.app.create_app`).

Each endpoint reads the loaded model from ``request.app.state`` (``pred``, ``ident``, ``batcher``,
``explain``, ``cfg``, ``metrics``), set up by the app's lifespan.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from nextclass.serve.schemas import ErrorResponse, Health, ModelsResponse, PredictResponse

__all__ = ["register_routes"]

STATIC = Path(__file__).parent / "static"
BAD = {413: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}


def error(status: int, detail: str, errors: list | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "errors": errors or []}, status_code=status)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 body is a list of pydantic errors; say what to send instead."""
    errs = exc.errors()
    if any(e.get("loc", [None])[-1] in ("files", "file") for e in errs):
        return error(422, "no images: send one or more image files as the multipart form field 'files'"
                     + (" ('file' for /v1/explain)" if request.url.path.endswith("/explain") else ""))
    msg = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', []))}: {e.get('msg')}" for e in errs)
    return error(422, f"invalid request: {msg}")


async def decode_uploads(pred, files: list[UploadFile]) -> tuple[list, list[dict]]:
    """Read and preprocess every upload in a worker thread; returns (tensors, errors)."""
    from nextclass.data.decode import DecodeError

    datas = [await f.read() for f in files]

    def work():
        tensors, errors = [], []
        for i, (f, data) in enumerate(zip(files, datas)):
            try:
                tensors.append(pred.to_tensor(bytes(data)))
            except DecodeError as e:
                errors.append({"file": f.filename or f"#{i}", "index": i, "reason": str(e)})
        return tensors, errors

    return await run_in_threadpool(work)


async def predict(request: Request, files: List[UploadFile] = File(..., description="One or more images."),
                  topk: Optional[int] = Query(None, ge=1, le=1000, description="Classes per image (default: server's)."),
                  target_accuracy: Optional[float] = Query(None, gt=0, le=1, description=(
                      "Abstain below the threshold that gave this accuracy on validation (default: the server's).")),
                  neighbors: Optional[int] = Query(None, ge=0, le=100, description="Nearest training images per image."),
                  neighbors_form: Optional[int] = Form(None, alias="neighbors", ge=0, le=100, include_in_schema=False),
                  coverage: Optional[float] = Query(None, gt=0, lt=1, description=(
                      "Also return each image's prediction set, the classes that hold the true class with this "
                      "probability, e.g. 0.95 (split conformal on validation; default: the server's).")),
                  coverage_form: Optional[float] = Form(None, alias="coverage", gt=0, lt=1, include_in_schema=False)):
    """Top-k classes with calibrated probabilities for each uploaded image (micro-batched), with ``abstained``,
    ``unfamiliar`` (None when the bundle keeps no distance threshold), the prediction ``set`` (query or form field
    ``coverage``, or the server's) and, when asked for (query or form field ``neighbors``), the nearest training
    images. A file that is not a usable image gets ``error`` (its reason) in its place among the results; only a
    request without any usable image is a 422. A multi-label model answers ``labels`` (those at or above their
    threshold) and ``probabilities`` instead of top-k; ``coverage`` and ``target_accuracy`` are 422s for it."""
    st = request.app.state
    cfg, metrics, pred = st.cfg, st.metrics, st.pred
    if len(files) > cfg.max_images:
        return error(413, f"too many images in one request ({len(files)} > {cfg.max_images}); split the upload")
    n_nb = neighbors if neighbors is not None else (neighbors_form or 0)
    cov = coverage if coverage is not None else coverage_form
    try:
        threshold = st.threshold if target_accuracy is None else pred.abstain_threshold(target_accuracy)
        set_threshold = st.set_threshold if cov is None else pred.set_threshold(cov)
        if n_nb:
            pred.neighbor_index()
    except ValueError as e:
        return error(422, str(e))
    tensors, errors = await decode_uploads(pred, files)
    metrics.images["rejected"] += len(errors)
    if len(errors) == len(files):  # nothing to predict: the request as a whole is unusable
        names = ", ".join(f"{e['file']}: {e['reason']}" for e in errors[:5])
        return error(422, f"{len(errors)} of {len(files)} file(s) could not be used as images ({names})", errors)
    probs, dist = await st.batcher.submit(tensors)
    probs = np.asarray(probs)
    far = [None] * len(probs) if dist is None else [bool(d > pred.unfamiliar_distance()) for d in dist]
    metrics.images["predicted"] += len(tensors)
    nbs = await st.batcher.run_exclusive(pred.find_neighbors, torch.stack(tensors), n_nb) if n_nb else None
    if pred.multilabel:
        results = _label_results(pred, probs, far, nbs)
    else:
        k = max(1, min(topk or cfg.topk, len(pred.classes)))
        results = _class_results(pred, probs, k, (threshold, set_threshold), far, nbs)
    return {"model": st.ident["ref"], "backend": pred.backend, "task": pred.task, "threshold": threshold,
            "coverage": _coverage_in_use(pred, cov, set_threshold),
            "results": _in_upload_order(files, results, errors, pred.multilabel)}


def _class_results(pred, probs: np.ndarray, k: int, thresholds: tuple, far: list, nbs: list | None) -> list[dict]:
    """Single-label answers: top-k classes, ``abstained`` and the prediction set (``thresholds``: the abstain and
    the set threshold in use)."""
    threshold, set_threshold = thresholds
    results = []
    sets = pred.sets(probs, set_threshold)
    for i, (pr, ab) in enumerate(zip(probs, pred.abstains(probs, threshold))):
        order = pr.argsort()[::-1][:k]
        results.append({"label": pred.classes[order[0]], "index": int(order[0]),
                        "probability": float(pr[order[0]]), "abstained": bool(ab), "unfamiliar": far[i],
                        "set": None if sets[i] is None else [pred.classes[j] for j in sets[i]],
                        "topk": [{"label": pred.classes[j], "probability": float(pr[j])} for j in order],
                        "neighbors": [n.to_dict() for n in nbs[i]] if nbs is not None else None})
    return results


def _label_results(pred, probs: np.ndarray, far: list, nbs: list | None) -> list[dict]:
    """Multi-label answers, as :meth:`~nextclass.deploy.predictor.Prediction.to_dict` gives them: the labels at or
    above their thresholds (most probable first) and every label's probability."""
    return [{**a, "unfamiliar": far[i], "neighbors": [n.to_dict() for n in nbs[i]] if nbs is not None else None}
            for i, a in enumerate(pred.label_answers(probs))]


def _coverage_in_use(pred, asked: float | None, set_threshold: float | None) -> dict | None:
    """The response's ``coverage``: the promise the sets keep and what they rest on (None: no sets)."""
    if set_threshold is None:
        return None
    e = pred.meta.get("sets") or {}
    inf = set_threshold == float("inf")
    return {"coverage": asked if asked is not None else e.get("coverage"), "threshold": None if inf else set_threshold,
            "too_small": inf, "val_n": e.get("val_n") if asked is None else len(e.get("val_scores") or []),
            "score": e.get("score", "aps")}


def _in_upload_order(files: list[UploadFile], results: list[dict], errors: list[dict],
                     multilabel: bool = False) -> list[dict]:
    """One result per uploaded file, in upload order: a prediction, or ``error`` with the reason for a file
    that could not be used (judged one by one, as ``nextclass predict`` and ``Predictor.predict`` do)."""
    bad = {e["index"]: e["reason"] for e in errors}
    blank = {"labels": None, "probabilities": None} if multilabel else \
        {"label": None, "index": None, "probability": None, "topk": []}
    good = iter(results)
    out = []
    for i, f in enumerate(files):
        name = f.filename or ""
        out.append({"file": name, "error": bad[i], **blank} if i in bad else {"file": name, **next(good)})
    return out


async def explain(request: Request, file: UploadFile = File(..., description="One image."),
                  class_index: Optional[int] = Form(None, description="Class to explain (default: predicted).")):
    """Grad-CAM overlay (PNG) for one image; 404 when Grad-CAM is not installed."""
    from nextclass.data.decode import DecodeError, open_image

    st = request.app.state
    if st.explain is None:
        return error(404, "Grad-CAM is not available in this installation (nextclass.report.cam)")
    if class_index is not None and not 0 <= class_index < len(st.pred.classes):
        return error(422, f"class_index {class_index} out of range 0..{len(st.pred.classes) - 1}")
    data = await file.read()
    try:
        img = await run_in_threadpool(open_image, bytes(data), 3)
    except DecodeError as e:
        return error(422, f"{file.filename}: {e}", [{"file": file.filename or "#0", "index": 0, "reason": str(e)}])

    def render() -> bytes:
        buf = io.BytesIO()
        st.explain(st.pred, img, class_index).save(buf, format="PNG")
        return buf.getvalue()

    try:
        png = await st.batcher.run_exclusive(render)  # on the model thread: never concurrent with a batch
    except ValueError as e:  # CamError and friends: this model or image cannot be explained
        return error(422, f"cannot explain this image: {e}")
    return Response(png, media_type="image/png")


async def models(request: Request):
    """The served model: name, version, classes, metrics, preprocessing and limits."""
    st = request.app.state
    pred, ident, cfg = st.pred, st.ident, st.cfg
    meta = pred.meta
    return {"models": [{
        "name": ident["name"], "version": ident["version"], "ref": ident["ref"], "backend": pred.backend,
        "arch": meta.get("arch", {}).get("name"), "classes": pred.classes, "temperature": pred.temperature,
        "task": pred.task, "multilabel": pred.label_calibration.to_dict(pred.classes) if pred.multilabel else None,
        "preprocess": pred.preprocess.to_dict(), "metrics": meta.get("metrics", {}),
        "data_hash": meta.get("data_hash", ""), "created": ident.get("created") or meta.get("created"),
        "explain": st.explain is not None, "abstain": _abstain_info(pred, st.threshold),
        "sets": _coverage_in_use(pred, st.cfg.coverage, st.set_threshold),
        "headline": headline_accuracy(meta.get("metrics") or {}),
        "neighbors": {k: v for k, v in (meta.get("neighbors") or {}).items()
                      if k in ("n", "dim", "bytes", "thumbnail", "unfamiliar")}
        or None,
        "limits": {"max_images": cfg.max_images, "max_upload_mb": cfg.max_upload_mb, "topk": cfg.topk}}]}


def headline_accuracy(metrics: dict) -> dict | None:
    """The number the web page's header shows: the bundle's *test* accuracy with its 95 % Wilson interval (the
    final number; the validation one chose the checkpoint and is optimistic), else val's, saying which split it is.

    Example:
        >>> h = headline_accuracy({"val": {"accuracy": 1.0, "n": 24}})
        >>> h["split"], [round(x, 3) for x in h["ci"]]
        ('val', [0.862, 1.0])
    """
    from nextclass.metrics.classification import wilson_interval

    for split in ("test", "val"):
        b = metrics.get(split)
        if isinstance(b, dict) and b.get("accuracy") is not None:
            n = int(b.get("n") or 0)
            ci = b.get("accuracy_ci") or (wilson_interval(round(float(b["accuracy"]) * n), n) if n else None)
            return {"split": split, "accuracy": float(b["accuracy"]), "n": n or None, "ci": ci}
    return None


def _abstain_info(pred, threshold: float | None) -> dict:
    a = pred.meta.get("abstain") or {}
    return {"score": a.get("score", "probability"), "threshold": threshold, "target_accuracy": a.get("target_accuracy"),
            "val_coverage": a.get("val_coverage"), "curve": bool(a.get("curve"))}


async def healthz(request: Request):
    """Liveness/readiness: 200 once the model is loaded."""
    st = request.app.state
    return {"status": "ok", "model": st.ident["ref"], "name": st.ident["name"], "version": st.ident["version"],
            "backend": st.pred.backend,
            "uptime_seconds": round(time.time() - st.metrics.started, 3)}


async def prometheus(request: Request):
    """Prometheus text format: requests, latencies, images, batch sizes, queue depth."""
    return PlainTextResponse(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


async def index():
    return FileResponse(STATIC / "index.html", media_type="text/html")


def register_routes(app: FastAPI) -> None:
    """Attach every endpoint and the validation-error handler to ``app``."""
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_api_route("/v1/predict", predict, methods=["POST"], response_model=PredictResponse, responses=BAD,
                      tags=["predict"])
    app.add_api_route("/v1/explain", explain, methods=["POST"], tags=["predict"],
                      responses={200: {"content": {"image/png": {}}}, 404: {"model": ErrorResponse}, **BAD})
    app.add_api_route("/v1/models", models, methods=["GET"], response_model=ModelsResponse, tags=["info"])
    app.add_api_route("/healthz", healthz, methods=["GET"], response_model=Health, tags=["info"])
    app.add_api_route("/metrics", prometheus, methods=["GET"], response_class=PlainTextResponse, tags=["info"])
    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
