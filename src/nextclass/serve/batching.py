"""Micro-batching: concurrent requests share one model call.

Requests put their preprocessed images on an asyncio queue and await a future. One worker task
takes whole requests, in arrival order, while they fit in ``max_batch`` images (a request that would
overflow opens the next call; one larger than ``max_batch`` on its own runs alone), waits at most
``max_wait_ms`` for more, runs the model in a single dedicated thread (so the event loop keeps
accepting requests and the model gets every core), and hands each request its rows. Under load, requests that arrive
while the model is busy form the next batch by themselves; at low load a lone request waits at
most ``max_wait_ms``.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
import torch

__all__ = ["MicroBatcher"]


class MicroBatcher:
    """Group concurrent ``submit`` calls into batched calls of ``fn`` (N x C x H x W → N rows).

    ``fn`` returns an array of N rows, or a tuple of such arrays (``None`` entries pass through as ``None``);
    each request gets its own rows of each.

    Example:
        >>> b = MicroBatcher(predictor.predict_proba, max_batch=32)   # doctest: +SKIP
        >>> await b.start(); probs = await b.submit([t1, t2])          # doctest: +SKIP
    """

    def __init__(self, fn: Callable[[torch.Tensor], np.ndarray], *, max_batch: int = 32, max_wait_ms: float = 2.0,
                 metrics=None):
        self.fn, self.max_batch, self.max_wait = fn, max(1, int(max_batch)), max(0.0, max_wait_ms) / 1000
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nextclass-model")
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.held: list = []  # (tensors, future) taken off the queue, not yet in a model call
        self.running: list = []  # the requests of the model call in progress

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._worker(), name="nextclass-batcher")

    async def stop(self) -> None:
        """Stop the worker and answer every request still waiting with ``RuntimeError("server shutting down")``.

        That is the batch whose model call is running (the call itself finishes on the model thread
        before ``stop`` returns, but its callers are not kept waiting for it), the requests held for
        the next batch and those still queued.
        """
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        waiting = self.running + self.held
        while self.queue is not None and not self.queue.empty():
            waiting.append(self.queue.get_nowait())
        self.running, self.held = [], []
        _answer(waiting, error=RuntimeError("server shutting down"))
        self.executor.shutdown(wait=True)

    async def submit(self, tensors: list[torch.Tensor]) -> np.ndarray:
        """Queue one request's images; returns their rows of ``fn``'s output (e.g. len(tensors) x K probabilities)."""
        assert self.queue is not None, "MicroBatcher.start() was not awaited"
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put((tensors, fut))
        if self.metrics is not None:
            self.metrics.queue_depth = self.queue.qsize()
        return await fut

    async def run_exclusive(self, fn: Callable, *args):
        """Run ``fn(*args)`` on the model thread (e.g. Grad-CAM), never concurrently with a batch."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _collect(self) -> list:
        """Take requests off the queue into ``self.held`` until ``max_batch`` images are held or
        ``max_wait`` has passed, then hand out the longest run of whole requests, in arrival order,
        that fits in ``max_batch`` images.

        A request that would overflow the batch stays held and opens the next one (without waiting
        again: it already waited its turn); a request of more than ``max_batch`` images on its own is
        a model call of its own (splitting it would only add calls, not lower the peak memory of the
        one request the server already accepted under ``max_images``).
        """
        carried = bool(self.held)
        if not carried:
            self.held.append(await self.queue.get())
        deadline = time.monotonic() + (0.0 if carried else self.max_wait)
        while sum(len(ts) for ts, _ in self.held) < self.max_batch:
            item = await self._next(deadline)
            if item is None:
                break
            self.held.append(item)
        self.held = [(ts, f) for ts, f in self.held if not f.done()]  # clients that went away
        n = k = 0
        while k < len(self.held) and (k == 0 or n + len(self.held[k][0]) <= self.max_batch):
            n, k = n + len(self.held[k][0]), k + 1
        batch, self.held = self.held[:k], self.held[k:]
        return batch

    async def _next(self, deadline: float):
        """The next queued request, waiting until ``deadline`` at most; None when none came."""
        if not self.queue.empty():
            return self.queue.get_nowait()
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            return await asyncio.wait_for(self.queue.get(), left)
        except (asyncio.TimeoutError, TimeoutError):
            return None

    async def _worker(self) -> None:
        while True:
            self.running = await self._collect()
            if self.metrics is not None:
                self.metrics.queue_depth = self.queue.qsize() + len(self.held)
            if self.running:
                await self._run(self.running)
            self.running = []

    async def _run(self, items: list) -> None:
        """Score one batch and answer each of its requests with its rows, or all of them with the error.

        Building the batch is inside the ``try``: images that cannot be stacked (a shape the
        preprocessing should have prevented) fail their batch, never the worker, which would leave
        every later request waiting forever.
        """
        try:
            batch = torch.stack([t for ts, _ in items for t in ts])
            t0 = time.perf_counter()
            out = await asyncio.get_running_loop().run_in_executor(self.executor, self.fn, batch)
            if self.metrics is not None:
                self.metrics.batch(len(batch), time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - one failed batch must not stop the worker
            _answer(items, error=e)
            return
        i = 0
        for ts, f in items:
            if not f.done():
                f.set_result(_rows(out, i, i + len(ts)))
            i += len(ts)


def _rows(out, a: int, b: int):
    """Rows ``a:b`` of ``fn``'s output: an array, or a tuple of arrays and ``None``."""
    if isinstance(out, tuple):
        return tuple(None if x is None else x[a:b] for x in out)
    return out[a:b]


def _answer(items: list, *, error: BaseException) -> None:
    """Fail every request in ``items`` whose caller still waits."""
    for _, f in items:
        if not f.done():
            f.set_exception(error)
