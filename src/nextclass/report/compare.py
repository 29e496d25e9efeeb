"""Rendering ``nextclass compare``: a Rich table for the terminal and one self-contained HTML page.

Both take the plain dict of :meth:`nextclass.evaluation.compare.Comparison.to_dict` (``paths=True`` for the
page, whose thumbnails are read from the images; the page itself shows image ids, never a path). Thumbnails
come from RUN_B's data through :class:`~nextclass.report.collect.RunImages` (built-in array sets included),
embedded as base64 PNGs: the page needs no server and no network.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

from nextclass.report.collect import RunImages
from nextclass.rundir import RunDir
from nextclass.utils import VERSION, atomic_write_text

__all__ = ["compare_table", "compare_lines", "write_compare_html", "SHOWN"]

SHOWN = 60  # flipped images shown per direction on the page


def _pct(v: float) -> str:
    return f"{100 * v:+.2f}"


def _interval(ci) -> str:
    if not ci or ci[0] is None:
        return "-"
    return f"{100 * ci[0]:+.2f} to {100 * ci[1]:+.2f}"


def compare_table(c: dict):
    """The per-class table (accuracy of A and B, the difference in points with its paired bootstrap interval,
    fixed/broken images and McNemar's p), with the overall row last.

    Example:
        >>> Console().print(compare_table(nextclass.compare("runs/a", "runs/b").to_dict()))  # doctest: +SKIP
    """
    from rich.table import Table

    t = Table(title=f"{c['run_b']} (B) vs {c['run_a']} (A): {c['n']} {c['split']} images, paired")
    for col in ("class", "images", "acc A", "acc B", "B-A (pts)", "95% interval", "F1 A", "F1 B", "fixed/broken",
                "McNemar p"):
        t.add_column(col, justify="left" if col == "class" else "right")

    def colour(d: float) -> str:
        return "green" if d > 0 else ("red" if d < 0 else "")

    for r in c["per_class"]:
        m = r["mcnemar"]
        t.add_row(r["class"], str(r["n"]), f"{r['accuracy_a']:.3f}", f"{r['accuracy_b']:.3f}",
                  f"[{colour(r['delta'])}]{_pct(r['delta'])}[/]" if colour(r["delta"]) else _pct(r["delta"]),
                  _interval(r["ci"]), f"{r['f1_a']:.3f}", f"{r['f1_b']:.3f}",
                  f"{m['a_wrong_b_right']}/{m['a_right_b_wrong']}", f"{m['p_value']:.3g}")
    acc, f1, m = c["overall"]["accuracy"], c["overall"]["macro_f1"], c["mcnemar"]
    t.add_section()
    t.add_row("[bold]all", str(c["n"]), f"{acc['a']:.4f}", f"{acc['b']:.4f}", f"[bold]{_pct(acc['delta'])}",
              _interval(acc["ci"]), f"{f1['a']:.4f}", f"{f1['b']:.4f}", f"{m['a_wrong_b_right']}/{m['a_right_b_wrong']}",
              f"[bold]{m['p_value']:.3g}")
    return t


def compare_lines(c: dict, n: int = 5) -> list[str]:
    """The macro-F1 line, the notes, and the first ``n`` images of each flip direction (Rich markup)."""
    f1 = c["overall"]["macro_f1"]
    out = [f"macro F1: A {f1['a']:.4f}, B {f1['b']:.4f}, B-A {_pct(f1['delta'])} points "
           f"(95% interval {_interval(f1['ci'])})"]
    out += [f"[yellow]NOTE[/]: {note}" for note in c["notes"]]
    for key, word in (("wrong_to_right", "[green]fixed by B[/]"), ("right_to_wrong", "[red]broken by B[/]")):
        rows = c["flipped"][key]
        shown = ", ".join(f"{r['id']} ({r['true']}: {r['a']} -> {r['b']})" for r in rows[:n])
        out.append(f"{word} ({len(rows)}): {shown}" + (" ..." if len(rows) > n else ""))
    return out


def _thumbs(c: dict, run_b: str | os.PathLike, size: int = 96) -> dict[str, str]:
    """``id -> data:image/png;base64,...`` for the flipped images shown on the page (empty when unreadable)."""
    from PIL import Image

    from nextclass.data.transforms import Preprocess

    rd = RunDir(run_b)
    meta = rd.read_bundle_meta() or {}
    if "preprocess" not in meta:
        return {}
    cfg = rd.read_config().model_dump(mode="json")
    images = RunImages(rd.path, Preprocess.from_dict(meta["preprocess"]), config=cfg)
    out = {}
    for rows in c["flipped"].values():
        for r in rows[:SHOWN]:
            a = images.get(r["path"]) if r.get("path") else None
            if a is None:
                continue
            im = Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a).resize((size, size), Image.Resampling.NEAREST)
            buf = io.BytesIO()
            im.save(buf, format="PNG")
            out[r["id"]] = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return out


def write_compare_html(c: dict, path: str | os.PathLike, run_b: str | os.PathLike) -> Path:
    """Render the comparison ``c`` (with paths, for the thumbnails) to one self-contained page at ``path``.

    Example:
        >>> write_compare_html(compare_runs("runs/a", "runs/b").to_dict(paths=True), "cmp.html", "runs/b")  # doctest: +SKIP
    """
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
                      autoescape=select_autoescape(["html", "j2"]))
    env.filters["thousands"] = lambda v: f"{int(v):,}"
    env.filters["interval"] = lambda ci: "-" if not ci or ci[0] is None else f"{ci[0]:+.4f} to {ci[1]:+.4f}"
    page = {**c, "flipped": {k: [{kk: vv for kk, vv in r.items() if kk != "path"} for r in rows]
                             for k, rows in c["flipped"].items()}}  # no local path on the page
    html = env.get_template("compare.html.j2").render(c=page, thumbs=_thumbs(c, run_b), shown=SHOWN, version=VERSION)
    return atomic_write_text(path, html)
