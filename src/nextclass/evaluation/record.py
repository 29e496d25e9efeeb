"""What the scorer's numbers become in a run directory: ``predictions*.csv`` and ``metrics.json`` blocks."""

from __future__ import annotations

import numpy as np

from nextclass.evaluation.scorer import EvalImages
from nextclass.metrics.predictions import summary_line, write_predictions
from nextclass.rundir import RunDir
from nextclass.utils import log

__all__ = ["record"]


def record(run: RunDir, scored: dict[str, tuple[dict, np.ndarray, EvalImages]], classes: list[str],
           extra: dict | None = None) -> dict:
    """Write each block's ``predictions*.csv`` and merge the blocks (and ``extra``) into ``metrics.json``.

    Args:
        scored: block name -> (metrics block, calibrated probabilities, the images they were measured on).

    Returns:
        The whole ``metrics.json`` after the merge.
    """
    for name, (block, probs, images) in scored.items():
        write_predictions(run.predictions(name), images.ids, name, images.labels, probs, classes,
                          thresholds=block.get("thresholds"))
        log(summary_line(block))
    return run.merge_metrics({**{name: b for name, (b, _, _) in scored.items()}, **(extra or {})})
