"""Bad and awkward image files for loader and bad-input tests (generated, tiny on disk)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

ORIENT_ROTATE_90_CW = 6  # EXIF value a phone writes for a portrait photo taken with the sensor landscape


def marked_image(h: int = 40, w: int = 60) -> np.ndarray:
    """Black RGB image with a white top-left corner block, so rotations are visible."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 4, : w // 6] = 255
    return a


def save_with_orientation(path: Path, orientation: int, fmt: str | None = None, gps: tuple | None = None) -> Path:
    im = Image.fromarray(marked_image())
    ex = im.getexif()
    ex[0x0112] = orientation
    if gps is not None:
        ex.get_ifd(0x8825).update(gps)
    im.save(path, fmt, exif=ex.tobytes())
    return path


def png_bomb(path: Path, side: int = 20000) -> Path:
    """A valid greyscale PNG of side² pixels that is a few hundred KB on disk (all zero rows)."""
    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    c = zlib.compressobj(6)
    row = b"\0" * (side + 1)
    data = b"".join([c.compress(row) for _ in range(side)] + [c.flush()])
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def truncated_jpeg(path: Path, size: tuple[int, int] = (120, 80)) -> Path:
    """A noise JPEG cut in half: headers parse, the pixel data ends early."""
    tmp = path.with_suffix(".full.jpg")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), np.uint8)).save(tmp)
    data = tmp.read_bytes()
    tmp.unlink()
    path.write_bytes(data[: len(data) // 2])
    return path
