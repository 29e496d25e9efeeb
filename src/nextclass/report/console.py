"""Console renderings of finished results: Rich tables, CSV and JSON text for the command line.

Each function takes a result the library already returned (a dict or a list of dicts) and gives back
a Rich renderable, a string with Rich markup, or plain text; nothing here prints, so the CLI decides
where things go (stdout, stderr, a file) and a notebook can render the same objects. Rich is imported
inside the functions: the CLI imports this module at start-up and ``nextclass --help`` must stay fast.

Example:
    >>> from rich.console import Console
    >>> from nextclass.report.console import metrics_table
    >>> Console().print(metrics_table(nextclass.evaluate("runs/demo-digits")))  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from rich.table import Table

__all__ = [
    "audit_class_table",
    "audit_problems_table",
    "audit_summary_lines",
    "benchmark_summary_lines",
    "benchmark_table",
    "explain_table",
    "export_table",
    "json_text",
    "label_issue_lines",
    "metrics_table",
    "models_table",
    "multilabel_table",
    "predictions_csv",
    "predictions_json",
    "predictions_table",
    "suggest_lines",
]

_MAX_CLASS_ROWS = 30  # the audit's class table stops here; the JSON report has every class
_MAX_UNREADABLE = 10  # unreadable files listed under the audit summary
_MAX_MEMBERS = 4  # files shown per duplicate group


def json_text(obj: Any, default: Callable[[Any], Any] | None = None) -> str:
    """``obj`` as indented JSON (no trailing newline), as the CLI prints and writes it.

    Args:
        obj: A JSON-able result (dicts, lists, numbers, strings).
        default: Called for objects JSON cannot encode (``float`` for numpy scalars); None raises.

    Example:
        >>> json_text({"a": 1})
        '{\\n  "a": 1\\n}'
    """
    return json.dumps(obj, indent=2, default=default)


# ----------------------------------------------------------------------------------------- audit


def _n(v: int) -> str:
    """A count, red when it is not zero (a problem was found)."""
    return f"[red]{v}[/]" if v else "0"


def _kind(rep: dict) -> str:
    """What an audit counts: ``label`` (a multi-label report: images carrying each label) or ``class``."""
    return "label" if rep.get("task") == "multi-label" else "class"


def audit_class_table(rep: dict) -> Table:
    """Images per class and split of a :func:`nextclass.data.audit.audit` report (classes with few images in red;
    a multi-label report: images carrying each label)."""
    from rich.table import Table

    cls, what = rep["classes"], _kind(rep)
    t = Table(title=f"images per {what} and split", show_edge=False)
    t.add_column(what)
    for sp in cls["counts"]:
        t.add_column(sp, justify="right")
    t.add_column("total", justify="right")
    for c in cls["names"][:_MAX_CLASS_ROWS]:
        few = c in cls["few_images"]
        t.add_row(f"[red]{c}[/]" if few else c, *[str(d[c]) for d in cls["counts"].values()], str(cls["totals"][c]))
    if len(cls["names"]) > _MAX_CLASS_ROWS:
        t.add_row(f"... {len(cls['names']) - _MAX_CLASS_ROWS} more", *[""] * (len(cls["counts"]) + 1))
    return t


def audit_problems_table(rep: dict) -> Table:
    """The audit's problem counts: unreadable files, duplicates, leaks between splits, label conflicts."""
    from rich.table import Table

    s, cls = rep["summary"], rep["classes"]
    p = Table(title="problems", show_edge=False)
    p.add_column("check")
    p.add_column("found", justify="right")
    p.add_row("unreadable files", _n(s["unreadable"]))
    p.add_row("exact duplicate groups (extra copies)", f"{_n(s['exact_groups'])} ({s['exact_extra_copies']})")
    p.add_row(f"near-duplicate pairs (phash <= {rep['method']['near_threshold']} bits)", _n(s["near_pairs"]))
    for pair, c in s["cross_split"].items():
        p.add_row(f"leak {pair}: exact / near", f"{_n(c['exact'])} / {_n(c['near'])}")
    ml = _kind(rep) == "label"
    p.add_row(f"duplicate groups with different {'label sets' if ml else 'labels'}", _n(s["label_conflict_groups"]))
    p.add_row(f"{'labels' if ml else 'classes'} with < 5 images", _n(len(cls["few_images"])))
    if ml:
        p.add_row("images with no label", str(rep["label_sets"]["no_label"]))
    return p


