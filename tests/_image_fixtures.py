"""Bad and awkward image files for loader and bad-input tests (generated, tiny on disk)."""

from __future__ import annotations

import functools
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from llava_address.common.io import atomic_write_bytes

ORIENT_ROTATE_90_CW = 6  # EXIF value a phone writes for a portrait photo taken with the sensor landscape


def marked_image(h: int = 40, w: int = 60) -> np.ndarray:
    """Black RGB image with a white top-left corner block, so rotations are visible."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 4, : w // 6] = 255
    return a


def save_with_orientation(path: Path, orientation: int, fmt: str | None = None, mode: str = "RGB") -> Path:
    """``marked_image`` stored landscape (60x40) with an EXIF orientation tag."""
    im = Image.fromarray(marked_image()).convert(mode)
    ex = im.getexif()
    ex[0x0112] = orientation
    im.save(path, fmt, exif=ex.tobytes())
    return path


def png_bomb(path: Path, side: int = 20000) -> Path:
    """A valid greyscale PNG of side² pixels that is a few hundred KB on disk (all zero rows)."""
    path.write_bytes(_png_bomb_bytes(side))
    return path


@functools.lru_cache(maxsize=2)
def _png_bomb_bytes(side: int) -> bytes:
    # WHY a disk cache: deflating 400 MB of zeros takes seconds on a loaded 2-core machine
    cache = Path(tempfile.gettempdir()) / f"llava_address_test_png_bomb_{side}.png"
    if cache.is_file():
        return cache.read_bytes()

    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    c = zlib.compressobj(9)
    row = b"\0" * (side + 1)
    data = b"".join([c.compress(row) for _ in range(side)] + [c.flush()])
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    atomic_write_bytes(cache, png)
    return png


def truncated_jpeg(path: Path, size: tuple[int, int] = (120, 80)) -> Path:
    """A noise JPEG cut in half: headers parse, the pixel data ends early."""
    tmp = path.with_suffix(".full.jpg")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), np.uint8)).save(tmp)
    data = tmp.read_bytes()
    tmp.unlink()
    path.write_bytes(data[: len(data) // 2])
    return path
