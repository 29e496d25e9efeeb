"""Which columns of a Hugging Face dataset hold the image and the label (for :mod:`nextclass.data.hf`)."""

from __future__ import annotations

from typing import Any

from nextclass.data.samples import DataError

__all__ = ["find_columns", "IMAGE_NAMES", "LABEL_NAMES"]

IMAGE_NAMES = ("image", "img", "picture", "pixel_values")  # preferred when several image columns exist
LABEL_NAMES = ("label", "labels", "class", "target")  # label columns recognised without a ClassLabel


def _kind(feature: Any) -> str:
    """A short name for a column's feature type, as shown in errors."""
    import datasets

    if isinstance(feature, datasets.Image):
        return "Image"
    if isinstance(feature, datasets.ClassLabel):
        return "ClassLabel"
    if isinstance(getattr(feature, "feature", None), datasets.ClassLabel):  # Sequence / List of ClassLabel
        return "ClassLabel list"
    if isinstance(feature, dict):
        return "bytes struct" if "bytes" in feature else "struct"
    if isinstance(feature, datasets.Value):
        dt = feature.dtype
        if dt in ("binary", "large_binary"):
            return "binary"
        if dt.startswith(("int", "uint")):
            return "int"
        if dt in ("string", "large_string"):
            return "string"
        return dt
    return type(feature).__name__


def _pick(cands: list[str], preferred: tuple[str, ...], what: str, found: str, hint: str) -> str:
    if len(cands) == 1:
        return cands[0]
    named = [c for c in cands if c.lower() in preferred]
    if len(named) == 1:
        return named[0]
    raise DataError(f"{len(cands)} possible {what} columns {cands} (columns found: {found}); choose one with {hint}")


def find_columns(features: Any, image: str | None = None, label: str | None = None) -> tuple[str, str]:
    """The image column and the label column of a dataset's ``features``.

    Image: the ``datasets.Image`` column, else a struct column with ``bytes``, else a binary column.
    Label: the ``ClassLabel`` column, else a sequence of ``ClassLabel`` (a multi-label dataset), else one named
    label/labels/class/target with ints or strings.
    Several candidates are settled by a preferred name (image/img, label...), else it is an error.

    Raises:
        DataError: no or several candidates, or a chosen column that does not exist or is of the
            wrong type; the message lists every column with its type.

    Example:
        >>> import datasets
        >>> find_columns(datasets.Features({"img": datasets.Image(), "y": datasets.ClassLabel(names=["a", "b"])}))
        ('img', 'y')
    """
    if features is None:
        raise DataError("the dataset does not declare its columns (features); cannot find the image and label")
    kinds = {name: _kind(f) for name, f in features.items()}
    found = ", ".join(f"{n} ({k})" for n, k in kinds.items()) or "none"
    image_ok, label_ok = ("Image", "bytes struct", "binary"), ("ClassLabel", "ClassLabel list", "int", "string")
    for chosen, ok, what, a in ((image, image_ok, "image", "an"), (label, label_ok, "label", "a")):
        if chosen is not None and kinds.get(chosen) not in ok:
            raise DataError(f"?{what}={chosen}: not {a} {what} column (columns found: {found}; {a} {what} column "
                            f"is one of {', '.join(ok)})")
    if image is None:
        cands = [n for n, k in kinds.items() if k == "Image"] or [n for n, k in kinds.items() if k in image_ok[1:]]
        if not cands:
            raise DataError(f"no image column (columns found: {found}); expected a datasets.Image feature or a "
                            "column of encoded image bytes")
        image = _pick(cands, IMAGE_NAMES, "image", found, "?image=COLUMN")
    if label is None:
        cands = [n for n, k in kinds.items() if k == "ClassLabel"] or \
                [n for n, k in kinds.items() if k == "ClassLabel list"] or \
                [n for n, k in kinds.items() if n.lower() in LABEL_NAMES and k in label_ok]
        if not cands:
            raise DataError(f"no label column (columns found: {found}); expected a ClassLabel feature (or a sequence of "
                            f"them: multi-label) or a column named {'/'.join(LABEL_NAMES)} holding ints or strings; choose one with ?label=COLUMN")
        label = _pick(cands, LABEL_NAMES, "label", found, "?label=COLUMN")
    return image, label