def _audit_overview_lines(rep: dict) -> list[str]:
    """Image sizes/modes/formats (when decoded) and the class imbalance line."""
    cls, out = rep["classes"], []
    if rep.get("images") and rep["images"].get("min_side") is not None:  # sizes of the readable images only
        im = rep["images"]
        out.append(f"sizes: {im['distinct_sizes']} distinct, shorter side {im['min_side']}-{im['max_side']} px "
                   f"(median {im['median_side']}); modes {im['modes']}; formats {im['formats']}")
    ratio, what = cls["imbalance_ratio"], _kind(rep)
    out.append(f"imbalance (largest/smallest {what}{' in train' if 'train' in cls['counts'] else ''}): "
               + (f"{ratio:.2f}" if ratio else f"[red]a {what} is empty[/]"))
    ls = rep.get("label_sets")
    if ls:  # multi-label: how many labels an image carries, and which go together
        out.append(f"labels per image: {ls['cardinality']:.2f} on average; {ls['no_label']} of {ls['images']} image(s) "
                   "carry none")
        out.append("most frequent pairs: " + (", ".join(f"{'+'.join(p['labels'])} {p['images']}" for p in ls["pairs"][:6])
                                              or "none (no image carries two labels)"))
    return out


def _audit_duplicate_lines(rep: dict, max_groups: int) -> list[str]:
    """The first unreadable files and duplicate groups (with a few members each), then the findings."""
    out = [f"  [red]unreadable[/] {u['path']}: {u['reason']}" for u in rep["unreadable"][:_MAX_UNREADABLE]]
    for g in rep["duplicates"][:max_groups]:
        tag = (("[red]labels differ[/] " if g["label_conflict"] else "")
               + ("[yellow]across splits[/] " if g["cross_split"] else ""))
        dist = f"(phash within {g['max_distance']} bits)" if g["kind"] == "near" else "(identical pixels)"
        out.append(f"  {g['kind']} x{g['size']} {tag}{dist}")
        out += [f"    {m['split']:<5} {m['label']:<12} {m['path']}" for m in g["members"][:_MAX_MEMBERS]]
    if len(rep["duplicates"]) > max_groups:
        out.append(f"  ... {rep['summary']['duplicate_clusters'] - max_groups} more group(s) in the JSON report")
    out += [f"[yellow]![/] {f}" for f in rep["findings"]]
    if not rep["findings"]:
        out.append("[green]no problems found[/]")
    return out


def audit_summary_lines(rep: dict, max_groups: int = 8) -> list:
    """A readable summary of an audit report, one renderable (markup string or table) per ``print`` call.

    Args:
        rep: The report :func:`nextclass.data.audit.audit` returned.
        max_groups: Duplicate groups listed before "... N more group(s)".

    Example:
        >>> for line in audit_summary_lines(nextclass.audit("photos/")):  # doctest: +SKIP
        ...     console.print(line)
    """
    cls = rep["classes"]
    names = f"{len(cls['names'])} labels (multi-label)" if _kind(rep) == "label" else f"{len(cls['names'])} classes"
    head = (f"[bold]{rep['data']}[/]: {rep['n_images']} images ({rep['n_readable']} readable), "
            f"{names} - {rep['splits']['note']}")
    return [head, audit_class_table(rep), *_audit_overview_lines(rep), audit_problems_table(rep),
            *_audit_duplicate_lines(rep, max_groups)]


# ------------------------------------------------------------------------------------- benchmark


