"""``report.html``: one self-contained page per run (images embedded as base64, no network, no server).

:func:`build_report` reads the run directory (``config.yaml``, ``split.csv``, ``skipped.csv``,
``audit.json``, ``history.csv``, ``metrics.json``, ``predictions*.csv``, the bundle), draws the
plots of :mod:`nextclass.report.plots` (also saved as PNGs under ``<run>/plots/``), computes
Grad-CAM overlays for a few right and wrong test images and measures the model's speed, then
renders ``templates/report.html.j2`` with Jinja2. It runs at the end of every training run
(``ctx`` given: images come from memory) and standalone (``nextclass report RUN``).

A multi-label run (issue 26) gets its own sections (:mod:`nextclass.report.multilabel`, ``SECTIONS`` there): the
single-label-only ones (top-1, confusion matrix, abstaining, prediction sets, neighbours, robustness) are left out.
"""

from __future__ import annotations

import base64
import io
import math
import os
import time
from pathlib import Path

import numpy as np

from nextclass.utils import atomic_write_bytes, atomic_write_text, log
from nextclass.report import plots
from nextclass.report.trust import risk_coverage_note, trust_plots
from nextclass.report.collect import RunImages, audit_summary, dataset_summary, model_info, read_rows
from nextclass.report.multilabel import SECTIONS as LABEL_SECTIONS
from nextclass.report.multilabel import cam_plot as label_cam_plot
from nextclass.report.multilabel import cooccurrence_of, headline_blocks, is_multilabel, label_table, multilabel_plots
from nextclass.rundir import RunDir

__all__ = ["build_report", "SECTIONS"]

#: Section ids of the page, in order (the browser test checks each one).
SECTIONS = ("summary", "dataset", "audit", "config", "training", "metrics", "calibration", "trust", "robustness",
            "predictions", "gradcam", "model")


def _main_block(metrics: dict) -> tuple[str | None, dict]:
    """The headline split and its block: test, else val (single-label or multi-label)."""
    for name in ("test", "val"):
        b = metrics.get(name)
        if isinstance(b, dict) and ("accuracy" in b or b.get("task") == "multi-label"):
            return name, b
    return None, {}


def _pred_rows(run_dir: Path, split: str | None) -> list[dict]:
    if split is None:
        return []
    return read_rows(RunDir(run_dir).predictions(split))


def _caption(r: dict, show_true: bool = True) -> str:
    p = float(r.get("probability") or 0)
    # "pred: 0 (p 0.97)", not "pred: 0 0.97", which reads as "00.97"
    return (f"true: {r['true']}\npred: {r['predicted']} (p {p:.2f})" if show_true else f"{r['predicted']} (p {p:.2f})")


def _pick(rows: list[dict], n: int, rng: np.random.Generator) -> list[dict]:
    if len(rows) <= n:
        return list(rows)
    return [rows[i] for i in sorted(rng.choice(len(rows), n, replace=False))]


def _grid(images: RunImages | None, rows: list[dict | None], cols: int, title: str, caption=_caption) -> bytes | None:
    """Image grid of prediction rows (a None row, or an image that cannot be read, is an empty cell)."""
    if images is None:
        return None
    items = []
    for r in rows:
        a = images.get(r["path"]) if r is not None else None
        items.append((a, caption(r), r.get("correct") == "1") if a is not None else (None, "", None))
    return plots.image_grid(items, cols=cols, title=title)


