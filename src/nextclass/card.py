"""The model card: ``README.md`` in every bundle, in the Hugging Face model-card format.

YAML front matter (``library_name``, ``tags``, ``pipeline_tag`` and ``model-index`` metrics, as the Hub
reads them: https://huggingface.co/docs/hub/model-cards), then what a user needs before trusting the model:
intended use, classes, the data and its audit findings, the test number and how it was obtained, per-class
weak spots and the most confused pairs, calibration, robustness, the abstain threshold and its coverage,
prediction sets (their guarantee, its assumption and the validation size it rests on), limitations, and how to
load and call it. Everything is read from the run's files (``metrics.json``, ``audit.json``, ``config.yaml``) and
the bundle's ``model.json``; nothing is made up when a number is absent.

A multi-label bundle (``task: multi-label``, issue 26) gets its own card (:func:`multilabel_card`): the task, the
labels, the headline mAP / F1 / exact match, each label's threshold and how it was chosen (max F1 or a target
precision on the validation split, with the fallbacks), the per-label calibration (offset, temperature, ECE before and
after), the per-label numbers, and a label-level "how to use".
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from nextclass.utils import atomic_write_text

__all__ = ["write_card", "card_text", "multilabel_card", "CARD_FILE"]

CARD_FILE = "README.md"
#: Why these two scores (``bench/open_set.py``; the numbers are in bench/RESULTS.md and metrics/selective.py).
WHY_SCORES = ("Why these scores: on Fashion-MNIST trained without two classes (`bench/open_set.py`), the calibrated "
              "probability told right from wrong predictions as well as any score (AUROC 0.919; margin 0.920, energy "
              "0.898, nearest-training-image distance 0.819), and the distance to the nearest training image told "
              "images of the unseen classes best (AUROC 0.880 without Shirt and Bag; probability 0.848, margin 0.843, "
              "energy 0.840; first on average over a second pair, Sneaker and Pullover, where all scores reach only "
              "0.69-0.73). So the probability decides `abstained` and the distance decides `unfamiliar`.")


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * float(v):.2f}%"


def _ci(block: dict) -> str:
    """`` (95% Wilson interval a-b)`` for a metrics block (computed from accuracy and n for older blocks)."""
    from nextclass.metrics.classification import wilson_interval

    ci = block.get("accuracy_ci")
    if ci is None and block.get("n"):
        ci = wilson_interval(round(float(block["accuracy"]) * int(block["n"])), int(block["n"]))
    return f" (95% Wilson interval {_pct(ci[0])}-{_pct(ci[1])})" if ci else ""


def _front_matter(meta: dict, block: dict | None, split: str | None, data: str) -> str:
    import yaml

    tags = ["image-classification", "nextclass", str(meta.get("arch", {}).get("name", "model"))]
    fm: dict = {"library_name": "nextclass", "pipeline_tag": "image-classification", "tags": tags}
    if block:
        fm["model-index"] = [{"name": meta.get("run") or "model", "results": [{
            "task": {"type": "image-classification", "name": "Image Classification"},
            "dataset": {"name": data or "unknown", "type": data or "unknown", "split": split},
            "metrics": [{"type": "accuracy", "name": f"{split} accuracy", "value": round(float(block["accuracy"]), 6)},
                        {"type": "f1", "name": f"{split} macro F1", "value": round(float(block["macro"]["f1"]), 6)}]}]}]
    return "---\n" + yaml.safe_dump(fm, sort_keys=False) + "---\n"


def _weak_spots(block: dict) -> list[str]:
    """The (up to five) classes with the lowest F1 below a perfect score, then the most confused pairs."""
    per = sorted(((c, v) for c, v in block.get("per_class", {}).items() if v.get("support") and v["f1"] < 0.9995),
                 key=lambda kv: kv[1]["f1"])[:5]
    if per:
        lines = ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        lines += [f"| {c} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |" for c, v in per]
    else:
        lines = [f"None measured: every class scored F1 1.000 on the {block.get('n')} {block.get('split')} images "
                 "(a small split can hide weak classes; see the interval above)."]
    pairs = block.get("most_confused") or []
    lines += ["", "Most confused pairs (true → predicted):", ""]
    lines += [f"- {p['true']} → {p['predicted']}: {p['count']} image(s), {_pct(p['rate'])} of {p['true']}"
              for p in pairs[:8]] or ["- none: no confusions on this split"]
    return lines


def _calibration_and_robustness(block: dict) -> list[str]:
    out = ["## Calibration", ""]
    c = block.get("calibration")
    if c:
        out.append(f"Temperature T = {c['temperature']:.4g} fitted on the validation split; expected calibration "
                   f"error on {block['split']} ({c['n']} images): {c['before']['ece']:.4f} before, "
                   f"{c['after']['ece']:.4f} after. Probabilities returned by `predict` are calibrated.")
    else:
        out.append("No temperature fitted (no validation split): probabilities are the raw softmax.")
    out += ["", "## Robustness", ""]
    r = block.get("robustness")
    if r:
        out.append(f"Accuracy on {r.get('n')} {block['split']} images: clean {_pct(r.get('clean_accuracy'))}, "
                   f"mean over corruptions {_pct(r.get('mean_corrupted_accuracy'))}.")
        out += [f"- {name}: " + ", ".join(_pct(a) for a in v.get("accuracy", [])) + f" at {v.get('parameter')} "
                + ", ".join(str(x) for x in v.get("levels", [])) for name, v in r.get("corruptions", {}).items()]
    else:
        out.append("Not measured for this run.")
    return out


def _abstain(meta: dict, block: dict) -> list[str]:
    a = meta.get("abstain") or {}
    sel = block.get("selective") or {}
    out = ["## When not to trust a prediction", ""]
    if a.get("threshold") is not None:
        at = sel.get("at_threshold") or {}
        out.append(f"Target accuracy {_pct(a.get('target_accuracy'))} of the accepted predictions: the model abstains "
                   f"when its {a['score']} is below {a['threshold']:.4f} (chosen on validation: coverage "
                   f"{_pct(a.get('val_coverage'))}). On {block['split']}: coverage {_pct(at.get('coverage'))}, "
                   f"accuracy of the accepted {_pct(at.get('accuracy'))}.")
    else:
        out.append("No abstain threshold was set at training (`--target-accuracy`); pass `target_accuracy=` to "
                   "`predict` (or `--target-accuracy`) to choose one from the validation curve kept in the bundle.")
    au = sel.get("auroc") or {}
    if au:
        out.append("AUROC of telling right from wrong predictions: "
                   + ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} n/a" for k, v in au.items()) + "."
                   + (f" (n/a: the {block['split']} predictions were all right or all wrong, so there was nothing "
                      "to tell apart.)" if any(v is None for v in au.values()) else ""))
    return out + ["", *_unfamiliar(meta, block), "", WHY_SCORES]


def _unfamiliar(meta: dict, block: dict) -> list[str]:
    u = (meta.get("neighbors") or {}).get("unfamiliar")
    if not u:
        return ["No `unfamiliar` threshold: the bundle has no neighbour index or was trained without a validation "
                "split, so images unlike the training images are not flagged."]
    rate = (block.get("neighbors") or {}).get("unfamiliar_rate")
    return [f"Predictions carry `unfamiliar: true` when the image's distance to its nearest training image (in the "
            f"bundle's index) is above {u['distance']:.4f}: the conformal {u['quantile']:.0%} quantile of the "
            f"{u['val_n']} validation images' distances (median {u['val_median']:.4f}), so at most "
            f"{1 - u['quantile']:.0%} of new images drawn like the training data are flagged"
            + (f"; on {block['split']} it flags {_pct(rate)}." if rate is not None else ".")
            + " The label is still given: the flag says the image may be of a class or kind the model never saw."]


def _sets(meta: dict, block: dict) -> list[str]:
    """The prediction sets: the promise, its assumption, the val size it rests on, and whether val is big enough."""
    e = meta.get("sets") or {}
    out = ["## Prediction sets", ""]
    n = e.get("val_n")
    if not e:
        return out + ["No prediction sets: the bundle keeps no validation scores (no validation split, or trained "
                      "before nextclass kept them)."]
    most = f"with {n} validation images the promise can be made for a coverage up to {n / (n + 1):.4g} (n / (n + 1))"
    if e.get("coverage") is None:
        return out + [f"No coverage was set at training (`--coverage`); the bundle keeps the {n} validation images' "
                      f"conformity scores, so `predict`/`serve` with `coverage=` return prediction sets; {most}."]
    c, ps = e["coverage"], block.get("sets") or {}
    own = "a seeded random share of its own" if e.get("randomized") else "its own"
    out.append(f"Every prediction carries a **prediction set**: the top-ranked classes whose {e.get('score', 'aps').upper()} "
               f"score (calibrated probability of the classes ranked above, plus {own}) is at most the threshold "
               f"fitted on the {n} validation images by split conformal prediction. **Guarantee**: at least "
               f"{_pct(c)} of the sets hold the true class (and, the scores being continuous, at most "
               f"{_pct(c + 1 / (n + 1))}), on average over images, not for each class or image. **Assumption**: the "
               "images it is used on are exchangeable with the validation images (drawn the same way); under a "
               "shift of the data the promise no longer holds.")
    if e.get("too_small"):
        out.append("")
        out.append(f"**The validation split is too small for this promise**: {n} images, and coverage {c:g} needs at "
                   f"least {e.get('min_val_n')} (n >= c / (1 - c)); the threshold is infinite, so every set is every "
                   f"class. Use a larger validation split or a lower coverage ({most}).")
    if ps.get("n"):
        ci = ps.get("coverage_ci") or [None, None]
        out.append("")
        out.append(f"On {block['split']} ({ps['n']} images): coverage {_pct(ps['coverage'])} (95% Wilson interval "
                   f"{_pct(ci[0])}-{_pct(ci[1])}), mean set size "
                   f"{ps['mean_size']:.2f} (median {ps['median_size']:g}), {_pct(ps.get('empty'))} empty sets, "
                   f"{_pct(ps.get('singleton'))} single-class sets (right {_pct(ps.get('singleton_accuracy'))}).")
    return out


def _data_section(meta: dict, cfg: dict, audit: dict | None, metrics: dict) -> list[str]:
    pre = meta.get("pretrained")
    start = "from scratch (no pretrained weights)" if pre in (None, "", "none", "None") else f"from pretrained `{pre}`"
    out = ["## Data", "", f"Trained on `{cfg.get('data', 'unknown')}` (data hash `{meta.get('data_hash', '')[:16]}`), "
           f"recipe `{meta.get('recipe')}`, {start}."]
    out += _corrections_line(meta.get("corrections"))
    sizes = [f"{s}: {metrics[s]['n']}" for s in ("val", "test") if isinstance(metrics.get(s), dict) and "n" in metrics[s]]
    if sizes:
        out.append("Evaluation images per split: " + ", ".join(sizes) + ".")
    li = (audit or {}).get("label_issues") or {}
    # the label check is restated below with its denominator
    found = [f"- {f}" for f in (audit or {}).get("findings") or []
             if not (li and ("look mislabelled" in f or "disagrees with" in f))]
    if li.get("skipped"):
        found.append(f"- {li['skipped']}")
    elif li.get("checked"):
        found.append(f"- label check (cleanlab confident learning on the trained model's val/test predictions): "
                     f"the model confidently disagrees with {li.get('n', 0)} of {li['checked']} images' labels, "
                     f"wrong labels or its own mistakes (listed in the run's `{li.get('csv', 'label_issues.csv')}`)")
    return out + _holds(meta) + ["", "Audit findings:", ""] + (found or ["- no audit findings recorded"])


def _corrections_line(c: dict | None) -> list[str]:
    """What a review's corrections changed in the training data (by file name and hash: never a local path)."""
    if not c:
        return []
    return [f"Labels reviewed: {c['relabeled']} image(s) relabeled and {c['dropped'] + c['duplicates']} left out "
            f"({c['dropped']} dropped, {c['duplicates']} duplicates) by the corrections file `{c['file']}` (sha256 "
            f"`{c['sha256'][:16]}`, {c['n_rows']} rows; {c['kept']} reviewed and kept, {c['missing']} no longer in "
            "the data), applied on top of the data after the split was drawn."]


