"""The wall-clock budget of a run (``--max-minutes``), the same verdict on every DDP rank."""

from __future__ import annotations

import time

from nextclass.dist import is_distributed, reduce_max_flag

__all__ = ["Budget"]


class Budget:
    """Wall-clock budget; ``None`` minutes means no limit.

    Under DDP each rank's clock drifts: if one rank stopped mid-epoch and the others did not, the
    gradient all-reduce would hang. With ``synced=True`` every call all-reduces (MAX) the verdict,
    so call :meth:`exceeded` once per step on every rank.

    Example:
        >>> Budget(None).exceeded()
        False
    """

    def __init__(self, minutes: float | None, start: float | None = None, synced: bool = False):
        self.deadline = None if minutes is None else (start or time.time()) + 60 * minutes
        self.synced = synced and is_distributed()

    def remaining(self) -> float | None:
        """Seconds left (negative once exceeded); None without a limit."""
        return None if self.deadline is None else self.deadline - time.time()

    def exceeded(self) -> bool:
        over = self.deadline is not None and time.time() > self.deadline
        return reduce_max_flag(over) if self.synced else over
