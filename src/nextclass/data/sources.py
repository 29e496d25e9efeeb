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
from nextclass.data.samples import SPLIT_ALIASES, DataError, DataSource, Sample

__all__ = ["Sample", "DataSource", "load_source", "SPLIT_ALIASES", "DataError"]


def load_source(spec: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
                download: bool = False) -> DataSource:
    """Resolve a data spec to a :class:`DataSource`.

    Args:
        spec: a folder, a ``.csv`` manifest, ``digits``, ``fashion-mnist[:DIR]``, ``hf:DIR`` or
            ``hf:OWNER/NAME[:CONFIG]``.
        cache_dir: where built-ins and Hugging Face images are materialised (default: the user cache).
        download: allow ``fashion-mnist`` to be downloaded when its files are absent.

    Example:
        >>> src = load_source("digits")  # doctest: +SKIP
        >>> src.classes[:3]
        ['0', '1', '2']
    """
    s = str(spec)
    if s.lower().startswith("hf:") and not Path(s).exists():
        from nextclass.data.hf import from_hf  # imports `datasets` only when asked for

        return from_hf(s, cache_dir=cache_dir, download=download)
    name = s.split(":", 1)[0].lower()
    if name in builtin.BUILTINS and not Path(s).exists():
        arg = s.split(":", 1)[1] if ":" in s else None
        return builtin.BUILTINS[name](arg, cache_dir=cache_dir, download=download)
    p = Path(s).expanduser()
    if not p.exists():
        raise DataError(f"{s}: no such folder or file; give a folder, a .csv manifest, hf:DIR, hf:OWNER/NAME, or "
                        f"one of {', '.join(sorted(builtin.BUILTINS))}")
    if p.is_file():
        if p.suffix.lower() != ".csv":
            raise DataError(f"{s}: a data file must be a .csv manifest (path,label[,split])")
        return from_csv(p)
    return from_folder(p)