def _prediction_plots(images: RunImages | None, rows: list[dict], classes: list[str], split: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    right = [r for r in rows if r.get("correct") == "1"]
    wrong = [r for r in rows if r.get("correct") == "0"]
    out: dict[str, bytes | None] = {}
    out["correct"] = _grid(images, _pick(right, 8, rng), 8, f"8 correct ({len(right)} of {len(rows)} {split} images)")
    out["wrong"] = _grid(images, _pick(wrong, 8, rng), 8, f"8 wrong ({len(wrong)} of {len(rows)} {split} images)")

    def loss_caption(r: dict) -> str:
        loss = -math.log(max(float(r.get("true_probability") or 0), 1e-12))
        return f"true: {r['true']}\npred: {r['predicted']} (p {float(r['probability']):.2f})\nloss {loss:.2f}"

    top = sorted(wrong, key=lambda r: float(r.get("true_probability") or 0))[:12]
    out["top_losses"] = _grid(images, top, 6, "top losses: the most confidently wrong", loss_caption)
    per_class: list[dict | None] = []
    for c in classes[:20]:  # one row per class
        picked = _pick([r for r in rows if r["true"] == c], 4, rng)
        per_class += picked + [None] * (4 - len(picked)) if picked else []
    out["per_class"] = _grid(images, per_class, 4, "per-class samples (up to 4 per class, one class per row)",
                             lambda r: f"{r['true']}\npred: {r['predicted']} (p {float(r['probability']):.2f})")
    return out


def _label_issues_plot(images: RunImages | None, block: dict | None, n: int = 12) -> bytes | None:
    """The most suspicious labels of ``audit.json``'s ``label_issues`` block as thumbnails, captioned
    with the given label, the suggested one and the model's probability of the given label."""
    items = (block or {}).get("items") or []
    if not items:
        return None

    def caption(it: dict) -> str:  # a multi-label item's label sets may be empty
        return (f"label: {it['label'] or '(none)'}\nsuggest: {it['suggested'] or '(none)'}\n"
                f"p(label) {float(it['score']):.2f}")

    # a short title: the grid is as narrow as 1 image (the template says how they are ranked)
    return _grid(images, items[:n], 6, f"label issues: top {min(n, len(items))} of {block['n']}", caption)


def _cam_plot(model, images: RunImages | None, rows: list[dict], classes: list[str], pp, seed: int, n: int) -> tuple:
    """Grad-CAM overlays for n/2 right and n/2 wrong predictions (explaining the predicted class)."""
    if model is None or images is None or not rows:
        return None, "Grad-CAM needs the model and the images" if model is None or images is None else "no predictions"
    from nextclass.report.cam import CamError, cam_overlays

    rng = np.random.default_rng(seed + 1)
    wrong = _pick([r for r in rows if r.get("correct") == "0"], n // 2, rng)
    right = _pick([r for r in rows if r.get("correct") == "1"], n - len(wrong), rng)
    chosen = [(r, images.pil(r["path"])) for r in right + wrong]
    chosen = [(r, im) for r, im in chosen if im is not None and r["predicted"] in classes]
    if not chosen:
        return None, "none of the images could be read"
    try:
        overlays, _ = cam_overlays(model, [im for _, im in chosen], pp, [classes.index(r["predicted"]) for r, _ in chosen],
                                   size=160)
    except CamError as e:
        return None, str(e)
    items = [(np.asarray(o), _caption(r), r.get("correct") == "1") for (r, _), o in zip(chosen, overlays)]
    return plots.image_grid(items, cols=4, title="Grad-CAM for the predicted class (green: right, red: wrong)",
                            cell=160), None


def _feature_maps_plot(model, images: RunImages | None, rows: list[dict], pp) -> bytes | None:
    """Activation maps of each backbone stage for the first readable test image (None when not possible)."""
    if model is None or images is None:
        return None
    from nextclass.report.feature_maps import feature_map_grid

    for r in rows[:20]:
        img = images.pil(r["path"])
        if img is not None:
            try:
                return feature_map_grid(model, img, pp)
            except Exception as e:  # noqa: BLE001  (an exotic backbone must not stop the report)
                log(f"[yellow]NOTE[/]: report: feature maps not drawn ({type(e).__name__}: {e})")
                return None
    return None


def _b64(png: bytes | None) -> str | None:
    return None if png is None else "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _thumbs(images: RunImages | None, audit: dict | None) -> None:
    """Small base64 thumbnails of the images each listed audit problem names."""
    from PIL import Image

    for lst in (audit or {}).get("lists", []):
        lst["thumbs"] = []
        for paths in lst["paths"]:
            row = []
            for p in paths:
                a = images.get(p) if images is not None else None
                if a is None:
                    continue
                im = Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a).resize((48, 48), Image.NEAREST)
                buf = io.BytesIO()
                im.save(buf, format="PNG")
                row.append((p, _b64(buf.getvalue())))
            lst["thumbs"].append(row)
        lst["any_thumbs"] = any(lst["thumbs"])


def _load_model(run_dir: Path, model, meta):
    if model is not None or meta is None:
        return model
    from nextclass.bundle import load_model

    try:
        return load_model(RunDir(run_dir).bundle)[0]
    except Exception as e:  # a broken bundle must not stop the report; the page says what is missing
        log(f"[yellow]NOTE[/]: report: model not loaded ({e})")
        return None


def _read_run(run_dir: Path) -> tuple[str, dict, dict, dict | None]:
    """The run's config (text and fields), metrics.json and the bundle's model.json (None without a bundle)."""
    from nextclass.bundle import BundleError, read_meta
    from nextclass.config import ConfigError

    run = RunDir(run_dir)
    cfg_text = run.config.read_text() if run.is_run() else ""
    try:
        cfg = run.read_config().model_dump(mode="json") if cfg_text else {}
    except (ConfigError, OSError):  # a config from another version: the report still builds without it
        cfg = {}
    try:
        meta = read_meta(run.bundle)
    except (BundleError, OSError):
        meta = None
    return cfg_text, cfg, run.read_metrics(), meta


def _metric_plots(history: list[dict], block: dict, split: str | None, classes: list[str]) -> dict[str, bytes | None]:
    """Learning curves, confusion matrix, per-class F1, reliability diagram and robustness (PNG bytes)."""
    png: dict[str, bytes | None] = {"curves": plots.learning_curves(history)}
    if block:
        title = f"{split}: {block['n']} images"
        png["confusion"] = plots.confusion_matrix(block["confusion_matrix"], classes, title)
        png["f1"] = plots.per_class_f1(block["per_class"], title)
        if block.get("calibration"):
            png["reliability"] = plots.reliability_diagram(block["calibration"], title)
        if block.get("robustness"):
            png["robustness"] = plots.robustness_plot(block["robustness"])
    return png


def _model_info(model, run_dir: Path, pp) -> dict | None:
    """Size, parameters and measured speed of the model (None without a model or preprocessing)."""
    if model is None or pp is None:
        return None
    import torch

    with torch.no_grad():
        return model_info(model, RunDir(run_dir).bundle, pp, device=next(model.parameters()).device)


def _task_plots(run_dir: Path, run: dict, images: RunImages | None, model, pp, seed: int, cam_images: int) -> tuple:
    """The plots that depend on the task -> (PNG bytes by name, the Grad-CAM note)."""
    split, block, rows, classes = run["split"], run["block"], run["rows"], run["classes"]
    if run["multilabel"]:
        png = {"curves": plots.learning_curves(run["history"], {"title": "train exact match (at 0.5) / val mAP",
                                                                "train": "train exact match", "val": "val mAP"})}
        if block:
            png.update(multilabel_plots(run_dir, images, rows, block, split, run["meta"], seed))
        png["gradcam"], note = label_cam_plot(model, images, rows, classes, pp, seed, cam_images)
        return png, note
    png = _metric_plots(run["history"], block, split, classes)
    png.update(_prediction_plots(images, rows, classes, split or "", seed))
    png.update(trust_plots(run_dir, images, block, split))
    png["gradcam"], note = _cam_plot(model, images, rows, classes, pp, seed, cam_images)
    return png, note


def build_report(run_dir: str | os.PathLike, model=None, ctx=None, *, cam_images: int = 8, seed: int = 0) -> Path:
    """Write ``<run_dir>/report.html`` (and ``<run_dir>/plots/*.png``); returns the HTML path.

    Args:
        run_dir: a run directory.
        model: the trained model (else the run's bundle is loaded) - for Grad-CAM and the speed figure.
        ctx: the training context (anything with ``source``, ``images``, ``pp``) when called from
            :func:`nextclass.training.finish.finish_run`
            (decoded images are taken from memory instead of re-reading the data).
        cam_images: how many test images get a Grad-CAM overlay (half right, half wrong).

    Example:
        >>> build_report("runs/simple_cnn-digits")  # doctest: +SKIP
        PosixPath('runs/simple_cnn-digits/report.html')
    """
    t0 = time.time()
    run_dir = Path(run_dir)
    run = RunDir(run_dir)
    if not run.is_run() and not run.metrics.exists():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no config.yaml or metrics.json)")
    from nextclass.data.transforms import Preprocess

    cfg_text, cfg, metrics, meta = _read_run(run_dir)
    pp = ctx.pp if ctx is not None else (Preprocess.from_dict(meta["preprocess"]) if meta else None)
    split, block = _main_block(metrics)
    classes = list(block.get("classes") or block.get("labels") or (meta or {}).get("classes") or [])
    images = RunImages(run_dir, pp, ctx, cfg) if pp is not None else None
    model = _load_model(run_dir, model, meta)
    rows = _pred_rows(run_dir, split)
    info = {"split": split, "block": block, "rows": rows, "classes": classes, "history": read_rows(run.history),
            "meta": meta, "multilabel": is_multilabel(block, meta)}
    png, cam_note = _task_plots(run_dir, info, images, model, pp, seed, cam_images)
    png["feature_maps"] = _feature_maps_plot(model, images, rows, pp)
    label_issues = run.read_audit().get("label_issues")
    label_issues = label_issues if isinstance(label_issues, dict) else None
    png["label_issues"] = _label_issues_plot(images, label_issues)
    run.plots.mkdir(exist_ok=True)
    for name, data in png.items():
        if data is not None:
            atomic_write_bytes(run.plots / f"{name}.png", data)
    audit = audit_summary(run_dir)
    _thumbs(images, audit)
    page = _render(run_dir=run_dir, cfg=cfg, cfg_text=cfg_text, metrics=metrics, split=split, block=block,
                   classes=classes, meta=meta, history=info["history"], audit=audit, label_issues=label_issues,
                   dataset=dataset_summary(run_dir, info["multilabel"]), multilabel=info["multilabel"],
                   images_problem=images.problem if images is not None else "no bundle: preprocessing unknown",
                   plots={k: _b64(v) for k, v in png.items()}, cam_note=cam_note, model=_model_info(model, run_dir, pp),
                   seconds=time.time() - t0)
    out = atomic_write_text(run.report, page)
    log(f"report built in {time.time() - t0:.1f}s")
    return Path(out)


