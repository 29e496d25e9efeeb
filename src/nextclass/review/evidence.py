"""The run's model as evidence for the review: the nearest training images of each class an item is torn between,
and which test images are ``unfamiliar``.

Both come from the bundle's neighbour index (:mod:`nextclass.neighbors`: L2-normalised trunk features of up to
``neighbor_index`` training images, with 32x32 thumbnails): an item's image is embedded once, and searched among
the index's images *of one class at a time* ("the given class looks like this, the suggested class like that"),
which :meth:`~nextclass.neighbors.NeighborIndex.neighbors` (nearest of any class) cannot show. A test image is
``unfamiliar`` as ``predict`` flags one: its nearest training image is farther than the bundle's
``neighbors.unfamiliar.distance`` (chosen on val at training).
"""

from __future__ import annotations

import numpy as np

from nextclass.neighbors import png_base64
from nextclass.review.items import MAX_PER_REASON, ReviewSet

__all__ = ["add_model_evidence", "class_neighbors", "K", "MAX_SCAN"]

K = 3  # nearest training images shown per class
MAX_SCAN = 2000  # test images checked for "unfamiliar" (one trunk pass each)
_BATCH = 64


def class_neighbors(index, query: np.ndarray, cls: int, k: int = K) -> list[dict]:
    """The ``k`` nearest training images of class ``cls`` in ``index`` to one query vector, nearest first
    (id relative to the training data's root, distance, and the index's thumbnail as a PNG data URI)."""
    pos = np.flatnonzero(index.labels == cls)
    if not len(pos):
        return []
    d = np.linalg.norm(index.embeddings[pos] - query[None, :].astype(np.float32), axis=1)
    order = np.argsort(d, kind="stable")[:k]
    thumbs = index.thumbs if index.thumbs.ndim == 4 and index.thumbs.shape[1] > 0 else None
    return [{"id": index.ids[pos[j]], "distance": round(float(d[j]), 4),
             "thumbnail": png_base64(thumbs[pos[j]]) if thumbs is not None else None} for j in order]


def _embed(pred, paths: list) -> tuple[np.ndarray, list[int]]:
    """Trunk vectors of the readable ``paths`` (in batches) and the positions they belong to."""
    from nextclass.data.decode import DecodeError

    vecs, kept = [], []
    for a in range(0, len(paths), _BATCH):
        tensors = []
        for i in range(a, min(a + _BATCH, len(paths))):
            try:
                tensors.append(pred.to_tensor(str(paths[i])))
                kept.append(i)
            except (DecodeError, OSError):
                continue
        if tensors:
            import torch

            vecs.append(pred.embed(torch.stack(tensors)))
    return (np.concatenate(vecs) if vecs else np.zeros((0, 1), np.float32)), kept


def _unfamiliar(rs: ReviewSet, pred, index, test_rows: list[dict]) -> None:
    """Test images farther from every training image than the bundle's ``unfamiliar`` distance, farthest first."""
    far_at = pred.unfamiliar_distance()
    if far_at is None:
        rs.notes.append("unfamiliar: the bundle keeps no distance threshold (too few val images, or an older run)")
        return
    if len(test_rows) > MAX_SCAN:
        rs.notes.append(f"unfamiliar: the first {MAX_SCAN} of {len(test_rows)} test images were checked")
    rows = test_rows[:MAX_SCAN]
    ids = [rs.images.add(r["path"], r.get("true"), r.get("split") or "test") for r in rows]
    vecs, kept = _embed(pred, [rs.images[i].path or r["path"] for i, r in zip(ids, rows)])
    if not kept:
        return
    dist = index.search(vecs, 1)[0][:, 0]
    far = [(float(d), kept[j]) for j, d in enumerate(dist) if d > far_at]
    for d, j in sorted(far, reverse=True)[:MAX_PER_REASON]:
        r = rows[j]
        rs.finding(ids[j], "unfamiliar", {"distance": round(d, 4), "threshold": round(far_at, 4),
                                          "given": r.get("true"), "predicted": r.get("predicted")})


def _torn_between(rs: ReviewSet, pred, index) -> None:
    """Each item with a proposed class gets the nearest training images of its given class and of that class."""
    want = [it for it in rs.items if it.suggested in pred.classes and rs.images[it.image].path is not None
            and "suggest" not in it.reasons]
    vecs, kept = _embed(pred, [rs.images[it.image].path for it in want])
    for v, j in zip(vecs, kept):
        it = want[j]
        names = [c for c in (rs.images[it.image].label, it.suggested) if c in pred.classes]
        it.evidence["neighbors"] = {c: class_neighbors(index, v, pred.classes.index(c)) for c in dict.fromkeys(names)}


def add_model_evidence(rs: ReviewSet, run, test_rows: list[dict]) -> None:
    """Add the ``unfamiliar`` test images and the per-class nearest training images from the run's bundle.

    Args:
        rs: the review set so far (label issues, mistakes... already in it).
        run: the finished run directory.
        test_rows: the run's test predictions (``predictions.csv`` rows: path, true, predicted...).
    """
    from nextclass.deploy.loading import load

    pred = load(run)
    try:
        index = pred.neighbor_index()
    except ValueError as e:
        rs.notes.append(f"no nearest training images: {e}")
        return
    _unfamiliar(rs, pred, index, test_rows)
    _torn_between(rs, pred, index)
