"""Temperature scaling and the calibration block of ``metrics.json``.

Temperature scaling (Guo et al. 2017) divides every logit by one scalar ``T`` fitted on the
*validation* split by minimising the negative log-likelihood. Dividing by a positive scalar never
changes which class has the largest logit, so top-1 accuracy is unchanged by construction; only
the confidence moves. ``T > 1`` softens an over-confident model, ``T < 1`` sharpens an
under-confident one (label smoothing, used by default in training, tends to give ``T < 1``).

The fit is a bounded 1-D search over ``log T`` (the NLL is convex in ``1/T``, so unimodal in
``log T``), within ``[0.05, 20]``. With few or no mistakes on val the NLL keeps falling as ``T`` goes
to 0, which would make every future prediction look certain on no evidence. So the fit is also
bounded by what the validation split can support: the mean top-1 confidence after scaling may not
exceed Laplace's estimate of the accuracy, ``(correct + 1) / (n + 2)`` (with 359 right out of 359 that
is 0.9972, not 1.0). An under-confident model with no mistakes is therefore still sharpened, up to
that cap; a calibrated model with some mistakes is rarely affected (its NLL optimum already has mean
confidence near its accuracy).
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


def _confidence_cap(logits: np.ndarray, labels: np.ndarray) -> float:
    """Laplace's rule of succession: the accuracy the validation split supports, ``(correct + 1) / (n + 2)``."""
    return (int((logits.argmax(1) == labels).sum()) + 1) / (len(labels) + 2)


def _mean_confidence(logits: np.ndarray, t: float) -> float:
    return float(softmax(logits, t).max(axis=1).mean())


def _lowest_t_within_cap(logits: np.ndarray, cap: float) -> float:
    """The smallest T whose mean top-1 confidence is at most ``cap`` (confidence falls as T grows)."""
    lo, hi = math.log(T_MIN), math.log(T_MAX)
    if _mean_confidence(logits, T_MIN) <= cap:
        return T_MIN
    for _ in range(60):  # bisection on log T
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if _mean_confidence(logits, math.exp(mid)) <= cap else (mid, hi)
    return math.exp(hi)


def fit_temperature(logits: np.ndarray, labels: np.ndarray, quiet: list | None = None) -> float:
    """Fit the temperature ``T`` that minimises the NLL of ``softmax(logits / T)`` on these (validation) logits,
    with the mean confidence capped at ``(correct + 1) / (n + 2)`` (see the module docstring).

    Returns 1.0 when there is nothing to fit (no rows). Never changes the argmax of any row. ``quiet``: a list
    that receives the note on a capped temperature instead of the log (a caller fitting many at once).

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
    res = minimize_scalar(lambda t: nll(logits, labels, math.exp(t)), bounds=(math.log(T_MIN), math.log(T_MAX)),
                          method="bounded", options={"xatol": 1e-4})
    t = float(math.exp(res.x))
    for cand in (T_MIN, T_MAX, 1.0):  # the bounded search never evaluates the bounds exactly
        if nll(logits, labels, cand) < nll(logits, labels, t):
            t = cand
    cap = _confidence_cap(logits, labels)
    floor = _lowest_t_within_cap(logits, cap)
    if t < floor:
        mistakes = int((logits.argmax(1) != labels).sum())
        note = (f"temperature {t:.3g} would claim more confidence than {len(labels)} validation images with "
                f"{mistakes} mistake(s) support; using T = {floor:.3g} (mean confidence {cap:.4f})")
        if quiet is not None:
            quiet.append(note)
        else:
            log(f"[dim]note[/] {note}")
        t = floor
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
