"""nextclass: from a folder of labelled images to an audited, calibrated, deployable classifier.

This module is the public API, the layer between the command line and the jobs (see the README's
"Architecture"). Imports are lazy: ``import nextclass`` does not import torch or timm::

    import nextclass
    run = nextclass.train({"data": "digits", "epochs": 5})    # -> runs/simple_cnn-digits
    metrics = nextclass.evaluate(run)                          # test split, metrics.json
    model = nextclass.load(run)                                # bundle, no pickle
    model.predict(["img.png"])[0].label
"""

from __future__ import annotations

from typing import Any

from nextclass.utils import VERSION as __version__

__all__ = ["train", "evaluate", "predict", "load", "export", "audit", "suggest", "review_items", "compare", "tune",
           "__version__"]


def train(config: Any = None, *, resume: str | None = None, progress: bool = True, nproc: int | None = None,
          **overrides: Any):
    """Train a model. ``config``: a :class:`~nextclass.config.TrainConfig`, a dict, or a YAML path.

    Keyword overrides are config fields (``data=``, ``model=``, ``epochs=``...). ``nproc`` > 1 trains
    with that many local processes (DDP). Returns the run directory. ``corrections="FILE"`` applies a review's
    relabels and drops on top of the data (:mod:`nextclass.data.corrections`).

    Example:
        >>> run = nextclass.train(data="digits", epochs=5)  # doctest: +SKIP
        >>> fixed = nextclass.train(data="photos/", corrections="runs/x/corrections.jsonl")  # doctest: +SKIP
    """
    from nextclass.config import coerce_config

    cfg = None if resume is not None else coerce_config(config, **overrides)
    if nproc is not None and nproc > 1:
        from nextclass.training.launch import train_distributed

        return train_distributed(cfg, nproc=nproc, resume=resume, progress=progress)
    from nextclass.training.fit import fit

    return fit(cfg, resume=resume, progress=progress)


def evaluate(run: Any, data: Any = None, *, report: bool = True, **kwargs: Any) -> dict:
    """Evaluate a run's bundle on its test split (or ``split=``), or on another dataset ``data``.

    Returns the metrics block (also merged into ``RUN/metrics.json``); with ``report`` the run's
    ``report.html`` is re-rendered afterwards. ``corrections="FILE"`` scores against a review's corrected labels
    (default: the corrections the run trained with). Options: see :func:`nextclass.evaluation.run.evaluate`.
    """
    from nextclass.evaluation.run import evaluate as _evaluate
    from nextclass.rundir import RunDir
    from nextclass.utils import log

    m = _evaluate(run, data, **kwargs)
    if report and RunDir(run).is_run():
        from nextclass.report.html import build_report

        log(f"report: {build_report(run)}")
    return m


def load(model: Any, device: str = "cpu", backend: str = "torch"):
    """Load a bundle (run dir, bundle dir or model-store name) as a :class:`~nextclass.deploy.predictor.Predictor`."""
    from nextclass.deploy.loading import load as _load

    return _load(model, device=device, backend=backend)


def predict(model: Any, images: Any, **kwargs: Any):
    """Shortcut for ``load(model).predict(images, **kwargs)``."""
    return load(model).predict(images, **kwargs)


def export(run: Any, **kwargs: Any):
    """Export a bundle to ONNX (optionally int8). See :func:`nextclass.deploy.export.export_onnx`."""
    from nextclass.deploy.export import export_onnx

    return export_onnx(run, **kwargs)


