"""The FastAPI app behind ``nextclass review``: the page, the items, their images, and the decisions.

Endpoints: ``GET /`` (the page), ``GET /v1/review`` (classes, items with their evidence, the decisions saved so far
and the first undecided item), ``POST /v1/decisions`` (one decision, saved before the answer), ``GET
/v1/images/{id}`` (an image of the review as PNG, ``?size=`` its longest side), ``GET /healthz``.

Safety: an image is addressed only by the opaque id the review gave it; the server looks the id up in its table of
files inside the data root (or the pool) and answers 404 for anything else, so no client-supplied path is ever
opened (``..``, absolute paths, URL-encoded variants and symlinks out of the folder all end in 404). Images are
decoded (:func:`nextclass.data.decode.open_image`: the bomb limit, EXIF rotation) and re-encoded as PNG, so a
file's raw bytes are never sent. No answer carries a filesystem path: images are named relative to the data root
and the corrections file by its name. A decision that cannot be saved (unknown item or class, a malformed body)
gets 4xx with the reason and writes nothing; a body over :data:`MAX_BODY` gets 413.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from nextclass.data.corrections import CorrectionsError, append_correction
from nextclass.review.decisions import DecisionError, as_shown, correction_for, decided, read_rows
from nextclass.review.items import ReviewSet

__all__ = ["create_app", "run_server", "MAX_BODY", "STATIC"]

STATIC = Path(__file__).parent / "static"
MAX_BODY = 16_384  # bytes: a decision is a few dozen


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _state(rs: ReviewSet, file: Path) -> dict:
    """What the page shows: the items and where the review stands (rows read again: another tab's are included)."""
    try:
        done = decided(rs, read_rows(file))
    except CorrectionsError as e:
        return {"error": str(e)}
    start = next((i for i, it in enumerate(rs.items) if it.id not in done), len(rs.items))
    return {**rs.to_dict(), "decisions": done, "start": start, "corrections": file.name, "decided": len(done)}


def _png(rs: ReviewSet, image_id: str, size: int) -> bytes | None:
    """The image as PNG, its longest side at most ``size``; None when the id is unknown or the file is not served."""
    from nextclass.data.decode import open_image

    img = rs.images.get(image_id)
    if img is None or img.path is None:
        return None
    pic = open_image(str(img.path), 3)
    pic.thumbnail((size, size))
    buf = io.BytesIO()
    pic.save(buf, format="PNG")
    return buf.getvalue()


async def _body(request: Request):
    """The request's JSON body; a DecisionError for a too-large or non-JSON one."""
    if int(request.headers.get("content-length") or 0) > MAX_BODY:
        raise DecisionError(413, f"a decision is at most {MAX_BODY} bytes")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise DecisionError(413, f"a decision is at most {MAX_BODY} bytes")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise DecisionError(400, "the body is not JSON: send {\"item\": ID, \"decision\": "
                                 "keep|relabel|drop|duplicate, \"label\": CLASS, \"duplicate_of\": IMAGE_ID}") from None


def _routes(app: FastAPI, rs: ReviewSet, file: Path) -> None:
    async def review():
        st = await run_in_threadpool(_state, rs, file)
        return _error(500, st["error"]) if "error" in st else st

    async def decide(request: Request):
        try:
            item, c = correction_for(rs, await _body(request))
            await run_in_threadpool(append_correction, file, c)
        except DecisionError as e:
            return _error(e.status, str(e))
        except OSError as e:
            return _error(507 if getattr(e, "errno", None) == 28 else 500,
                          f"could not save the decision to {file.name}: {e.strerror or e}")
        return {"item": item.id, "saved": as_shown(rs, c)}

    async def image(image_id: str, size: int = Query(256, ge=16, le=2048)):
        from nextclass.data.decode import DecodeError

        try:
            png = await run_in_threadpool(_png, rs, image_id, size)
        except (DecodeError, OSError) as e:
            return _error(422, f"{rs.images[image_id].rel}: cannot show this image ({e})")
        if png is None:
            return _error(404, "no such image in this review")
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    async def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def healthz():
        return {"status": "ok", "items": len(rs.items)}

    app.add_api_route("/v1/review", review, methods=["GET"])
    app.add_api_route("/v1/decisions", decide, methods=["POST"])
    app.add_api_route("/v1/images/{image_id}", image, methods=["GET"])
    app.add_api_route("/healthz", healthz, methods=["GET"])
    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)


def create_app(rs: ReviewSet, corrections: str | os.PathLike) -> FastAPI:
    """The review app for ``rs``, saving decisions to ``corrections`` (see :mod:`nextclass.review.collect`).

    Example:
        >>> import uvicorn
        >>> from nextclass.review.collect import collect
        >>> app = create_app(collect("runs/tiny"), "runs/tiny/corrections.jsonl")  # doctest: +SKIP
        >>> uvicorn.run(app, host="127.0.0.1", port=8001)                          # doctest: +SKIP
    """
    from nextclass.utils import VERSION

    app = FastAPI(title="nextclass review", version=VERSION, docs_url=None, redoc_url=None,
                  description="Decide on what the audit and the model found: keep, relabel, drop, duplicate of.")
    _routes(app, rs, Path(corrections))
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app


def run_server(rs: ReviewSet, corrections: str | os.PathLike, host: str = "127.0.0.1", port: int = 8001,
               log_level: str = "warning") -> None:
    """Serve the review with uvicorn until interrupted (what ``nextclass review`` calls)."""
    import uvicorn

    uvicorn.run(create_app(rs, corrections), host=host, port=port, log_level=log_level)
