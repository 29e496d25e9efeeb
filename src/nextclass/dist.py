"""``torch.distributed`` primitives (gloo on CPU, NCCL on GPU): who am I, collectives, DDP wrapping,
sharding, and the local process launcher. Torch only: nothing here knows about training or models.

The jobs build on it: :mod:`nextclass.training.launch` (``nextclass train --nproc N``, or
``torchrun --nproc-per-node N -m nextclass train DATA``: torchrun sets ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK``/``MASTER_ADDR`` and :func:`init_from_env` joins the group) and
:mod:`nextclass.deploy.sharded` (prediction over several processes). Reading torchrun's variables is
the only environment access in nextclass besides the default file locations in :mod:`nextclass.utils`.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "rank", "world_size", "local_rank", "local_world_size", "launched_world_size", "is_distributed", "is_main",
    "backend_for", "resolve_device", "check_device", "init_from_env", "device_for_rank", "barrier", "broadcast_object",
    "all_gather_object", "reduce_sums", "reduce_max_flag", "wrap_ddp", "shard", "unshard", "finish_training", "launch",
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


def launched_world_size() -> int:
    """Processes the launcher started (``$WORLD_SIZE``), known before the group is initialised."""
    return int(os.environ.get("WORLD_SIZE", 1))


def local_world_size() -> int:
    """Processes on this machine (``$LOCAL_WORLD_SIZE`` under torchrun; 1 otherwise)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", 1))


def is_main() -> bool:
    """The process that writes files and logs (global rank 0)."""
    return rank() == 0


def backend_for(device: str | torch.device) -> str:
    """NCCL for CUDA devices, gloo for everything else."""
    return "nccl" if torch.device(device).type == "cuda" and dist.is_nccl_available() else "gloo"


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def check_device(device: str) -> str:
    """``device`` as given when this machine has it; ValueError with one line saying what it has otherwise.

    Checked before any work (and before a run directory exists), so ``--device cuda`` on a machine without a
    GPU is a one-line error rather than a traceback from the first tensor moved there.

    Example:
        >>> check_device("cpu")
        'cpu'
    """
    choices = "auto, cpu, cuda, cuda:N or mps"
    if device == "auto":
        return device
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"device {device!r}: not a device; choose {choices}") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ValueError(f"device {device!r}: this machine has no CUDA GPU that PyTorch can use "
                             f"(torch {torch.__version__}); use --device cpu or auto")
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"device {device!r}: this machine has {n} CUDA GPU(s), cuda:0 to cuda:{n - 1}")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {device!r}: Apple's Metal (MPS) is not available on this machine; "
                             "use --device cpu or auto")
    elif dev.type != "cpu":
        raise ValueError(f"device {device!r}: nextclass runs on {choices}")
    return device


def init_from_env(device: str = "auto") -> bool:
    """Join the process group described by torchrun's environment, if there is one.

    Returns True when this call created the group. A no-op for a single process
    (``WORLD_SIZE`` unset or 1) or when a group already exists (a user script made it).

    Example:
        >>> init_from_env("cpu")  # not under torchrun: nothing to do
        False
    """
    if launched_world_size() <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    dev = torch.device(resolve_device(device))
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


def reduce_max_flag(flag: bool) -> bool:
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


