"""``nextclass suggest RUN UNLABELED``: rank unlabelled images by how much labelling them should help.

The run's bundle embeds the unlabelled images and its own training images once
(:mod:`nextclass.curation.embed`: trunk features, and logits divided by the bundle's calibration
temperature, so "uncertain" means what the calibrated probabilities say); :func:`nextclass.curation.
selection.select` picks uncertain and diverse images, skipping near-duplicates of images the run was
trained on. The result is a CSV (rank, path, predicted, probability, margin, score, reason, unfamiliar).

Uncertainty x distance favours noise, blank and off-topic images (on Fashion-MNIST 8 of the top 20 picks were
noise or flat grey): each pick is marked ``unfamiliar`` as ``predict`` marks an image, when it is farther from
every training image in the bundle's neighbour index than the bundle's ``neighbors.unfamiliar.distance`` (chosen
on val at training, :func:`nextclass.metrics.selective.distance_threshold`); ``skip_unfamiliar`` leaves those
candidates out of the draw.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from nextclass.curation.embed import Embedding, embed_source
from nextclass.curation.selection import STRATEGIES, margins, select, unit
from nextclass.data.samples import DataError, DataSource, Sample
from nextclass.utils import atomic_write_text, log, natural_key

__all__ = ["suggest", "unlabeled_source", "write_suggestions", "pixel_copies", "unfamiliar_flags", "STRATEGIES"]


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
    source = load_source(cfg.data, cache_dir=cache_dir or cfg.cache_dir, task=cfg.task)
    if source.multilabel:  # the ranking reads one softmax over classes (uncertainty, class balance)
        raise DataError(f"{source.name}: suggest ranks images by a single-label model's uncertainty; this run is "
                        "multi-label")
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


def unfamiliar_flags(run, emb: Embedding) -> tuple[np.ndarray | None, float | None]:
    """Per embedded candidate: farther from every training image in the bundle's neighbour index than the bundle's
    ``unfamiliar`` distance, as ``predict`` flags an image (the same trunk vectors, L2-normalised, searched in the
    same index); and that distance. ``(None, None)`` when the bundle keeps no threshold or no index."""
    from nextclass.bundle import read_meta, resolve_bundle_dir
    from nextclass.neighbors import NeighborIndex

    folder = resolve_bundle_dir(run)
    th = ((read_meta(folder).get("neighbors") or {}).get("unfamiliar") or {}).get("distance")
    index = NeighborIndex.load(folder) if th is not None else None
    if index is None:
        return None, None
    if not len(emb.features):
        return np.zeros(0, bool), float(th)
    return index.search(unit(emb.features), 1)[0][:, 0] > float(th), float(th)


def write_suggestions(path: str | os.PathLike, rows: list[dict]) -> None:
    """The suggestions CSV (rank, path, predicted, probability, margin, score, reason, unfamiliar), atomically;
    ``unfamiliar`` is 1 or 0 as in ``predict``'s CSV, empty when the bundle keeps no threshold to judge by."""
    buf = io.StringIO()
    w = csv.writer(buf)
    cols = ["rank", "path", "predicted", "probability", "margin", "score", "reason", "unfamiliar"]
    w.writerow(cols)
    for r in rows:
        far = r.get("unfamiliar")
        w.writerow([r["rank"], r["path"], r["predicted"], f"{r['probability']:.5f}", f"{r['margin']:.5f}",
                    f"{r['score']:.5f}", r["reason"], "" if far is None else int(far)])
    atomic_write_text(path, buf.getvalue())


#: What the ``score`` column means for each strategy (printed under the table and kept in the result).
SCORE_MEANING = {
    "suggest": "score = the image's weight when it was drawn (uncertainty x squared distance to the nearest image "
               "labelled or picked so far), relative to the largest weight left at that draw; picks are drawn at "
               "random in proportion to it, so it need not fall with the rank",
    "uncertainty": "score = 1 - margin (1: the top two classes tie); ranked by it",
    "random": "score = 0 (drawn uniformly at random)",
}


def _check_skip(run, skip_unfamiliar: bool) -> None:
    """Fail before any work when ``skip_unfamiliar`` is asked of a bundle with nothing to judge by."""
    from nextclass.bundle import read_meta, resolve_bundle_dir
    from nextclass.neighbors import INDEX_FILE

    if not skip_unfamiliar:
        return
    meta = read_meta(run)
    if (((meta.get("neighbors") or {}).get("unfamiliar") or {}).get("distance") is None
            or not (resolve_bundle_dir(run) / INDEX_FILE).is_file()):
        raise ValueError(f"{run}: --skip-unfamiliar needs the bundle's 'unfamiliar' distance threshold, and this one "
                         "keeps none (no neighbour index, too few val images, or trained before nextclass kept one)")