def _holds(meta: dict) -> list[str]:
    """What of the training data the bundle itself holds (it travels with the model)."""
    nb = meta.get("neighbors") or {}
    if not nb:
        return ["", "The bundle holds no copy of the training images."]
    n, of, t = nb.get("n"), nb.get("of"), nb.get("thumbnail")
    if t:
        return ["", f"**The bundle holds small copies of training images**: a {t}x{t}-pixel thumbnail of each of {n} "
                f"training images (of {of}), with its class, feature vector and path relative to the data folder, in "
                "`neighbors.safetensors` (the nearest-training-images index). Train with `--no-neighbor-thumbnails` "
                "for data that may not leave the building."]
    return ["", f"The bundle's nearest-training-images index holds, for each of {n} training images, its feature "
            "vector, class and path relative to the data folder; no pictures (trained with `--no-neighbor-thumbnails`)."]


def _usage(meta: dict) -> list[str]:
    name = meta.get("run") or "MODEL"
    return ["## How to use", "", "```python", "import nextclass", "",
            f'model = nextclass.load("{name}")          # this folder, a run folder or a store NAME[@vN]',
            'p = model.predict(["image.png"], target_accuracy=0.99, neighbors=3, coverage=0.95)[0]',
            "print(p.label, p.probability, p.abstained, p.unfamiliar, p.set, [n.label for n in p.neighbors])", "```",
            "", "```bash", f"nextclass predict {name} images/ --target-accuracy 0.99 --neighbors 3 --coverage 0.95 "
            "--format json",
            f"nextclass serve {name}", "```"]


