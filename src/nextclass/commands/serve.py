"""``nextclass serve MODEL``: the HTTP server with its web page."""

from __future__ import annotations

from typing import Optional

import typer

from nextclass.commands._common import run_guarded

__all__ = ["register", "serve"]


def serve(
    model: str = typer.Argument(..., help="Store NAME or NAME@vN, a run directory or a bundle directory."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (0.0.0.0 exposes it to the network)."),
    port: int = typer.Option(8000),
    backend: str = typer.Option("auto", help="torch | onnx | auto (ONNX Runtime when model.onnx is current)."),
    int8: bool = typer.Option(False, "--int8", help="Serve model.int8.onnx (needs `export --int8`)."),
    store: Optional[str] = typer.Option(None, help="Model store folder (default $NEXTCLASS_HOME/models)."),
    max_batch: int = typer.Option(32, help="Images per model call (micro-batching of concurrent requests)."),
    max_wait_ms: float = typer.Option(2.0, help="How long a request may wait to share a batch."),
    max_images: int = typer.Option(16, help="Images per request."),
    max_upload_mb: float = typer.Option(20.0, help="Request body limit (413 above it)."),
    topk: int = typer.Option(5, help="Default top-k per image."),
    threads: Optional[int] = typer.Option(None, help="Inference threads (default: all cores)."),
    target_accuracy: Optional[float] = typer.Option(
        None, "--target-accuracy", help="Abstain below the threshold that gave this accuracy of the accepted "
        "predictions on validation (default: the bundle's threshold, if it was trained with one)."),
    coverage: Optional[float] = typer.Option(
        None, "--coverage", help="Give each prediction its set of classes holding the true class with this "
        "probability, e.g. 0.95 (default: the bundle's coverage, if it was trained with one; a request's "
        "coverage parameter overrides it)."),
    log_level: str = typer.Option("info"),
):
    """Serve a model over HTTP: POST /v1/predict, GET /v1/models, /healthz, /metrics, /docs and a web page at /."""
    from nextclass.serve.app import ServeConfig, check_port, load_for_serving
    from nextclass.serve.app import serve as _serve
    from nextclass.utils import log

    if backend not in ("torch", "onnx", "auto"):
        raise typer.BadParameter(f"--backend {backend!r}: choose torch, onnx or auto")
    opts = dict(int8=int8, store=store, max_batch=max_batch, max_wait_ms=max_wait_ms, max_images=max_images,
                max_upload_mb=max_upload_mb, topk=topk, threads=threads,
                target_accuracy=target_accuracy, coverage=coverage)
    # Load once here so a bad MODEL is a red line and exit 2, not a traceback from the lifespan.
    pred, _ = run_guarded(load_for_serving, model, ServeConfig(backend=backend, **opts))
    run_guarded(pred.abstain_threshold, target_accuracy)  # a bundle without a val curve: a red line, not a traceback
    run_guarded(pred.set_threshold, coverage)  # a bad coverage, or no val scores: a red line too
    run_guarded(check_port, host, port)  # a busy port: one red line, not the page's address then uvicorn's error
    log(f"web page: http://{host}:{port}/  API docs: http://{host}:{port}/docs")
    run_guarded(_serve, pred, host=host, port=port, log_level=log_level, backend=backend, **opts)


def register(app: typer.Typer) -> None:
    """Attach ``serve`` to the app."""
    app.command(rich_help_panel="Use")(serve)
