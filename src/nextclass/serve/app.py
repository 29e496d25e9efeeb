"""The FastAPI app behind ``nextclass serve``: the bundle's own preprocessing, micro-batched.

Endpoints: ``POST /v1/predict`` (multipart field ``files``, repeated), ``POST /v1/explain``
(Grad-CAM PNG, when :mod:`nextclass.report.cam` is installed), ``GET /v1/models``,
``GET /healthz``, ``GET /metrics`` (Prometheus), ``GET /`` (the web page), ``/docs`` (OpenAPI).

Bad input never produces a 500: an oversize body gets 413, too many images 413, a missing
``files`` field 422, and an empty, corrupt or non-image file 422 naming the file and the reason.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from nextclass.serve.batching import MicroBatcher
from nextclass.serve.metrics import Metrics
from nextclass.serve.middleware import Guard
from nextclass.serve.routes import STATIC, register_routes

__all__ = ["create_app", "load_for_serving", "ServeConfig", "serve", "check_port"]



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
    target_accuracy: Optional[float] = None  # abstain threshold from the bundle's val curve (None: the bundle's own)
    coverage: Optional[float] = None  # prediction sets from the bundle's val scores (None: the bundle's own, if any)
    extra: dict = field(default_factory=dict)


def load_for_serving(model: Any, cfg: ServeConfig):
    """``model`` (Predictor, path, NAME or NAME@vN) → (predictor, identity dict with name/version/ref)."""
    from nextclass.bundle import resolve_bundle_dir
    from nextclass.deploy.predictor import Predictor

    if isinstance(model, Predictor):
        folder = Path(model.path) if model.path else None
        pred = model
    else:
        from nextclass.deploy.loading import resolve_model

        folder = resolve_bundle_dir(resolve_model(str(model), store=cfg.store))
        pred = _open(folder, cfg)
    # The model's name and version, never the server's filesystem path (the page and /healthz show them).
    fallback = folder.parent.name if folder and folder.name == "model" else (folder.name if folder else "model")
    ident = {"name": pred.meta.get("run") or fallback, "version": None, "created": pred.meta.get("created")}
    manifest = folder / "manifest.json" if folder else None
    if manifest is not None and manifest.is_file():
        m = json.loads(manifest.read_text())
        ident = {"name": m["name"], "version": f"v{m['version']}", "created": m.get("created")}
    ident["ref"] = f"{ident['name']}@{ident['version']}" if ident["version"] else ident["name"]
    return pred, ident


def _open(folder: Path, cfg: ServeConfig):
    from nextclass.bundle import load_model
    from nextclass.deploy.predictor import Predictor

    if cfg.backend not in ("torch", "onnx", "auto"):
        raise ValueError(f"backend {cfg.backend!r}: choose torch, onnx or auto")
    if cfg.int8 and cfg.backend == "torch":
        raise ValueError("--int8 serves model.int8.onnx with ONNX Runtime: use --backend onnx or auto, not torch")
    if cfg.threads:
        import torch

        torch.set_num_threads(int(cfg.threads))
    if cfg.backend == "torch":
        model, meta = load_model(folder)
        return Predictor(model, meta, path=str(folder))
    from nextclass.deploy.runtime import OnnxPredictor

    # --int8 is an explicit request: without model.int8.onnx it is an error, never a quiet full-precision fallback
    return OnnxPredictor.from_bundle(folder, fallback_torch=cfg.backend == "auto" and not cfg.int8, int8=cfg.int8,
                                     threads=cfg.threads)


def _warm_up(pred) -> None:
    """One prediction at start-up: lazy imports and first-call allocations happen before traffic."""
    from PIL import Image

    pp = pred.preprocess
    pred.predict_proba(pred.to_tensor(Image.new("L" if pp.channels == 1 else "RGB", (pp.size, pp.size))).unsqueeze(0))


def _explain_fn():
    try:
        from nextclass.report.cam import cam_overlay
    except ImportError:
        return None
    return cam_overlay


def batch_fn(pred):
    """What one micro-batch computes on the model thread: ``(probabilities, nearest distances or None)``.

    The distance to the nearest training image (for ``unfamiliar``) is computed in the same call, batched like
    the probabilities, when the bundle keeps its threshold and its neighbour index; the index is loaded here,
    before the first request.
    """
    if pred.unfamiliar_distance() is not None:
        try:
            pred.neighbor_index()
        except ValueError:
            pass
        else:
            return lambda batch: (pred.predict_proba(batch), pred.nearest_distance(batch))
    return lambda batch: (pred.predict_proba(batch), None)


def create_app(model: Any, backend: str = "auto", **options: Any) -> FastAPI:
    """Build the FastAPI app; the model is loaded when the app starts (lifespan), not here.

    Args:
        model: a :class:`~nextclass.deploy.predictor.Predictor`, a run or bundle folder, ``NAME`` or ``NAME@vN``.
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
        batcher = MicroBatcher(await run_in_threadpool(batch_fn, pred), max_batch=cfg.max_batch,
                               max_wait_ms=cfg.max_wait_ms, metrics=metrics)
        await batcher.start()
        app.state.pred, app.state.ident, app.state.batcher = pred, ident, batcher
        app.state.threshold = pred.abstain_threshold(cfg.target_accuracy)
        app.state.set_threshold = pred.set_threshold(cfg.coverage)
        app.state.explain = _explain_fn()
        from nextclass.utils import log

        kind = "labels (multi-label)" if getattr(pred, "multilabel", False) else "classes"
        log(f"serving {ident['ref']}: {pred.meta.get('arch', {}).get('name')}, {len(pred.classes)} {kind}, "
            f"backend {pred.backend}, micro-batches of up to {cfg.max_batch}"
            + ("" if app.state.explain else " (Grad-CAM not installed: /v1/explain off)"))
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="nextclass", version=_version(), lifespan=lifespan,
                  description="Image classification with a nextclass bundle: its own classes, preprocessing and "
                              "calibration. Send images as the repeated multipart field `files`.")
    app.state.cfg, app.state.metrics = cfg, metrics
    register_routes(app)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.add_middleware(Guard, metrics=metrics, max_body=int(cfg.max_upload_mb * 1e6))
    return app


def _version() -> str:
    from nextclass.utils import VERSION as __version__

    return __version__


def check_port(host: str, port: int) -> None:
    """ValueError (one line) when ``host:port`` cannot be bound, before the page's address is printed."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a TIME_WAIT port is free
        try:
            s.bind((host, port))
        except OSError as e:
            why = "is already in use (another server?)" if e.errno in (98, 48, 10048) else f"cannot be used ({e.strerror or e})"
            raise ValueError(f"port {port} on {host} {why}; choose another with --port") from None


def serve(model: Any, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", **options: Any) -> None:
    """Run the server with uvicorn until interrupted (what ``nextclass serve`` calls)."""
    import uvicorn

    uvicorn.run(create_app(model, **options), host=host, port=port, log_level=log_level)
