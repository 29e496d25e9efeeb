"""Know your data: counts, unreadable files, exact and near duplicates, leakage across splits,
label conflicts. Wrong labels are judged elsewhere: :mod:`nextclass.data.label_issues` (cleanlab), after a
run on its val/test predictions and for every image with ``nextclass audit DATA --labels``.

What counts as what (all documented in ``docs/audit.md``):

* **exact duplicate**: the same decoded pixels (BLAKE2b of the RGB array), whatever the file name,
  format or metadata - a PNG saved again as BMP is one.
* **near duplicate**: the same picture re-encoded, resized or slightly cropped. Candidates are pairs
  whose perceptual hashes (64-bit DCT ``phash``, :mod:`nextclass.data.hashing`) are at most
  ``near_threshold`` bits apart (default 8 of 64) and whose 16x16 thumbnails differ by at most
  ``pixel_tolerance`` grey levels on average (default 8); each candidate is then checked pixel by
  pixel at the images' own resolution (:mod:`nextclass.data.same_picture`, ``picture_tolerance``).
  On Fashion-MNIST the hash and thumbnail alone pass thousands of different garments shot the same
  way; the pixel check keeps the copies (numbers in ``docs/audit.md``).
* **duplicate group**: an image and its copies. Groups do not chain: the image with the most copies
  becomes a centre and takes its copies, so every member is a copy of the centre (connected
  components turned chains of look-alikes into one 6,000-image "group").
* **leak**: a val image with a duplicate (exact or near) in train, a test image with one in train or val.
* **label conflict**: a duplicate group whose members carry different labels (multi-label data: different label
  sets, compared through :func:`~nextclass.data.multilabel.set_ids`).

Multi-label data (``task: multi-label``): counts are images carrying each label, and the report adds ``label_sets``
(:func:`~nextclass.data.multilabel.label_stats`: cardinality, the most frequent pairs, co-occurrence, the images with
no label, per split).

Splits: the audit checks the split a run would use. Data with its own splits keeps them (a missing
val/test is carved from train as ``nextclass train`` does, same default seed); unsplit data gets
the run's default stratified 70/20/10 split with seed 0 (``splits="none"`` audits it unsplit).

The user's files are only read. ``fix=OUT.csv`` writes a new manifest (path,label,split) without the
unreadable files, without val/test images that leak or repeat, and without identical copies of one picture
that carry different labels; otherwise train keeps every readable image.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nextclass.data.groups import centre_groups
from nextclass.data.hashing import (Fingerprints, candidate_count, hash_arrays, hash_files, load_fingerprints, near_pairs,
                                    save_fingerprints)
from nextclass.data.multilabel import label_stats, set_ids
from nextclass.data.same_picture import PICTURE_TOLERANCE, same_picture_scores
from nextclass.data.sources import DataError, DataSource, load_source
from nextclass.utils import atomic_write_json, atomic_write_text, default_cache_dir, log, sha1_of

__all__ = ["audit", "NEAR_THRESHOLD", "PIXEL_TOLERANCE", "PICTURE_TOLERANCE", "FEW_IMAGES"]

NEAR_THRESHOLD = 8  # phash bits (of 64); see the module docstring for the measurements behind it
# Mean absolute difference of 16x16 luma thumbnails (grey levels): now only a cheap filter before the
# pixel check, so looser than the 4 it was when it decided alone (4 lost 70 % of 0.7x-resized
# Fashion-MNIST copies; 8 keeps 94 % and the pixel check removes the look-alikes it lets through).
PIXEL_TOLERANCE = 8.0
FEW_IMAGES = 5  # a class with fewer readable images cannot be trained and measured meaningfully
# The quick audit at the start of a run is bounded work: pairs its near search may enumerate, then pairs it checks
# pixel by pixel (~3 s each on 2 cores). Images that look alike crowd the hash space: 70k Fashion-MNIST images need
# 130M pairs at 8 bits (searched within 7 bits instead: 58 of the 60 near pairs, 9.0 -> 5.5 s), 70k MNIST-style digits
# 440M and 172k checks (within 3 bits: 90 -> 5.7 s; bench/quick_audit.py). The narrowing is recorded and logged;
# `nextclass audit` is not bounded.
QUICK_WORK = (100_000_000, 50_000)
MAX_LISTED = 500  # duplicate groups listed in audit.json (counts are always complete)
MAX_MEMBERS = 50  # members listed per group ("size" has the full count)
_RANK = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class _NearRule:
    """When two images are near duplicates (module docstring): the candidate filters and the pixel check."""

    threshold: int  # phash bits (of 64)
    tolerance: float  # mean grey-level difference of 16x16 thumbnails
    picture_tolerance: float  # largest blurred block difference, in units of contrast
    bounded: bool = False  # the quick audit: the search narrows its threshold to stay within QUICK_WORK (logged)


@dataclass(frozen=True, eq=False)
class _Readable:
    """The readable images, one entry each, in ``source.samples`` order."""

    okidx: np.ndarray  # position in source.samples
    split: np.ndarray  # split rank (_RANK; 3: none)
    label: np.ndarray
    group: np.ndarray  # exact-duplicate group id
    ng: int  # number of exact groups


@dataclass(frozen=True, eq=False)
class _Pairs:
    """Verified near pairs between exact groups ``gi[k]`` and ``gj[k]``, ``gd[k]`` phash bits apart."""

    gi: np.ndarray
    gj: np.ndarray
    gd: np.ndarray


def _assign(source: DataSource, splits, seed: int) -> dict:
    """Give every sample the split a run would use; return how the splits were obtained."""
    from nextclass.data.splits import assign_splits, parse_ratios

    if isinstance(splits, str) and splits.lower() == "none" or splits is False:
        given = source.has_splits
        for s in source.samples:
            s.split = s.split or "all"
        return {"mode": "given" if given else "none",
                "note": "splits as given, nothing carved" if given else "audited without splits"}
    given = {s.split for s in source.samples if s.split}
    ratios = parse_ratios(splits if splits is not None else (0.7, 0.2, 0.1))
    assign_splits(source, ratios, seed)
    if not given:
        note = f"no splits in the data: audited the split a run makes ({'/'.join(f'{r:.0%}' for r in ratios)}, seed {seed})"
        return {"mode": "assigned", "ratios": list(ratios), "seed": seed, "note": note}
    carved = sorted(set(_RANK) - given)
    note = "splits as given" + (f"; {' and '.join(carved)} carved from train as a run does (seed {seed})" if carved else "")
    return {"mode": "given", "carved": carved, "seed": seed, "note": note}


def _image_stats(fp: Fingerprints) -> dict:
    ok = fp.ok
    sides = np.minimum(fp.width[ok], fp.height[ok])
    sizes = Counter(f"{w}x{h}" for w, h in zip(fp.width[ok].tolist(), fp.height[ok].tolist()))
    return {"sizes": dict(sizes.most_common(10)), "distinct_sizes": len(sizes),
            "modes": dict(Counter(m for m, good in zip(fp.mode, ok) if good and m)),
            "formats": dict(Counter(f for f, good in zip(fp.fmt, ok) if good and f)),
            "min_side": int(sides.min()) if len(sides) else None, "median_side": int(np.median(sides)) if len(sides) else None,
            "max_side": int(sides.max()) if len(sides) else None}


def _counts(source: DataSource, ok: np.ndarray) -> dict:
    """Readable images per split and class (multi-label: images carrying each label), their totals, the imbalance of
    train (or all), the classes with few images and those missing from a split."""
    classes = source.classes
    counts: dict[str, dict[str, int]] = {}
    for s, good in zip(source.samples, ok):
        if good:
            d = counts.setdefault(s.split or "all", {c: 0 for c in classes})
            for j in (s.labels or ()) if source.multilabel else (s.label,):
                d[classes[j]] += 1
    counts = {k: counts[k] for k in sorted(counts, key=lambda k: _RANK.get(k, 3))}
    totals = {c: sum(d[c] for d in counts.values()) for c in classes}
    base = counts.get("train") or totals
    nonzero = [v for v in base.values() if v > 0]
    ratio = (max(nonzero) / min(nonzero)) if nonzero and len(nonzero) == len(base) else None
    few = {c: n for c, n in totals.items() if n < FEW_IMAGES}
    missing = {sp: [c for c, n in d.items() if n == 0] for sp, d in counts.items() if any(n == 0 for n in d.values())}
    return {"counts": counts, "totals": totals, "imbalance_ratio": round(ratio, 3) if ratio else None,
            "few_images": few, "missing_in_split": missing}


def _label_sets(source: DataSource, ok: np.ndarray) -> dict:
    """A multi-label source's label statistics over its readable images (:func:`~nextclass.data.multilabel.label_stats`:
    counts, cardinality, the most frequent pairs, co-occurrence, images with no label), with the images carrying no
    label per split and the first few of them by path."""
    keep = [s for s, good in zip(source.samples, ok) if good]
    stats = label_stats(source.targets(keep), source.classes)
    none = [s for s in keep if not s.labels]
    per_split = Counter(s.split or "all" for s in none)
    stats["no_label_per_split"] = {k: per_split[k] for k in sorted(per_split, key=lambda k: _RANK.get(k, 3))}
    stats["no_label_examples"] = [{"path": s.path, "split": s.split} for s in none[:20]]
    return stats


def _member(source: DataSource, k: int) -> dict:
    s = source.samples[k]
    out = {"path": s.path, "split": s.split, "label": source.label_text(s)}
    if s.index is not None:
        out["index"] = int(s.index)
    return out


def _split_links(r: _Readable, p: _Pairs) -> tuple[dict, dict]:
    """Leaks (``cross_split``: images of a later split with an exact / only-near copy in an earlier one)
    and repeats inside each split (``within_split``)."""
    split, group, ng, gi, gj = r.split, r.group, r.ng, p.gi, p.gj
    gmask = np.zeros(ng, np.int64)  # bit r set: the exact group has an image in split r
    np.bitwise_or.at(gmask, group, 1 << split)
    nmask = np.zeros(ng, np.int64)  # bit r set: a near neighbour group has an image in split r
    np.bitwise_or.at(nmask, gi, gmask[gj])
    np.bitwise_or.at(nmask, gj, gmask[gi])
    cross = {}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        inb = split == _RANK[b]
        ex = inb & (gmask[group] & (1 << _RANK[a]) > 0)
        near = inb & ~ex & (nmask[group] & (1 << _RANK[a]) > 0)
        cross[f"{a}-{b}"] = {"exact": int(ex.sum()), "near": int(near.sum())}
    within = {}
    for name, r in _RANK.items():
        ins = split == r
        if ins.any():
            per = np.bincount(group[ins], minlength=ng)
            both = (gmask[gi] & gmask[gj] & (1 << r)) > 0
            within[name] = {"exact_extra_copies": int((per[per > 1] - 1).sum()), "near_pairs": int(both.sum())}
    return cross, within


def _clusters(source: DataSource, r: _Readable, p: _Pairs) -> list[dict]:
    """Duplicate groups (an image and its exact and near copies, see
    :func:`~nextclass.data.groups.centre_groups`), label
    conflicts and leaks first."""
    okidx, split, label, group, ng, gi, gj, gd = r.okidx, r.split, r.label, r.group, r.ng, p.gi, p.gj, p.gd
    grank = np.full(ng, 3, np.int64)
    np.minimum.at(grank, group, split)  # train-first centres among equally linked ones
    comp = centre_groups(ng, gi, gj, grank)
    ccomp = comp[group]  # cluster id per readable image
    csize = np.bincount(ccomp, minlength=ng)
    dmax = np.zeros(len(csize), np.int64)
    inside = comp[gi] == comp[gj]
    np.maximum.at(dmax, comp[gi][inside], gd[inside])
    members: dict[int, list[int]] = {int(c): [] for c in np.flatnonzero(csize > 1)}
    for pos in np.flatnonzero(csize[ccomp] > 1):
        members[int(ccomp[pos])].append(int(pos))
    groups = []
    for c, pos in members.items():
        pos.sort(key=lambda p: (split[p], okidx[p]))
        groups.append({"kind": "near" if len({int(group[p]) for p in pos}) > 1 else "exact",
                       "size": len(pos), "max_distance": int(dmax[c]), "cross_split": len({int(split[p]) for p in pos}) > 1,
                       "label_conflict": len({int(label[p]) for p in pos}) > 1,
                       "members": [_member(source, int(okidx[p])) for p in pos[:MAX_MEMBERS]]})
    groups.sort(key=lambda g: (not g["label_conflict"], not g["cross_split"], -g["size"]))
    return groups


def _near(fp: Fingerprints, reps: np.ndarray, rule: _NearRule) -> tuple[_Pairs, int, dict]:
    """Near pairs among ``reps``: hash + thumbnail candidates, kept when the pixel check says same picture.

    Returns the pairs, the candidate count and the search actually run (``threshold``; with ``narrowed`` when a
    bounded search had to narrow it, see :func:`_bounded_threshold`)."""
    hashes = fp.phash[reps]
    search = _bounded_threshold(hashes, rule) if rule.bounded else {"threshold": rule.threshold}
    gi, gj, gd = near_pairs(hashes, fp.thumb[reps], threshold=search["threshold"], tolerance=rule.tolerance)
    if rule.bounded and len(gi) > QUICK_WORK[1]:  # too many to check: the closest hashes first
        t = max(0, int(np.sort(gd)[QUICK_WORK[1]]) - 1)  # the widest threshold that keeps at most that many
        keep = gd <= t
        search = {"threshold": t, "narrowed": f"{len(gi):,} candidate pairs at {search['threshold']} bits, more than the "
                  f"{QUICK_WORK[1]:,} the quick audit checks"}
        gi, gj, gd = gi[keep], gj[keep], gd[keep]
    sides = np.minimum(fp.width[reps], fp.height[reps])
    keep = same_picture_scores(fp.gray[reps], sides, gi, gj) <= rule.picture_tolerance
    return _Pairs(gi[keep], gj[keep], gd[keep]), int(len(gi)), search


def _bounded_threshold(hashes: np.ndarray, rule: _NearRule) -> dict:
    """The widest hash threshold (at most the rule's) whose search enumerates at most ``QUICK_WORK[0]`` pairs.

    The search radius per band moves in steps of 4 bits, so the thresholds tried are the rule's, then 7, then 3."""
    tried = sorted({rule.threshold, min(rule.threshold, 7), min(rule.threshold, 3)}, reverse=True)
    counts = {}
    for t in tried:
        counts[t] = candidate_count(hashes, t)
        if counts[t] <= QUICK_WORK[0]:
            break
    if t == rule.threshold:
        return {"threshold": t}
    return {"threshold": t, "narrowed": f"these images crowd the hash space ({counts[rule.threshold]:,} pairs to "
            f"enumerate at {rule.threshold} bits, more than the quick audit's {QUICK_WORK[0]:,})"}


def _duplicates(source: DataSource, fp: Fingerprints, rule: _NearRule) -> tuple[dict, list, set]:
    """Exact groups, verified near pairs, clusters, leaks, conflicts -> (summary, groups, fix drops)."""
    okidx = np.flatnonzero(fp.ok)
    split = np.array([_RANK.get(source.samples[k].split, 3) for k in okidx], dtype=np.int64)
    # one id per label set (multi-label: two images get the same id exactly when they carry the same labels)
    label = set_ids(source.targets([source.samples[k] for k in okidx]))
    _, first, group = np.unique(fp.exact[okidx], return_index=True, return_inverse=True)
    r = _Readable(okidx, split, label, group.ravel(), len(first))
    # near search on one representative per exact group: copies never inflate the candidate count
    pairs, candidates, search = _near(fp, okidx[first], rule)
    cross, within = _split_links(r, pairs)
    groups = _clusters(source, r, pairs)
    drops = _fix_drops(r, pairs) | _conflict_drops(r)
    size = np.bincount(r.group, minlength=r.ng)
    conflicts = [g for g in groups if g["label_conflict"]]
    summary = {"exact_groups": int((size > 1).sum()), "exact_extra_copies": int((size[size > 1] - 1).sum()),
               "near_candidates": candidates, "near_pairs": int(len(pairs.gi)), "duplicate_clusters": len(groups),
               "near_clusters": sum(g["kind"] == "near" for g in groups), "cross_split": cross, "within_split": within,
               "label_conflict_groups": len(conflicts), "label_conflict_images": sum(g["size"] for g in conflicts),
               "fix_would_drop": len(drops), "near_threshold": search["threshold"],
               **({"near_narrowed": search["narrowed"]} if "narrowed" in search else {})}
    return summary, groups, drops


def _fix_drops(r: _Readable, p: _Pairs) -> set:
    """Positions (into source.samples) that ``--fix`` leaves out: val/test images that leak or repeat.

    Images are kept in the order train, val, test, then by position; a val/test image goes when an
    exact or near duplicate of it was already kept. Train is never thinned (duplicates there only
    weigh an image twice); near-duplicate label conflicts are reported for a person to settle (identical copies with
    different labels: :func:`_conflict_drops`).
    """
    okidx, split, group, gi, gj = r.okidx, r.split, r.group, p.gi, p.gj
    nbrs: dict[int, list[int]] = {}
    for a, b in zip(gi.tolist(), gj.tolist()):
        nbrs.setdefault(a, []).append(b)
        nbrs.setdefault(b, []).append(a)
    kept_groups: set[int] = set()
    drops = set()
    for p in np.lexsort((okidx, split)):
        g = int(group[p])
        if split[p] in (1, 2) and (g in kept_groups or any(h in kept_groups for h in nbrs.get(g, ()))):
            drops.add(int(okidx[p]))
            continue
        kept_groups.add(g)
    return drops


def _conflict_drops(r: _Readable) -> set:
    """Positions of every copy of an identical image (same pixels) that carries more than one label.

    One picture cannot be both a 0 and a 3: ``--fix`` keeps neither copy, since nothing says which label is
    right (the report lists the group for a person to settle). Near duplicates with other labels may be
    different pictures and are only reported.
    """
    okidx, label, group = r.okidx, r.label, r.group
    drops = set()
    for g in np.unique(group):
        members = np.flatnonzero(group == g)
        if len(members) > 1 and len(np.unique(label[members])) > 1:
            drops.update(int(okidx[m]) for m in members)
    return drops


def _findings(rep: dict) -> list[str]:
    s, out = rep["summary"], []
    what = "label" if rep.get("task") == "multi-label" else "class"
    if rep["unreadable"]:
        out.append(f"{len(rep['unreadable'])} unreadable file(s): they are skipped by training")
    for pair, c in s["cross_split"].items():
        a, b = pair.split("-")
        if c["exact"] or c["near"]:
            out.append(f"leak {pair}: {c['exact']} {b} image(s) are exact copies and {c['near']} near copies of {a} images")
    if s["exact_extra_copies"]:
        out.append(f"{s['exact_groups']} group(s) of exact duplicates ({s['exact_extra_copies']} extra copies)")
    if s["near_pairs"]:
        out.append(f"{s['near_pairs']} near-duplicate pair(s) in {s['near_clusters']} group(s)")
    if s["label_conflict_groups"]:
        out.append(f"{s['label_conflict_groups']} duplicate group(s) carry different "
                   f"{'label sets' if what == 'label' else 'labels'} "
                   f"({s['label_conflict_images']} images)")
    if rep.get("label_sets", {}).get("no_label"):
        n, of = rep["label_sets"]["no_label"], rep["label_sets"]["images"]
        out.append(f"{n} of {of} image(s) carry no label: each is a negative for every label (check none was left "
                   "unlabelled by mistake)")
    for c, n in rep["classes"]["few_images"].items():
        out.append(f"{what} {c!r} has only {n} readable image(s)")
    missing: dict[str, list[str]] = {}
    for sp, names in rep["classes"]["missing_in_split"].items():
        for c in names:
            missing.setdefault(c, []).append(sp)
    for c, sps in missing.items():
        out.append(f"{what} {c!r} has no images in {' and '.join(sps)}: it cannot be measured there")
    ratio = rep["classes"]["imbalance_ratio"]
    if ratio and ratio >= 3:
        out.append(f"{what} imbalance: the largest {what} is {ratio:.1f}x the smallest "
                   + ("(the loss weighs each label's positives)" if what == "label"
                      else "(consider --set balance=sampler or balance=loss)"))
    return out


def _report(source: DataSource, fp: Fingerprints, split_info: dict, rule: _NearRule,
            quick: bool = False) -> tuple[dict, set]:
    summary, groups, drops = _duplicates(source, fp, rule)
    threshold, tolerance, picture_tolerance = summary["near_threshold"], rule.tolerance, rule.picture_tolerance
    rep = {"version": 1, "data": source.root if source.kind in ("folder", "split-folder", "csv") else source.name,
           "kind": source.kind, "quick": quick, "n_images": len(source.samples), "n_readable": int(fp.ok.sum()),
           "classes": {"names": source.classes, **_counts(source, fp.ok)}, "splits": split_info,
           **({"task": "multi-label", "label_sets": _label_sets(source, fp.ok)} if source.multilabel else {}),
           "images": None if quick else _image_stats(fp),
           "unreadable": [{**_member(source, k), "reason": r} for k, r in sorted(fp.errors.items())],
           "method": {"exact": "BLAKE2b-128 of decoded RGB pixels", "near": "candidates: phash (imagehash algorithm, "
                      f"64 bit) <= {threshold} bits and 16x16 luma thumbnails within {tolerance} grey levels (mean abs); "
                      "kept when the same picture at the images' own resolution (blurred difference of the worst "
                      f"block <= {picture_tolerance} x contrast)", "near_threshold": threshold,
                      "pixel_tolerance": tolerance, "picture_tolerance": picture_tolerance,
                      "groups": "an image and its copies (no chaining)", "search": "multi-index hashing, 4x16-bit bands"},
           "summary": {"unreadable": len(fp.errors), **summary},
           "duplicates": groups[:MAX_LISTED], "duplicates_listed": min(len(groups), MAX_LISTED)}
    rep["findings"] = _findings(rep)
    return rep, drops


def _fingerprint(source: DataSource, progress: bool, workers: int | None,
                 cache_dir: str | os.PathLike | None) -> tuple[Fingerprints, bool]:
    """Fingerprints of every sample, from the cache when the files (paths, sizes, mtimes) are unchanged."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    cache = Path(cache_dir or default_cache_dir()) / "audit" / f"{sha1_of(['audit-v2', source.fingerprint()])}.npz"
    if cache.exists():
        try:
            fp = load_fingerprints(cache)
            if len(fp.ok) == len(source.samples):
                return fp, True
        except Exception:  # a damaged cache file is recomputed, never trusted
            pass
    cols = [TextColumn("audit"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*cols, disable=not progress, transient=True) as bar:
        task = bar.add_task("hash", total=len(source.samples))
        advance = lambda k: bar.advance(task, k)  # noqa: E731
        if source.array is not None and all(s.index is not None for s in source.samples):
            fp = hash_arrays(source.array, np.array([s.index for s in source.samples]), fmt=source.kind, advance=advance)
        else:
            fp = hash_files([s.path for s in source.samples], workers=workers, advance=advance)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_fingerprints(cache, fp)
    except OSError as e:  # a read-only cache only costs the next audit time
        log(f"[yellow]NOTE[/]: audit hashes not cached ({e})")
    return fp, False


def write_fix_manifest(path: str | os.PathLike, source: DataSource, fp: Fingerprints, drops: set) -> int:
    """Write the cleaned manifest (``path,label,split``; a multi-label source: ``path,labels,split`` with the labels
    joined by ``;``, empty for none); returns the number of rows."""
    if source.array is not None:
        raise DataError(f"{source.name} is held in memory, not in files: --fix writes a manifest of files "
                        "(export the images to a folder first)")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "labels" if source.multilabel else "label", "split"])
    n = 0
    for k, s in enumerate(source.samples):
        if fp.ok[k] and k not in drops:
            w.writerow([s.path, source.label_text(s), s.split if s.split != "all" else ""])
            n += 1
    atomic_write_text(path, buf.getvalue())
    return n


def audit(data, *, output: str | os.PathLike | None = None, splits=None, near_threshold: int = NEAR_THRESHOLD,
          pixel_tolerance: float = PIXEL_TOLERANCE, fix: str | os.PathLike | None = None, progress: bool = True,
          cache_dir: str | os.PathLike | None = None, seed: int = 0, workers: int | None = None,
          picture_tolerance: float = PICTURE_TOLERANCE) -> dict:
    """Audit a dataset: every file is read once, fingerprinted, and compared without all-pairs search.

    Args:
        data: a folder, a CSV manifest, ``digits`` or ``fashion-mnist[:DIR]``, or a loaded :class:`DataSource`
            (its splits are assigned here).
        output: write the report here as JSON (``audit.json``).
        splits: train/val/test ratios for data without splits (default 70/20/10, as ``train``), or
            ``"none"`` to audit without splits.
        near_threshold: phash bits (of 64) for a near-duplicate candidate.
        pixel_tolerance: mean grey-level difference of 16x16 thumbnails for a candidate.
        fix: write a cleaned manifest (path,label,split; multi-label: path,labels,split) here; the user's files are
            never touched.
        progress: show a progress bar.
        cache_dir: cache root: built-in datasets, and the fingerprints (reused while paths, sizes and
            mtimes are unchanged).
        seed: split seed for data without (complete) splits.
        workers: hashing processes (default: all cores).
        picture_tolerance: largest blurred block difference, in units of the image's contrast, for a
            candidate to count as the same picture (:mod:`nextclass.data.same_picture`).

    Returns:
        The report (as written to ``output``): ``summary``, ``classes``, ``images``, ``unreadable``,
        ``duplicates``, ``findings``...

    Example:
        >>> rep = audit("photos/", fix="photos-clean.csv")  # doctest: +SKIP
        >>> rep["summary"]["cross_split"]["train-test"]      # doctest: +SKIP
        {'exact': 3, 'near': 1}
    """
    t0 = time.time()
    source = data if isinstance(data, DataSource) else load_source(data, cache_dir=cache_dir)
    split_info = _assign(source, splits, seed)
    fp, cached = _fingerprint(source, progress, workers, cache_dir)
    rule = _NearRule(int(near_threshold), float(pixel_tolerance), float(picture_tolerance))
    rep, drops = _report(source, fp, split_info, rule)
    rep["seconds"] = round(time.time() - t0, 2)
    rep["hashes_cached"] = cached
    if fix is not None:
        rows = write_fix_manifest(fix, source, fp, drops)
        rep["fix"] = {"path": str(fix), "rows": rows, "dropped": len(source.samples) - rows}
    if output is not None:
        atomic_write_json(output, rep)
    if rep["n_images"] and not rep["n_readable"]:
        first = rep["unreadable"][0]
        raise DataError(f"{data}: none of the {rep['n_images']} files is a readable image (first: {first['path']}: "
                        f"{first['reason']})" + (f"; the full list is in {output}" if output is not None else ""))
    return rep
