"""The model store: immutable, numbered versions of bundles under one name.

``nextclass models add RUN --name NAME`` copies the run's bundle (weights, ``model.json`` and any
exported ONNX files) to ``<store>/NAME/vN`` with a ``manifest.json`` (created, source run, data
hash, metrics, file hashes). Versions are never modified: files are written to a temporary folder,
renamed into place in one step, and made read-only. ``predict``/``serve``/``load`` accept
``NAME`` (the latest version), ``NAME@vN`` (or ``NAME@N``) or a path.

The store lives in ``$NEXTCLASS_HOME/models``, else ``$XDG_DATA_HOME/nextclass/models``, else
``~/.local/share/nextclass/models``; every function takes ``store=`` to use another folder.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

from nextclass.utils import atomic_write_json

__all__ = ["store_dir", "add", "identical_version", "list_models", "show", "resolve", "parse_ref", "StoreError", "MANIFEST"]

MANIFEST = "manifest.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_REF = re.compile(r"^(?P<name>[^@]+?)(?:@v?(?P<version>\d+))?$")
#: Files of a bundle folder copied into the store (others, e.g. temp files, are not).
_BUNDLE_FILES = ("model.safetensors", "model.json", "model.onnx", "model.int8.onnx", "neighbors.safetensors", "README.md")


class StoreError(FileNotFoundError):
    """An unknown model name or version; the message lists what exists."""


def store_dir(store: str | os.PathLike | None = None) -> Path:
    """The store folder: ``store`` if given, else from the environment (see the module docstring)."""
    if store:
        return Path(store).expanduser()
    from nextclass.utils import default_data_home

    return default_data_home() / "models"


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``NAME`` → (NAME, None); ``NAME@v3`` / ``NAME@3`` → (NAME, 3)."""
    m = _REF.match(str(ref).strip())
    if not m or not _NAME.match(m.group("name")):
        raise ValueError(f"{ref!r}: not a model reference; use NAME or NAME@vN (NAME: letters, digits, . _ -)")
    return m.group("name"), int(m.group("version")) if m.group("version") else None


def _versions(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(p.name[1:]) for p in folder.iterdir()
                  if p.is_dir() and re.fullmatch(r"v\d+", p.name) and (p / MANIFEST).is_file())


def _sha256(path: Path) -> str:
    from nextclass.utils import file_sha256

    return file_sha256(path)


def identical_version(run: str | os.PathLike, name: str, *, store: str | os.PathLike | None = None) -> Path | None:
    """The latest version of ``name`` when it holds exactly the bundle files of ``run`` (same names, same sha256);
    None otherwise (no such model, or something changed)."""
    from nextclass.bundle import resolve_bundle_dir

    src = resolve_bundle_dir(run)
    versions = _versions(store_dir(store) / name) if _NAME.match(name) else []
    if not versions:
        return None
    latest = store_dir(store) / name / f"v{versions[-1]}"
    stored = json.loads((latest / MANIFEST).read_text()).get("files", {})
    here = [f for f in _BUNDLE_FILES if (src / f).is_file()]
    if sorted(here) != sorted(stored) or any(_sha256(src / f) != stored[f].get("sha256") for f in here):
        return None
    return latest


