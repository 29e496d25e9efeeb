"""The report's "trust" section: risk-coverage, right-vs-wrong AUROC, prediction sets, and the wrong predictions'
nearest training images (read from ``metrics.json`` and the bundle's ``neighbors.safetensors``)."""

from __future__ import annotations

from pathlib import Path

from nextclass.report import plots
from nextclass.rundir import RunDir

__all__ = ["trust_plots", "risk_coverage_note", "no_errors"]

SHOWN = 8  # wrong predictions drawn with their neighbours


def _neighbor_grid(run_dir: Path, images, block: dict) -> bytes | None:
    """One row per wrong prediction: the image, then its nearest training images (label and distance)."""
    from nextclass.neighbors import NeighborIndex

    nb = block.get("neighbors") or {}
    wrong = (nb.get("wrong") or [])[:SHOWN]
    if not wrong or images is None:
        return None
    index = NeighborIndex.load(RunDir(run_dir).bundle)
    if index is None:
        return None
    classes = block.get("classes") or []
    items = []
    for w in wrong:
        items.append((images.get(w["path"]), f"true: {w['true']}\npred: {w['predicted']}", False))
        for pos, dist in w["neighbors"]:
            label = classes[int(index.labels[pos])] if classes else str(int(index.labels[pos]))
            items.append((index.thumbs[pos], f"{label}\nd = {dist:.3f}", label == w["true"]))
    cols = 1 + max(len(w["neighbors"]) for w in wrong)
    return plots.image_grid(items, cols=cols, title="wrong predictions (first column) and their nearest training "
                            "images (green: of the true class)", cell=96)


def no_errors(selective: dict | None) -> bool:
    """True when a split's risk-coverage curve is 0 everywhere (no wrong prediction): a plot of it would be empty."""
    rows = (selective or {}).get("risk_coverage") or []
    return bool(rows) and all(float(r[2]) == 0.0 for r in rows)


def risk_coverage_note(block: dict | None, split: str | None) -> str | None:
    """The one line the report shows instead of an empty risk-coverage plot (None when there is a curve to draw)."""
    if not block or not no_errors(block.get("selective")):
        return None
    return (f"No risk-coverage curve: none of the {block.get('n', 0)} {split} predictions is wrong, so the risk "
            "(error rate of the accepted predictions) is 0 at every coverage.")


def trust_plots(run_dir: Path, images, block: dict, split: str | None) -> dict:
    """PNG bytes: ``risk_coverage`` on the main split (None without a wrong prediction: :func:`risk_coverage_note`
    says so instead), ``neighbors`` of its wrong predictions and its ``sets`` (coverage per class, set sizes)."""
    sel = block.get("selective") or {}
    draw = sel and not no_errors(sel)
    sets = block.get("sets")
    return {"risk_coverage": plots.risk_coverage(sel, f"{split}: {block.get('n', 0)} images") if draw else None,
            "neighbors": _neighbor_grid(run_dir, images, block),
            "sets": plots.prediction_sets(sets, f"{split}: prediction sets for coverage {sets['target']:g}")
            if sets and sets.get("n") else None}