def _rows(pool: DataSource, emb: Embedding, probs: np.ndarray, sel, far: np.ndarray | None) -> list[dict]:
    marg = margins(probs)
    return [{"rank": r + 1, "path": pool.samples[emb.positions[i]].path,
             "predicted": emb.classes[int(probs[i].argmax())], "probability": float(probs[i].max()),
             "margin": float(marg[i]), "score": float(sel.score[r]), "reason": sel.reason[r],
             "unfamiliar": None if far is None else bool(far[i])}
            for r, i in enumerate(sel.order)]


def suggest(run, unlabeled, *, n: int = 100, output: str | os.PathLike | None = None, strategy: str = "suggest",
            seed: int = 0, cache_dir=None, progress: bool = True, skip_unfamiliar: bool = False) -> dict:
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
        skip_unfamiliar: leave out candidates farther from every training image than the bundle's ``unfamiliar``
            distance (noise, blank or off-topic images); ValueError when the bundle keeps no such threshold.

    Returns:
        ``rows`` (dicts as in the CSV; ``unfamiliar`` None when not judged), ``candidates``, ``skipped_duplicates``,
        ``duplicate_threshold``, ``threshold_note``, ``unreadable``, ``method``, ``output``, ``unfamiliar_distance``
        (None: not judged), ``unfamiliar_picks`` and ``unfamiliar_left_out`` (counts), ``skip_unfamiliar``.

    Example:
        >>> res = suggest("runs/simple_cnn-photos", "new-photos/", n=50, output="next.csv")  # doctest: +SKIP
        >>> res["rows"][0]["reason"], res["rows"][0]["unfamiliar"]                          # doctest: +SKIP
        ('uncertain + far from labelled', False)
    """
    run = Path(run)
    _check_skip(run, skip_unfamiliar)
    pool = unlabeled_source(unlabeled)
    emb = embed_source(pool, model=run, cache_dir=cache_dir, progress=progress)
    train_source, train_pos = _training_source(run, cache_dir)
    known = embed_source(train_source, train_pos, model=run, cache_dir=cache_dir, progress=progress)
    probs = _softmax(emb.logits, emb.temperature)
    copies = pixel_copies(emb, known)
    far, far_at = unfamiliar_flags(run, emb)
    leave = np.flatnonzero(far) if skip_unfamiliar and far is not None else ()
    sel = select(probs, emb.features, known.features, n, strategy=strategy, seed=seed, exclude=copies, leave_out=leave)
    log(f"suggest: embedding near-duplicate threshold {sel.threshold:.4g} ({sel.threshold_note}); "
        f"{len(copies)} same picture(s) as training images by the pixel check; {len(sel.skipped)} candidate(s) "
        "skipped in all" + (f"; {len(sel.left_out)} unfamiliar candidate(s) left out" if skip_unfamiliar else ""))
    rows = _rows(pool, emb, probs, sel, far)
    if output is not None:
        write_suggestions(output, rows)
    return _result(rows, strategy, pool, emb, sel, copies, output) | {
        "unfamiliar_distance": far_at, "unfamiliar_picks": sum(bool(r["unfamiliar"]) for r in rows),
        "unfamiliar_left_out": int(len(sel.left_out)), "skip_unfamiliar": bool(skip_unfamiliar)}


def _result(rows: list[dict], strategy: str, pool: DataSource, emb: Embedding, sel, copies, output) -> dict:
    method = {"suggest": "margin uncertainty x embedding diversity (weighted k-means++ draws)",
              "uncertainty": "smallest margins", "random": "random"}[strategy]
    return {"rows": rows, "score_meaning": SCORE_MEANING[strategy], "candidates": len(emb.positions),
            "skipped_duplicates": int(len(sel.skipped)),
            "skipped": [pool.samples[emb.positions[i]].path for i in sel.skipped],
            "duplicate_threshold": float(sel.threshold), "threshold_note": sel.threshold_note,
            "pixel_copies": int(len(copies)),
            "unreadable": len(emb.errors), "method": f"{method}; calibrated with T={emb.temperature:.3g}",
            "output": str(output) if output is not None else None}