def card_text(meta: dict, metrics: dict, audit: dict | None = None, cfg: dict | None = None) -> str:
    """The model card as Markdown (front matter included); a multi-label bundle's: :func:`multilabel_card`."""
    if meta.get("task") == "multi-label":
        return multilabel_card(meta, metrics, audit, cfg)
    cfg = cfg or {}
    split = next((s for s in ("test", "val") if isinstance(metrics.get(s), dict) and "accuracy" in metrics[s]), None)
    block = metrics.get(split) if split else None
    classes = meta.get("classes", [])
    data = str(cfg.get("data", ""))
    lines = [_front_matter(meta, block, split, Path(data).name if os.sep in data else data),  # never a local path
             f"# {meta.get('run') or 'nextclass model'}", "",
             f"A {meta.get('arch', {}).get('name')} image classifier trained with nextclass "
             f"{meta.get('versions', {}).get('nextclass', '')} on {len(classes)} classes.", "",
             "## Intended use", "",
             "Classify images like the training images into one of the classes below. It is not meant for images "
             "of other kinds or classes: it will still name one of its classes (use the abstain threshold).", "",
             "## Classes", "", ", ".join(f"`{c}`" for c in classes), ""]
    lines += _data_section(meta, cfg, audit, metrics) + ["", "## Evaluation", ""]
    if block:
        lines.append(f"**{split} accuracy: {_pct(block['accuracy'])}**{_ci(block)} on {block['n']} held-out {split} "
                     f"images (macro F1 {block['macro']['f1']:.4f}, top-5 {_pct(block.get('top5'))}). The {split} split was "
                     "used for this number only: model selection and temperature fitting used the validation split.")
        nb = block.get("neighbors")
        if nb:
            lines.append(f"Second opinion: a {nb['k']}-nearest-neighbour vote over the training images' features "
                         f"reaches {_pct(nb['knn_accuracy'])} (index of {nb['index_n']} images).")
        lines += ["", "### Weak spots", ""] + _weak_spots(block) + [""]
        lines += _calibration_and_robustness(block) + [""] + _abstain(meta, block) + [""] + _sets(meta, block)
    else:
        lines.append("No held-out evaluation was recorded for this model.")
    lines += ["", "## Limitations", "",
              "- The numbers hold for images drawn like the evaluation split; other cameras, sizes or classes may do worse.",
              "- Probabilities are calibrated on the validation split; a shift in the data shifts them too.",
              "- Images of classes it was not trained on get one of the known labels unless it abstains; many, not "
              "all, are flagged `unfamiliar`.", ""]
    return "\n".join(lines + _usage(meta)) + "\n"