def add(run: str | os.PathLike, name: str, *, store: str | os.PathLike | None = None, note: str = "") -> Path:
    """Copy a run's bundle into the store as the next version of ``name``. Returns ``<store>/NAME/vN``.

    A bundle identical to the latest version (every file the same) is not stored again: that version is
    returned (:func:`identical_version`).

    Example:
        >>> add("runs/tiny", "shapes")             # doctest: +SKIP
        PosixPath('/home/me/.local/share/nextclass/models/shapes/v1')
    """
    from nextclass.bundle import read_meta, resolve_bundle_dir

    if not _NAME.match(name) or "@" in name:
        raise ValueError(f"model name {name!r}: use 1-64 letters, digits, '.', '_' or '-' (starting with a letter or digit)")
    src = resolve_bundle_dir(run)
    meta = read_meta(src)
    same = identical_version(run, name, store=store)
    if same is not None:
        from nextclass.utils import log

        log(f"{name}@{same.name} already holds this bundle (every file identical): nothing added")
        return same
    root = store_dir(store) / name
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=root))
    try:
        files = {}
        for f in _BUNDLE_FILES:
            if (src / f).is_file():
                shutil.copy2(src / f, tmp / f)
                files[f] = {"bytes": (tmp / f).stat().st_size, "sha256": _sha256(tmp / f)}
        while True:  # another writer may take a number first: retry with the next one
            version = (_versions(root) or [0])[-1] + 1
            manifest = {
                "name": name, "version": version, "ref": f"{name}@v{version}",
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "source": str(Path(run).resolve()), "data_hash": meta.get("data_hash", ""),
                "arch": meta.get("arch", {}).get("name"), "classes": meta.get("classes", []),
                "metrics": meta.get("metrics", {}), "temperature": meta.get("temperature", 1.0),
                "onnx": sorted(f for f in files if f.endswith(".onnx")), "files": files, "note": note,
            }
            atomic_write_json(tmp / MANIFEST, manifest)
            for f in tmp.iterdir():
                f.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            try:
                os.rename(tmp, root / f"v{version}")  # atomic; fails if vN appeared meanwhile
                break
            except OSError:
                if not (root / f"v{version}").exists():
                    raise
                (tmp / MANIFEST).chmod(stat.S_IRUSR | stat.S_IWUSR)
        dest = root / f"v{version}"
        dest.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        return dest
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def resolve(ref: str, *, store: str | os.PathLike | None = None) -> Path:
    """``NAME`` or ``NAME@vN`` → the version's bundle folder.

    Raises:
        StoreError: unknown name or version (the message lists the known ones).

    Example:
        >>> resolve("shapes@v1")                   # doctest: +SKIP
    """
    root = store_dir(store)
    try:
        name, version = parse_ref(ref)
    except ValueError:
        raise StoreError(f"{ref}: no such file or folder (and not a model name NAME[@vN] of the store {root})") from None
    versions = _versions(root / name)
    if not versions:
        known = ", ".join(m["name"] for m in list_models(store=store)) or "none"
        raise StoreError(f"{ref}: no such file, folder or model in the store {root} (models: {known})")
    if version is None:
        version = versions[-1]
    if version not in versions:
        raise StoreError(f"{ref}: {name} has versions {', '.join(f'v{v}' for v in versions)}")
    return root / name / f"v{version}"


def show(ref: str, *, store: str | os.PathLike | None = None) -> dict:
    """The manifest of ``NAME[@vN]`` (latest version when no version is given), plus its path."""
    folder = resolve(ref, store=store)
    m = json.loads((folder / MANIFEST).read_text())
    m["path"] = str(folder)
    m["versions"] = [f"v{v}" for v in _versions(folder.parent)]
    return m


def list_models(*, store: str | os.PathLike | None = None) -> list[dict]:
    """One row per model name: name, latest version, versions, created, arch, val/test accuracy.

    Example:
        >>> [m["ref"] for m in list_models()]      # doctest: +SKIP
        ['shapes@v2']
    """
    root = store_dir(store)
    rows = []
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        versions = _versions(d)
        if not versions:
            continue
        m = json.loads((d / f"v{versions[-1]}" / MANIFEST).read_text())
        metrics = m.get("metrics", {})
        rows.append({"name": d.name, "ref": m["ref"], "latest": f"v{versions[-1]}", "versions": len(versions),
                     "created": m["created"], "arch": m.get("arch"), "classes": len(m.get("classes", [])),
                     "val_accuracy": (metrics.get("val") or {}).get("accuracy"),
                     "test_accuracy": (metrics.get("test") or {}).get("accuracy"), "onnx": m.get("onnx", [])})
    return rows