def benchmark_table(r: dict) -> Table:
    """Images/s per part (decode, loader, model alone, whole step, compiled step) of a benchmark result."""
    from rich.table import Table

    t = Table(show_edge=False)
    t.add_column("part")
    t.add_column("img/s", justify="right")
    t.add_column("what was timed")
    d = r["decode"]
    t.add_row(f"decode ({d['cache']})", f"{d['images_per_second']:,.0f}",
              f"{d['images']:,} images into the uint8 cache at {r['cache_size']}px ({d['seconds']:.1f} s"
              + ("; read once, then every epoch reads the cache)" if d["cache"] == "hit" else "; once per dataset)"))
    if d.get("per_file"):
        pf = d["per_file"]
        t.add_row("decode per file", f"{pf['images_per_second_one_process']:,.0f}",
                  f"what a loop decoding files every epoch pays, 1 process ({pf['files']} files; "
                  f"~{pf['images_per_second_all_cores_estimate']:,.0f} on all cores)")
    t.add_row("loader alone", f"{r['loader']['images_per_second']:,.0f}", r["loader"]["kind"])
    ma = r["model_alone"]
    t.add_row("model alone: train step", f"{ma['train_step_images_per_second']:,.0f}",
              "forward + backward + optimiser on one batch held in memory"
              + (f"; {ma['train_step_gflops']:,.0f} GFLOP/s = {ma['fraction_of_peak']:.2f} of this machine's fp32 "
                 f"matmul peak ({ma['matmul_peak_gflops']:,.0f})" if "fraction_of_peak" in ma else ""))
    t.add_row("model alone: inference", f"{r['model_alone']['inference_images_per_second']:,.0f}", "forward, no grad")
    t.add_row("[bold]whole training step[/]", f"[bold]{r['step']['images_per_second']:,.0f}[/]",
              f"loader + augmentation + step; epoch of {r['train_images']:,} images ~ "
              f"{r['step']['epoch_seconds_estimate']:.1f} s")
    if r.get("compile"):
        c = r["compile"]
        t.add_row("compiled training step", f"{c['images_per_second']:,.0f}",
                  f"{c['speedup']:.2f}x eager; first step {c['first_step_seconds']:.1f} s (compiling)")
    return t


def benchmark_summary_lines(r: dict) -> list:
    """The setup line, :func:`benchmark_table` and the verdict lines of a :func:`nextclass.benchmark.benchmark` result.

    Example:
        >>> for line in benchmark_summary_lines(benchmark("digits")):  # doctest: +SKIP
        ...     console.print(line)
    """
    head = (f"[bold]{r['data']}[/] | {r['model']} at {r['img_size']}px x{r['channels']}, batch {r['batch_size']}, "
            f"{r['device']} ({r['threads']} threads), channels_last {r['channels_last']}, amp {r['amp']}, "
            f"augment {r['augment']}; {r['steps']} timed steps after {r['warmup']} warm-up")
    return [head, benchmark_table(r), *[f"[yellow]>[/] {line}" for line in r["verdict"]]]


# ------------------------------------------------------------------------------ evaluate, predict


def metrics_table(m: dict) -> Table:
    """Per-class precision/recall/F1/support and the macro/weighted averages of a metrics block (a multi-label block:
    :func:`multilabel_table`).

    Example:
        >>> Console().print(metrics_table(nextclass.evaluate("runs/demo-digits")))  # doctest: +SKIP
    """
    from rich.table import Table

    if m.get("task") == "multi-label":
        return multilabel_table(m)

    t = Table(title=f"{m['split']}: {m['n']} images - accuracy {m['accuracy']:.4f}, top-5 {m['top5']:.4f}")
    for c in ("class", "precision", "recall", "f1", "support"):
        t.add_column(c, justify="left" if c == "class" else "right")
    for c, r in m["per_class"].items():
        t.add_row(c, f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}", str(r["support"]))
    for avg in ("macro", "weighted"):
        t.add_row(f"[bold]{avg} avg", f"{m[avg]['precision']:.3f}", f"{m[avg]['recall']:.3f}", f"{m[avg]['f1']:.3f}",
                  str(m["n"]))
    return t


