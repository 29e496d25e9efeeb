"""Micro-batching: concurrent requests share one model call.

Requests put their preprocessed images on an asyncio queue and await a future. One worker task
takes whatever is queued (up to ``max_batch`` images), waits at most ``max_wait_ms`` for more,
runs the model in a single dedicated thread (so the event loop keeps accepting requests and
the model gets every core), and hands each request its rows. Under load, requests that arrive
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
    """Group concurrent ``submit`` calls into batched calls of ``fn`` (N x C x H x W → N x K array).

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

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._worker(), name="nextclass-batcher")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        while self.queue is not None and not self.queue.empty():
            _, fut = self.queue.get_nowait()
            if not fut.done():
                fut.set_exception(RuntimeError("server shutting down"))
        self.executor.shutdown(wait=True)

    async def submit(self, tensors: list[torch.Tensor]) -> np.ndarray:
        """Queue one request's images; returns their probabilities (len(tensors) x K)."""
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
        items = [await self.queue.get()]
        n = len(items[0][0])
        deadline = time.monotonic() + self.max_wait
        while n < self.max_batch:
            if not self.queue.empty():
                item = self.queue.get_nowait()
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), left)
                except (asyncio.TimeoutError, TimeoutError):
                    break
            items.append(item)
            n += len(item[0])
        return items

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._collect()
            if self.metrics is not None:
                self.metrics.queue_depth = self.queue.qsize()
            items = [(ts, f) for ts, f in items if not f.cancelled()]  # clients that went away
            if not items:
                continue
            batch = torch.stack([t for ts, _ in items for t in ts])
            t0 = time.perf_counter()
            try:
                probs = await loop.run_in_executor(self.executor, self.fn, batch)
            except Exception as e:  # noqa: BLE001 - one failed batch must not stop the worker
                for _, f in items:
                    if not f.done():
                        f.set_exception(e)
                continue
            if self.metrics is not None:
                self.metrics.batch(len(batch), time.perf_counter() - t0)
            i = 0
            for ts, f in items:
                if not f.done():
                    f.set_result(probs[i:i + len(ts)])
                i += len(ts)
