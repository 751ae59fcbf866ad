"""The one image loader for builder, training, chat and web: upright, bounded, one error type.

Why one loader: phone photos carry their rotation in EXIF (ignored, a portrait photo is used
sideways), a small PNG can decode to gigabytes (a "decompression bomb"), and Pillow raises
half a dozen unrelated exceptions for broken files (``DecompressionBombError`` is not an
``OSError``). Every caller gets the same behaviour from ``load_image``:

- EXIF orientation applied (``PIL.ImageOps.exif_transpose``);
- images over ``max_pixels`` refused before decoding, with a message giving the size;
- images larger than ``max_side`` downscaled while loading (JPEG decodes at reduced scale via
  ``draft``; other formats are reduced right after decoding), so no full-size copy is kept;
- any failure raised as ``ImageLoadError`` (a ``ValueError``) naming the file and the reason,
  with ``kind`` in ``KINDS`` so importers can count it as a skip reason.

Usage::

    from llava_address.common.images import ImageLoadError, load_image
    try:
        img = load_image(path)                  # RGB, upright, longer side <= DEFAULT_MAX_SIDE
    except ImageLoadError as exc:
        print(exc)                              # "cannot load image x.png: ... (too_large)"
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import BinaryIO

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageLoadError", "load_image", "DEFAULT_MAX_SIDE", "MAX_PIXELS", "KINDS"]

DEFAULT_MAX_SIDE = 2048
"""Longer side after loading. Models use 64-336 px inputs; 2048 keeps captioning/inspection sharp."""

MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS
"""Pixel cap (~179 M: Pillow's own hard limit, so a 12000² image loads, a 20000² one is refused)."""

KINDS = ("unreadable", "corrupt_image", "too_large")
"""``ImageLoadError.kind`` values: file missing/unreadable, not a decodable image, over the pixel cap."""


class ImageLoadError(ValueError):
    """An image could not be loaded; ``path``, ``reason`` (human) and ``kind`` (one of ``KINDS``)."""

    def __init__(self, path: str | Path, reason: str, kind: str = "corrupt_image"):
        self.path, self.reason, self.kind = str(path), reason, kind
        super().__init__(f"cannot load image {path}: {reason} ({kind})")


def _name(src: str | Path | BinaryIO) -> str:
    return str(src) if isinstance(src, (str, Path)) else str(getattr(src, "name", "<stream>"))


def load_image(src: str | Path | BinaryIO, *, max_side: int | None = DEFAULT_MAX_SIDE,
               max_pixels: int = MAX_PIXELS, mode: str = "RGB") -> Image.Image:
    """Decode ``src`` fully into a new, upright ``mode`` image no larger than ``max_side``.

    ``max_side=None`` keeps the full size (still subject to ``max_pixels``). The returned image
    owns its pixels (the file is closed). Raises ``ImageLoadError`` for every failure.
    """
    name = _name(src)
    if isinstance(src, (str, Path)) and not Path(src).is_file():
        raise ImageLoadError(name, "no such file", "unreadable")
    if max_pixels > MAX_PIXELS:
        raise ValueError(f"max_pixels={max_pixels} exceeds Pillow's own limit {MAX_PIXELS}")
    try:
        with warnings.catch_warnings():  # the cap below replaces Pillow's bomb warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(src) as im:
                return _decode(im, name, max_side, max_pixels, mode)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(name, f"too many pixels ({exc})", "too_large") from None
    except PermissionError as exc:
        raise ImageLoadError(name, f"permission denied ({exc.strerror})", "unreadable") from None
    except UnidentifiedImageError:
        raise ImageLoadError(name, "not a recognised image format", "corrupt_image") from None
    except MemoryError:
        raise ImageLoadError(name, "out of memory while decoding", "too_large") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageLoadError(name, f"{type(exc).__name__}: {exc}", "corrupt_image") from None


def _decode(im: Image.Image, name: str, max_side: int | None, max_pixels: int, mode: str) -> Image.Image:
    w, h = im.size
    if w * h > max_pixels:
        raise ImageLoadError(name, f"{w}x{h} = {w * h:,} pixels exceeds the cap of {max_pixels:,}", "too_large")
    opened = im
    upright = _orientation(im) == 1
    if im.mode in ("P", "1"):
        im = im.convert(mode)  # palette images cannot be resampled smoothly
    if max_side and max(w, h) > max_side:
        # in place: JPEG decodes at reduced scale (draft), others box-reduce then filter (reducing_gap)
        im.thumbnail((max_side, max_side), Image.Resampling.BICUBIC, reducing_gap=2.0)
    im.load()
    if im.mode != mode:
        im = im.convert(mode)
    if not upright:
        im = ImageOps.exif_transpose(im)
    return im.copy() if im is opened else im


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(ExifTags.Base.Orientation, 1))
    except (TypeError, ValueError):
        return 1
