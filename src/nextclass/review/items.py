"""What ``nextclass review`` walks through: one :class:`Item` per image that needs a person's decision.

An item is an image with the evidence of every finding about it, so an image that is both a probable label
issue and one of the model's confident mistakes is decided once. Items are ordered by section, the most useful
first (:data:`SECTIONS`): probable label issues (rank order), images of a later split that copy an earlier
one (leaks), unreadable files, the model's most confident mistakes on the test split, ``unfamiliar`` test
images, the other members of near-duplicate groups, and the ``suggest`` picks for a pool of new images.

Every image the review may show is registered in an :class:`ImageTable` under an opaque id (``img-3``);
the page and the HTTP API only ever see those ids and paths *relative to the data root* (the corrections'
``path``). An image whose real path (symlinks resolved) is outside the data root (or the pool, for ``suggest``)
is listed but never served.

Where the findings come from (:func:`from_audit`, :func:`from_predictions`, :func:`from_suggestions`): the
audit report (a run's ``audit.json`` or ``nextclass audit``'s), a run's ``label_issues.csv`` and test
``predictions.csv``, and :func:`nextclass.curation.suggest.suggest`'s rows. The model's evidence (nearest
training images of each class, the ``unfamiliar`` test images) is added by :mod:`nextclass.review.evidence`.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from nextclass.neighbors import relative_id
from nextclass.utils import file_sha256

__all__ = ["SECTIONS", "Image", "Item", "ImageTable", "ReviewSet", "from_audit", "from_predictions",
           "from_suggestions", "label_issue_rows", "MAX_PER_REASON"]

#: Reasons in the order the review walks through them (each is a correction's ``reason``).
SECTIONS = ("label issue", "leak", "unreadable", "confident mistake", "unfamiliar", "near duplicate", "suggest")
MAX_PER_REASON = 300  # items listed per reason (the notes say how many more the findings hold)


@dataclass
class Image:
    """One image the review may show: ``rel`` is its path relative to the data root (or the pool's root)."""

    id: str
    rel: str
    path: Path | None  # the real file (symlinks resolved); None: not served (outside the root, or missing)
    label: str | None = None
    split: str | None = None
    sha: str | None = None  # utils.file_sha256 of the bytes, computed on first use

    def to_dict(self) -> dict:
        return {"id": self.id, "file": self.rel, "label": self.label, "split": self.split,
                "served": self.path is not None}


@dataclass
class Item:
    """An image to decide on, with what every finding says about it (``evidence[reason]``)."""

    id: str
    image: str  # Image.id
    reasons: list[str] = field(default_factory=list)
    evidence: dict = field(default_factory=dict)
    suggested: str | None = None  # the class a relabel proposes (label issue, mistake, suggest pick)
    duplicate_of: str | None = None  # the Image.id a "duplicate of" decision proposes

    @property
    def reason(self) -> str:
        """The section the item is shown in (its first finding in :data:`SECTIONS` order)."""
        return min(self.reasons, key=SECTIONS.index)

    def to_dict(self, images: "ImageTable") -> dict:
        img = images[self.image]
        return {"id": self.id, "image": img.to_dict(), "reason": self.reason,
                "reasons": sorted(self.reasons, key=SECTIONS.index), "evidence": self.evidence,
                "suggested": self.suggested, "duplicate_of": self.duplicate_of}


class ImageTable:
    """Opaque image ids for the files of one data root (and, for ``suggest``, one pool folder)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self._by_id: dict[str, Image] = {}
        self._by_path: dict[str, str] = {}
        self._by_rel: dict[str, str] = {}

    def __getitem__(self, image_id: str) -> Image:
        return self._by_id[image_id]

    def get(self, image_id: str) -> Image | None:
        return self._by_id.get(image_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, path: str | os.PathLike, label: str | None = None, split: str | None = None,
            root: str | os.PathLike | None = None) -> str:
        """The id of the image at ``path`` (registered once); served only when it really lies inside ``root``."""
        base = Path(root).resolve() if root is not None else self.root
        p = Path(path)
        key = os.path.abspath(p)
        if key in self._by_path:
            img = self._by_id[self._by_path[key]]
            img.label, img.split = img.label or label, img.split or split
            return img.id
        real = _inside(p, base)
        img = Image(f"img-{len(self._by_id)}", _rel(key, base), real, label, split)
        self._by_id[img.id], self._by_path[key] = img, img.id
        self._by_rel.setdefault(img.rel, img.id)
        return img.id

    def by_rel(self, rel: str) -> str | None:
        """The id of the image named ``rel`` (relative to its root), if this table holds one."""
        return self._by_rel.get(rel)

    def to_dict(self) -> dict:
        """Every image by id, as the page names it (no filesystem path)."""
        return {i: img.to_dict() for i, img in self._by_id.items()}

    def sha(self, image_id: str) -> str | None:
        """The content hash a correction records (None: the file cannot be read)."""
        img = self._by_id[image_id]
        if img.sha is None and img.path is not None:
            try:
                img.sha = file_sha256(img.path).removeprefix("sha256:")
            except OSError:
                return None
        return img.sha


def _rel(path: str, base: Path) -> str:
    """The image's id as corrections name it (:func:`nextclass.data.corrections.sample_ids`): its path relative to
    the root as listed (a symlink keeps its own name), POSIX; a path outside the root as the neighbour index names
    it (``class/file``), never absolute."""
    if path.startswith(str(base).rstrip(os.sep) + os.sep):
        return Path(os.path.relpath(path, base)).as_posix()
    return relative_id(path, str(base))


def _inside(p: Path, base: Path) -> Path | None:
    """``p``'s real path when it is a file inside ``base`` (a symlink pointing out of it is not), else None."""
    try:
        real = p.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return real if real.is_file() and real.is_relative_to(base) else None


@dataclass
class ReviewSet:
    """Everything the review page shows: classes, images, items in walking order, and notes (what was capped or
    could not be judged)."""

    title: str
    classes: list[str]
    images: ImageTable
    items: list[Item] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _by_image: dict = field(default_factory=dict, repr=False)

    def finding(self, image_id: str, reason: str, evidence: dict, suggested: str | None = None,
                duplicate_of: str | None = None) -> Item:
        """Add a finding about an image: a new item, or one more reason on the image's item."""
        item = self._by_image.get(image_id)
        if item is None:
            item = Item(f"it-{len(self.items)}", image_id)
            self.items.append(item)
            self._by_image[image_id] = item
        if reason not in item.reasons:
            item.reasons.append(reason)
        item.evidence.setdefault(reason, evidence)
        item.suggested = item.suggested or suggested
        item.duplicate_of = item.duplicate_of or duplicate_of
        return item

    def item(self, item_id: str) -> Item | None:
        return next((it for it in self.items if it.id == item_id), None)

    def in_order(self) -> None:
        """Sort the items by section (stable: each finder's own order is kept inside a section)."""
        self.items.sort(key=lambda it: SECTIONS.index(it.reason))

    def to_dict(self) -> dict:
        return {"title": self.title, "classes": self.classes, "notes": self.notes,
                "items": [it.to_dict(self.images) for it in self.items], "images": self.images.to_dict()}


def _capped(rs: ReviewSet, reason: str, rows: list, what: str) -> list:
    if len(rows) > MAX_PER_REASON:
        rs.notes.append(f"{reason}: the first {MAX_PER_REASON} of {len(rows)} {what} are listed")
    return rows[:MAX_PER_REASON]


def label_issue_rows(csv_path: Path | None, audit: dict) -> list[dict]:
    """Label issues, most suspicious first: every row of ``label_issues.csv`` when there is one, else the
    (capped) items of the audit's ``label_issues`` block. Rows: path, label, suggested, score, rank[, split]."""
    if csv_path is not None and csv_path.is_file():
        with open(csv_path, newline="", encoding="utf-8") as fh:
            return [{"path": r["path"], "label": r["given_label"], "suggested": r["suggested_label"],
                     "score": float(r["score"]), "rank": int(r["rank"])} for r in csv.DictReader(fh)]
    return list((audit.get("label_issues") or {}).get("items") or [])


def from_audit(rs: ReviewSet, audit: dict, issues: list[dict]) -> None:
    """Label issues, leaks, unreadable files and near-duplicate groups of an audit report."""
    for r in _capped(rs, "label issue", issues, "probable label issues"):
        img = rs.images.add(r["path"], r.get("label"), r.get("split"))
        rs.finding(img, "label issue", {"given": r.get("label"), "suggested": r.get("suggested"),
                                        "score": r.get("score"), "rank": r.get("rank")}, suggested=r.get("suggested"))
    for r in _capped(rs, "unreadable", list(audit.get("unreadable") or []), "unreadable files"):
        img = rs.images.add(r["path"], r.get("label"), r.get("split"))
        rs.finding(img, "unreadable", {"why": r.get("reason")})
    groups = list(audit.get("duplicates") or [])
    listed, total = len(groups), audit.get("summary", {}).get("duplicate_clusters", len(groups))
    if total > listed:
        rs.notes.append(f"near duplicate: the audit lists {listed} of its {total} duplicate groups")
    for g in _capped(rs, "near duplicate", groups, "duplicate groups"):
        _group(rs, g)


def _group(rs: ReviewSet, g: dict) -> None:
    """A duplicate group: every member but the centre (the first: earliest split) is an item, a leak when it is in a
    later split than the centre, else a near duplicate; each proposes "duplicate of" the centre."""
    members = g.get("members") or []
    if len(members) < 2:
        return
    ids = [rs.images.add(m["path"], m.get("label"), m.get("split")) for m in members]
    centre, rank = ids[0], {"train": 0, "val": 1, "test": 2}
    for m, img in zip(members[1:], ids[1:]):
        leak = rank.get(m.get("split"), 3) > rank.get(members[0].get("split"), 3) and g.get("cross_split")
        reason = "leak" if leak else "near duplicate"
        ev = {"kind": g.get("kind"), "group": ids, "centre": centre, "size": g.get("size", len(ids)),
              "label_conflict": bool(g.get("label_conflict")), "max_distance": g.get("max_distance")}
        if leak:
            ev["pair"] = f"{members[0].get('split')}-{m.get('split')}"
        rs.finding(img, reason, ev, duplicate_of=centre)


def from_predictions(rs: ReviewSet, predictions: Path) -> list[dict]:
    """The model's confident mistakes on the test split (``predictions.csv``), most confident first; returns the
    rows of every test image (for the ``unfamiliar`` check)."""
    if not predictions.is_file():
        rs.notes.append("confident mistake: the run has no test predictions (predictions.csv)")
        return []
    with open(predictions, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    wrong = sorted((r for r in rows if r.get("correct") == "0"), key=lambda r: -float(r["probability"]))
    for r in _capped(rs, "confident mistake", wrong, "wrong test predictions"):
        img = rs.images.add(r["path"], r["true"], r.get("split") or "test")
        rs.finding(img, "confident mistake", {"given": r["true"], "predicted": r["predicted"],
                                              "probability": float(r["probability"]), "topk": r.get("topk", "")},
                   suggested=r["predicted"])
    return rows


def from_suggestions(rs: ReviewSet, rows: list[dict], pool_root: str | os.PathLike) -> None:
    """The ``suggest`` picks for a pool of unlabelled images (served from inside ``pool_root`` only)."""
    for r in _capped(rs, "suggest", rows, "suggestions"):
        img = rs.images.add(r["path"], None, "pool", root=pool_root)
        rs.finding(img, "suggest", {"predicted": r["predicted"], "probability": r["probability"],
                                    "why": r.get("reason"), "unfamiliar": r.get("unfamiliar"), "rank": r["rank"]},
                   suggested=r["predicted"])
