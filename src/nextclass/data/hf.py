"""Hugging Face ``datasets`` as a data source: ``hf:DIR`` offline, ``hf:OWNER/NAME[:CONFIG]`` from the Hub.

Accepted specs (:func:`parse_hf_spec`):

* ``hf:DIR`` where ``DIR`` was written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``
  (read with :func:`datasets.load_from_disk`, memory-mapped, never written to);
* ``hf:DIR`` holding parquet files (``DIR/train-00000-of-00001.parquet``, ``DIR/data/test.parquet``,
  ``DIR/train/*.parquet``...): the split is a folder name or the file name's first word; read with
  ``load_dataset("parquet", ..., streaming=True)``, which needs no network and makes no Arrow copy;
* ``hf:OWNER/NAME[:CONFIG]`` through :func:`datasets.load_dataset` (internet, or Hugging Face's own
  cache with ``HF_HUB_OFFLINE=1``); when the Hub cannot be reached, the last copy nextclass made of
  the same name and config is used, and said so;
* any of them followed by ``?image=COLUMN&label=COLUMN`` to choose the columns by hand.

Columns: the image column is the ``datasets.Image`` feature (else a struct column with ``bytes``, or
a binary column); the label column is the ``ClassLabel`` feature, whose names (in their order)
become the class names, else a column named label/labels/class/target holding ints or strings
(names sorted naturally). Rows without a label (``None`` or ClassLabel's ``-1``, as in many
unlabelled Hub test splits) are left out and counted in a log line.

Splits: ``train``; ``valid``/``validation``/``dev`` become ``val``; ``test`` (see
:data:`~nextclass.data.samples.SPLIT_ALIASES`). Other split names (``unlabeled``, ``extra``) are
left out with a log line; a plain ``Dataset`` is unsplit and gets the run's split.

Images: every row's *encoded* bytes are written once, unchanged, into
``<cache>/datasets/hf/<key>/`` (``key``: a fingerprint of the dataset and the chosen columns),
atomically (built in a temporary folder, then renamed), with an ``index.json`` so later loads skip
``datasets`` entirely. Samples are then ordinary files, so images go through the same safe decode
as a folder of images and unreadable rows land in ``skipped.csv``. NOTE: this doubles the disk use
of the images; it buys one decode path for every source and a dataset folder that is only read.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs

from nextclass.utils import atomic_write_json, default_cache_dir, log, natural_key, sha1_of
from nextclass.data.hf_columns import find_columns
from nextclass.data.samples import SPLIT_ALIASES, DataError, DataSource, Sample

__all__ = ["HfSpec", "parse_hf_spec", "from_hf", "find_columns", "HF_CACHE_VERSION"]

HF_CACHE_VERSION = 1
_BATCH = 512  # rows per datasets batch while writing images
# Leading bytes -> file extension, only so the cached files open in an image viewer; decoding
# identifies the format by content, not by name.
_MAGIC = ((b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF8", ".gif"), (b"BM", ".bmp"),
          (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"), (b"P5", ".pgm"), (b"P6", ".ppm"))


@dataclass(frozen=True)
class HfSpec:
    """A parsed ``hf:`` spec: a local path or a Hub name, plus optional column choices."""

    target: str  # local path, or OWNER/NAME
    config: str | None = None  # Hub config name
    image: str | None = None  # image column chosen with ?image=
    label: str | None = None  # label column chosen with ?label=
    local: bool = False


def parse_hf_spec(spec: str) -> HfSpec:
    """Split ``hf:TARGET[:CONFIG][?image=COL&label=COL]`` into its parts.

    A target that exists on disk, or looks like a path (``/``, ``.``, ``~``), is local; anything
    else is a Hub name ``OWNER/NAME`` with an optional ``:CONFIG``.

    Example:
        >>> parse_hf_spec("hf:zh-plus/tiny-imagenet?label=label").target
        'zh-plus/tiny-imagenet'
    """
    body = spec[3:] if spec.lower().startswith("hf:") else spec
    body, _, query = body.partition("?")
    opts = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    unknown = sorted(set(opts) - {"image", "label"})
    if unknown:
        raise DataError(f"hf:{body}: unknown option(s) {unknown}; the choices are ?image=COLUMN&label=COLUMN")
    if not body:
        raise DataError("hf: needs a target: hf:DIR (save_to_disk or parquet files) or hf:OWNER/NAME[:CONFIG]")
    p = Path(body).expanduser()
    if p.exists() or body.startswith(("/", ".", "~")):
        return HfSpec(str(p), None, opts.get("image"), opts.get("label"), local=True)
    name, _, config = body.partition(":")
    return HfSpec(name, config or None, opts.get("image"), opts.get("label"), local=False)


# --- opening: every kind of spec -> {split name as stored: dataset}, a fingerprint, a name ----------


def _tree_stamp(root: Path) -> list:
    """Paths, sizes and mtimes of every file under ``root``: changes when the data is rewritten."""
    out = []
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        st = f.stat()
        out.append((f.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    return out


def _parquet_split(rel: Path) -> str | None:
    """Split of a parquet file from its folders (``train/x.parquet``) or name (``train-0000.parquet``)."""
    for part in rel.parts[:-1]:
        if part.lower() in SPLIT_ALIASES:
            return part
    word = rel.stem.replace("_", "-").replace(".", "-").split("-")[0]
    return word if word.lower() in SPLIT_ALIASES else None


def _open_parquet(root: Path) -> dict[str | None, Any]:
    import datasets

    files = [root] if root.is_file() else sorted(
        p for p in root.rglob("*.parquet") if not any(x.startswith(".") for x in p.relative_to(root).parts))
    if not files:
        raise DataError(f"{root}: neither a save_to_disk folder (dataset_dict.json / state.json) nor parquet files")
    by: dict[str | None, list[str]] = {}
    for f in files:
        by.setdefault(None if root.is_file() else _parquet_split(f.relative_to(root)), []).append(str(f))
    if None in by and len(by) > 1:
        raise DataError(f"{root}: some parquet files name a split and some do not ({by[None][:3]}); put each split's "
                        f"files in a folder or name them like train-00000.parquet (splits: {', '.join(SPLIT_ALIASES)})")
    if list(by) == [None]:
        return {None: datasets.load_dataset("parquet", data_files=by[None], split="train", streaming=True)}
    opened = datasets.load_dataset("parquet", data_files=by, streaming=True)
    return dict(opened.items())


def _open_local(path: Path) -> tuple[dict[str | None, Any], str]:
    """A save_to_disk folder or parquet files -> (datasets by split, fingerprint of the files)."""
    import datasets

    if not path.exists():
        raise DataError(f"hf:{path}: no such folder or file")
    if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        d = datasets.load_from_disk(str(path))
        dsets = dict(d.items()) if isinstance(d, datasets.DatasetDict) else {None: d}
    elif path.suffix == ".parquet" or path.is_dir():
        dsets = _open_parquet(path)
    else:
        raise DataError(f"hf:{path}: expected a folder written by save_to_disk, a folder of parquet files, "
                        "or a .parquet file")
    stamp = _tree_stamp(path) if path.is_dir() else [(path.name, path.stat().st_size, path.stat().st_mtime_ns)]
    return dsets, sha1_of([str(path.resolve()), stamp])


def _open_hub(spec: HfSpec) -> tuple[dict[str | None, Any], str]:
    """``datasets.load_dataset(OWNER/NAME, CONFIG)`` -> (datasets by split, fingerprint)."""
    import datasets

    from nextclass.utils import can_reach, hub_host

    host = hub_host()
    if os.environ.get("HF_DATASETS_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "")).lower() not in ("1", "true", "yes", "on") \
            and not can_reach(host):
        # a quick check: datasets' own retries take close to half a minute before the same failure
        raise ConnectionError(f"{host} cannot be reached (offline?)")
    d = datasets.load_dataset(spec.target, spec.config)
    dsets = dict(d.items()) if isinstance(d, datasets.DatasetDict) else {None: d}
    # NOTE: Dataset._fingerprint is private but is what datasets itself keys its cache on; it changes
    # when the downloaded files change. Rows and features are the fallback if it ever goes away.
    stamp = {str(k): getattr(v, "_fingerprint", None) or (v.num_rows, repr(v.features)) for k, v in dsets.items()}
    return dsets, sha1_of([spec.target, spec.config, stamp])


def _known_splits(dsets: dict[str | None, Any], where: str) -> dict[str | None, Any]:
    """Keep train/val/test (by :data:`SPLIT_ALIASES`); say which stored splits are left out."""
    kept = {k: v for k, v in dsets.items() if k is None or k.lower() in SPLIT_ALIASES}
    dropped = sorted(str(k) for k in dsets if k not in kept)
    if dropped:
        log(f"[yellow]NOTE[/]: {where}: split(s) {dropped} left out; nextclass uses train, val (valid, validation) "
            "and test")
    if not kept:
        raise DataError(f"{where}: no usable split among {dropped}; expected train, validation or test")
    return kept


# --- writing the images once into the cache -------------------------------------------------------


def _extension(data: bytes) -> str:
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return ".img"


def _rows(ds: Any, image: str, label: str) -> Iterator[tuple[Any, Any]]:
    """(encoded image, raw label) per row; the image as stored (``decode=False``), never decoded here."""
    import datasets

    ds = ds.select_columns([image, label])
    if isinstance(ds.features[image], datasets.Image):
        ds = ds.cast_column(image, datasets.Image(decode=False))
    for batch in ds.iter(batch_size=_BATCH):
        yield from zip(batch[image], batch[label])


def _store(value: Any, folder: Path, rel: str) -> str:
    """Write one row's image bytes under ``folder``; return its path relative to it (or an absolute
    path of an existing external file the row points to)."""
    data, path = (value.get("bytes"), value.get("path")) if isinstance(value, dict) else (value, None)
    if data is None and path:  # stored as a reference to a file (e.g. an imagefolder load): use it in place
        return str(Path(path).expanduser().resolve())  # a missing file is listed by decode, like any other
    data = bytes(data or b"")  # a row without an image becomes an empty file: decode reports it
    rel += _extension(data)
    with open(folder / rel, "wb") as f:
        f.write(data)
    return rel


def _unlabelled(value: Any, class_label: bool) -> bool:
    """``None``, or ClassLabel's ``-1`` (how the Hub marks unlabelled rows, e.g. hidden test labels)."""
    return value is None or (class_label and int(value) < 0)


