"""Corrections are data: an append-only log of review decisions, applied on top of a dataset.

A corrections file is JSON Lines, one :class:`Correction` per line::

    {"path": "cat/img_012.jpg", "sha": "9f2c...", "decision": "relabel", "label": "dog", "duplicate_of": null,
     "reason": "label issue", "time": "2025-01-31T12:00:00Z"}

* ``path`` is the image's id: its path relative to the data root (POSIX separators) for a folder, a CSV manifest
  or an ``hf:`` source, the sample id (``fashion-mnist/train/00012``) for a built-in array set
  (:func:`sample_ids`).
* ``sha`` is the lowercase sha256 hex of the image's content (:func:`sample_shas`): of the file's bytes for a
  file (folders, CSV manifests, and ``hf:`` sources, whose rows are the dataset's *encoded* bytes written
  unchanged to a file), of the decoded uint8 pixels (C order, no header) for a row of an in-memory array
  (``digits``, ``fashion-mnist``). Rows are matched to images by ``sha``, so a moved or renamed file still
  matches; ``path`` is used only for a row without a ``sha``.
* ``decision`` is one of :data:`DECISIONS`: ``keep`` (reviewed, nothing to change), ``relabel`` (to ``label``,
  a class name; in a multi-label set the image's whole label set, ``a;b``), ``drop`` (leave the image out) or
  ``duplicate`` (of ``duplicate_of``, an image id; the image is left out, its original stays).

The log is only ever appended to (:func:`append_correction`): a person changes their mind by appending a newer
row for the same image, and :func:`latest_decisions` keeps the last one (how a reopened review resumes). Each
row is one ``os.write`` of the whole line on an ``O_APPEND`` descriptor, under an exclusive ``flock`` and
followed by ``fsync``, so two writers never interleave and a crash can tear at most the last line, which
:func:`read_corrections` reports and skips. The data folder itself is never modified.

Example:
    >>> import tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "corrections.jsonl")
    >>> append_correction(f, Correction("cat/1.png", "ab" * 32, "relabel", label="dog", reason="label issue"))
    >>> [c.label for c in read_corrections(f)]
    ['dog']
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from nextclass.data.multilabel import split_labels
from nextclass.data.samples import DataSource, Sample
from nextclass.utils import atomic_write_json, default_cache_dir, file_sha256, log

__all__ = ["Correction", "CorrectionsError", "Applied", "DECISIONS", "REASONS", "append_correction",
           "read_corrections", "latest_decisions", "apply_corrections", "correct_source", "sample_ids",
           "sample_shas", "now_iso"]

#: What a review can decide about one image.
DECISIONS = ("keep", "relabel", "drop", "duplicate")
#: The reasons nextclass itself writes (any text is accepted).
REASONS = ("label issue", "near duplicate", "leak", "unreadable", "confident mistake", "unfamiliar", "suggest")
_HEX = re.compile(r"^[0-9a-f]{64}$")
_HASH_CACHE = "file-sha256.json"  # in the cache dir: {absolute path: [size, mtime_ns, sha256 hex]}


class CorrectionsError(ValueError):
    """A corrections file or row that cannot be used; the message names the line, the field or the class."""


def now_iso() -> str:
    """The current UTC time, ISO-8601 to the second (``2025-01-31T12:00:00Z``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(name: str, v: Any, *, optional: bool = False) -> Any:
    if v is None and optional:
        return None
    if not isinstance(v, str):
        raise CorrectionsError(f"{name}: expected {'a string or null' if optional else 'a string'}, got {v!r}")
    return v


@dataclass(frozen=True)
class Correction:
    """One review decision about one image (see the module docstring for each field's meaning).

    Validated on creation: an unknown ``decision``, a relabel without ``label``, a duplicate without
    ``duplicate_of`` or a ``sha`` that is not 64 hex digits raise :class:`CorrectionsError` naming the field.
    A ``sha256:`` prefix (as :func:`nextclass.utils.file_sha256` writes it) is accepted and removed.
    """

    path: str  # image id: relative to the data root, or the sample id of an array-backed set
    sha: str  # sha256 hex of the content ("" when unknown: the row then matches by path)
    decision: str  # keep | relabel | drop | duplicate
    label: str | None = None  # the new class name (relabel)
    duplicate_of: str | None = None  # the image id this one duplicates (duplicate)
    reason: str = ""  # why: "label issue", "near duplicate", "leak", "unreadable", ...
    time: str = field(default_factory=now_iso)  # ISO-8601 UTC

    def __post_init__(self) -> None:
        for f in fields(self):
            _text(f.name, getattr(self, f.name), optional=f.name in ("label", "duplicate_of"))
        sha = self.sha.lower().removeprefix("sha256:")
        if sha and not _HEX.match(sha):
            raise CorrectionsError(f"sha: expected 64 hex digits of sha256 (or empty), got {self.sha!r}")
        object.__setattr__(self, "sha", sha)
        if not self.path and not sha:
            raise CorrectionsError("path: empty, and no sha to match the image by")
        if self.decision not in DECISIONS:
            raise CorrectionsError(f"decision: {self.decision!r} is not one of {', '.join(DECISIONS)}")
        if self.decision == "relabel" and not self.label:
            raise CorrectionsError("label: a relabel needs the new class name")
        if self.decision == "duplicate" and not self.duplicate_of:
            raise CorrectionsError("duplicate_of: a duplicate needs the id of the image it duplicates")

    def to_dict(self) -> dict[str, Any]:
        """The JSON row (every field, in declaration order)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> "Correction":
        """Parse a JSON row; :class:`CorrectionsError` names the missing, unknown or bad field."""
        if not isinstance(d, dict):
            raise CorrectionsError(f"expected a JSON object, got {type(d).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise CorrectionsError(f"{unknown[0]}: unknown field (fields: {', '.join(names)})")
        for req in ("path", "sha", "decision"):
            if req not in d:
                raise CorrectionsError(f"{req}: missing")
        return cls(**d)


def append_correction(file: str | os.PathLike, c: Correction) -> None:
    """Append one row to ``file`` (created if absent), durably and safely beside other writers.

    The whole line goes out in one ``os.write`` on an ``O_APPEND`` descriptor while holding an exclusive
    ``fcntl.flock``, then ``fsync``: two processes (two browser tabs, two reviewers) never interleave, and
    a crash can only leave a torn *last* line. If the previous writer crashed mid-line, this row starts on a
    new line, so the torn one stays isolated (and is skipped by :func:`read_corrections`). Earlier rows are
    never rewritten.
    """
    if not isinstance(c, Correction):
        raise CorrectionsError(f"expected a Correction, got {type(c).__name__}")
    path = Path(file)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(c.to_dict(), ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # seal a torn line left by a crashed writer; it stays skipped
        view = memoryview(line)
        while view:  # a regular file takes the whole line at once; loop only for a short write
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock


def _torn(line: str, err: json.JSONDecodeError) -> bool:
    """A line cut short by a crash: the start of a JSON object whose text ends inside a string or a value."""
    return line.lstrip().startswith("{") and (err.pos >= len(line.rstrip()) or err.msg.startswith("Unterminated"))


def _read(file: str | os.PathLike) -> tuple[list[Correction], list[int]]:
    """Rows of ``file`` and the line numbers of torn lines (skipped)."""
    try:
        text = Path(file).read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        raise CorrectionsError(f"{file}: no such corrections file") from None
    except OSError as e:
        raise CorrectionsError(f"{file}: cannot read: {e.strerror or e}") from None
    rows, torn = [], []
    lines = text.split("\n")
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            if _torn(line, e) or (n == len(lines) and not text.endswith("\n")):
                torn.append(n)
                continue
            raise CorrectionsError(f"{file}:{n}: not a JSON row ({e.msg})") from None
        try:
            rows.append(Correction.from_dict(d))
        except CorrectionsError as e:
            raise CorrectionsError(f"{file}:{n}: {e}") from None
        except TypeError as e:
            raise CorrectionsError(f"{file}:{n}: {e}") from None
    if torn:
        log(f"[yellow]NOTE[/]: {file}: skipped {len(torn)} torn line(s) (line {', '.join(map(str, torn))}: "
            f"a write cut short by a crash); the rows before and after are intact")
    return rows, torn


def read_corrections(file: str | os.PathLike) -> list[Correction]:
    """Every row of a corrections file, in the order written.

    Raises:
        CorrectionsError: the file is missing, or a row is malformed (the message names its line and field).
            A torn line (a write cut short by a crash) is reported in a log line and skipped.

    Example:
        >>> rows = read_corrections("runs/simple_cnn-photos/corrections.jsonl")  # doctest: +SKIP
    """
    return _read(file)[0]


def _key(c: Correction) -> str:
    return c.sha or f"path:{c.path}"


def latest_decisions(rows: Iterable[Correction]) -> dict[str, Correction]:
    """The last decision per image, keyed by ``sha`` (``"path:<id>"`` for a row without one).

    Example:
        >>> a = Correction("x.png", "ab" * 32, "drop"); b = Correction("x.png", "ab" * 32, "keep")
        >>> latest_decisions([a, b])["ab" * 32].decision
        'keep'
    """
    out: dict[str, Correction] = {}
    for c in rows:
        out.pop(_key(c), None)  # re-insert: the dict's order is the order of the latest decisions
        out[_key(c)] = c
    return out


def sample_ids(source: DataSource, samples: Sequence[Sample] | None = None) -> list[str]:
    """Each sample's image id: its path relative to the data root (POSIX), the sample id of an array row.

    Files outside the root (an ``hf:`` source's images live in the cache) are named relative to the
    folder they share.
    """
    samples = source.samples if samples is None else samples
    files = [s.path for s in samples if s.index is None]
    root = source.root
    if files and not all(_under(p, root) for p in files):
        root = os.path.commonpath([os.path.dirname(p) for p in files])
    return [s.path if s.index is not None else Path(os.path.relpath(s.path, root)).as_posix() for s in samples]


def _under(path: str, root: str) -> bool:
    return os.path.isabs(path) and (path == root or path.startswith(root.rstrip(os.sep) + os.sep))


def _file_hashes(paths: list[str], cache_dir: str | os.PathLike | None) -> list[str | None]:
    """sha256 hex of each file (None when unreadable), remembered by (size, mtime) in the cache dir."""
    cache_file = Path(cache_dir or default_cache_dir()) / _HASH_CACHE
    try:
        known = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        known = {}
    out: list[str | None] = []
    fresh = 0
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            out.append(None)
            continue
        k = known.get(p)
        if isinstance(k, list) and len(k) == 3 and k[:2] == [st.st_size, st.st_mtime_ns]:
            out.append(k[2])
            continue
        try:
            h = file_sha256(p).removeprefix("sha256:")
        except OSError:
            out.append(None)
            continue
        known[p] = [st.st_size, st.st_mtime_ns, h]
        out.append(h)
        fresh += 1
    if fresh:
        try:
            atomic_write_json(cache_file, known)
        except OSError:  # a read-only cache only costs the next run the hashing again
            pass
    return out


def sample_shas(source: DataSource, samples: Sequence[Sample] | None = None, *,
                cache_dir: str | os.PathLike | None = None) -> list[str | None]:
    """The content sha256 (hex) of each sample, as :class:`Correction.sha` records it; None for a file that
    cannot be read.

    Files: sha256 of the file's bytes, remembered in ``<cache_dir>/file-sha256.json`` by path, size and mtime
    (the audit's fingerprints hash decoded pixels, not bytes, so they cannot serve here). Array rows: sha256 of
    the row's uint8 pixels in C order.
    """
    samples = source.samples if samples is None else samples
    file_pos = [i for i, s in enumerate(samples) if s.index is None]
    out: list[str | None] = [None] * len(samples)
    for i, h in zip(file_pos, _file_hashes([samples[i].path for i in file_pos], cache_dir)):
        out[i] = h
    if source.array is not None:
        for i, s in enumerate(samples):
            if s.index is not None:
                out[i] = hashlib.sha256(np.ascontiguousarray(source.array[s.index]).tobytes()).hexdigest()
    return out


@dataclass
class Applied:
    """What :func:`apply_corrections` did: counts of the latest decisions by outcome, for logs, config and card."""

    file: str  # the corrections file's name (never its absolute path)
    sha256: str  # sha256 hex of the corrections file's bytes
    n_rows: int  # rows in the file
    decisions: int = 0  # images with a decision (the latest row per image)
    relabeled: int = 0  # images given a new label
    dropped: int = 0  # images left out (drop)
    kept: int = 0  # images reviewed and kept as they were (keep, or a relabel to the label they already had)
    duplicates: int = 0  # images left out as a duplicate of another
    missing: int = 0  # decisions whose image is not in the data (reported, not fatal)
    torn: int = 0  # torn lines skipped
    missing_ids: list[str] = field(default_factory=list)  # the first few missing image ids
    left_out: list[str] = field(default_factory=list, repr=False)  # Sample.path of each image left out (not in to_dict)

    @property
    def applied(self) -> int:
        """Images whose label or presence changed."""
        return self.relabeled + self.dropped + self.duplicates

    def to_dict(self) -> dict[str, Any]:
        """The record a run, an audit, a metrics block and a model card keep (no sample paths)."""
        d = asdict(self)
        d.pop("left_out")
        return d

    def summary(self) -> str:
        """One line: ``corrections.jsonl: 12 applied (10 relabeled, 2 dropped, 0 duplicates), 3 kept, 1 missing``."""
        return (f"{self.file}: {self.applied} applied ({self.relabeled} relabeled, {self.dropped} dropped, "
                f"{self.duplicates} duplicates), {self.kept} kept, {self.missing} missing, from {self.n_rows} rows")


def _match(decisions: dict[str, Correction], shas: list[str | None], ids: list[str]) -> dict[int, Correction]:
    """Sample position -> its latest decision: by content hash, by id only for a row without a hash."""
    by_sha: dict[str, list[int]] = {}
    by_id: dict[str, list[int]] = {}
    for i, (h, k) in enumerate(zip(shas, ids)):
        if h:
            by_sha.setdefault(h, []).append(i)
        by_id.setdefault(k, []).append(i)
    out: dict[int, Correction] = {}
    for c in decisions.values():
        hits = by_sha.get(c.sha, []) if c.sha else by_id.get(c.path, [])
        if c.decision == "duplicate" and len(hits) > 1:
            # byte-identical copies: leave out the named copy (or all but one), never the original it duplicates
            named = [i for i in hits if ids[i] == c.path]
            hits = [i for i in (named or hits[1:]) if ids[i] != c.duplicate_of]
        for i in hits:
            out[i] = c
    return out


def apply_corrections(samples: Sequence[Sample], rows: Sequence[Correction], classes: Sequence[str], *,
                      source: DataSource | None = None, file: str | os.PathLike | None = None,
                      cache_dir: str | os.PathLike | None = None,
                      shas: Sequence[str | None] | None = None) -> tuple[list[Sample], Applied]:
    """Relabels and drops of ``rows`` applied on top of ``samples`` (new Sample objects; the input is untouched).

    Rows are reduced to the latest decision per image (:func:`latest_decisions`) and matched by content hash,
    so a moved or renamed file still matches; a row without a hash matches by image id.

    Args:
        samples: the dataset's samples (``source.samples`` when ``source`` is given and ``samples`` is empty).
        rows: the corrections (:func:`read_corrections`).
        classes: the dataset's class names; a relabel to any other name is an error.
        source: the :class:`DataSource` the samples come from (its root names the images, its array holds the
            pixels of array-backed sets); required unless ``shas`` is given.
        file: the corrections file (its name and sha256 go into :class:`Applied`).
        cache_dir: where file hashes are remembered.
        shas: precomputed content hashes of ``samples`` (:func:`sample_shas`).

    Returns:
        ``(new_samples, applied)``.

    Raises:
        CorrectionsError: a relabel names an unknown class, or no row matches an image of this dataset
            ("0 of N rows matched": the corrections of another dataset).
    """
    samples = list(samples)
    decisions = latest_decisions(rows)
    name, digest = (Path(file).name, file_sha256(file).removeprefix("sha256:")) if file else ("", "")
    applied = Applied(name, digest, len(rows), decisions=len(decisions))
    index = {c: i for i, c in enumerate(classes)}
    multi = source is not None and source.multilabel  # a relabel names the image's whole label set: "a;b"
    bad = sorted({n for c in decisions.values() if c.decision == "relabel"
                  for n in (split_labels(c.label) if multi else [c.label]) if n not in index})
    if bad:
        raise CorrectionsError(f"{name or 'corrections'}: relabel to unknown class {bad[0]!r} "
                               f"(classes: {', '.join(classes)})")
    if not decisions:
        return samples, applied
    if source is None and shas is None:
        raise CorrectionsError("apply_corrections needs the source (or the samples' shas) to match by content")
    ids = sample_ids(source, samples) if source is not None else [s.path for s in samples]
    shas = list(shas) if shas is not None else sample_shas(source, samples, cache_dir=cache_dir)
    hit = _match(decisions, shas, ids)
    matched = {_key(c) for c in hit.values()}
    if not matched:
        raise CorrectionsError(f"{name or 'corrections'}: 0 of {len(decisions)} corrected images match an image of "
                               f"this dataset ({len(samples)} images) by content or path; is it the corrections "
                               f"file of another dataset?")
    missing = [c for k, c in decisions.items() if k not in matched]
    applied.missing, applied.missing_ids = len(missing), [c.path for c in missing[:20]]
    return _outcome(samples, hit, index, applied, multi), applied


def _relabeled(s: Sample, label: str, index: dict[str, int], multi: bool) -> Sample | None:
    """``s`` with the relabel's class (multi-label: the label set ``a;b``), or None when nothing changes."""
    if multi:
        labels = tuple(sorted({index[n] for n in split_labels(label)}))
        return None if labels == s.labels else replace(s, labels=labels)
    return None if index[label] == s.label else replace(s, label=index[label])


def _outcome(samples: list[Sample], hit: dict[int, Correction], index: dict[str, int], applied: Applied,
             multi: bool = False) -> list[Sample]:
    """The new sample list, counting each decided image once by its outcome."""
    out: list[Sample] = []
    for i, s in enumerate(samples):
        c = hit.get(i)
        if c is None:
            out.append(s)
        elif c.decision in ("drop", "duplicate"):
            applied.left_out.append(s.path)
            if c.decision == "drop":
                applied.dropped += 1
            else:
                applied.duplicates += 1
        elif c.decision == "relabel" and (new := _relabeled(s, c.label, index, multi)) is not None:
            applied.relabeled += 1
            out.append(new)
        else:
            applied.kept += 1
            out.append(replace(s))
    return out


def correct_source(source: DataSource, file: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
                   upto: int | None = None) -> Applied:
    """Apply a corrections file to ``source`` in place (its ``samples`` replaced) and log what was applied.

    The one call every command makes where it loads its data (train, audit, evaluate). ``upto``: use only the
    first ``upto`` rows (the log is append-only, so they are the file as it was when a run applied it: a resumed
    run or ``nextclass evaluate`` sees the labels the run trained on while the review goes on).

    Example:
        >>> applied = correct_source(load_source("photos/"), "runs/x/corrections.jsonl")  # doctest: +SKIP
        >>> applied.summary()  # doctest: +SKIP
        'corrections.jsonl: 12 applied (10 relabeled, 2 dropped, 0 duplicates), 3 kept, 0 missing, from 15 rows'
    """
    rows, torn = _read(file)
    if upto is not None and upto < len(rows):
        log(f"corrections: {Path(file).name} has {len(rows) - upto} row(s) more than when the run applied it; "
            f"using its first {upto}, as the run did")
        rows = rows[:upto]
    new, applied = apply_corrections(source.samples, rows, source.classes, source=source, file=file,
                                     cache_dir=cache_dir)
    applied.torn = len(torn)
    source.samples = new
    log(f"corrections {applied.summary()}")
    if applied.missing:
        log(f"[yellow]NOTE[/]: {applied.missing} corrected image(s) are no longer in {source.name} (first: "
            f"{', '.join(applied.missing_ids[:3])}); their rows are ignored")
    return applied