def _f(v, d: int = 3) -> str:
    return "n/a" if v is None else f"{float(v):.{d}f}"


def _ml_front_matter(meta: dict, block: dict | None, split: str | None, data: str) -> str:
    import yaml

    tags = ["image-classification", "multi-label-classification", "nextclass", str(meta.get("arch", {}).get("name", "model"))]
    fm: dict = {"library_name": "nextclass", "pipeline_tag": "image-classification", "tags": tags}
    if block:
        metrics = [{"type": "map", "name": f"{split} mAP", "value": round(float(block["map"]), 6)}] \
            if block.get("map") is not None else []
        metrics += [{"type": "f1", "name": f"{split} macro F1", "value": round(float(block["macro"]["f1"]), 6)},
                    {"type": "f1", "name": f"{split} micro F1", "value": round(float(block["micro"]["f1"]), 6)},
                    {"type": "exact_match", "name": f"{split} exact match", "value": round(float(block["exact_match"]), 6)}]
        fm["model-index"] = [{"name": meta.get("run") or "model", "results": [{
            "task": {"type": "image-classification", "name": "Multi-label Image Classification"},
            "dataset": {"name": data or "unknown", "type": data or "unknown", "split": split}, "metrics": metrics}]}]
    return "---\n" + yaml.safe_dump(fm, sort_keys=False) + "---\n"