def _write_rows(dsets: dict[str | None, Any], image: str, label: str, folder: Path,
                class_label: bool) -> tuple[list[list], dict[str, int]]:
    """Write every labelled row's image under ``folder/<stored split>/``; -> rows [path, raw label, split]."""
    rows: list[list] = []
    unlabelled: dict[str, int] = {}
    for key, ds in dsets.items():
        split = SPLIT_ALIASES[key.lower()] if key else None
        sub = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in (key or "all"))
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for n, (img, lab) in enumerate(_rows(ds, image, label)):
            if _unlabelled(lab, class_label):
                unlabelled[key or "all"] = unlabelled.get(key or "all", 0) + 1
                continue
            rows.append([_store(img, folder, f"{sub}/{n:07d}"), lab, split])
    return rows, unlabelled


def _multi(feature: Any) -> bool:
    """A sequence of ``ClassLabel``: each row holds a list of labels (a multi-label dataset)."""
    import datasets

    return isinstance(getattr(feature, "feature", None), datasets.ClassLabel)


def _label_rows(feature: Any, rows: list[list], where: str) -> list[str]:
    """Class names, and each row's raw label replaced by its class index, or (a sequence of ``ClassLabel``) by the
    sorted indices of its labels (in place)."""
    import datasets

    if _multi(feature):
        classes = [str(c) for c in feature.feature.names]
        bad = sorted({int(v) for r in rows for v in r[1] if not 0 <= int(v) < len(classes)})
        if bad:
            raise DataError(f"{where}: label value(s) {bad[:5]} outside the ClassLabel's {len(classes)} names")
        for r in rows:
            r[1] = sorted({int(v) for v in r[1]})
        return classes
    if isinstance(feature, datasets.ClassLabel):
        classes = [str(c) for c in feature.names]
        bad = sorted({r[1] for r in rows if not 0 <= int(r[1]) < len(classes)})
        if bad:
            raise DataError(f"{where}: label value(s) {bad[:5]} outside the ClassLabel's {len(classes)} names")
        for r in rows:
            r[1] = int(r[1])
        return classes
    classes = sorted({str(r[1]) for r in rows}, key=natural_key)
    index = {c: i for i, c in enumerate(classes)}
    for r in rows:
        r[1] = index[str(r[1])]
    return classes


