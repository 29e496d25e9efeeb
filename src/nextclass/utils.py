"""Small shared helpers: atomic writes, natural sort, hashing, logging, threads."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "natural_key",
    "sha1_of",
    "log",
    "default_cache_dir",
    "configure_threads",
]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder, then rename.

    A reader (or a run killed mid-write) never sees a half-written file: ``os.replace`` is
    atomic on POSIX and Windows when source and target share a file system.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


_DIGITS = re.compile(r"(\d+)")


def natural_key(s: str) -> tuple:
    """Sort key so that ``class2`` comes before ``class10`` (case-insensitive)."""
    return tuple(int(t) if t.isdigit() else t.lower() for t in _DIGITS.split(str(s)))


def sha1_of(items: Iterable[Any]) -> str:
    h = hashlib.sha1()
    for it in items:
        h.update(repr(it).encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def log(msg: str, *, style: str | None = None) -> None:
    """Print a line to stderr through Rich (keeps stdout clean for tables/CSV/JSON)."""
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(msg, style=style)


def default_cache_dir() -> Path:
    """``$NEXTCLASS_CACHE`` or ``$XDG_CACHE_HOME/nextclass`` (never beside the user's images)."""
    env = os.environ.get("NEXTCLASS_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nextclass"


def configure_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (default: all cores) and return the value used."""
    import torch

    n = threads or os.cpu_count() or 1
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
