"""The server's parts on their own, on a real asyncio loop: the micro-batcher and the request guard.

No model and no HTTP server: the batcher gets a plain function of the batch, the guard wraps a
tiny ASGI app and is driven with ASGI messages, as uvicorn would drive it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time

import numpy as np
import pytest
import torch

from nextclass.serve.batching import MicroBatcher
from nextclass.serve.metrics import Metrics
from nextclass.serve.middleware import Guard

# ---------------------------------------------------------------------------------------------- micro-batcher


def img(value: float) -> torch.Tensor:
    """A 1x2x2 'image' whose pixels all hold ``value``: the model output tells which image it was."""
    return torch.full((1, 2, 2), float(value))


class Model:
    """The batch function: row i of the output is (v, -v) for the value v of image i; notes every call."""

    def __init__(self, fail_on: float | None = None, gate: threading.Event | None = None):
        self.calls: list[list[float]] = []
        self.threads: set[str] = set()
        self.fail_on, self.gate = fail_on, gate
        self.started = threading.Event()

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        assert batch.shape[1:] == (1, 2, 2)
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(30), "test gate never opened"
        values = batch.flatten(1)[:, 0].tolist()
        self.calls.append(values)
        self.threads.add(threading.current_thread().name)
        if self.fail_on is not None and self.fail_on in values:
            raise ValueError(f"boom: cannot score {self.fail_on}")
        v = np.asarray(values, np.float32)
        return np.stack([v, -v], 1)


def run(coro_fn, model: Model, **kwargs):
    """Start a MicroBatcher on ``model``, run ``coro_fn(batcher)`` on a fresh event loop, always stop it."""

    async def main():
        b = MicroBatcher(model, **kwargs)
        await b.start()
        try:
            return await asyncio.wait_for(coro_fn(b), 60)
        finally:
            await b.stop()

    return asyncio.run(main())


def expected(values) -> np.ndarray:
    v = np.asarray(values, np.float32)
    return np.stack([v, -v], 1)


def test_concurrent_requests_share_batches_and_each_gets_its_own_rows():
    model, metrics = Model(), Metrics()
    requests = [[img(i)] for i in range(20)]

    async def go(b):
        return await asyncio.gather(*(b.submit(r) for r in requests))

    outs = run(go, model, max_batch=8, max_wait_ms=50, metrics=metrics)
    for i, out in enumerate(outs):
        np.testing.assert_array_equal(out, expected([i]))
    sizes = [len(c) for c in model.calls]
    assert max(sizes) <= 8 and sum(sizes) == 20 and len(sizes) == 3  # 20 single-image requests, 8 per call
    assert sorted(v for c in model.calls for v in c) == list(range(20))  # every image scored exactly once
    assert sum(metrics.batch_size.counts) == 3 and metrics.batch_size.sum == 20
    assert len(model.threads) == 1 and model.threads.pop().startswith("nextclass-model")


def test_multi_image_requests_get_their_rows_in_order():
    model = Model()
    requests = [[img(10 * r + k) for k in range(n)] for r, n in enumerate((1, 3, 2, 5))]

    async def go(b):
        return await asyncio.gather(*(b.submit(r) for r in requests))

    outs = run(go, model, max_batch=32, max_wait_ms=50)
    assert [len(c) for c in model.calls] == [11]  # all in one call
    for r, (req, out) in enumerate(zip(requests, outs)):
        np.testing.assert_array_equal(out, expected([10 * r + k for k in range(len(req))]))


def test_no_model_call_exceeds_max_batch_images():
    model = Model()
    requests = [[img(10 * r + k) for k in range(3)] for r in range(4)]  # 12 images, 3 per request

    async def go(b):
        return await asyncio.gather(*(b.submit(r) for r in requests))

    outs = run(go, model, max_batch=4, max_wait_ms=50)
    for r, out in enumerate(outs):
        np.testing.assert_array_equal(out, expected([10 * r + k for k in range(3)]))
    assert max(len(c) for c in model.calls) <= 4, [len(c) for c in model.calls]


def test_a_request_larger_than_max_batch_is_one_call_of_its_own():
    model = Model()

    async def go(b):
        return await asyncio.gather(b.submit([img(k) for k in range(6)]), b.submit([img(100)]))

    big, small = run(go, model, max_batch=4, max_wait_ms=50)
    np.testing.assert_array_equal(big, expected(range(6)))
    np.testing.assert_array_equal(small, expected([100]))
    assert [len(c) for c in model.calls] == [6, 1]


def test_a_request_that_would_overflow_the_batch_waits_for_the_next_call_in_order():
    model = Model()
    sizes = (1, 2, 3, 1, 4, 2)
    requests = [[img(10 * r + k) for k in range(n)] for r, n in enumerate(sizes)]

    async def go(b):
        return await asyncio.gather(*(b.submit(r) for r in requests))

    outs = run(go, model, max_batch=4, max_wait_ms=50)
    for r, out in enumerate(outs):
        np.testing.assert_array_equal(out, expected([10 * r + k for k in range(sizes[r])]))
    assert [len(c) for c in model.calls] == [3, 4, 4, 2]  # 1+2 | 3+1 | 4 | 2: whole requests, first come first served
    assert [v for c in model.calls for v in c] == [v for r in requests for v in (t[0, 0, 0].item() for t in r)]


def test_a_small_request_then_a_big_one_the_big_one_runs_alone():
    model = Model()

    async def go(b):
        return await asyncio.gather(b.submit([img(100)]), b.submit([img(k) for k in range(6)]), b.submit([img(200)]))

    small, big, last = run(go, model, max_batch=4, max_wait_ms=50)
    assert [len(c) for c in model.calls] == [1, 6, 1]
    np.testing.assert_array_equal(small, expected([100]))
    np.testing.assert_array_equal(big, expected(range(6)))
    np.testing.assert_array_equal(last, expected([200]))


def test_a_batch_that_cannot_be_built_answers_its_callers_and_the_worker_survives():
    model = Model()

    async def go(b):
        odd = torch.zeros(1, 3, 3)  # a different shape: the images cannot be stacked into one batch
        bad = await asyncio.wait_for(asyncio.gather(b.submit([img(1)]), b.submit([odd]), return_exceptions=True), 5)
        good = await asyncio.wait_for(b.submit([img(2)]), 5)
        return bad, good

    bad, good = run(go, model, max_batch=8, max_wait_ms=50)
    assert len(bad) == 2 and all(isinstance(e, RuntimeError) and "stack" in str(e) for e in bad), bad
    np.testing.assert_array_equal(good, expected([2]))
    assert model.calls == [[2]]


def test_stop_answers_the_running_batch_and_the_queued_requests():
    gate = threading.Event()
    model = Model(gate=gate)

    async def main():
        b = MicroBatcher(model, max_batch=8, max_wait_ms=0)
        await b.start()
        running = asyncio.ensure_future(b.submit([img(k) for k in range(8)]))
        while not model.started.is_set():  # the model thread is inside the first call
            await asyncio.sleep(0.005)
        queued = [asyncio.ensure_future(b.submit([img(k)])) for k in (8, 9)]
        await asyncio.sleep(0.05)
        threading.Timer(0.2, gate.set).start()
        await asyncio.wait_for(b.stop(), 10)
        for fut in (running, *queued):
            with pytest.raises(RuntimeError, match="server shutting down"):
                await asyncio.wait_for(fut, 1)
        assert model.calls == [list(range(8))]  # the running call finished before stop() returned; no other began

    asyncio.run(main())


def test_stop_answers_a_request_taken_off_the_queue_while_the_batch_waits_for_company():
    model = Model()

    async def main():
        b = MicroBatcher(model, max_batch=8, max_wait_ms=60_000)  # the batch would wait a minute for more
        await b.start()
        waiting = asyncio.ensure_future(b.submit([img(1)]))
        await asyncio.sleep(0.05)  # the worker took it off the queue and waits for company
        assert b.queue.empty() and not waiting.done()
        await asyncio.wait_for(b.stop(), 10)
        with pytest.raises(RuntimeError, match="server shutting down"):
            await asyncio.wait_for(waiting, 1)
        assert model.calls == []

    asyncio.run(main())


def test_a_lone_request_waits_for_company_then_goes_alone():
    """With nobody else coming, a request waits ``max_wait`` (a monotonic clock: a busy machine can make the wait
    longer, never shorter) and then goes alone. How long past the deadline a busy machine lets it run is not
    asserted; a batcher that waited for company instead never answers (the 30 s guard)."""
    for wait_ms in (0, 300):
        model = Model()

        async def go(b):
            t0 = time.monotonic()
            out = await asyncio.wait_for(b.submit([img(1)]), 30)
            return out, time.monotonic() - t0

        out, took = run(go, model, max_batch=8, max_wait_ms=wait_ms)
        np.testing.assert_array_equal(out, expected([1]))
        assert model.calls == [[1]]  # alone: the batch was not full
        assert took >= wait_ms / 1000 - 0.005, (wait_ms, took)


def test_a_request_within_the_wait_joins_the_batch_and_a_later_one_does_not():
    """Ordered by events, not by a timed window: the second request arrives while the worker holds the first and
    waits for company (for a minute: no busy machine can miss it) and joins it; the full batch goes at once, and
    requests after it form the next call."""
    model = Model()

    async def go(b):
        first = asyncio.ensure_future(b.submit([img(1)]))
        while not b.held:  # the worker took the first request off the queue and waits for company
            await asyncio.sleep(0)
        assert b.queue.empty() and model.calls == []
        second = asyncio.ensure_future(b.submit([img(2)]))  # within the wait: joins, and fills the batch
        a, c = await asyncio.gather(first, second)
        later = await asyncio.gather(b.submit([img(3)]), b.submit([img(4)]))  # after the batch went: a call of its own
        return a, c, later

    a, c, later = run(go, model, max_batch=2, max_wait_ms=60_000)
    assert model.calls == [[1, 2], [3, 4]]
    np.testing.assert_array_equal(a, expected([1]))
    np.testing.assert_array_equal(c, expected([2]))
    np.testing.assert_array_equal(later[0], expected([3]))
    np.testing.assert_array_equal(later[1], expected([4]))


def test_requests_arriving_while_the_model_is_busy_form_the_next_batch():
    gate = threading.Event()
    model = Model(gate=gate)

    async def go(b):
        first = asyncio.ensure_future(b.submit([img(0)]))
        deadline = time.monotonic() + 30
        while not model.started.is_set():  # the model thread is now inside the first call
            assert time.monotonic() < deadline, "the first batch never started"
            await asyncio.sleep(0.005)
        rest = [asyncio.ensure_future(b.submit([img(i)])) for i in (1, 2, 3)]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(first, *rest)

    outs = run(go, model, max_batch=8, max_wait_ms=0)  # no waiting: only the busy model makes company
    assert model.calls == [[0], [1, 2, 3]]
    for i, out in enumerate(outs):
        np.testing.assert_array_equal(out, expected([i]))


def test_an_error_in_the_batch_reaches_every_caller_and_the_worker_survives():
    model = Model(fail_on=13)

    async def go(b):
        bad = await asyncio.gather(*(b.submit([img(v)]) for v in (12, 13, 14)), return_exceptions=True)
        good = await b.submit([img(15)])
        return bad, good

    bad, good = run(go, model, max_batch=8, max_wait_ms=50)
    assert model.calls[0] == [12, 13, 14]
    assert all(isinstance(e, ValueError) and "boom: cannot score 13" in str(e) for e in bad), bad
    np.testing.assert_array_equal(good, expected([15]))


def test_a_caller_that_went_away_is_not_scored():
    model = Model()

    async def go(b):
        gone = asyncio.ensure_future(b.submit([img(1)]))
        stays = asyncio.ensure_future(b.submit([img(2)]))
        await asyncio.sleep(0)  # both are queued; the batch waits (a minute) until it holds 3 images
        gone.cancel()
        third = asyncio.ensure_future(b.submit([img(3)]))  # fills the batch: it goes without the cancelled one
        return await stays, await third, gone

    out, out3, gone = run(go, model, max_batch=3, max_wait_ms=60_000)
    np.testing.assert_array_equal(out, expected([2]))
    np.testing.assert_array_equal(out3, expected([3]))
    assert gone.cancelled() and model.calls == [[2, 3]]


def test_run_exclusive_uses_the_model_thread_and_stop_fails_queued_requests():
    gate = threading.Event()
    model = Model(gate=gate)

    async def main():
        b = MicroBatcher(model, max_batch=1, max_wait_ms=0)
        await b.start()
        name = await b.run_exclusive(lambda: threading.current_thread().name)
        assert name.startswith("nextclass-model")
        running = asyncio.ensure_future(b.submit([img(0)]))
        while not model.started.is_set():
            await asyncio.sleep(0.005)
        queued = asyncio.ensure_future(b.submit([img(1)]))
        await asyncio.sleep(0.02)
        threading.Timer(0.2, gate.set).start()  # stop() waits for the model thread to finish its call
        await b.stop()
        with pytest.raises(RuntimeError, match="server shutting down"):
            await asyncio.wait_for(queued, 5)
        running.cancel()

    asyncio.run(main())


def test_submit_before_start_is_a_clear_error():
    async def main():
        with pytest.raises(AssertionError, match="start"):
            await MicroBatcher(Model()).submit([img(0)])

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------- guard


class EchoApp:
    """An ASGI app that reads the whole body and answers ``{"n": bytes, "sha256": ...}`` with ``status``."""

    def __init__(self, status: int = 200, fail: bool = False):
        self.status, self.fail, self.calls = status, fail, 0

    async def __call__(self, scope, receive, send):
        self.calls += 1
        if scope["type"] != "http":
            return
        if self.fail:
            raise RuntimeError("app crashed")
        body, more = b"", True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        out = json.dumps({"n": len(body), "sha256": hashlib.sha256(body).hexdigest()}).encode()
        await send({"type": "http.response.start", "status": self.status, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": out})


def call(guard: Guard, method: str, path: str, chunks: list[bytes], headers: list | None = None):
    """Drive ``guard`` with one request whose body arrives in ``chunks``.

    Returns (status, headers dict, decoded JSON body, number of body messages the server handed out).
    """
    pending = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    handed = [0]
    sent: list[dict] = []

    async def receive():
        if pending:
            handed[0] += 1
            return pending.pop(0)
        await asyncio.sleep(3600)  # a real server blocks here until the client sends more or goes away

    async def send(msg):
        sent.append(msg)

    scope = {"type": "http", "method": method, "path": path, "headers": headers or [], "query_string": b""}
    asyncio.run(asyncio.wait_for(guard(scope, receive, send), 30))
    start = sent[0]
    assert start["type"] == "http.response.start"
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), json.loads(body), handed[0]


MB = 1_000_000


def test_bodies_up_to_the_limit_reach_the_app_intact():
    app, metrics = EchoApp(), Metrics()
    guard = Guard(app, metrics=metrics, max_body=MB)
    for chunks in ([b""], [b"x" * 10], [b"a" * (MB // 2), b"b" * (MB // 2)], [bytes([i]) * 1000 for i in range(100)]):
        status, _, out, _ = call(guard, "POST", "/v1/predict", chunks)
        whole = b"".join(chunks)
        assert status == 200 and out == {"n": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}
    assert app.calls == 4
    assert metrics.requests[("/v1/predict", "POST", "200")] == 4


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
@pytest.mark.parametrize("headers", [[], [(b"content-length", b"100")]], ids=["no-length", "lying-length"])
def test_a_body_over_the_limit_gets_413_with_the_reason(method, headers):
    app, metrics = EchoApp(), Metrics()
    guard = Guard(app, metrics=metrics, max_body=MB)
    chunks = [b"z" * (MB // 2)] * 3  # 1.5 MB in three messages
    status, hdrs, out, handed = call(guard, method, "/v1/predict", chunks, headers)
    assert status == 413
    assert out["detail"] == ("request body of 1.5+ MB exceeds the 1 MB upload limit; send fewer or smaller images")
    assert out["errors"] == []
    assert hdrs[b"content-type"] == b"application/json" and hdrs[b"connection"] == b"close"
    assert int(hdrs[b"content-length"]) == len(json.dumps(out).encode())
    assert app.calls == 0  # the app never sees an oversize request
    assert handed == 3  # drained, so the client reads the 413 instead of a reset connection
    assert dict(metrics.requests) == {("/v1/predict", method, "413"): 1}


def test_one_byte_over_is_refused_exactly_at_the_limit_is_not():
    guard = Guard(EchoApp(), metrics=Metrics(), max_body=1000)
    assert call(guard, "POST", "/v1/predict", [b"a" * 600, b"b" * 400])[0] == 200
    assert call(guard, "POST", "/v1/predict", [b"a" * 600, b"b" * 401])[0] == 413


def test_draining_stops_at_the_cap():
    app = EchoApp()
    guard = Guard(app, metrics=Metrics(), max_body=100, drain_cap=1000)
    status, _, out, handed = call(guard, "POST", "/v1/predict", [b"q" * 100] * 50)
    assert status == 413 and "upload limit" in out["detail"]
    assert handed == 11  # 1100 bytes > the 1000-byte cap: stop reading, answer
    assert app.calls == 0
    assert Guard(app, metrics=Metrics(), max_body=MB).drain_cap == 64 << 20
    assert Guard(app, metrics=Metrics(), max_body=100 << 20).drain_cap == 400 << 20


def test_get_is_not_read_by_the_guard_and_routes_are_labelled():
    app, metrics = EchoApp(), Metrics()
    guard = Guard(app, metrics=metrics, max_body=10)
    status, _, out, _ = call(guard, "GET", "/healthz", [b"x" * 50])  # not a body method: the app reads it
    assert status == 200 and out["n"] == 50
    for path in ("/static/app.js", "/../etc/passwd", "/v1/predict/extra"):
        call(guard, "GET", path, [b""])
    assert dict(metrics.requests) == {("/healthz", "GET", "200"): 1, ("/static", "GET", "200"): 1,
                                      ("other", "GET", "200"): 2}
    assert set(metrics.latency) == {"/healthz", "/static", "other"}


def test_the_apps_own_status_and_crashes_are_counted():
    metrics = Metrics()
    status, _, _, _ = call(Guard(EchoApp(status=422), metrics=metrics, max_body=100), "POST", "/v1/predict", [b"{}"])
    assert status == 422
    with pytest.raises(RuntimeError, match="app crashed"):
        call(Guard(EchoApp(fail=True), metrics=metrics, max_body=100), "POST", "/v1/explain", [b"{}"])
    assert dict(metrics.requests) == {("/v1/predict", "POST", "422"): 1, ("/v1/explain", "POST", "500"): 1}


def test_non_http_scopes_pass_through_uncounted():
    app, metrics = EchoApp(), Metrics()
    guard = Guard(app, metrics=metrics, max_body=10)

    async def nothing():
        return {"type": "lifespan.startup"}

    async def ignore(msg):
        pass

    asyncio.run(guard({"type": "lifespan"}, nothing, ignore))
    assert app.calls == 1 and not metrics.requests
