"""Data sources: a folder tree, a CSV manifest, or a built-in set → samples + class names.

Layouts recognised for a folder ``root``:

* ``root/<class>/*`` - one folder per class, split later by :mod:`nextclass.data.splits`;
* ``root/{train,val|valid|validation,test}/<class>/*`` - the splits given are kept.

A CSV manifest has a header ``path,label`` and optionally ``split``; relative paths are
resolved against the CSV's folder. Built-ins are ``digits`` and ``fashion-mnist`` (see
:mod:`nextclass.data.builtin`). ``hf:DIR`` (a ``save_to_disk`` folder or parquet files) and
``hf:OWNER/NAME[:CONFIG]`` read Hugging Face datasets (see :mod:`nextclass.data.hf`). Class names
are sorted naturally (``2`` before ``10``), except a ``ClassLabel``'s names, which keep their order.
"""

from __future__ import annotations

import os
from pathlib import Path

from nextclass.data import builtin
from nextclass.data.folders import from_csv, from_folder
from nextclass.data.multilabel import check_task, detect_csv_task, read_multilabel_csv, resolve_task
from nextclass.data.samples import SPLIT_ALIASES, DataError, DataSource, Sample
from nextclass.utils import log

__all__ = ["Sample", "DataSource", "load_source", "SPLIT_ALIASES", "DataError"]


def load_source(spec: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
                download: bool = False, task: str | None = "auto") -> DataSource:
    """Resolve a data spec to a :class:`DataSource`.

    Args:
        spec: a folder, a ``.csv`` manifest, ``digits``, ``fashion-mnist[:DIR]``, ``hf:DIR`` or
            ``hf:OWNER/NAME[:CONFIG]``.
        cache_dir: where built-ins and Hugging Face images are materialised (default: the user cache).
        download: allow ``fashion-mnist`` to be downloaded when its files are absent.
        task: ``auto`` (detected from the data and logged: a ``labels`` column or ``;`` in a label cell of a
            manifest, a sequence-of-ClassLabel column of a Hugging Face dataset), ``single-label`` or
            ``multi-label`` (``--task``). Folders of class folders and the built-ins are single-label.

    Example:
        >>> src = load_source("digits")  # doctest: +SKIP
        >>> src.classes[:3]
        ['0', '1', '2']
    """
    s = str(spec)
    if s.lower().startswith("hf:") and not Path(s).exists():
        from nextclass.data.hf import from_hf  # imports `datasets` only when asked for

        return _checked(from_hf(s, cache_dir=cache_dir, download=download), task)
    name = s.split(":", 1)[0].lower()
    if name in builtin.BUILTINS and not Path(s).exists():
        arg = s.split(":", 1)[1] if ":" in s else None
        return _checked(builtin.BUILTINS[name](arg, cache_dir=cache_dir, download=download), task)
    p = Path(s).expanduser()
    if not p.exists():
        raise DataError(f"{s}: no such folder or file; give a folder, a .csv manifest, hf:DIR, hf:OWNER/NAME, or "
                        f"one of {', '.join(sorted(builtin.BUILTINS))}")
    if p.is_file():
        if p.suffix.lower() != ".csv":
            raise DataError(f"{s}: a data file must be a .csv manifest (path,label[,split] or path,labels[,split])")
        return _from_manifest(p, task)
    return _checked(from_folder(p), task)


def _from_manifest(path: Path, task: str | None) -> DataSource:
    """A manifest as the task it holds (detected, or ``--task``), said once in the log."""
    chosen, why = resolve_task(task, detect_csv_task(path))
    log(f"[dim]task[/] {chosen}: {why}")
    return read_multilabel_csv(path) if chosen == "multi-label" else from_csv(path)


def _checked(source: DataSource, task: str | None) -> DataSource:
    """A source whose task is fixed by its kind: ``--task`` may only agree with it."""
    want = check_task(task)
    if want not in ("auto", source.task):
        need = ("a manifest with a labels column (path,labels[,split]) or a Hugging Face sequence-of-ClassLabel column"
                if want == "multi-label" else "one label per image")
        raise DataError(f"task: {source.name} is a {source.task} dataset ({source.kind}); --task {want} needs {need}")
    return source