def multilabel_table(m: dict) -> Table:
    """Per-label precision/recall/F1/AP at the label's threshold, with support and images predicted, and the micro and
    macro averages of a multi-label metrics block (:func:`nextclass.metrics.multilabel.multilabel_metrics`).

    Example:
        >>> t = multilabel_table({"split": "test", "n": 2, "map": 1.0, "exact_match": 0.5, "hamming_loss": 0.25,
        ...     "micro": {"precision": 1.0, "recall": 0.5, "f1": 0.667}, "macro": {"precision": 1.0, "recall": 0.5,
        ...     "f1": 0.667}, "per_label": {"cat": {"precision": 1.0, "recall": 0.5, "f1": 0.667, "ap": 1.0,
        ...     "support": 2, "predicted": 1, "threshold": 0.4}}})
        >>> t.row_count
        3
    """
    from rich.table import Table

    t = Table(title=f"{m['split']}: {m['n']} images - mAP {_f4(m.get('map')) or '-'}, macro F1 {m['macro']['f1']:.4f}",
              caption=f"micro F1 {m['micro']['f1']:.4f}, exact match {m['exact_match']:.4f}, Hamming loss "
              f"{m['hamming_loss']:.4f}; a label is predicted at or above its threshold (chosen on val)")
    for c in ("label", "threshold", "precision", "recall", "f1", "AP", "support", "pred."):
        t.add_column(c, justify="left" if c == "label" else "right")
    for c, r in m["per_label"].items():
        t.add_row(c, f"{r['threshold']:.3f}", f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}",
                  "-" if r.get("ap") is None else f"{r['ap']:.3f}", str(r["support"]), str(r["predicted"]))
    for avg in ("micro", "macro"):
        t.add_row(f"[bold]{avg} avg", "", f"{m[avg]['precision']:.3f}", f"{m[avg]['recall']:.3f}",
                  f"{m[avg]['f1']:.3f}", "", "", "")
    return t


def sets_table(m: dict) -> Table:
    """Prediction sets of a metrics block: empirical coverage per class against the target, and the set sizes.

    Example:
        >>> Console().print(sets_table(nextclass.evaluate("runs/digits-sets")))  # doctest: +SKIP
    """
    from rich.table import Table

    s = m["sets"]
    th = "infinite: val too small, every set is every class" if s.get("too_small") else f"threshold {s['threshold']:.4f}"
    sizes = ", ".join(f"{k}: {c}" for k, c in enumerate(s["size_histogram"]) if c)
    t = Table(title=f"{m['split']}: prediction sets for coverage {s['target']:g}: coverage {_percent(s['coverage'])}, "
              f"mean size {s['mean_size']:.2f}",
              caption=f"{s['score'].upper()}, {th}, {s['val_n']} val images; images per set size {sizes}; "
              f"singletons right {_percent(s.get('singleton_accuracy'))}")
    for c in ("class", "coverage", "mean size", "support"):
        t.add_column(c, justify="left" if c == "class" else "right")
    for c, r in s["per_class"].items():
        t.add_row(c, _percent(r["coverage"]), "-" if r["mean_size"] is None else f"{r['mean_size']:.2f}", str(r["n"]))
    t.add_row("[bold]all", _percent(s["coverage"]), f"{s['mean_size']:.2f}", str(s["n"]))
    return t


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def predictions_table(rows: Sequence[dict], topk: int) -> Table:
    """One row per image: prediction, its probability and the runners-up (unreadable files in red).

    Args:
        rows: ``Prediction.to_dict()`` rows (``source``, ``label``, ``probability``, ``topk``, maybe ``error``).
        topk: The k asked for (the last column's title).
    """
    from rich.table import Table

    t = Table(show_lines=False)
    with_nb = any(r.get("neighbors") for r in rows)
    with_set = any("set" in r for r in rows)
    for c in ("file", "prediction", "prob", f"top-{topk}") + (("set",) if with_set else ()) \
            + (("nearest training images",) if with_nb else ()):
        t.add_column(c)
    for r in rows:
        nb = (("",) if with_set else ()) + (("",) if with_nb else ())
        if r.get("error"):
            t.add_row(r["source"], "[red]unreadable", "", r["error"], *nb)
            continue
        sets = ("{" + ", ".join(r.get("set") or []) + "}",) if with_set else ()
        label = f"[yellow]abstain[/] (best guess {r['label']})" if r.get("abstained") else r["label"]
        if r.get("unfamiliar"):
            label += " [magenta]unfamiliar[/]"
        nb = (", ".join(f"{n['label']} d={n['distance']:.3f}" for n in r.get("neighbors") or []),) if with_nb else ()
        t.add_row(r["source"], label, f"{r['probability']:.3f}",
                  ", ".join(f"{x['label']} {x['probability']:.2f}" for x in r["topk"][1:]), *sets, *nb)
    return t


