"""Prediction sharded over several processes (``nextclass predict MODEL FILES --nproc N``).

Every file lands in exactly one shard (``files[rank::nproc]``); rank 0 gathers the shards over the
process group (gloo on CPU, NCCL on GPU) and checks that nothing was lost or predicted twice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch.distributed as dist

from nextclass.dist import backend_for, is_main, launch, local_rank, resolve_device, shard

__all__ = ["predict_distributed"]


@dataclass(frozen=True)
class _Predicting:
    """What every worker does with its shard (the arguments of :func:`predict_distributed`, picklable)."""

    topk: int
    batch_size: int
    device: str
    tta: bool | None
    backend: str


def _predict_worker(model: str, files: list[str], p: _Predicting) -> list[dict] | None:
    from nextclass.deploy.loading import load

    dist.init_process_group(backend=backend_for(resolve_device(p.device)))
    try:
        dev = resolve_device(p.device)
        if dev == "cuda":
            dev = f"cuda:{local_rank()}"
        idx = shard(list(range(len(files))))
        pred = load(model, device=dev, backend=p.backend)
        rows = [r.to_dict() for r in pred.predict([files[i] for i in idx], topk=p.topk, batch_size=p.batch_size,
                                                   tta=p.tta)]
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, list(zip(idx, rows)))
    finally:
        dist.destroy_process_group()
    if not is_main():  # the group is gone: rank() reads $RANK now
        return None
    merged: dict[int, dict] = {}
    for part in parts:
        for i, row in part:
            if i in merged:
                raise RuntimeError(f"distributed predict: {files[i]} predicted twice")
            merged[i] = row
    lost = [files[i] for i in range(len(files)) if i not in merged]
    if lost:
        raise RuntimeError(f"distributed predict: {len(lost)} file(s) not predicted, e.g. {lost[0]}")
    return [merged[i] for i in range(len(files))]


def predict_distributed(model: str | os.PathLike, files: Sequence[str], nproc: int = 2, topk: int = 3,
                        batch_size: int = 32, device: str = "cpu", tta: bool | None = None, backend: str = "torch") -> list[dict]:
    """Predict ``files`` with ``nproc`` processes, each on its shard; rows come back merged in input order.

    ``device`` ``cuda`` puts rank r on GPU r; ``tta`` and ``backend`` (torch | onnx | auto) are as for
    :func:`nextclass.load` / ``predict``. Every file lands in exactly one shard (``files[rank::nproc]``); rank 0 gathers the shards over
    the process group and checks that nothing was lost or predicted twice.

    Returns:
        One dict per file, as :meth:`nextclass.deploy.predictor.Prediction.to_dict` (unreadable files carry ``error``).

    Example:
        >>> rows = predict_distributed("runs/demo-digits", ["a.png", "b.png"], nproc=2)  # doctest: +SKIP
    """
    files = [str(f) for f in files]
    if not files:
        return []
    from nextclass.bundle import resolve_bundle_dir
    from nextclass.deploy.loading import resolve_model

    model = resolve_bundle_dir(resolve_model(model))  # a bad model path fails here, once, not in every worker
    nproc = max(1, min(nproc, len(files)))
    results = launch(_predict_worker, (str(model), files, _Predicting(topk, batch_size, device, tta, backend)), nproc)
    return results[0]
