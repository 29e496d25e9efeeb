"""Safe image decoding.

Every image nextclass reads goes through :func:`open_image`: EXIF orientation applied,
palette / CMYK / 16-bit / alpha / grayscale converted to the model's channels (alpha composited
on white), and a pixel limit against decompression bombs. Anything that cannot be decoded raises
:class:`DecodeError` with a short, human reason that ends up in ``skipped.csv``.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["DecodeError", "open_image", "to_mode", "IMAGE_EXTENSIONS", "MAX_PIXELS"]

#: Extensions collected from folders. A file whose content is another format still decodes fine.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: Decompression-bomb limit (pixels). PIL's default only *warns* up to 2x its limit; we refuse.
MAX_PIXELS = 64 * 1024 * 1024


class DecodeError(ValueError):
    """An image that cannot be used; ``str(err)`` is the reason shown to the user."""


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL mode to ``L`` (channels=1) or ``RGB`` (channels=3).

    16-bit and 32-bit integer images are rescaled to 8 bit by their actual range (a plain
    ``convert("L")`` clips them to white); alpha and palette transparency are composited on white.
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if img.mode.startswith("I;16"):
            lo, hi = 0.0, max(hi, 1.0) if hi > 255 else 255.0
        scale = 255.0 / (hi - lo) if hi > lo else 1.0
        img = Image.fromarray(np.clip((arr - lo) * scale, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode == "CMYK" or img.mode == "YCbCr" or img.mode == "1":
        img = img.convert("RGB") if img.mode != "1" else img.convert("L")
    target = "L" if channels == 1 else "RGB"
    if img.mode != target:
        img = img.convert(target)
    return img


def _file_or_buffer(src: str | os.PathLike | bytes) -> io.BytesIO | str:
    """What PIL should open; empty or unreadable input fails here with the reason."""
    if isinstance(src, (bytes, bytearray)):
        if len(src) == 0:
            raise DecodeError("empty file (0 bytes)")
        return io.BytesIO(src)
    p = Path(src)
    try:
        size = p.stat().st_size
    except OSError as e:
        raise DecodeError(f"cannot read file: {e.strerror or e}") from None
    if size == 0:
        raise DecodeError("empty file (0 bytes)")
    return str(p)


def _too_big(size: str) -> str:
    return (f"too many pixels ({size}; nextclass refuses more than {MAX_PIXELS:,} against decompression bombs): "
            "downscale the image first")


def _decode(fp: io.BytesIO | str) -> Image.Image:
    """Open and fully decode (truncated files fail now, not mid-epoch), refusing decompression bombs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp)
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise DecodeError(_too_big(f"{w}x{h} = {w * h:,}"))
            img.load()
            return img
    except DecodeError:
        raise
    except UnidentifiedImageError:
        raise DecodeError("not an image (unknown format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # PIL checks its own limit when it reads the header, before ours can: say it in our words
        import re

        n = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(n.group(1)):,}" if n else "more than PIL's limit"
        raise DecodeError(_too_big(size)) from None
    except OSError as e:
        msg = str(e)
        if "truncated" in msg.lower():
            raise DecodeError("truncated image") from None
        raise DecodeError(f"cannot decode: {msg}") from None
    except Exception as e:  # any other decoder failure is data, not a crash
        raise DecodeError(f"cannot decode: {type(e).__name__}: {e}") from None


def open_image(src: str | os.PathLike | bytes | Image.Image, channels: int = 3) -> Image.Image:
    """Open, fully decode and normalise one image.

    Args:
        src: a path, raw bytes, or a PIL image.
        channels: 1 for grayscale output, 3 for RGB.

    Returns:
        A loaded PIL image in mode ``L`` or ``RGB``, EXIF-transposed.

    Raises:
        DecodeError: empty, truncated, unknown format, too many pixels, or any decoder failure.

    Example:
        >>> img = open_image("cat.jpg", channels=3)  # doctest: +SKIP
    """
    img = src if isinstance(src, Image.Image) else _decode(_file_or_buffer(src))
    try:
        img = ImageOps.exif_transpose(img) or img
    except Exception:  # a broken EXIF block should not lose the image
        pass
    try:
        return to_mode(img, channels)
    except Exception as e:
        raise DecodeError(f"cannot convert mode {img.mode}: {e}") from None
