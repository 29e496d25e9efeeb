"""Gather a review: a finished run (its audit, label issues, test predictions and model), or a data folder alone
(the audit), into a :class:`~nextclass.review.items.ReviewSet`; and where its decisions are saved.

A run's review reads ``audit.json`` and ``label_issues.csv`` (written at the end of training), the test split's
``predictions.csv`` (the confident mistakes) and the bundle (the nearest training images of each class, the
``unfamiliar`` test images); with a ``pool`` it also runs :func:`nextclass.curation.suggest.suggest` on it. A data
folder's review runs the audit (:func:`nextclass.data.audit.audit`: unreadable files, duplicate groups and leaks
of the split a run would make), or reads one ``nextclass audit -o`` wrote (``audit=``: its ``audit.json``, or the
folder holding it and ``label_issues.csv`` from ``--labels``).

Decisions go to a corrections file (:mod:`nextclass.data.corrections`): beside the run by default
(:attr:`nextclass.rundir.RunDir.corrections`), ``corrections.jsonl`` in the current directory for a data folder;
never inside the data folder, which is only read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from nextclass.data.sources import DataError, load_source
from nextclass.review.evidence import add_model_evidence
from nextclass.review.items import (ImageTable, ReviewSet, from_audit, from_predictions, from_suggestions,
                                    label_issue_rows)
from nextclass.rundir import RunDir
from nextclass.utils import log

__all__ = ["collect", "corrections_file", "DEFAULT_CORRECTIONS"]

DEFAULT_CORRECTIONS = "corrections.jsonl"  # for a data folder's review: in the current directory


def _from_run(rd: RunDir, pool, suggest_n: int, cache_dir, progress: bool) -> ReviewSet:
    cfg = rd.require_finished().read_config()
    source = _single_label(load_source(cfg.data, cache_dir=cache_dir or cfg.cache_dir, task=cfg.task))
    meta = rd.read_bundle_meta() or {}
    rs = ReviewSet(f"run {rd.name}", list(meta.get("classes") or source.classes), ImageTable(source.root))
    audit = rd.read_audit()
    if not audit:
        rs.notes.append("the run has no audit.json: no duplicate groups, leaks or unreadable files to show")
    from_audit(rs, audit, label_issue_rows(rd.label_issues, audit))
    test_rows = from_predictions(rs, rd.predictions("test"))
    add_model_evidence(rs, rd.path, test_rows)
    if pool is not None:
        from nextclass.curation.suggest import suggest

        res = suggest(rd.path, pool, n=suggest_n, cache_dir=cache_dir, progress=progress)
        from_suggestions(rs, res["rows"], pool if Path(pool).is_dir() else Path(pool).parent)
    return rs


def _read_audit(path: str | os.PathLike) -> tuple[dict, Path | None]:
    """An audit report ``nextclass audit -o`` wrote (a .json file, or its folder) and its ``label_issues.csv``."""
    from nextclass.curation.label_audit import report_paths  # where `nextclass audit -o` puts its files

    report, issues_csv = report_paths(path)
    try:
        rep = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{report}: not an audit report nextclass wrote ({e})") from None
    if not isinstance(rep, dict) or "summary" not in rep:
        raise DataError(f"{report}: not an audit report nextclass wrote (no 'summary')")
    return rep, issues_csv


def _single_label(source):
    """The review page decides one class per image: a multi-label set is refused in one line."""
    if source.multilabel:
        raise DataError(f"{source.name}: review shows single-label findings (one class per image); a multi-label set "
                        "is corrected with a corrections file whose relabel rows name the whole label set (a;b) - "
                        "see docs/multilabel.md")
    return source


def _from_data(data, audit, cache_dir, progress: bool) -> ReviewSet:
    source = _single_label(load_source(data, cache_dir=cache_dir))
    if audit is not None:
        rep, issues_csv = _read_audit(audit)
        if rep.get("data") not in (source.root, source.name, str(data)):
            raise DataError(f"{audit}: this audit is of {rep.get('data')!r}, not of {data}; audit this data again "
                            f"(nextclass audit {data} -o audit/) or leave out --audit")
    else:
        from nextclass.data.audit import audit as run_audit

        rep, issues_csv = run_audit(data, progress=progress, cache_dir=cache_dir), None
    rs = ReviewSet(f"data {source.name}", list(source.classes), ImageTable(source.root))
    from_audit(rs, rep, label_issue_rows(issues_csv, rep))
    if "label_issues" not in rep:
        rs.notes.append("label issue: not checked (run `nextclass audit DATA --labels -o audit/` and pass "
                        "--audit audit/, or review a trained run)")
    return rs


def collect(target, *, audit=None, pool=None, suggest_n: int = 50, cache_dir=None, progress: bool = True) -> ReviewSet:
    """The review of a finished run directory, or of a dataset (folder, CSV manifest...) without one.

    Args:
        target: a run directory, or data as ``nextclass audit`` takes it.
        audit: for data: an audit report to read instead of auditing again (``audit.json`` or its folder).
        pool: for a run: a folder (or CSV) of unlabelled images whose ``suggest`` picks are reviewed too.
        suggest_n: how many picks of ``pool``.
        cache_dir: cache root (built-in datasets, audit fingerprints, decoded images).
        progress: progress bars.

    Example:
        >>> rs = collect("runs/simple_cnn-photos")                              # doctest: +SKIP
        >>> [(it.reason, rs.images[it.image].rel) for it in rs.items][:1]     # doctest: +SKIP
        [('label issue', 'cat/012.jpg')]
    """
    rd = RunDir(target)
    if rd.is_run():
        if audit is not None:
            raise ValueError("--audit is for reviewing a data folder; a run's review reads the run's own audit.json")
        rs = _from_run(rd, pool, suggest_n, cache_dir, progress)
    else:
        if pool is not None:
            raise ValueError(f"--pool needs a trained run to rank the pool with; {target} is not a run directory")
        rs = _from_data(target, audit, cache_dir, progress)
    rs.in_order()
    for it in rs.items:  # the content hashes decisions record, once, before the page asks
        rs.images.sha(it.image)
    counts = {r: sum(it.reason == r for it in rs.items) for r in dict.fromkeys(it.reason for it in rs.items)}
    log(f"review: {len(rs.items)} item(s)" + (f" ({', '.join(f'{n} {r}' for r, n in counts.items())})" if counts else ""))
    return rs


def corrections_file(target, corrections: str | os.PathLike | None, data_root: str | os.PathLike) -> Path:
    """Where the decisions go: ``corrections`` if given, else beside the run, else ``./corrections.jsonl``;
    ValueError for a place inside the data folder (the user's data is only read)."""
    rd = RunDir(target)
    if corrections is not None:
        path = Path(corrections)
    else:
        path = rd.corrections if rd.is_run() else Path.cwd() / DEFAULT_CORRECTIONS
    real, root = path.expanduser().resolve(), Path(data_root).resolve()
    if real == root or real.is_relative_to(root):
        raise ValueError(f"{path}: the corrections file cannot go inside the data folder ({root}), which nextclass "
                         "never modifies; choose another place with --corrections FILE")
    if real.is_dir():
        raise ValueError(f"{path} is a folder; --corrections names a file (e.g. {path}/{DEFAULT_CORRECTIONS})")
    return path
