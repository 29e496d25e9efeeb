"""report.html's rough edges (issue 23): no empty risk-coverage plot, readable audit labels, an interval beside
every headline accuracy. One report is built on a copy of the shared trust run (never into the run itself)."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest


def _perfect_selective(n: int) -> dict:
    """A main block's ``selective`` entry as the scorer writes it, for ``n`` images all predicted right."""
    from nextclass.metrics.selective import selective_block

    labels = np.arange(n) % 3
    logits = np.eye(3)[labels] * 4.0
    return selective_block(logits, labels, 1.0)


@pytest.fixture(scope="module")
def edges_report(trust_run: Path, tmp_path_factory) -> tuple[Path, dict, str]:
    """A copy of the trust run whose headline (test) split has no wrong prediction, and its report's HTML."""
    from nextclass.report.html import build_report

    run = Path(shutil.copytree(trust_run, tmp_path_factory.mktemp("edges") / "run"))
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["test"]["selective"] = _perfect_selective(metrics["test"]["n"])
    (run / "metrics.json").write_text(json.dumps(metrics))
    html = build_report(run, cam_images=2)
    return run, metrics, html.read_text()


def _section(html: str, name: str) -> str:
    start = html.index(f'<section id="{name}"')
    return html[start:html.index("</section>", start)]


class _Cells(HTMLParser):
    """The key cells of a report section: the first cell of each table row, table headers and headings."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[str] = []
        self._open: str | None = None
        self._first = False

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self._first = True
        elif tag in ("th", "h3") or (tag == "td" and self._first):
            self._open, self._first = tag, False
            self.keys.append("")
        elif tag == "td":
            self._open = None

    def handle_endtag(self, tag):
        if tag == self._open:
            self._open = None

    def handle_data(self, data):
        if self._open:
            self.keys[-1] += data


def test_no_empty_risk_coverage_plot_when_nothing_is_wrong(edges_report):
    run, metrics, html = edges_report
    trust = _section(html, "trust")
    assert 'alt="risk-coverage curve"' not in trust
    note = re.search(r'<p class="note" id="risk-coverage-note">([^<]*)</p>', trust)
    assert note and f"none of the {metrics['test']['n']} test predictions is wrong" in note.group(1)
    assert not (run / "plots" / "risk_coverage.png").exists()
    # with one wrong prediction the curve is drawn and no note is given
    from nextclass.metrics.selective import selective_block
    from nextclass.report.trust import risk_coverage_note, trust_plots

    labels = np.arange(30) % 3
    logits = np.eye(3)[labels] * 4.0
    logits[0] = [0.0, 4.0, 0.0]
    block = {"n": 30, "selective": selective_block(logits, labels, 1.0)}
    assert trust_plots(run, None, block, "test")["risk_coverage"][:4] == b"\x89PNG"
    assert risk_coverage_note(block, "test") is None


def test_audit_section_shows_readable_labels_not_json_keys(edges_report):
    run, _, html = edges_report
    audit = json.loads((run / "audit.json").read_text())
    assert "summary" in audit and "n_images" in audit  # the keys the section used to print as they are
    parser = _Cells()
    parser.feed(_section(html, "audit"))
    keys = [k.strip() for k in parser.keys if k.strip()]
    raw = [k for k in keys if re.search(r"\b[a-z]+_[a-z_]+\b", k)]
    assert not raw, f"raw JSON keys shown in the audit section: {raw}"
    for label in ("readable images", "near-copy pairs", "leaks between splits", "images audit --fix would drop"):
        assert label in keys, (label, keys)
    assert 'title="n_images"' in html  # the raw key stays findable, as a tooltip
    assert "exact_copies" not in _section(html, "audit").replace('title="', "")  # nested keys read too


def test_wilson_interval_beside_every_headline_accuracy(edges_report):
    from nextclass.metrics.classification import wilson_interval

    _, metrics, html = edges_report
    summary = _section(html, "summary")
    blocks = {k: v for k, v in metrics.items() if isinstance(v, dict) and "accuracy" in v}
    assert {"val", "test"} <= set(blocks)
    for name, b in blocks.items():
        lo, hi = b.get("accuracy_ci") or wilson_interval(round(b["accuracy"] * b["n"]), b["n"])
        text = f"{100 * lo:.1f}\u2013{100 * hi:.1f}%"
        row = re.search(rf"<tr><td class=\"l\">{re.escape(name)}</td>(.*?)</tr>", summary, re.S)
        assert row and text in row.group(1), (name, text, row and row.group(1))
    card = summary[summary.index('<div class="cards">'):]
    t = blocks["test"]
    lo, hi = t.get("accuracy_ci") or wilson_interval(round(t["accuracy"] * t["n"]), t["n"])
    assert f"95% CI {100 * lo:.1f}\u2013{100 * hi:.1f}%" in card[:card.index("top-5")]


def test_interval_for_a_block_written_before_accuracy_ci():
    from nextclass.report.html import accuracy_interval

    old = {"accuracy": 0.9, "n": 50}  # a metrics.json from before the interval was kept
    lo, hi = accuracy_interval(old)
    assert 0.78 < lo < 0.9 < hi < 0.96
    assert accuracy_interval({"accuracy": 0.9, "n": 50, "accuracy_ci": [0.1, 0.2]}) == [0.1, 0.2]
    assert accuracy_interval({"accuracy": float("nan"), "n": 0}) is None