def _columns(dsets: dict[str | None, Any], spec: HfSpec, where: str) -> tuple[str, str]:
    """Columns from the first split; every split must have them with the same types."""
    first = next(iter(dsets.values()))
    try:
        image, label = find_columns(first.features, spec.image, spec.label)
    except DataError as e:
        raise DataError(f"{where}: {e}") from None
    for key, ds in dsets.items():
        f = ds.features or {}
        if image not in f or label not in f or repr(f[label]) != repr(first.features[label]):
            raise DataError(f"{where}: split {key!r} lacks the columns {image!r}/{label!r} of the first split "
                            f"or types them differently ({', '.join(f) or 'no columns'})")
    return image, label


def _build(dsets: dict[str | None, Any], spec: HfSpec, folder: Path, where: str) -> dict:
    """Write the images and ``index.json`` into a temporary folder, then rename it to ``folder``."""
    import datasets

    dsets = _known_splits(dsets, where)
    image, label = _columns(dsets, spec, where)
    feature = next(iter(dsets.values())).features[label]
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name[:12]}.", dir=folder.parent))
    t0 = time.time()
    try:
        rows, unlabelled = _write_rows(dsets, image, label, tmp, isinstance(feature, datasets.ClassLabel))
        if not rows:
            raise DataError(f"{where}: no labelled rows (unlabelled: {unlabelled or 'none'})")
        classes = _label_rows(feature, rows, where)
        index = {"version": HF_CACHE_VERSION, "spec": _spec_id(spec), "image_column": image, "label_column": label,
                 "classes": classes, "unlabelled": unlabelled, "rows": rows,
                 "task": "multi-label" if _multi(feature) else "single-label"}
        atomic_write_json(tmp / "index.json", index)
        if folder.exists():  # only complete folders ever get this name: another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
            return json.loads((folder / "index.json").read_text())
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"{where}: {len(rows)} images written once to {folder} ({time.time() - t0:.1f}s; columns "
        f"image={image!r}, label={label!r})")
    return index


