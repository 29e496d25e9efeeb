"""A pure-ASGI guard in front of the app: request-size limit (413) and request metrics.

The size limit is enforced *before* FastAPI parses the multipart body, on the actual bytes
received (a missing or lying ``Content-Length`` does not get around it). An oversize body is
drained up to a cap before answering so that the client reads the 413 instead of a reset
connection.
"""

from __future__ import annotations

import json
import time

__all__ = ["Guard"]

#: Routes reported by name in metrics; anything else is "other" (bounded label cardinality).
ROUTES = ("/", "/v1/predict", "/v1/explain", "/v1/models", "/healthz", "/metrics", "/docs", "/openapi.json")


class Guard:
    """Wraps an ASGI app. ``max_body``: bytes allowed in one request body."""

    def __init__(self, app, *, metrics, max_body: int, drain_cap: int | None = None):
        self.app, self.metrics, self.max_body = app, metrics, int(max_body)
        self.drain_cap = drain_cap or max(4 * self.max_body, 64 << 20)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [500]

        async def send_wrapper(msg):
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        path = scope.get("path", "")
        route = path if path in ROUTES else ("/static" if path.startswith("/static/") else "other")
        try:
            if scope["method"] in ("POST", "PUT", "PATCH"):
                body, size = await self._read(receive)
                if body is None:
                    mb = self.max_body / 1e6
                    return await self._reply(send_wrapper, 413, f"request body of {size / 1e6:.1f}+ MB exceeds the "
                                                               f"{mb:g} MB upload limit; send fewer or smaller images")
                receive = _replay(body, receive)
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.request(route, scope["method"], status[0], time.perf_counter() - t0)

    async def _read(self, receive) -> tuple[bytes | None, int]:
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                break
            size += len(msg.get("body", b""))
            if size <= self.max_body:
                chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
            if size > self.drain_cap:
                break
        return (b"".join(chunks) if size <= self.max_body else None), size

    @staticmethod
    async def _reply(send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail, "errors": []}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive):
    sent = [False]

    async def replay():
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
