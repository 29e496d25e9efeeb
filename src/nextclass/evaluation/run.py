"""``nextclass evaluate RUN [DATA]``: a run's bundle on one of its splits, or on another dataset.

The numbers come from the one scorer (:func:`nextclass.evaluation.scorer.score`), with the settings the run's
finish step ended with (temperature, TTA views, abstain threshold, neighbour index, robustness cache), so the
block for a run's own split is the block training wrote (tests/test_scorer.py compares them field by field).
It is merged into ``<run>/metrics.json`` (replacing the block of that name) and the predictions go to
``predictions*.csv``. Another dataset gets its own block, ``data:<folder>`` (``data:<folder>:test`` when it has
a test split): the run's own splits are never overwritten. Evaluation produces numbers only: re-rendering the
report is the caller's step (:func:`nextclass.evaluate` does it after this returns). The bundle's model card is
not rewritten: it describes the bundle as trained and as stored with ``nextclass models add``.
"""

from __future__ import annotations

import os
import time

from nextclass.evaluation.record import record
from nextclass.evaluation.scorer import score
from nextclass.evaluation.targets import bundle_scoring, load_data, other_data, run_source, run_split
from nextclass.rundir import RunDir
from nextclass.utils import log, progress_bar

__all__ = ["evaluate"]


def evaluate(run: str | os.PathLike, data: str | os.PathLike | None = None, *, split: str = "test",
             tta: bool | None = None, batch_size: int | None = None, progress: bool = True,
             cache_dir: str | None = None, robustness: bool | None = None,
             corrections: str | os.PathLike | None = None) -> dict:
    """Evaluate a run's bundle on one of its splits, or on another dataset.

    Args:
        run: a finished run directory (its ``model/`` bundle, ``config.yaml`` and ``split.csv`` are used).
        data: another folder/CSV/built-in to evaluate on (all its images, or its ``test`` split if it has one).
        split: which split of the run's data (``train``, ``val``, ``test``) when ``data`` is None.
        tta: average the logits over the bundle's views (flip / multi-crop / shifts, :mod:`nextclass.metrics.tta`);
            the block then holds the TTA numbers and ``tta`` the plain accuracy and the gain. None: as the
            bundle's numbers were measured at training (``model.json`` -> ``tta.default``).
        batch_size: evaluation batch (None: as the finish step, ``max(batch_size, 64)`` of the run).
        robustness: measure accuracy under blur/noise/JPEG/brightness/contrast on the headline block (cached by
            weights + images + seed). None: as the run did (config field ``robustness``).
        corrections: a corrections file applied on top of the data's labels (the block's ``corrections`` says
            what it changed). None: the run's own corrections (config field ``corrections``, the rows it trained
            with) for its own splits, none for ``data``.

    Returns:
        The metrics block (also merged into ``<run>/metrics.json``).

    Example:
        >>> m = evaluate("runs/demo-digits")  # doctest: +SKIP
        >>> m["accuracy"]                      # doctest: +SKIP
    """
    from nextclass.bundle import load_model

    rd = RunDir(run).require_finished()
    cfg = rd.read_config()
    model, meta = load_model(rd.bundle)
    cache_dir = cache_dir or cfg.cache_dir
    s = bundle_scoring(rd, meta, cfg, tta=tta, batch_size=batch_size, robustness=robustness, cache_dir=cache_dir)
    if data is None:
        source, applied = run_source(rd, cfg, cache_dir, corrections)
        images, headline = run_split(rd, cfg, split, s.pp, cache_dir, progress, source=source)
    else:
        source, applied = load_data(data, cache_dir, corrections)
        images, headline = other_data(data, s.classes, s.pp, cache_dir, progress, source=source, task=s.task), True
    if not len(images.rows):
        raise ValueError(f"no images in {'split ' + repr(split) + ' of ' + str(rd.path) if data is None else data}")
    t0 = time.time()
    with progress_bar(progress) as bar:
        m, probs = score(model, images, s, headline=headline, progress=bar)
    if applied is not None:
        m["corrections"] = applied
    record(rd, {images.name: (m, probs, images)}, s.classes)
    if "tta" in m:
        plain = m["tta"]["map_without_tta" if m.get("task") == "multi-label" else "accuracy_without_tta"]
        log(f"{images.name}: with TTA, {len(m['tta']['views'])} views; plain {plain:.4f}, "
            f"gain {m['tta']['gain']:+.4f}")
    log(f"{images.name}: scored in {time.time() - t0:.1f}s")
    return m
