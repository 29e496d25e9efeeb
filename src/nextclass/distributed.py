"""Distributed training and sharded prediction on ``torch.distributed`` (gloo on CPU, NCCL on GPU).

Two ways in, one code path:

* ``nextclass train DATA --nproc N`` (or :func:`train` here) starts N local worker processes with
  torch's own elastic launcher (:func:`torch.distributed.launcher.api.elastic_launch`, the engine
  behind ``torchrun``; ``spawn`` start method, c10d rendezvous on a free local port).
* ``torchrun --nproc-per-node N -m nextclass train DATA`` (and multi-node: the same command with
  ``--nnodes``, ``--node-rank``/``--rdzv-endpoint``): torchrun sets ``RANK``/``WORLD_SIZE``/
  ``LOCAL_RANK``/``MASTER_ADDR``, and :func:`init_from_env` (called by ``prepare``) joins the group.

Conventions (the same as torchrun + timm): ``batch_size`` is *per rank*, so the global batch is
``batch_size x world_size``; each epoch every rank sees a disjoint 1/world slice of one seeded
permutation (:class:`torch.utils.data.DistributedSampler` with ``set_epoch``); validation is
sharded across ranks and gathered, so every rank takes the same early-stopping decisions; rank 0
alone writes ``history.csv``, checkpoints, the bundle and the report. After the last epoch the
process group is torn down and rank 0 evaluates and bundles exactly as a single process would
(weights are saved from the unwrapped module, so no ``module.`` prefix ever reaches a file).
"""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

__all__ = [
    "rank", "world_size", "local_rank", "local_world_size", "is_distributed", "is_main", "backend_for",
    "init_from_env", "device_for_rank", "barrier", "broadcast_object", "all_gather_object", "reduce_sums",
    "wrap_ddp", "shard", "unshard", "reduce_epoch", "train_sampler", "synced_budget", "finish_training", "launch", "train",
    "predict_distributed", "WeightedDistributedSampler",
]


# --- who am I -------------------------------------------------------------------------------------
def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """Global rank (0 when not distributed; ``$RANK`` before the group is initialised)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else int(os.environ.get("RANK", 0))


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def local_world_size() -> int:
    """Processes on this machine (``$LOCAL_WORLD_SIZE`` under torchrun; 1 otherwise)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", 1))


def is_main() -> bool:
    """The process that writes files and logs (global rank 0)."""
    return rank() == 0


def backend_for(device: str | torch.device) -> str:
    """NCCL for CUDA devices, gloo for everything else."""
    return "nccl" if torch.device(device).type == "cuda" and dist.is_nccl_available() else "gloo"


def _resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def init_from_env(device: str = "auto") -> bool:
    """Join the process group described by torchrun's environment, if there is one.

    Returns True when this call created the group. A no-op for a single process
    (``WORLD_SIZE`` unset or 1) or when a group already exists (a user script made it).

    Example:
        >>> init_from_env("cpu")  # not under torchrun: nothing to do
        False
    """
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    dev = torch.device(_resolve_device(device))
    if dev.type == "cuda":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend_for(dev))
    return True


def device_for_rank(device: torch.device) -> torch.device:
    """``cuda`` becomes ``cuda:LOCAL_RANK`` under DDP (one GPU per process); other devices are kept."""
    if device.type == "cuda" and is_distributed():
        return torch.device("cuda", local_rank())
    return device


# --- collectives (all no-ops for one process) ------------------------------------------------------
def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (pickled by torch over the group: our own objects only)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list:
    if not is_distributed():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def reduce_sums(values: Sequence[float]) -> list[float]:
    """Element-wise sum of ``values`` over ranks (float64 on CPU, so it also works under gloo)."""
    if not is_distributed():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def _reduce_max_flag(flag: bool) -> bool:
    if not is_distributed():
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int32)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


