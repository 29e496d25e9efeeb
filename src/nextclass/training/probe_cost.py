"""What a linear probe's logistic fit costs: the rows its L2 strength is chosen on, and the seconds the planner
expects it to take (:mod:`nextclass.training.plan` counts them into the budget, :mod:`nextclass.training.linear_probe`
fits)."""

from __future__ import annotations

__all__ = ["SELECT_ROWS", "PROBE_FIT_S", "PROBE_ROW_S", "PROBE_REFIT_ROW_S", "probe_fit_s"]

SELECT_ROWS = 10_000  # rows C is chosen on (a seeded subsample above it); the chosen C is then refit on all
#: The logistic fit of a probe (7 values of C on <= SELECT_ROWS rows, then the chosen C on all): a fixed part and a
#: part per training row (x feature dims / 1,280 x classes / 10), seconds on 2 cores. Measured with Lite0 features
#: and 10 classes: 3,500 rows 11.2 s, 7,000 rows 27.9 s, 420 rows 1.7-3.3 s (a flat 10 s before: a 2-minute run on
#: 5,000 photos ended 2.5 s past its budget).
PROBE_FIT_S = 2.0
PROBE_ROW_S = 3e-3  # per row of the C sweep
PROBE_REFIT_ROW_S = 5e-4  # per row of the final fit at the chosen C


def probe_fit_s(ctx, rows: int) -> float:
    """Seconds the probe's logistic fit on ``rows`` training rows is expected to take (see :data:`PROBE_ROW_S`).

    Example:
        >>> from types import SimpleNamespace
        >>> round(probe_fit_s(SimpleNamespace(model=SimpleNamespace(num_features=1280), classes=range(10)), 7000), 1)
        26.5
    """
    size = getattr(ctx.model, "num_features", 1280) / 1280 * max(len(ctx.classes), 2) / 10
    return PROBE_FIT_S + (PROBE_ROW_S * min(rows, SELECT_ROWS) + PROBE_REFIT_ROW_S * rows) * size