def _ml_evaluation(block: dict, split: str) -> list[str]:
    """The headline numbers and one row per label (at its threshold, AP without one)."""
    out = [f"**{split} mAP: {_f(block.get('map'), 4)}** (mean average precision over the "
           f"{block.get('labels_with_positives')} labels with a positive, no threshold) on {block['n']} held-out {split} "
           f"images; at the thresholds: macro F1 {_f(block['macro']['f1'], 4)}, micro F1 {_f(block['micro']['f1'], 4)}, "
           f"exact match (every label right) {_pct(block.get('exact_match'))}, Hamming loss "
           f"{_f(block.get('hamming_loss'), 4)}. Labels per image: {_f(block['cardinality']['true'], 2)} given, "
           f"{_f(block['cardinality']['predicted'], 2)} predicted. The {split} split was used for these numbers only: "
           "model selection, calibration and thresholds used the validation split.", ""]
    if block.get("labels_without_positives"):
        out += [f"No positive in {split} (not measured): " + ", ".join(f"`{c}`" for c in block["labels_without_positives"])
                + ".", ""]
    out += ["| label | threshold | precision | recall | F1 | AP | support | predicted |", "|---|---|---|---|---|---|---|---|"]
    out += [f"| {c} | {_f(v.get('threshold'))} | {_f(v['precision'])} | {_f(v['recall'])} | {_f(v['f1'])} | "
            f"{_f(v.get('ap'))} | {v['support']} | {v.get('predicted', '')} |" for c, v in block["per_label"].items()]
    return out


def _ml_thresholds(meta: dict, block: dict | None) -> list[str]:
    """Each label's threshold, the rule that chose it and its validation numbers (fallbacks with their reason)."""
    rule = meta.get("threshold_rule") or "default"
    choice = (meta.get("label_fit") or {}).get("choice") or (block or {}).get("threshold_choice") or {}
    if rule == "default" or not choice:
        how = "No validation split to choose them on: every label is predicted at probability 0.5."
    elif choice.get("target_precision") is not None:
        how = (f"Each label's threshold is the lowest whose precision on the validation split reaches "
               f"{choice['target_precision']:g} (config `target_precision`), the most recall at that precision; a label that "
               "cannot reach it keeps its max-F1 threshold (see the reason).")
    else:
        how = ("Each label's threshold maximises that label's F1 on the validation split (`max-f1`; "
               "`--set target_precision=P` chooses the lowest threshold reaching precision P instead).")
    out = ["## Thresholds", "", f"A label is predicted when its calibrated probability is at or above its threshold. {how}",
           "", "| label | threshold | rule | val precision | val recall | val F1 | val positives | note |",
           "|---|---|---|---|---|---|---|---|"]
    per = choice.get("per_label") or {}
    for j, c in enumerate(meta.get("classes", [])):
        v = per.get(c, {})
        t = (meta.get("thresholds") or [None] * (j + 1))[j]
        out.append(f"| {c} | {_f(t)} | {v.get('rule', rule)} | {_f(v.get('precision'))} | {_f(v.get('recall'))} | "
                   f"{_f(v.get('f1'))} | {v.get('positives', 'n/a')} | {v.get('reason') or ''} |")
    return out


