"""Temperature scaling and the calibration block of ``metrics.json``.

Temperature scaling (Guo et al. 2017) divides every logit by one scalar ``T`` fitted on the
*validation* split by minimising the negative log-likelihood. Dividing by a positive scalar never
changes which class has the largest logit, so top-1 accuracy is unchanged by construction; only
the confidence moves. ``T > 1`` softens an over-confident model, ``T < 1`` sharpens an
under-confident one (label smoothing, used by default in training, tends to give ``T < 1``).

The fit is a bounded 1-D search over ``log T`` (the NLL is convex in ``1/T``, so unimodal in
``log T``). ``T`` is kept in ``[0.05, 20]``: on a validation split with no mistakes the NLL keeps
falling as ``T`` goes to 0, and the bound stops that at a finite, logged value.
"""

from __future__ import annotations

import math

import numpy as np

from nextclass.utils import log
from nextclass.metrics.classification import ECE_BINS, brier_score, expected_calibration_error, log_loss, reliability_bins, softmax

__all__ = ["fit_temperature", "calibration_block", "nll", "T_MIN", "T_MAX"]

T_MIN, T_MAX = 0.05, 20.0


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``softmax(logits / T)`` (computed in float64 with log-sum-exp).

    Example:
        >>> round(nll(np.array([[0.0, 0.0]]), np.array([0])), 6)
        0.693147
    """
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    labels = np.asarray(labels, dtype=int)
    m = z.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    return float((lse - z[np.arange(len(labels)), labels]).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fit the temperature ``T`` that minimises the NLL of ``softmax(logits / T)`` on these (validation) logits.

    Returns 1.0 when there is nothing to fit (no rows, or no mistakes: the NLL would then push ``T``
    towards 0 and make every prediction look certain). Never changes the argmax of any row.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> y = rng.integers(0, 3, 500)
        >>> lg = 10 * np.eye(3)[y] + rng.normal(0, 4, (500, 3))  # over-confident logits
        >>> fit_temperature(lg, y) > 1
        True
    """
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    if len(labels) == 0 or logits.ndim != 2:
        return 1.0
    mistakes = int((logits.argmax(1) != labels).sum())
    if mistakes == 0:
        # With no wrong prediction the NLL keeps falling as T -> 0: the fit would make every future prediction
        # look certain on no evidence. Keep the model's own confidence instead.
        log(f"[yellow]NOTE[/]: no mistakes on {len(labels)} validation images: nothing to calibrate against, "
            f"temperature kept at 1")
        return 1.0
    res = minimize_scalar(lambda t: nll(logits, labels, math.exp(t)), bounds=(math.log(T_MIN), math.log(T_MAX)),
                          method="bounded", options={"xatol": 1e-4})
    t = float(math.exp(res.x))
    # The bounded search never evaluates the bounds exactly: snap, and never return worse than T = 1.
    for cand in (T_MIN, T_MAX, 1.0):
        if nll(logits, labels, cand) < nll(logits, labels, t):
            t = cand
    if t <= T_MIN * 1.01 or t >= T_MAX * 0.99:
        log(f"[yellow]NOTE[/]: temperature {t:.3g} fitted on {len(labels)} validation images with {mistakes} "
            f"mistakes (bounds [{T_MIN}, {T_MAX}]): too little evidence to calibrate well")
    return round(t, 5)


def _scores(probs: np.ndarray, labels: np.ndarray) -> dict:
    return {"log_loss": log_loss(probs, labels), "brier": brier_score(probs, labels),
            "ece": expected_calibration_error(probs, labels, ECE_BINS)}


def calibration_block(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict:
    """Log-loss, Brier score and ECE before (T = 1) and after temperature scaling, with reliability-diagram bins.

    Returns ``{"calibration": {...}}`` so it can be merged into a split's metrics block; the block
    repeats ``n`` (how many images the numbers come from) and the temperature used.

    Example:
        >>> b = calibration_block(np.array([[2.0, 0.0], [0.0, 1.0]]), np.array([0, 1]), 1.5)["calibration"]
        >>> b["n"], b["temperature"], b["top1_unchanged"]
        (2, 1.5, True)
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    before, after = softmax(logits, 1.0), softmax(logits, temperature)
    same = bool(len(labels) == 0 or np.array_equal(before.argmax(1), after.argmax(1)))
    return {"calibration": {
        "temperature": float(temperature),
        "fitted_on": "val",
        "n": int(len(labels)),
        "bins": ECE_BINS,
        "before": _scores(before, labels),
        "after": _scores(after, labels),
        "top1_unchanged": same,
        "reliability": {"before": reliability_bins(before, labels, ECE_BINS),
                        "after": reliability_bins(after, labels, ECE_BINS)},
    }}
