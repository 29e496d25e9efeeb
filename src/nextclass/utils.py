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
    "publish_file",
    "natural_key",
    "sha1_of",
    "log",
    "default_cache_dir",
    "default_data_home",
    "configure_threads",
    "parse_ratios",
    "file_sha256",
    "progress_bar",
    "can_reach",
    "hub_host",
    "VERSION",
]

VERSION = "0.1.0"  # the library's version (``nextclass.__version__``), written into every bundle



def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder, then rename.

    A reader (or a run killed mid-write) never sees a half-written file: ``os.replace`` is
    atomic on POSIX and Windows when source and target share a file system.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file 0600; give it the mode any other new file gets (0644 under the usual umask),
        # so model.json and metrics.json are as readable as the weights and the ONNX files beside them
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` sets it, a race with other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def publish_file(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Rename a finished temp file onto ``path`` with the mode a new file gets (0644 under the usual umask).

    For files written by libraries that create them 0600 (safetensors' ``save_file``, ``tempfile.mkstemp``):
    every file of a bundle then has one mode, as readable as the ONNX files beside them.
    """
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
    return Path(path)


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


# NOTE: the two functions below are the only places that read the environment outside the torchrun
# variables in nextclass.dist: they follow the XDG base-directory convention for *where files live by
# default* (as pip and matplotlib do); every run setting travels in the typed config (cache_dir, ...).
def default_cache_dir() -> Path:
    """``$NEXTCLASS_CACHE`` or ``$XDG_CACHE_HOME/nextclass`` (never beside the user's images)."""
    env = os.environ.get("NEXTCLASS_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nextclass"


def default_data_home() -> Path:
    """``$NEXTCLASS_HOME`` or ``$XDG_DATA_HOME/nextclass`` (the model store lives in ``models/`` there)."""
    if os.environ.get("NEXTCLASS_HOME"):
        return Path(os.environ["NEXTCLASS_HOME"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "nextclass"


def configure_threads(threads: int | str | None) -> int:
    """Set torch's intra-op threads and return the value used; ``auto``/None (a config not resolved yet): all cores."""
    import torch

    n = (threads if isinstance(threads, int) else None) or os.cpu_count() or 1
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def parse_ratios(spec: str | tuple | list) -> tuple[float, float, float]:
    """``"70/20/10"``, ``"0.7,0.2,0.1"`` or a 3-sequence → fractions summing to 1 (ValueError otherwise).

    The three numbers must add up to 100 (percent) or 1 (fractions): ``80/30/10`` is a typo, not a ratio to
    rescale silently.

    Example:
        >>> parse_ratios("80/10/10")
        (0.8, 0.1, 0.1)
    """
    if isinstance(spec, str):
        parts = [p for p in spec.replace("/", ",").replace(":", ",").split(",") if p.strip()]
    else:
        parts = list(spec)
    try:
        vals = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise ValueError(f"split {spec!r}: expected three numbers like 70/20/10") from None
    if len(vals) != 3 or any(v < 0 for v in vals) or sum(vals) <= 0 or vals[0] <= 0:
        raise ValueError(f"split {spec!r}: expected three non-negative numbers train/val/test with train > 0")
    s = sum(vals)
    if not (abs(s - 100) < 1e-6 or abs(s - 1) < 1e-6):
        raise ValueError(f"split {spec!r}: train/val/test add up to {s:g}; give percentages that sum to 100 "
                         "(e.g. 70/20/10) or fractions that sum to 1")
    if abs(s - 1) < 1e-6:  # fractions: kept exactly as given (a saved config reads back unchanged)
        return (vals[0], vals[1], vals[2])
    return (vals[0] / s, vals[1] / s, vals[2] / s)


def file_sha256(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` of a file, read in 1 MiB chunks (bundles and the model store record it)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def progress_bar(enabled: bool = True):
    """The Rich progress bar every long loop uses: count, elapsed, ETA and a free ``metrics`` field."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[metrics]}"),
                    disable=not enabled, transient=True)


def hub_host() -> str:
    """The Hugging Face Hub's host name (``$HF_ENDPOINT``'s when set, as huggingface_hub reads it)."""
    from urllib.parse import urlparse

    return urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"


def can_reach(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds (name lookup included).

    A quick answer to "are we offline?" before a download that would otherwise spend half a minute in
    retries. The lookup runs in a daemon thread because ``getaddrinfo`` itself has no timeout.

    Example:
        >>> can_reach("localhost", 9, timeout=0.5)  # doctest: +SKIP
        False
    """
    import socket
    import threading

    ok: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok)