def _ml_calibration(meta: dict, block: dict | None) -> list[str]:
    """The per-label offset and temperature, with each label's ECE before and after on the headline split."""
    cal = (block or {}).get("calibration") or {}
    per = cal.get("per_label") or {}
    out = ["## Calibration", "", "Each label's probability is `sigmoid((z - offset) / T)`: the offset undoes the shift the "
           "training loss's positive weight put on the label's logit (log of its negatives / positives in train), the "
           "temperature T is fitted on the validation split. Probabilities returned by `predict` are these."]
    if cal:
        out[-1] += (f" Expected calibration error ({cal.get('bins')} {cal.get('binning')} bins) on {block['split']}, "
                    f"mean over labels: {_f(cal.get('mean_ece_before'), 4)} before, {_f(cal.get('mean_ece_after'), 4)} "
                    "after.")
    out += ["", "| label | offset | temperature | ECE before | ECE after | note |", "|---|---|---|---|---|---|"]
    for j, c in enumerate(meta.get("classes", [])):
        v = per.get(c, {})
        t = (meta.get("temperatures") or [v.get("temperature")] * (j + 1))[j]
        off = (meta.get("offsets") or [v.get("offset")] * (j + 1))[j]
        out.append(f"| {c} | {_f(off)} | {_f(t)} | {_f(v.get('ece_before'), 4)} | {_f(v.get('ece_after'), 4)} | "
                   f"{v.get('reason') or ''} |")
    return out


def _ml_usage(meta: dict) -> list[str]:
    name = meta.get("run") or "MODEL"
    return ["## How to use", "", "```python", "import nextclass", "",
            f'model = nextclass.load("{name}")          # this folder, a run folder or a store NAME[@vN]',
            'p = model.predict(["image.png"])[0]',
            "print(p.labels)          # [(label, probability)] at or above their thresholds, most probable first",
            "print(p.probabilities)   # every label's calibrated probability", "```", "",
            "```bash", f"nextclass predict {name} images/ --format csv", f"nextclass serve {name}", "```"]


def multilabel_card(meta: dict, metrics: dict, audit: dict | None = None, cfg: dict | None = None) -> str:
    """The model card of a multi-label bundle as Markdown (front matter included).

    Example:
        >>> text = multilabel_card({"task": "multi-label", "classes": ["cat", "dog"], "thresholds": [0.4, 0.6],
        ...                         "threshold_rule": "max-f1"}, {})
        >>> "cat | 0.400 | max-f1" in text
        True
    """
    cfg = cfg or {}
    split = next((s for s in ("test", "val") if isinstance(metrics.get(s), dict)
                  and metrics[s].get("task") == "multi-label"), None)
    block = metrics.get(split) if split else None
    labels = meta.get("classes", [])
    data = str(cfg.get("data", ""))
    lines = [_ml_front_matter(meta, block, split, Path(data).name if os.sep in data else data),  # never a local path
             f"# {meta.get('run') or 'nextclass model'}", "",
             f"A {meta.get('arch', {}).get('name')} **multi-label** image classifier trained with nextclass "
             f"{meta.get('versions', {}).get('nextclass', '')} on {len(labels)} labels: it gives each label its own "
             "probability (a sigmoid per label) and predicts every label at or above that label's threshold, so an "
             "image gets any number of labels, none included.", "",
             "## Intended use", "",
             "Tag images like the training images with the labels below. It is not meant for images of other kinds: "
             "it will still give every label a probability.", "",
             "## Labels", "", ", ".join(f"`{c}`" for c in labels), ""]
    lines += _data_section(meta, cfg, audit, metrics) + ["", "## Evaluation", ""]
    lines += _ml_evaluation(block, split) if block else ["No held-out evaluation was recorded for this model."]
    lines += [""] + _ml_thresholds(meta, block) + [""] + _ml_calibration(meta, block)
    lines += ["", "## Limitations", "",
              "- The numbers hold for images drawn like the evaluation split; other cameras, sizes or label mixes may do "
              "worse.",
              "- Thresholds and calibration are fitted on the validation split: a label with few validation positives "
              "has an uncertain threshold (see each label's val positives above).",
              "- No abstain threshold, prediction sets or `unfamiliar` flag: those are for single-label models.", ""]
    return "\n".join(lines + _ml_usage(meta)) + "\n"


def write_card(run_dir: str | os.PathLike, bundle_dir: str | os.PathLike | None = None) -> Path | None:
    """Write ``<bundle>/README.md`` from the run's files; returns its path (None when there is no bundle)."""
    from nextclass.config import ConfigError
    from nextclass.rundir import RunDir

    run = RunDir(run_dir)
    bundle = Path(bundle_dir) if bundle_dir else run.bundle
    meta = _read(bundle / "model.json")
    if meta is None:
        return None
    try:
        cfg = run.read_config().model_dump(mode="json")
    except (ConfigError, OSError):  # a bundle stored without its run, or a config of another version
        cfg = {}
    text = card_text(meta, run.read_metrics(), run.read_audit() or None, cfg)
    return Path(atomic_write_text(bundle / CARD_FILE, text))
