"""The shared image loader: EXIF orientation, downscale on load, pixel cap, one error type."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from llava_address.common.images import MAX_PIXELS, ImageLoadError, load_image
from _image_fixtures import ORIENT_ROTATE_90_CW, png_bomb, save_with_orientation, truncated_jpeg


@pytest.mark.parametrize("fmt,mode", [("JPEG", "RGB"), ("JPEG", "L"), ("PNG", "RGB"), ("PNG", "P"), ("WEBP", "RGB")])
def test_exif_orientation_is_applied(tmp_path, fmt, mode):
    p = save_with_orientation(tmp_path / f"portrait.{fmt.lower()}", ORIENT_ROTATE_90_CW, fmt, mode=mode)
    with Image.open(p) as raw:
        assert raw.size == (60, 40)  # stored landscape
    im = load_image(p)
    a = np.asarray(im)
    assert im.size == (40, 60) and im.mode == "RGB"  # shown portrait
    assert a[:10, -6:].mean() > 240 and a[:10, :6].mean() < 15  # white corner rotated to top-right
    small = load_image(p, max_side=30)
    assert small.size == (20, 30) and np.asarray(small)[:4, -3:].mean() > 200


def test_upright_image_unchanged_and_detached(tmp_path):
    p = tmp_path / "a.png"
    src = np.random.default_rng(1).integers(0, 255, (17, 23, 3), np.uint8)
    Image.fromarray(src).save(p)
    im = load_image(p)
    p.unlink()  # the returned image owns its pixels
    np.testing.assert_array_equal(np.asarray(im), src)
    assert np.asarray(load_image(open_bytes(src), max_side=None)).shape == (17, 23, 3)


def open_bytes(a: np.ndarray):
    import io

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    buf.seek(0)
    return buf


@pytest.mark.parametrize("fmt,mode", [("JPEG", "RGB"), ("PNG", "P"), ("PNG", "L")])
def test_large_images_are_downscaled_keeping_aspect(tmp_path, fmt, mode):
    p = tmp_path / f"big.{fmt.lower()}"
    Image.new("RGB", (3000, 1500), (200, 30, 30)).convert(mode).save(p, fmt)
    im = load_image(p, max_side=512)
    assert im.size == (512, 256) and im.mode == "RGB"
    assert load_image(p, max_side=None).size == (3000, 1500)


def test_pixel_cap_refuses_bombs_before_decoding(tmp_path):
    p = tmp_path / "wide.png"
    Image.new("L", (300, 200)).save(p)
    with pytest.raises(ImageLoadError, match=r"300x200 = 60,000 pixels exceeds the cap of 50,000") as ei:
        load_image(p, max_pixels=50_000)
    assert ei.value.kind == "too_large" and ei.value.path == str(p)
    bomb = png_bomb(tmp_path / "bomb.png")  # 20000² > Pillow's own hard limit: DecompressionBombError
    with pytest.raises(ImageLoadError, match="too_large") as ei:
        load_image(bomb)
    assert ei.value.kind == "too_large" and isinstance(ei.value, ValueError)
    with pytest.raises(ValueError, match="exceeds Pillow's own limit"):
        load_image(p, max_pixels=MAX_PIXELS + 1)


def test_broken_files_raise_one_error_type(tmp_path):
    cases = {"missing.jpg": ("unreadable", "no such file"),
             "text.jpg": ("corrupt_image", "not a recognised image format"),
             "cut.jpg": ("corrupt_image", "truncated")}
    (tmp_path / "text.jpg").write_text("hello")
    truncated_jpeg(tmp_path / "cut.jpg")
    for name, (kind, words) in cases.items():
        with pytest.raises(ImageLoadError, match=words) as ei:
            load_image(tmp_path / name)
        assert ei.value.kind == kind and name in str(ei.value)