def predictions_csv(rows: Sequence[dict]) -> str:
    """CSV text with the header ``path,label,probability,abstained,unfamiliar,topk,error`` (+ ``set`` and
    ``neighbors`` when asked for).

    Top-k as ``label:p;label:p``; ``abstained`` is 1 when the label is only a best guess below the abstain
    threshold; ``unfamiliar`` is 1 when the image is farther from every training image than the bundle's
    threshold, empty when not checked; the prediction set as ``label;label`` (most probable first, empty for an
    empty set); neighbours as ``label:distance:id;...`` (thumbnails: JSON format only).

    Example:
        >>> predictions_csv([{"source": "a.png", "label": "cat", "probability": 0.9, "abstained": False,
        ...                   "unfamiliar": True, "topk": [{"label": "cat", "probability": 0.9}]}]).splitlines()[1]
        'a.png,cat,0.90000,0,1,cat:0.9000,'
    """
    buf = io.StringIO()
    w = csv.writer(buf)
    with_nb, with_set = any("neighbors" in r for r in rows), any("set" in r for r in rows)
    w.writerow(["path", "label", "probability", "abstained", "unfamiliar", "topk", "error"]
               + (["set"] if with_set else []) + (["neighbors"] if with_nb else []))
    for r in rows:
        nb = [";".join(r.get("set") or [])] if with_set else []
        nb += [";".join(f"{n['label']}:{n['distance']:.4f}:{n['id']}" for n in r.get("neighbors") or [])] if with_nb else []
        far = r.get("unfamiliar")
        w.writerow([r["source"], r["label"] or "", f"{r['probability']:.5f}" if r["probability"] is not None else "",
                    "" if r.get("error") else int(bool(r.get("abstained"))), "" if far is None else int(far),
                    ";".join(f"{t['label']}:{t['probability']:.4f}" for t in r["topk"]), r.get("error", "")] + nb)
    return buf.getvalue()


def predictions_json(rows: Sequence[dict]) -> str:
    """The prediction rows as an indented JSON list (no trailing newline)."""
    return json_text(list(rows))


# ----------------------------------------------------------------------------- explain, export


def explain_table(rows: Sequence[dict]) -> Table:
    """One row per image of :func:`nextclass.report.cam.explain_files`: prediction, explained class, overlay file."""
    from rich.table import Table

    t = Table()
    for c in ("image", "prediction", "prob", "explained", "overlay"):
        t.add_column(c)
    for r in rows:
        if r.get("error"):
            t.add_row(r["source"], "[red]unreadable", "", "", r["error"])
        else:
            t.add_row(r["source"], r["label"], f"{r['probability']:.3f}", r["explained"], r["output"])
    return t


def _f4(x: float | None) -> str:
    return "" if x is None else f"{x:.4f}"


def export_table(info: dict) -> Table:
    """PyTorch vs ONNX (and int8) of an export result: size, agreement, max probability gap, accuracy, speed."""
    from rich.table import Table

    par = info["parity"]
    t = Table(title=f"ONNX export ({info['exporter']} exporter, opset {info['opset']})")
    for c in ("file", "MB", "images", "top-1 agree", "max |Δp|", "val acc", "img/s @32"):
        t.add_column(c, justify="left" if c == "file" else "right")
    t.add_row("pytorch", "", str(par["n"]), "", "", _f4(par.get("accuracy_reference")), "")
    q = info.get("int8") or {}
    t.add_row(info["file"], f"{info['bytes'] / 1e6:.2f}", str(par["n"]), f"{par['top1_agreement']:.4f}",
              f"{par['max_abs_prob_diff']:.2e}", _f4(par.get("accuracy")), str(q.get("fp32_img_per_s", "")))
    if q:
        t.add_row(q["file"], f"{q['bytes'] / 1e6:.2f}", str(q["images"]), f"{q['top1_agreement']:.4f}",
                  f"{q['max_abs_prob_diff']:.2e}", _f4(q.get("accuracy")), str(q["int8_img_per_s"]))
    return t


# ------------------------------------------------------------------------------------ model store


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def models_table(rows: Sequence[dict], title: str) -> Table:
    """The model store's names with their latest version (``nextclass.deploy.store.list_models`` rows)."""
    from rich.table import Table

    t = Table(title=title)
    for c in ("name", "latest", "versions", "arch", "classes", "val acc", "test acc", "onnx", "created"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["name"], r["latest"], str(r["versions"]), str(r["arch"]), str(r["classes"]), _pct(r["val_accuracy"]),
                  _pct(r["test_accuracy"]), ", ".join(r["onnx"]) or "-", r["created"])
    return t


# ------------------------------------------------------------------------------------- label issues, suggest


