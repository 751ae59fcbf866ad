"""Importers: EXIF GPS folders, CSV, SF-XL names, UTM metadata; bad records are counted skips."""

from __future__ import annotations

import pytest
from PIL import Image

from data_gen.importers import (dedupe, exif_gps, import_csv, import_exif_folder, import_sfxl, import_utm_csv,
                                run_importer, sfxl_latlon, utm_to_latlon)


def _dms(v: float):
    v = abs(v)
    d = int(v)
    m = int((v - d) * 60)
    return (float(d), float(m), round((v - d - m / 60) * 3600, 4))


def write_gps_jpeg(path, lat: float, lon: float, colour="red", orientation: int | None = None) -> None:
    """A small 40x30 JPEG with an EXIF GPS IFD and optional orientation tag (used by test_builder too)."""
    exif = Image.Exif()
    exif[0x8825] = {1: "N" if lat >= 0 else "S", 2: _dms(lat), 3: "E" if lon >= 0 else "W", 4: _dms(lon)}
    if orientation is not None:
        exif[0x0112] = orientation
    Image.new("RGB", (40, 30), colour).save(path, exif=exif)


def test_exif_roundtrip_with_refs(tmp_path):
    write_gps_jpeg(tmp_path / "a.jpg", -33.8568, 151.2153)
    write_gps_jpeg(tmp_path / "b.jpg", 37.7749, -122.4194)
    lat, lon = exif_gps(tmp_path / "a.jpg")
    assert lat == pytest.approx(-33.8568, abs=1e-5) and lon == pytest.approx(151.2153, abs=1e-5)
    lat, lon = exif_gps(tmp_path / "b.jpg")
    assert lat == pytest.approx(37.7749, abs=1e-5) and lon == pytest.approx(-122.4194, abs=1e-5)


def test_exif_folder_counts_every_bad_record(tmp_path):
    write_gps_jpeg(tmp_path / "good.jpg", 60.17, 24.94)
    (tmp_path / "sub").mkdir()
    write_gps_jpeg(tmp_path / "sub" / "good2.jpg", 60.18, 24.95)
    Image.new("RGB", (20, 20)).save(tmp_path / "nogps.jpg")
    write_gps_jpeg(tmp_path / "trunc.jpg", 60.17, 24.94)
    data = (tmp_path / "trunc.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.jpg").write_bytes(b"not a jpeg at all")
    exif = Image.Exif()
    exif[0x8825] = {1: "N", 2: (95.0, 0.0, 0.0), 3: "E", 4: (24.0, 0.0, 0.0)}
    Image.new("RGB", (20, 20)).save(tmp_path / "range.jpg", exif=exif)
    res = import_exif_folder(tmp_path)
    assert sorted(r.path.name for r in res.records) == ["good.jpg", "good2.jpg"]
    assert res.skipped == {"no_gps": 1, "corrupt_image": 2, "gps_out_of_range": 1}


def test_csv_importer(tmp_path):
    write_gps_jpeg(tmp_path / "a.jpg", 1, 2)
    Image.new("RGB", (8, 8)).save(tmp_path / "b.jpg")
    (tmp_path / "m.csv").write_text("file,y,x\na.jpg,60.1,24.9\nb.jpg,,24.9\nmissing.jpg,60.1,24.9\n"
                                    "b.jpg,60.1,500\n")
    res = import_csv(tmp_path / "m.csv", path_col="file", lat_col="y", lon_col="x")
    assert [(r.path.name, r.lat, r.lon) for r in res.records] == [("a.jpg", 60.1, 24.9)]
    assert res.skipped == {"no_gps": 1, "unreadable": 1, "gps_out_of_range": 1}
    with pytest.raises(ValueError, match="missing columns"):
        import_csv(tmp_path / "m.csv")
    with pytest.raises(FileNotFoundError):
        import_csv(tmp_path / "none.csv")


def test_sfxl_names(tmp_path):
    name = "@0549953.97@4180014.16@10@S@037.76609@-122.43283@pano123@@0@@@@201311@@.jpg"
    assert sfxl_latlon(name) == (37.76609, -122.43283)
    lat, lon = sfxl_latlon("@0549953.97@4180014.16@10@S@@@pano@.jpg")  # UTM fallback
    assert lat == pytest.approx(37.76609, abs=1e-5) and lon == pytest.approx(-122.43283, abs=1e-5)
    Image.new("RGB", (8, 8)).save(tmp_path / name)
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.jpg")
    res = import_sfxl(tmp_path)
    assert len(res.records) == 1 and res.skipped == {"no_gps": 1}


def test_utm_csv_pittsburgh_style(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "p.jpg")
    (tmp_path / "meta.csv").write_text("path,utm_east,utm_north\np.jpg,584900.0,4477200.0\np.jpg,x,1\n")
    res = import_utm_csv(tmp_path / "meta.csv", zone=17)
    assert len(res.records) == 1 and res.skipped == {"no_gps": 1}
    r = res.records[0]
    assert r.lat == pytest.approx(40.44, abs=0.01) and r.lon == pytest.approx(-79.99, abs=0.01)
    assert utm_to_latlon(500000, 0, 31) == pytest.approx((0.0, 3.0), abs=1e-6)


def test_dedupe_and_dispatch(tmp_path):
    write_gps_jpeg(tmp_path / "a.jpg", 60.1, 24.9, "red")
    (tmp_path / "copy.jpg").write_bytes((tmp_path / "a.jpg").read_bytes())
    write_gps_jpeg(tmp_path / "c.jpg", 60.1, 24.9, "blue")  # same position, other image: kept
    res = run_importer("exif_folder", tmp_path)
    kept = dedupe(res.records, res)
    assert len(kept) == 2 and res.skipped["duplicate"] == 1
    with pytest.raises(ValueError, match="unknown importer"):
        run_importer("nope", tmp_path)
    with pytest.raises(FileNotFoundError):
        import_exif_folder(tmp_path / "none")


def test_csv_with_byte_order_mark_and_oversized_images(tmp_path):
    from _image_fixtures import png_bomb

    write_gps_jpeg(tmp_path / "a.jpg", 60.1, 24.9)
    png_bomb(tmp_path / "bomb.png")
    rows = "path,lat,lon\r\na.jpg,60.1,24.9\r\nbomb.png,60.2,24.9\r\n"
    (tmp_path / "excel.csv").write_bytes(rows.encode("utf-8-sig"))  # Excel's "CSV UTF-8"
    res = import_csv(tmp_path / "excel.csv")
    assert [(r.path.name, r.lat) for r in res.records] == [("a.jpg", 60.1)]
    assert res.skipped == {"too_large": 1}


def test_exif_folder_counts_decompression_bombs(tmp_path):
    from _image_fixtures import png_bomb

    write_gps_jpeg(tmp_path / "a.jpg", 60.1, 24.9)
    png_bomb(tmp_path / "bomb.png")  # over Pillow's hard limit: DecompressionBombError, not OSError
    res = import_exif_folder(tmp_path)
    assert [r.path.name for r in res.records] == ["a.jpg"] and res.skipped == {"too_large": 1}
