"""The FastAPI app behind ``nextclass serve``: the bundle's own preprocessing, micro-batched.

Endpoints: ``POST /v1/predict`` (multipart field ``files``, repeated), ``POST /v1/explain``
(Grad-CAM PNG, when :mod:`nextclass.report.cam` is installed), ``GET /v1/models``,
``GET /healthz``, ``GET /metrics`` (Prometheus), ``GET /`` (the web page), ``/docs`` (OpenAPI).

Bad input never produces a 500: an oversize body gets 413, too many images 413, a missing
``files`` field 422, and an empty, corrupt or non-image file 422 naming the file and the reason.
"""

from __future__ import annotations

import io
import json
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from .batching import MicroBatcher
from .metrics import Metrics
from .middleware import Guard
from .schemas import ErrorResponse, Health, ModelInfo, ModelsResponse, PredictResponse

__all__ = ["create_app", "load_for_serving", "ServeConfig", "serve"]

STATIC = Path(__file__).parent / "static"


@dataclass
class ServeConfig:
    """Server knobs (all have CLI flags on ``nextclass serve``)."""

    backend: str = "auto"  # torch | onnx | auto (ONNX when the bundle has a current model.onnx)
    int8: bool = False  # use model.int8.onnx
    store: Optional[str] = None  # model store folder for NAME / NAME@vN
    max_batch: int = 32  # images per model call
    max_wait_ms: float = 2.0  # how long a lone request waits for company
    max_images: int = 16  # images per request
    max_upload_mb: float = 20.0  # request body limit
    topk: int = 5
    threads: Optional[int] = None  # ONNX Runtime / torch intra-op threads (default: all cores)
    extra: dict = field(default_factory=dict)


def load_for_serving(model: Any, cfg: ServeConfig):
    """``model`` (Predictor, path, NAME or NAME@vN) → (predictor, identity dict with name/version/ref)."""
    from ..bundle import resolve_bundle_dir
    from ..predictor import Predictor

    if isinstance(model, Predictor):
        folder = Path(model.path) if model.path else None
        pred = model
    else:
        p = Path(str(model)).expanduser()
        if not p.exists():
            from ..store import resolve

            p = resolve(str(model), store=cfg.store)
        folder = resolve_bundle_dir(p)
        pred = _open(folder, cfg)
    ident = {"name": folder.parent.name if folder and folder.name == "model" else (folder.name if folder else "model"),
             "version": None}
    manifest = folder / "manifest.json" if folder else None
    if manifest is not None and manifest.is_file():
        m = json.loads(manifest.read_text())
        ident = {"name": m["name"], "version": f"v{m['version']}", "created": m.get("created")}
    ident["ref"] = f"{ident['name']}@{ident['version']}" if ident["version"] else str(folder or ident["name"])
    return pred, ident


def _open(folder: Path, cfg: ServeConfig):
    from ..bundle import load_model
    from ..predictor import Predictor

    if cfg.backend not in ("torch", "onnx", "auto"):
        raise ValueError(f"backend {cfg.backend!r}: choose torch, onnx or auto")
    if cfg.threads:
        import torch

        torch.set_num_threads(int(cfg.threads))
    if cfg.backend == "torch":
        model, meta = load_model(folder)
        return Predictor(model, meta, path=str(folder))
    from ..export.runtime import OnnxPredictor

    return OnnxPredictor.from_bundle(folder, fallback_torch=cfg.backend == "auto", int8=cfg.int8, threads=cfg.threads)


def _warm_up(pred) -> None:
    """One prediction at start-up: lazy imports and first-call allocations happen before traffic."""
    from PIL import Image

    pp = pred.preprocess
    pred.predict_proba(pred.to_tensor(Image.new("L" if pp.channels == 1 else "RGB", (pp.size, pp.size))).unsqueeze(0))


def _explain_fn():
    try:
        from ..report.cam import cam_overlay
    except ImportError:
        return None
    return cam_overlay


def _error(status: int, detail: str, errors: list | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "errors": errors or []}, status_code=status)


def create_app(model: Any, backend: str = "auto", **options: Any) -> FastAPI:
    """Build the FastAPI app; the model is loaded when the app starts (lifespan), not here.

    Args:
        model: a :class:`~nextclass.predictor.Predictor`, a run or bundle folder, ``NAME`` or ``NAME@vN``.
        backend: ``torch`` | ``onnx`` | ``auto``.
        **options: fields of :class:`ServeConfig` (``max_batch``, ``max_upload_mb``, ``max_images``...).

    Example:
        >>> import uvicorn
        >>> app = create_app("runs/tiny", backend="onnx")            # doctest: +SKIP
        >>> uvicorn.run(app, host="127.0.0.1", port=8000)            # doctest: +SKIP
    """
    cfg = ServeConfig(backend=backend, **options)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pred, ident = await run_in_threadpool(load_for_serving, model, cfg)
        await run_in_threadpool(_warm_up, pred)
        batcher = MicroBatcher(pred.predict_proba, max_batch=cfg.max_batch, max_wait_ms=cfg.max_wait_ms, metrics=metrics)
        await batcher.start()
        app.state.pred, app.state.ident, app.state.batcher = pred, ident, batcher
        app.state.explain = _explain_fn()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="nextclass", version=_version(), lifespan=lifespan,
                  description="Image classification with a nextclass bundle: its own classes, preprocessing and "
                              "calibration. Send images as the repeated multipart field `files`.")
    app.state.cfg, app.state.metrics = cfg, metrics
    _routes(app, cfg, metrics)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.add_middleware(Guard, metrics=metrics, max_body=int(cfg.max_upload_mb * 1e6))
    return app