def accuracy_interval(block: dict | None) -> list[float] | None:
    """The 95 % Wilson interval of a metrics block's accuracy: its ``accuracy_ci``, or computed from ``accuracy``
    and ``n`` for a block written before nextclass kept one (None without images)."""
    from nextclass.metrics.classification import wilson_interval

    if not isinstance(block, dict) or block.get("accuracy") is None or not block.get("n"):
        return None
    ci = block.get("accuracy_ci")
    if ci is None and not math.isnan(float(block["accuracy"])):
        ci = wilson_interval(round(float(block["accuracy"]) * int(block["n"])), int(block["n"]))
    return list(ci) if ci else None


def _ci_text(block: dict | None, d: int = 1, prefix: str = "95% CI ") -> str:
    """``95% CI 86.2-100.0%`` (the Wilson interval of :func:`accuracy_interval`), or "-" when there is none."""
    ci = accuracy_interval(block)
    return "-" if ci is None else f"{prefix}{100 * ci[0]:.{d}f}\u2013{100 * ci[1]:.{d}f}%"


def _render(**ctx) -> str:
    import datetime as dt

    from jinja2 import Environment, FileSystemLoader, select_autoescape

    from nextclass.utils import VERSION as __version__

    env = Environment(loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
                      autoescape=select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = lambda v, d=1: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.{d}f}%"
    env.filters["num"] = lambda v, d=4: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{d}f}"
    env.filters["mb"] = lambda b: "-" if b is None else f"{b / 2 ** 20:.2f} MB"
    env.filters["thousands"] = lambda v: f"{int(v):,}"
    env.filters["ci"] = _ci_text
    if ctx["multilabel"]:
        blocks, sections = headline_blocks(ctx["metrics"]), LABEL_SECTIONS
        co, no_label = cooccurrence_of(ctx["run_dir"], ctx["classes"])
        extra = {"labels": label_table(ctx["block"]) if ctx["block"] else [], "no_label": no_label,
                 "pairs": _top_pairs(co, ctx["classes"])}
    else:
        blocks, sections, extra = {k: v for k, v in ctx["metrics"].items() if isinstance(v, dict) and "accuracy" in v}, \
            SECTIONS, {}
    return env.get_template("report.html.j2").render(
        **ctx, **extra, blocks=blocks, sections=sections, version=__version__,
        risk_note=risk_coverage_note(ctx["block"], ctx["split"]), now=dt.datetime.now().isoformat(timespec="seconds"), run_name=ctx["run_dir"].name)


def _top_pairs(co, labels: list[str], n: int = 10) -> list[tuple[str, str, int]]:
    """The ``n`` label pairs most often carried together (from the co-occurrence counts), most frequent first."""
    if co is None:
        return []
    pairs = [(labels[i], labels[j], int(co[i, j])) for i in range(len(labels)) for j in range(i + 1, len(labels))
             if co[i, j]]
    return sorted(pairs, key=lambda p: -p[2])[:n]