def audit(data: Any, *, labels: bool = False, model: Any = None, backbone: str | None = None,
          pretrained: str | None = None, corrections: Any = None, **kwargs: Any) -> dict:
    """Audit a dataset: unreadable files, duplicates, leakage across splits, imbalance; with ``labels=True`` also
    the images whose label looks wrong (``label_issues.csv``, ``rep["label_issues"]``).

    ``model`` (a run) or ``backbone`` (a timm name, with ``pretrained`` weights) embeds the images for the label
    check; by default small images are their own pixels and photos go through the offline EfficientNet-Lite0.
    ``corrections`` (a corrections file) applies a review's relabels and drops on top of the data first.
    Other options: see :func:`nextclass.data.audit.audit` and :func:`nextclass.curation.label_audit.audit_dataset`.

    Example:
        >>> rep = nextclass.audit("photos/", labels=True, output="audit/")  # doctest: +SKIP
    """
    from nextclass.curation.label_audit import audit_dataset

    return audit_dataset(data, labels=labels, model=model, backbone=backbone, pretrained=pretrained,
                         corrections=corrections, **kwargs)


def suggest(run: Any, unlabeled: Any, n: int = 100, **kwargs: Any) -> dict:
    """Which unlabelled images to label next: uncertain under the run's calibrated probabilities, diverse in its
    embedding space, not near-duplicates of its training images. Returns ``{"rows": [...], ...}``; with
    ``output=`` also writes the CSV. Options: see :func:`nextclass.curation.suggest.suggest`.

    Example:
        >>> nextclass.suggest("runs/simple_cnn-photos", "new-photos/", n=50, output="next.csv")  # doctest: +SKIP
    """
    from nextclass.curation.suggest import suggest as _suggest

    return _suggest(run, unlabeled, n=n, **kwargs)


def review_items(target: Any, **kwargs: Any) -> dict:
    """What ``nextclass review RUN|DATA`` walks through, as data: ``{"title", "classes", "notes", "items"}``, each item
    an image (``image.file`` relative to the data root) with its ``reasons`` (probable label issue, leak, unreadable,
    confident mistake, unfamiliar, near duplicate, suggest), their ``evidence`` and the proposed ``suggested`` class
    or ``duplicate_of`` image. Options (``audit=``, ``pool=``, ``suggest_n=``): see
    :func:`nextclass.review.collect.collect`.

    Example:
        >>> items = nextclass.review_items("runs/simple_cnn-photos")["items"]  # doctest: +SKIP
        >>> items[0]["reason"], items[0]["image"]["file"], items[0]["suggested"]  # doctest: +SKIP
        ('label issue', 'cat/012.jpg', 'dog')
    """
    from nextclass.review.collect import collect

    return collect(target, **kwargs).to_dict()


def compare(run_a: Any, run_b: Any, *, html: Any = None, split: str = "test", n_boot: int = 2000,
            seed: int = 0) -> dict:
    """Is run B better than run A on the same test images, or is it noise? Paired accuracy / macro-F1 deltas (per
    class too), an exact McNemar test, paired bootstrap intervals and the images that flipped; ``["verdict"]`` is
    the one-line answer. Refuses (:class:`~nextclass.evaluation.compare.CompareError`, naming the difference) when
    the runs were not tested on the same images.

    ``html``: where the self-contained page goes (default ``RUN_B/compare-<RUN_A name>.html``; ``False``: none);
    the returned dict's ``html`` says where it went. Image ids in the result are relative (never a local path).

    Example:
        >>> nextclass.compare("runs/noisy", "runs/reviewed")["verdict"]  # doctest: +SKIP
        'B is better than A: +0.84 points of accuracy (95% CI +0.40 to +1.29), McNemar p = 0.00021 ...'
    """
    from pathlib import Path

    from nextclass.evaluation.compare import compare_runs
    from nextclass.report.compare import write_compare_html

    c = compare_runs(run_a, run_b, split=split, n_boot=n_boot, seed=seed)
    out = c.to_dict()
    if html is not False:
        page = Path(html) if html else Path(run_b) / f"compare-{c.run_a}.html"
        out["html"] = str(write_compare_html(c.to_dict(paths=True), page, run_b))
    return out


def tune(config: Any, trials: int = 20, **kwargs: Any):
    """Optuna search over the training config; returns a TuneResult (best config, value, params, output, study)."""
    from nextclass.tuning import tune as _tune

    return _tune(config, trials=trials, **kwargs)
