"""``nextclass suggest RUN UNLABELED``: rank unlabelled images by how much labelling them should help.

The run's bundle embeds the unlabelled images and its own training images once
(:mod:`nextclass.curation.embed`: trunk features, and logits divided by the bundle's calibration
temperature, so "uncertain" means what the calibrated probabilities say); :func:`nextclass.curation.
selection.select` picks uncertain and diverse images, skipping near-duplicates of images the run was
trained on. The result is a CSV (rank, path, predicted, probability, margin, score, reason).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from nextclass.curation.embed import Embedding, embed_source
from nextclass.curation.selection import STRATEGIES, margins, select
from nextclass.data.samples import DataError, DataSource, Sample
from nextclass.utils import atomic_write_text, log, natural_key

__all__ = ["suggest", "unlabeled_source", "write_suggestions", "pixel_copies", "STRATEGIES"]


def unlabeled_source(spec) -> DataSource:
    """Unlabelled images: a folder (recursive), a CSV with a ``path`` column (other columns ignored,
    relative paths resolved against the CSV's folder), a list of paths, or a :class:`DataSource`."""
    from nextclass.data.folders import list_images

    if isinstance(spec, DataSource):
        return spec
    if isinstance(spec, (list, tuple)):
        paths, root = [str(p) for p in spec], ""
    else:
        p = Path(spec).expanduser()
        if p.is_dir():
            paths, root = [str(f.resolve()) for f in list_images(p)], str(p)
        elif p.is_file() and p.suffix.lower() == ".csv":
            with open(p, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
            if rows and "path" not in rows[0]:
                raise DataError(f"{p}: a CSV of unlabelled images needs a 'path' column (found {list(rows[0])})")
            paths = [str((p.parent / r["path"]).resolve()) if not Path(r["path"]).is_absolute() else r["path"]
                     for r in rows]
            root = str(p)
        else:
            raise DataError(f"{spec}: not a folder of images or a .csv with a 'path' column")
    if not paths:
        raise DataError(f"{spec}: no images found")
    paths = sorted(dict.fromkeys(paths), key=natural_key)
    return DataSource(str(spec), root, "unlabeled", ["?"], [Sample(q, 0) for q in paths])


def _training_source(run: Path, cache_dir) -> tuple[DataSource, list[int]]:
    """The run's data with its saved split; positions of its training images."""
    from nextclass.rundir import RunDir
    from nextclass.data.sources import load_source
    from nextclass.data.splits import read_split_csv

    cfg = RunDir(run).read_config()
    source = load_source(cfg.data, cache_dir=cache_dir or cfg.cache_dir)
    read_split_csv(RunDir(run).split, source)
    return source, [i for i, s in enumerate(source.samples) if s.split == "train"]


def _softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits / max(float(temperature), 1e-6)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def pixel_copies(pool: Embedding, known: Embedding) -> np.ndarray:
    """Rows of ``pool`` that are the same picture as a labelled image, by the audit's own test: phash and
    thumbnail candidates (:func:`nextclass.data.hashing.near_pairs`) verified pixel by pixel
    (:func:`nextclass.data.same_picture.same_picture_scores`), on the images as decoded for the model."""
    from nextclass.data.audit import NEAR_THRESHOLD, PICTURE_TOLERANCE, PIXEL_TOLERANCE
    from nextclass.data.hashing import hash_arrays, near_pairs
    from nextclass.data.same_picture import same_picture_scores

    if pool.pixels is None or known.pixels is None or not len(pool.rows) or not len(known.rows):
        return np.zeros(0, np.int64)
    a, b = hash_arrays(pool.pixels, pool.rows), hash_arrays(known.pixels, known.rows)
    i, j, _ = near_pairs(np.concatenate([a.phash, b.phash]), np.concatenate([a.thumb, b.thumb]),
                         threshold=NEAR_THRESHOLD, tolerance=PIXEL_TOLERANCE)
    cross = (i < len(a.phash)) & (j >= len(a.phash))  # pairs are i < j: a pool image and a labelled one
    gray = np.concatenate([a.gray, b.gray])
    sides = np.full(len(gray), min(pool.pixels.shape[1], known.pixels.shape[1]))
    same = same_picture_scores(gray, sides, i[cross], j[cross]) <= PICTURE_TOLERANCE
    return np.unique(i[cross][same]).astype(np.int64)


def write_suggestions(path: str | os.PathLike, rows: list[dict]) -> None:
    """The suggestions CSV (rank, path, predicted, probability, margin, score, reason), atomically."""
    buf = io.StringIO()
    w = csv.writer(buf)
    cols = ["rank", "path", "predicted", "probability", "margin", "score", "reason"]
    w.writerow(cols)
    for r in rows:
        w.writerow([r["rank"], r["path"], r["predicted"], f"{r['probability']:.5f}", f"{r['margin']:.5f}",
                    f"{r['score']:.5f}", r["reason"]])
    atomic_write_text(path, buf.getvalue())


#: What the ``score`` column means for each strategy (printed under the table and kept in the result).
SCORE_MEANING = {
    "suggest": "score = the image's weight when it was drawn (uncertainty x squared distance to the nearest image "
               "labelled or picked so far), relative to the largest weight left at that draw; picks are drawn at "
               "random in proportion to it, so it need not fall with the rank",
    "uncertainty": "score = 1 - margin (1: the top two classes tie); ranked by it",
    "random": "score = 0 (drawn uniformly at random)",
}


def suggest(run, unlabeled, *, n: int = 100, output: str | os.PathLike | None = None, strategy: str = "suggest",
            seed: int = 0, cache_dir=None, progress: bool = True) -> dict:
    """Rank ``unlabeled`` images for labelling with the run ``run``; see the module docstring.

    Args:
        run: a finished run directory (its bundle, ``config.yaml`` and ``split.csv``).
        unlabeled: a folder, a CSV with a ``path`` column, a list of paths or a :class:`DataSource`.
        n: how many images to suggest.
        output: write the CSV here.
        strategy: ``suggest`` (uncertainty x diversity), ``uncertainty`` or ``random``.
        seed: seed of the weighted draws.
        cache_dir: cache root (decoded images).
        progress: progress bars.

    Returns:
        ``rows`` (dicts as in the CSV), ``candidates``, ``skipped_duplicates``, ``duplicate_threshold``,
        ``threshold_note``, ``unreadable``, ``method``, ``output``.

    Example:
        >>> res = suggest("runs/simple_cnn-photos", "new-photos/", n=50, output="next.csv")  # doctest: +SKIP
        >>> res["rows"][0]["reason"]                                                        # doctest: +SKIP
        'uncertain + far from labelled'
    """
    run = Path(run)
    pool = unlabeled_source(unlabeled)
    emb = embed_source(pool, model=run, cache_dir=cache_dir, progress=progress)
    train_source, train_pos = _training_source(run, cache_dir)
    known = embed_source(train_source, train_pos, model=run, cache_dir=cache_dir, progress=progress)
    probs = _softmax(emb.logits, emb.temperature)
    copies = pixel_copies(emb, known)
    sel = select(probs, emb.features, known.features, n, strategy=strategy, seed=seed, exclude=copies)
    log(f"suggest: embedding near-duplicate threshold {sel.threshold:.4g} ({sel.threshold_note}); "
        f"{len(copies)} same picture(s) as training images by the pixel check; {len(sel.skipped)} candidate(s) "
        "skipped in all")
    marg = margins(probs)
    rows = [{"rank": r + 1, "path": pool.samples[emb.positions[i]].path, "predicted": emb.classes[int(probs[i].argmax())],
             "probability": float(probs[i].max()), "margin": float(marg[i]), "score": float(sel.score[r]),
             "reason": sel.reason[r]} for r, i in enumerate(sel.order)]
    if output is not None:
        write_suggestions(output, rows)
    method = {"suggest": "margin uncertainty x embedding diversity (weighted k-means++ draws)",
              "uncertainty": "smallest margins", "random": "random"}[strategy]
    return {"rows": rows, "score_meaning": SCORE_MEANING[strategy], "candidates": len(emb.positions), "skipped_duplicates": int(len(sel.skipped)),
            "skipped": [pool.samples[emb.positions[i]].path for i in sel.skipped],
            "duplicate_threshold": float(sel.threshold), "threshold_note": sel.threshold_note,
            "pixel_copies": int(len(copies)),
            "unreadable": len(emb.errors), "method": f"{method}; calibrated with T={emb.temperature:.3g}",
            "output": str(output) if output is not None else None}
