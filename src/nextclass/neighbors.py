"""The bundle's nearest-training-images index: "this image looks like these training images".

``<bundle>/neighbors.safetensors`` holds, for up to ``neighbor_index`` training images (config; a seeded
per-class subsample above it, so every class keeps its share):

* ``embeddings``: float16 (N, D), L2-normalised *trunk features*, i.e. what the classifier head sees
  (:func:`nextclass.models.heads.trunk_features`; a feature map, for the ``attention`` head, is mean-pooled);
* ``labels``: int32 (N,), class indices in the bundle's class order;
* ``thumbnails``: uint8 (N, 32, 32, C), so the bundle shows its neighbours without the training data (config
  ``neighbor_thumbnails``, on by default; off: (N, 0, 0, C) and neighbours come back without a picture);
* ``ids_utf8``: the images' ids, UTF-8, one per line, as a uint8 tensor (safetensors holds tensors only; no
  pickle anywhere). An id is the image's path *relative to the training data's root* (:func:`relative_id`), never
  an absolute path: a bundle travels, and its neighbours reach HTTP clients.

Search: scikit-learn's ``NearestNeighbors`` with brute force on the unit vectors (Euclidean distance on
unit vectors is a monotone function of cosine similarity: ``d = sqrt(2 - 2 cos)``). Why this and not
faiss/hnswlib: the search is exact (an approximate index could return a different "nearest" image than
the report shows), scikit-learn is already a dependency (no new wheel to install on every serving
machine), and brute force over the capped index (10 000 vectors by default, 100 000 at most is
reasonable) answers a query in milliseconds on a laptop CPU. Above ~1e6 vectors an approximate index
(faiss IVF / HNSW) would pay for its dependency; the cap keeps us well below that.
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nextclass.models.heads import trunk_features

__all__ = ["INDEX_FILE", "THUMB", "KNN_K", "WRONG_SHOWN", "Embedder", "embedding_of", "NeighborIndex", "Neighbor", "subsample",
           "thumbnails", "save_index", "png_base64", "second_opinion", "relative_id"]

INDEX_FILE = "neighbors.safetensors"
THUMB = 32  # thumbnail side (pixels)
KNN_K = 5  # voters of the kNN second opinion
WRONG_SHOWN = 12  # wrong predictions whose neighbours the report shows


class Embedder(nn.Module):
    """``model`` → its L2-normalised trunk features (N, D), the vectors the index holds and searches with."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return embedding_of(self.model, trunk_features(self.model, x))


