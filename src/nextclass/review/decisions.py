"""A review decision from the page, checked and saved; and where a reopened review stands.

The page posts ``{"item": "it-3", "decision": "relabel", "label": "dog"}`` (``duplicate_of``: an image id, for
``duplicate``). :func:`correction_for` checks it against the review set (a known item, a known class, an image of
this review to be a duplicate of) and turns it into a :class:`~nextclass.data.corrections.Correction` with the
image's path relative to the data root and its content hash; anything else is a :class:`DecisionError` carrying
the HTTP status and a reason, and nothing is written. :func:`nextclass.data.corrections.append_correction` saves
it (one locked, fsynced append per decision: two tabs posting at once never tear a row).

Resuming (:func:`decided`): the corrections file is read again; each item takes the latest row for its own path,
or, for a file that was moved or renamed since, the latest row with its content hash whose path is no image of
this review (so byte-identical copies, which share a hash, keep their own decisions).
"""

from __future__ import annotations

import os

from nextclass.data.corrections import DECISIONS, Correction, CorrectionsError, latest_decisions, read_corrections
from nextclass.review.items import Item, ReviewSet

__all__ = ["DecisionError", "correction_for", "decided", "FIELDS", "read_rows"]

FIELDS = ("item", "decision", "label", "duplicate_of")


class DecisionError(ValueError):
    """A decision the server will not save: ``status`` is the HTTP answer (404 unknown item, 422 otherwise)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


def _payload(body) -> dict:
    if not isinstance(body, dict):
        raise DecisionError(422, f"a decision is a JSON object with {', '.join(FIELDS)}; got {type(body).__name__}")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise DecisionError(422, f"unknown field {unknown[0]!r} (fields: {', '.join(FIELDS)})")
    for k in FIELDS:
        if body.get(k) is not None and not isinstance(body[k], str):
            raise DecisionError(422, f"{k}: expected a string, got {body[k]!r}")
    if body.get("decision") not in DECISIONS:
        raise DecisionError(422, f"decision: {body.get('decision')!r} is not one of {', '.join(DECISIONS)}")
    return body


def _target(rs: ReviewSet, item: Item, body: dict) -> tuple[str | None, str | None]:
    """(label, duplicate_of path) the decision carries, checked."""
    img = rs.images[item.image]
    if body["decision"] == "relabel":
        label = body.get("label")
        if label not in rs.classes:
            raise DecisionError(422, f"label: {label!r} is not a class of this review (classes: "
                                     f"{', '.join(rs.classes)})")
        return label, None
    if body["decision"] == "duplicate":
        other = rs.images.get(body.get("duplicate_of") or "")
        if other is None:
            raise DecisionError(422, f"duplicate_of: {body.get('duplicate_of')!r} is not an image of this review "
                                     "(give the id of the image this one duplicates)")
        if other.id == img.id:
            raise DecisionError(422, "duplicate_of: an image cannot be a duplicate of itself")
        return None, other.rel
    return None, None


def correction_for(rs: ReviewSet, body) -> tuple[Item, Correction]:
    """The item and the correction a posted decision stands for; :class:`DecisionError` when it cannot be saved.

    Example:
        >>> item, c = correction_for(rs, {"item": "it-0", "decision": "relabel", "label": "dog"})  # doctest: +SKIP
        >>> c.path, c.reason                                                                    # doctest: +SKIP
        ('cat/012.jpg', 'label issue')
    """
    body = _payload(body)
    item = rs.item(body.get("item") or "")
    if item is None:
        raise DecisionError(404, f"item: {body.get('item')!r} is not an item of this review")
    label, dup = _target(rs, item, body)
    sha = rs.images.sha(item.image)
    if sha is None:
        raise DecisionError(422, f"{rs.images[item.image].rel}: the file cannot be read any more (moved or deleted "
                                 "since the review started?); nothing saved")
    try:
        c = Correction(rs.images[item.image].rel, sha, body["decision"], label=label, duplicate_of=dup,
                       reason=item.reason)
    except CorrectionsError as e:
        raise DecisionError(422, str(e)) from None
    return item, c


def read_rows(file: str | os.PathLike) -> list[Correction]:
    """The rows of the corrections file; none yet when it does not exist (CorrectionsError when it is damaged)."""
    return read_corrections(file) if os.path.exists(file) else []


def as_shown(rs: ReviewSet, c: Correction) -> dict:
    """A saved decision as the page shows it: ``duplicate_of`` as an image id of this review when it is one."""
    dup = c.duplicate_of and (rs.images.by_rel(c.duplicate_of) or c.duplicate_of)
    return {"decision": c.decision, "label": c.label, "duplicate_of": dup, "time": c.time}


def decided(rs: ReviewSet, rows: list[Correction]) -> dict[str, dict]:
    """Item id -> its latest saved decision (:func:`as_shown`), for the items that have one."""
    by_path: dict[str, Correction] = {}
    for c in rows:
        by_path[c.path] = c
    by_sha = latest_decisions(rows)
    rels = {rs.images[it.image].rel for it in rs.items}
    out = {}
    for it in rs.items:
        img = rs.images[it.image]
        c = by_path.get(img.rel)
        if c is None:
            moved = by_sha.get(rs.images.sha(it.image) or "")
            c = moved if moved is not None and moved.path not in rels else None
        if c is not None:
            out[it.id] = as_shown(rs, c)
    return out