# --- training helpers ------------------------------------------------------------------------------
def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(model)`` under DDP, else ``model`` itself.

    The wrapper shares the module's parameters, so optimisers, EMA and checkpoints keep working
    on the plain module (no ``module.`` prefix in any saved state dict).
    """
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else local_rank()] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def shard(items: Sequence | np.ndarray, r: int | None = None, w: int | None = None):
    """This rank's interleaved slice ``items[rank::world]`` (every item in exactly one shard)."""
    r = rank() if r is None else r
    w = world_size() if w is None else w
    return items[r::w]


def unshard(parts: Sequence[np.ndarray], n: int) -> np.ndarray:
    """Inverse of :func:`shard`: put each rank's slice back at ``rank::world``."""
    full = [np.asarray(p) for p in parts if len(p)]
    if not full:
        return np.asarray(parts[0])
    out = np.empty((n,) + full[0].shape[1:], dtype=full[0].dtype)
    for r, p in enumerate(parts):
        if len(p):  # a rank with no rows (n < world) returns an empty, shapeless array
            out[r::len(parts)] = p
    return out


def reduce_epoch(res):
    """Combine each rank's :class:`~nextclass.train.loop.EpochResult` into the global one (same on every rank)."""
    if not is_distributed():
        return res
    parts = all_gather_object((res.loss, res.acc, res.images, res.seconds, res.stopped_early))
    n = sum(p[2] for p in parts)
    return type(res)(sum(p[0] * p[2] for p in parts) / max(n, 1), sum(p[1] * p[2] for p in parts) / max(n, 1), n,
                     max(p[3] for p in parts), any(p[4] for p in parts))


class WeightedDistributedSampler(Sampler):
    """Class-balanced sampling under DDP: one seeded weighted draw per epoch, sharded like DistributedSampler."""

    def __init__(self, weights: np.ndarray, num_samples: int, seed: int = 0):
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.w, self.r = world_size(), rank()
        self.per_rank = math.ceil(num_samples / self.w)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        idx = torch.multinomial(self.weights, self.per_rank * self.w, replacement=True, generator=g)
        return iter(idx[self.r::self.w].tolist())


def train_sampler(ds, seed: int, epoch: int, balance: bool = False) -> Sampler:
    """The per-epoch training sampler under DDP (``set_epoch`` already called)."""
    from torch.utils.data import DistributedSampler

    if balance:
        counts = np.bincount(ds.labels, minlength=int(ds.labels.max()) + 1).astype(float)
        sampler = WeightedDistributedSampler(1.0 / np.maximum(counts[ds.labels], 1), len(ds), seed=seed)
    else:
        # drop_last=False pads with repeats so every rank runs the same number of steps (DDP needs lockstep)
        sampler = DistributedSampler(ds, shuffle=True, seed=seed, drop_last=False)
    sampler.set_epoch(epoch)
    return sampler


def synced_budget(minutes: float | None):
    """A :class:`~nextclass.train.loop.Budget` whose verdict is the same on every rank.

    Each rank's clock drifts; if one rank stopped mid-epoch and the others did not, DDP would hang.
    ``exceeded()`` is called once per step on every rank, so an all-reduce(MAX) keeps them in step.
    """
    from .train.loop import Budget

    class _Synced(Budget):
        def exceeded(self) -> bool:
            return _reduce_max_flag(super().exceeded())

    return _Synced(minutes) if is_distributed() else Budget(minutes)


def finish_training() -> bool:
    """End the distributed part of a run. Returns True on the rank that should evaluate and bundle.

    Every rank waits for the others, the group is destroyed, and rank 0 carries on alone: final
    evaluation, metrics, bundle and report are then exactly the single-process code path.
    """
    if not is_distributed():
        return True
    main = is_main()
    dist.barrier()
    dist.destroy_process_group()
    return main