def embedding_of(model: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """The index's vectors from ``model``'s trunk features ``t`` (as :func:`trunk_features` returns them, or as the
    linear probe's feature cache holds them): pooled to (N, D) and L2-normalised."""
    if t.ndim == 4:  # a feature map (attention head): mean-pool the positions
        t = t.mean((1, 2)) if getattr(model, "output_fmt", "NCHW") == "NHWC" else t.mean((2, 3))
    elif t.ndim == 3:  # tokens (B, N, C)
        t = t.mean(1)
    return torch.nn.functional.normalize(t.float().flatten(1), dim=1)


@dataclass
class Neighbor:
    """One training image near a query: its id (path relative to the training data's root), class, distance
    (0 = same direction, 2 = opposite)."""

    id: str
    label: str
    index: int
    distance: float
    thumbnail: np.ndarray | None  # uint8 (THUMB, THUMB, C); None: the bundle keeps no thumbnails

    def to_dict(self) -> dict:
        return {"id": self.id, "label": self.label, "index": self.index, "distance": round(self.distance, 6),
                "thumbnail": png_base64(self.thumbnail) if self.thumbnail is not None else None}


def png_base64(a: np.ndarray) -> str:
    """A uint8 HxWxC (C = 1 or 3) image as ``data:image/png;base64,...``."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a[:, :, 0] if a.ndim == 3 and a.shape[2] == 1 else a).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def subsample(labels: np.ndarray, cap: int, seed: int = 0) -> np.ndarray:
    """Positions of at most ``cap`` items, each class keeping its share (seeded); all of them when they fit."""
    n = len(labels)
    if n <= cap:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        keep.append(rng.choice(pos, size=max(1, int(round(cap * len(pos) / n))), replace=False))
    return np.sort(np.concatenate(keep))[:cap]


def relative_id(path: str, root: str) -> str:
    """An image's id in the index: its path relative to the data ``root`` (POSIX separators); a path outside the
    root keeps only its last two parts (``class/file``), so no absolute path is ever stored.

    Example:
        >>> relative_id("/data/photos/cat/1.jpg", "/data/photos"), relative_id("/elsewhere/cat/1.jpg", "/data/photos")
        ('cat/1.jpg', 'cat/1.jpg')
    """
    p = Path(path)
    try:
        return p.resolve().relative_to(Path(root).resolve()).as_posix()
    except (ValueError, OSError):
        return Path(*p.parts[-2:]).as_posix() if p.is_absolute() or ".." in p.parts else p.as_posix()


def thumbnails(array: np.ndarray, size: int = THUMB) -> np.ndarray:
    """uint8 (N, S, S, C) → uint8 (N, size, size, C), antialiased bilinear."""
    t = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float()
    t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def save_index(folder: str | os.PathLike, embeddings: np.ndarray, labels: np.ndarray, ids: list[str],
               thumbs: np.ndarray) -> int:
    """Write ``neighbors.safetensors`` into the bundle ``folder`` (atomically); returns its size in bytes."""
    from safetensors.numpy import save_file

    from nextclass.utils import publish_file

    folder = Path(folder)
    tensors = {"embeddings": np.ascontiguousarray(embeddings, np.float16),
               "labels": np.ascontiguousarray(labels, np.int32),
               "thumbnails": np.ascontiguousarray(thumbs, np.uint8),
               "ids_utf8": np.frombuffer("\n".join(ids).encode("utf-8"), np.uint8).copy()}
    tmp = folder / f".{INDEX_FILE}.{os.getpid()}.tmp"
    save_file(tensors, str(tmp), metadata={"format": "nextclass.neighbors", "metric": "euclidean (unit vectors)"})
    publish_file(tmp, folder / INDEX_FILE)
    return (folder / INDEX_FILE).stat().st_size


class NeighborIndex:
    """The loaded index of a bundle. ``NeighborIndex.load(folder)`` is None for a bundle without one.

    Example:
        >>> idx = NeighborIndex.load("runs/tiny/model")                  # doctest: +SKIP
        >>> idx.neighbors(query_vectors, 3, classes)[0][0].label         # doctest: +SKIP
        'circle'
    """

    def __init__(self, embeddings: np.ndarray, labels: np.ndarray, ids: list[str], thumbs: np.ndarray):
        from sklearn.neighbors import NearestNeighbors

        self.embeddings = embeddings.astype(np.float32)
        self.labels, self.ids, self.thumbs = labels, ids, thumbs
        self.nn = NearestNeighbors(algorithm="brute", metric="euclidean").fit(self.embeddings)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "NeighborIndex | None":
        from safetensors.numpy import load_file

        f = Path(folder) / INDEX_FILE
        if not f.is_file():
            return None
        t = load_file(str(f))
        ids = bytes(t["ids_utf8"]).decode("utf-8").split("\n")
        return cls(t["embeddings"], t["labels"].astype(np.int64), ids, t["thumbnails"])

    def __len__(self) -> int:
        return len(self.labels)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Distances and index positions (each N x k, nearest first) of the ``k`` nearest training images."""
        k = max(1, min(int(k), len(self)))
        return self.nn.kneighbors(np.asarray(queries, np.float32), n_neighbors=k)

    def neighbors(self, queries: np.ndarray, k: int, classes: list[str]) -> list[list[Neighbor]]:
        """The ``k`` nearest training images of each query vector, as :class:`Neighbor` lists."""
        dist, pos = self.search(queries, k)
        thumbs = self.thumbs if self.thumbs.ndim == 4 and self.thumbs.shape[1] > 0 else None
        return [[Neighbor(self.ids[j], classes[int(self.labels[j])], int(self.labels[j]), float(d),
                          thumbs[j] if thumbs is not None else None)
                 for d, j in zip(drow, prow)] for drow, prow in zip(dist, pos)]

    def knn_predict(self, queries: np.ndarray, k: int = 5) -> np.ndarray:
        """Majority vote of the ``k`` nearest training labels (ties: the nearest voter's class wins)."""
        _, pos = self.search(queries, k)
        votes = self.labels[pos]
        out = np.empty(len(votes), np.int64)
        for i, v in enumerate(votes):
            counts = np.bincount(v)
            best = np.flatnonzero(counts == counts.max())
            out[i] = next(c for c in v if c in best)
        return out


def second_opinion(index: "NeighborIndex", emb: np.ndarray, logits: np.ndarray, labels: np.ndarray, paths: list[str],
                   classes: list[str], unfamiliar: float | None = None) -> dict:
    """A split's ``neighbors`` block of ``metrics.json``: the kNN vote's accuracy beside the head's, the nearest
    training images of the first :data:`WRONG_SHOWN` wrong predictions (for the report), and, with the
    bundle's ``unfamiliar`` distance, the share of the split's images beyond it.

    Args:
        emb: the split's embeddings (:class:`Embedder`), row i for ``logits[i]``, ``labels[i]``, ``paths[i]``.
    """
    y, pred = np.asarray(labels), np.asarray(logits).argmax(axis=1)
    knn = index.knn_predict(emb, KNN_K)
    wrong = np.flatnonzero(pred != y)[:WRONG_SHOWN]
    dist, pos = index.search(emb[wrong], KNN_K) if len(wrong) else (np.zeros((0, 0)), np.zeros((0, 0), int))
    shown = [{"path": paths[i], "true": classes[int(y[i])], "predicted": classes[int(pred[i])],
              "neighbors": [[int(p), round(float(d), 6)] for p, d in zip(prow, drow)]}
             for i, prow, drow in zip(wrong, pos, dist)]
    out = {"k": KNN_K, "knn_accuracy": float((knn == y).mean()), "head_accuracy": float((pred == y).mean()),
           "wrong": shown, "wrong_total": int((pred != y).sum())}
    if unfamiliar is not None and len(emb):
        out["unfamiliar_rate"] = float((index.search(emb, 1)[0][:, 0] > unfamiliar).mean())
    return out