def _spec_id(spec: HfSpec) -> list:
    return [spec.target if not spec.local else str(Path(spec.target).resolve()), spec.config, spec.image, spec.label]


def _last_copy(root: Path, spec: HfSpec) -> tuple[Path, dict] | None:
    """The newest materialised copy of the same spec (used when the Hub cannot be reached)."""
    best = None
    for f in root.glob("*/index.json") if root.exists() else []:
        try:
            index = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if index.get("spec") == _spec_id(spec) and (best is None or f.stat().st_mtime > best[0]):
            best = (f.stat().st_mtime, f.parent, index)
    return None if best is None else (best[1], best[2])


def _open(spec: HfSpec, root: Path, where: str) -> tuple[Path, dict]:
    """Open the dataset and return its materialised copy (built on first use)."""
    try:
        dsets, stamp = _open_local(Path(spec.target)) if spec.local else _open_hub(spec)
    except DataError:
        raise
    except Exception as e:  # datasets raises many types (network, format); the user needs one clear message
        if isinstance(e, ImportError) and getattr(e, "name", "") in ("datasets", "pyarrow"):
            raise DataError(f"{where}: needs the {e.name} package (pip install datasets)") from None
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if spec.local:
            raise DataError(f"{where}: datasets cannot read it ({reason})") from None
        copy = _last_copy(root, spec)
        if copy is None:
            raise DataError(f"{where}: cannot load it from the Hugging Face Hub ({reason}). It needs internet the "
                            "first time; offline, save it elsewhere with DatasetDict.save_to_disk(DIR) and use "
                            "hf:DIR") from None
        log(f"[yellow]NOTE[/]: {where}: the Hub cannot be reached ({reason}); using the copy made on "
            f"{time.strftime('%Y-%m-%d %H:%M', time.localtime((copy[0] / 'index.json').stat().st_mtime))}")
        return copy
    folder = root / sha1_of([HF_CACHE_VERSION, stamp, spec.image, spec.label])
    if (folder / "index.json").exists():
        return folder, json.loads((folder / "index.json").read_text())
    return folder, _build(dsets, spec, folder, where)


def from_hf(arg: str, *, cache_dir: str | os.PathLike | None = None, download: bool = False) -> DataSource:
    """A Hugging Face dataset (``hf:...`` spec, see the module docstring) as a :class:`DataSource`.

    Args:
        arg: the spec, with or without its ``hf:`` prefix.
        cache_dir: cache root; the images are written once under ``<cache_dir>/datasets/hf``.
        download: unused: naming a Hub dataset is the request to download it (kept for the
            common signature of sources).

    Returns:
        Path-backed samples (kind ``hf``) with the dataset's classes and splits.

    Example:
        >>> src = from_hf("hf:/data/beans_saved")  # doctest: +SKIP
        >>> src.classes, src.counts()["val"]  # doctest: +SKIP
        (['angular_leaf_spot', 'bean_rust', 'healthy'], {...})
    """
    spec = parse_hf_spec(arg if arg.lower().startswith("hf:") else f"hf:{arg}")
    where = f"hf:{spec.target}" + (f":{spec.config}" if spec.config else "")
    folder, index = _open(spec, Path(cache_dir or default_cache_dir()) / "datasets" / "hf", where)
    if index["unlabelled"]:
        log(f"[yellow]NOTE[/]: {where}: rows without a label left out: "
            + ", ".join(f"{k} {n}" for k, n in index["unlabelled"].items()))
    multi = index.get("task") == "multi-label"
    samples = [Sample(p if os.path.isabs(p) else str(folder / p), -1 if multi else int(y), sp,
                      labels=tuple(y) if multi else None) for p, y, sp in index["rows"]]
    name = Path(spec.target).name if spec.local else spec.target
    root = str(Path(spec.target).resolve()) if spec.local else str(folder)
    if multi:
        log(f"[dim]task[/] multi-label: column {index['label_column']!r} is a sequence of ClassLabel")
    return DataSource(name, root, "hf", list(index["classes"]), samples,
                      task="multi-label" if multi else "single-label")