def label_issue_lines(block: dict, max_items: int = 10) -> list:
    """The ``label_issues`` block of an audit: how it was judged, the count, the top pairs and images.

    Example:
        >>> for line in label_issue_lines(rep["label_issues"]):  # doctest: +SKIP
        ...     console.print(line)
    """
    from rich.table import Table

    gate = block.get("gate") or {}
    chance = f", chance {block['chance']:.3f}" if "chance" in block else ""
    out: list = [f"[bold]label issues[/]: {_n(block['n'])} of {block['checked']} image(s) look mislabelled"
                 + (f" (cross-validated head accuracy {block['head_accuracy']:.3f}{chance})"
                    if "head_accuracy" in block else ""),
                 f"[dim]{block['method']}[/]"]
    if gate and not gate.get("ok", True):
        out.insert(1, f"[yellow]{gate['reason']}[/]")
    if block["pairs"]:
        out.append("most frequent: " + ", ".join(f"{p['label']} -> {p['suggested']} ({p['n']})" for p in block["pairs"][:5]))
    if block["items"]:
        sets = block.get("task") == "multi-label"  # label sets, and the labels to add or remove
        t = Table(show_edge=False)
        for col in ("rank", "given", "suggested") + (("change",) if sets else ()) + ("p(given)", "path"):
            t.add_column(col, justify="right" if col in ("rank", "p(given)") else "left")
        for it in block["items"][:max_items]:
            change = (" ".join([f"+{c}" for c in it.get("added", [])] + [f"-{c}" for c in it.get("removed", [])]),) \
                if sets else ()
            t.add_row(str(it["rank"]), it["label"] or "(none)", it["suggested"] or "(none)", *change,
                      f"{it['score']:.3f}", it["path"])
        out.append(t)
    if block.get("csv"):
        out.append(f"all of them: {block['csv']}")
    return out


def _unfamiliar_lines(res: dict) -> list[str]:
    """How many picks are ``unfamiliar`` (or were left out as such), or why none was judged."""
    d = res.get("unfamiliar_distance")
    if d is None:
        return ["[dim]unfamiliar: not judged (the bundle keeps no 'unfamiliar' distance threshold)[/]"]
    what = f"farther from every training image than distance {d:.4g}, as predict flags an image"
    if res.get("skip_unfamiliar"):
        return [f"left out {res['unfamiliar_left_out']} unfamiliar image(s) ({what}; --skip-unfamiliar)"]
    if res.get("unfamiliar_picks"):
        return [f"[magenta]{res['unfamiliar_picks']} of {len(res['rows'])} pick(s) unfamiliar[/] ({what}: noise, blank "
                "or off-topic images?); --skip-unfamiliar leaves them out"]
    return [f"no pick is unfamiliar ({what})"]


def suggest_lines(res: dict, max_items: int = 10) -> list:
    """What ``nextclass suggest`` chose: the counts, the near-duplicate threshold and the top rows."""
    from rich.table import Table

    out: list = [f"[bold]suggest[/]: {len(res['rows'])} of {res['candidates']} unlabelled image(s) to label next "
                 f"({res['method']})",
                 f"skipped {res['skipped_duplicates']} near-duplicate(s) of labelled images ({res.get('pixel_copies', 0)} "
                 f"the same picture by the pixel check; embedding distance <= {res['duplicate_threshold']:.4g}: "
                 f"{res['threshold_note']})"]
    if res.get("unreadable"):
        out.append(f"[yellow]{res['unreadable']} unreadable image(s) skipped[/]")
    out += _unfamiliar_lines(res)
    t = Table(show_edge=False)
    for col in ("rank", "predicted", "prob", "margin", "score", "reason", "unfamiliar", "path"):
        t.add_column(col, justify="right" if col in ("rank", "prob", "margin", "score") else "left")
    for r in res["rows"][:max_items]:
        far = r.get("unfamiliar")
        t.add_row(str(r["rank"]), r["predicted"], f"{r['probability']:.3f}", f"{r['margin']:.3f}", f"{r['score']:.3f}",
                  r["reason"], "-" if far is None else ("[magenta]unfamiliar[/]" if far else ""), r["path"])
    out.append(t)
    if res.get("score_meaning"):
        out.append(f"[dim]{res['score_meaning']}[/]")
    if res.get("output"):
        out.append(f"written: {res['output']}")
    return out