# --- launching -------------------------------------------------------------------------------------
def launch(fn: Callable, args: tuple, nproc: int) -> dict[int, Any]:
    """Run ``fn(*args)`` in ``nproc`` local processes with torchrun's launcher; returns ``{rank: result}``.

    ``fn`` must be importable (spawn start method). Threads are split between the processes.

    Example:
        >>> launch(my_module.work, (1,), nproc=2)  # doctest: +SKIP
        {0: ..., 1: ...}
    """
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise ValueError(f"nproc: must be >= 1 (got {nproc})")
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    cfg = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex[:12],
                       rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=0.1)
    return elastic_launch(cfg, fn)(*args)


def _train_worker(config: dict | None, resume: str | None, progress: bool) -> str:
    import nextclass

    return str(nextclass.train(config, resume=resume, progress=progress and is_main()))


def train(config: Any = None, *, nproc: int = 2, resume: str | os.PathLike | None = None, progress: bool = True,
          **overrides: Any) -> Path:
    """``nextclass.train`` on ``nproc`` local processes (DDP). Returns the run directory.

    Args:
        config: a TrainConfig, a dict or a YAML path (as :func:`nextclass.train`); fields in ``overrides``.
        nproc: processes (one per GPU on a GPU machine; on CPU they share the cores).
        resume: a run directory to resume (with any world size).

    Example:
        >>> run = train({"data": "digits", "epochs": 5, "batch_size": 32}, nproc=2)  # doctest: +SKIP
    """
    from .config import TrainConfig, load_config, make_config

    cfg = None
    if resume is None:
        if isinstance(config, TrainConfig):
            cfg = make_config(**{**config.model_dump(), **overrides})
        elif isinstance(config, dict):
            cfg = make_config(**{**config, **overrides})
        else:
            cfg = load_config(config, **overrides)
        if cfg.device.startswith("cuda") and torch.cuda.device_count() < nproc:
            raise ValueError(f"nproc: {nproc} processes need {nproc} GPUs, {torch.cuda.device_count()} visible")
        cfg = cfg.model_dump(mode="json")
    results = launch(_train_worker, (cfg, None if resume is None else str(resume), progress), nproc)
    return Path(results[0])


def _predict_worker(model: str, files: list[str], topk: int, batch_size: int, device: str, tta: bool = False,
                    backend: str = "torch") -> list[dict] | None:
    from .predictor import load

    dist.init_process_group(backend=backend_for(_resolve_device(device)))
    try:
        dev = _resolve_device(device)
        if dev == "cuda":
            dev = f"cuda:{local_rank()}"
        idx = shard(list(range(len(files))))
        pred = load(model, device=dev, backend=backend)
        rows = [r.to_dict() for r in pred.predict([files[i] for i in idx], topk=topk, batch_size=batch_size, tta=tta)]
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
                        batch_size: int = 32, device: str = "cpu", tta: bool = False, backend: str = "torch") -> list[dict]:
    """Predict ``files`` with ``nproc`` processes, each on its shard; rows come back merged in input order.

    ``device`` ``cuda`` puts rank r on GPU r; ``tta`` and ``backend`` (torch | onnx | auto) are as for
    :func:`nextclass.load` / ``predict``. Every file lands in exactly one shard (``files[rank::nproc]``); rank 0 gathers the shards over
    the process group and checks that nothing was lost or predicted twice.

    Returns:
        One dict per file, as :meth:`nextclass.predictor.Prediction.to_dict` (unreadable files carry ``error``).

    Example:
        >>> rows = predict_distributed("runs/demo-digits", ["a.png", "b.png"], nproc=2)  # doctest: +SKIP
    """
    files = [str(f) for f in files]
    if not files:
        return []
    from .bundle import resolve_bundle_dir
    from .predictor import _resolve

    model = resolve_bundle_dir(_resolve(model))  # a bad model path fails here, once, not in every worker
    nproc = max(1, min(nproc, len(files)))
    results = launch(_predict_worker, (str(model), files, topk, batch_size, device, tta, backend), nproc)
    return results[0]