def _version() -> str:
    from .. import __version__

    return __version__


async def _decode(pred, files: list[UploadFile]) -> tuple[list, list[dict]]:
    """Read and preprocess every upload in a worker thread; returns (tensors, errors)."""
    from ..data.decode import DecodeError

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


def _routes(app: FastAPI, cfg: ServeConfig, metrics: Metrics) -> None:  # noqa: C901 - route table
    bad = {413: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}

    @app.exception_handler(RequestValidationError)
    async def validation(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        if any(e.get("loc", [None])[-1] == "files" for e in errs):
            return _error(422, "no images: send one or more image files as the multipart form field 'files'")
        msg = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', []))}: {e.get('msg')}" for e in errs)
        return _error(422, f"invalid request: {msg}")

    @app.post("/v1/predict", response_model=PredictResponse, responses=bad, tags=["predict"])
    async def predict(request: Request, files: List[UploadFile] = File(..., description="One or more images."),
                      topk: int = Query(cfg.topk, ge=1, le=1000, description="Classes to return per image.")):
        """Top-k classes with calibrated probabilities for each uploaded image (micro-batched)."""
        if len(files) > cfg.max_images:
            return _error(413, f"too many images in one request ({len(files)} > {cfg.max_images}); split the upload")
        pred = request.app.state.pred
        tensors, errors = await _decode(pred, files)
        if errors:
            metrics.images["rejected"] += len(errors)
            names = ", ".join(f"{e['file']}: {e['reason']}" for e in errors[:5])
            return _error(422, f"{len(errors)} of {len(files)} file(s) could not be used as images ({names})", errors)
        probs = await request.app.state.batcher.submit(tensors)
        metrics.images["predicted"] += len(tensors)
        k = max(1, min(topk, len(pred.classes)))
        results = []
        for f, pr in zip(files, probs):
            order = pr.argsort()[::-1][:k]
            results.append({"file": f.filename or "", "label": pred.classes[order[0]], "index": int(order[0]),
                            "probability": float(pr[order[0]]),
                            "topk": [{"label": pred.classes[j], "probability": float(pr[j])} for j in order]})
        return {"model": request.app.state.ident["ref"], "backend": pred.backend, "results": results}

    @app.post("/v1/explain", responses={200: {"content": {"image/png": {}}}, **bad}, tags=["predict"])
    async def explain(request: Request, file: UploadFile = File(..., description="One image."),
                      class_index: Optional[int] = Form(None, description="Class to explain (default: predicted).")):
        """Grad-CAM overlay (PNG) for one image; 404 when Grad-CAM is not installed."""
        from ..data.decode import DecodeError, open_image

        fn = request.app.state.explain
        if fn is None:
            return _error(404, "Grad-CAM is not available in this installation (nextclass.report.cam)")
        pred = request.app.state.pred
        if class_index is not None and not 0 <= class_index < len(pred.classes):
            return _error(422, f"class_index {class_index} out of range 0..{len(pred.classes) - 1}")
        data = await file.read()
        try:
            img = await run_in_threadpool(open_image, bytes(data), 3)
        except DecodeError as e:
            return _error(422, f"{file.filename}: {e}", [{"file": file.filename or "#0", "index": 0, "reason": str(e)}])

        def render() -> bytes:
            buf = io.BytesIO()
            fn(pred, img, class_index).save(buf, format="PNG")
            return buf.getvalue()

        try:
            png = await request.app.state.batcher.run_exclusive(render)
        except ValueError as e:  # CamError and friends: the model or image cannot be explained
            return _error(422, f"cannot explain this image: {e}")
        return Response(png, media_type="image/png")

    @app.get("/v1/models", response_model=ModelsResponse, tags=["info"])
    async def models(request: Request):
        """The served model: name, version, classes, metrics, preprocessing and limits."""
        pred, ident = request.app.state.pred, request.app.state.ident
        meta = pred.meta
        return {"models": [{
            "name": ident["name"], "version": ident["version"], "ref": ident["ref"], "backend": pred.backend,
            "arch": meta.get("arch", {}).get("name"), "classes": pred.classes, "temperature": pred.temperature,
            "preprocess": pred.preprocess.to_dict(), "metrics": meta.get("metrics", {}),
            "data_hash": meta.get("data_hash", ""), "created": ident.get("created") or meta.get("created"),
            "explain": request.app.state.explain is not None,
            "limits": {"max_images": cfg.max_images, "max_upload_mb": cfg.max_upload_mb, "topk": cfg.topk}}]}

    @app.get("/healthz", response_model=Health, tags=["info"])
    async def healthz(request: Request):
        """Liveness/readiness: 200 once the model is loaded."""
        return {"status": "ok", "model": request.app.state.ident["ref"], "backend": request.app.state.pred.backend,
                "uptime_seconds": round(time.time() - metrics.started, 3)}

    @app.get("/metrics", response_class=PlainTextResponse, tags=["info"])
    async def prometheus():
        """Prometheus text format: requests, latencies, images, batch sizes, queue depth."""
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")


def serve(model: Any, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", **options: Any) -> None:
    """Run the server with uvicorn until interrupted (what ``nextclass serve`` calls)."""
    import uvicorn

    uvicorn.run(create_app(model, **options), host=host, port=port, log_level=log_level)
