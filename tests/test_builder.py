"""End-to-end dataset builds (tiny procedural SynthCity + imported geotagged photos)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image
from scipy.spatial import cKDTree

from data_gen.build_config import BuildConfig
from data_gen.builder import build_dataset, load_network
from data_gen.contract import read_addresses, read_manifest
from llava_address.common.config import ConfigError, load_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TINY = "configs/data/tiny.yaml"


def tiny_cfg(*overrides: str) -> BuildConfig:
    return load_config(TINY, BuildConfig, ["render.workers=1", *overrides])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_dataset(tiny_cfg(), tmp_path_factory.mktemp("b") / "tiny")


def test_tiny_dataset_follows_the_contract(tiny):
    df = read_manifest(tiny)
    voc = read_addresses(tiny)
    stats = json.loads((tiny / "stats.json").read_text())
    assert 150 <= len(df) <= 400 and set(df.split) == {"train", "val", "test"}
    assert set(df.sub_street) == set(voc.sub_street)  # only addresses that have images
    assert set(df.street) == set(voc.street) and set(df.district) - {""} == set(voc.district)
    for sub, st in zip(df.sub_street, df.street):
        assert voc.street_of(sub) == st
    lat, lon = voc.midpoint(df.sub_street[0])
    assert abs(lat - df.lat[0]) < 0.02 and abs(lon - df.lon[0]) < 0.02
    assert all(c.startswith(("a ", "looking across a ")) for c in df.caption)
    im = Image.open(tiny / df.image[0])
    assert im.size == (64, 64)
    assert all((tiny / p).is_file() for p in df.image)
    # stats add up
    imgs = stats["images"]
    assert imgs["kept"] == len(df) and imgs["sampled"] == imgs["kept"] + imgs["dropped_total"]
    assert stats["splits"] == {s: int((df.split == s).sum()) for s in ("train", "val", "test")}
    assert stats["classes"]["sub_street"]["all"] == len(voc.sub_street)
    assert stats["sub_streets_without_train"] == 0
    assert stats["partition"]["min_images"] == 5 and stats["partition"]["merged_min_images"] >= 1
    gj = json.loads((tiny / "network.geojson").read_text())
    kinds = {f["properties"]["kind"] for f in gj["features"]}
    assert {"way", "sub_street"} <= kinds
    assert (tiny / "map.png").stat().st_size > 10_000 and (tiny / "build_config.yaml").is_file()


def test_splits_are_spatially_disjoint(tiny):
    df = read_manifest(tiny)
    net = load_network(tiny_cfg())
    x, y = net.projection.to_xy(df.lat.to_numpy(), df.lon.to_numpy())
    tr = (df.split == "train").to_numpy()
    d, _ = cKDTree(np.c_[x[tr], y[tr]]).query(np.c_[x[~tr], y[~tr]])
    assert d.min() >= tiny_cfg().splits.buffer_m - 1e-6
    assert set(df.sub_street[~tr]) <= set(df.sub_street[tr])  # closed set: held-out subs seen in train


def test_rerun_skips_and_overwrite_reproduces(tiny, tmp_path):
    before = (tiny / "manifest.parquet").stat().st_mtime_ns
    assert build_dataset(tiny_cfg(), tiny) == tiny
    assert (tiny / "manifest.parquet").stat().st_mtime_ns == before
    other = build_dataset(tiny_cfg("sampling.max_images=120"), tmp_path / "again")
    a = read_manifest(other)
    img = (other / a.image[3]).read_bytes()
    again = build_dataset(tiny_cfg("sampling.max_images=120"), tmp_path / "again", overwrite=True)
    b = read_manifest(again)
    assert again == other and 0 < len(a) <= 120
    assert a.equals(b) and (again / b.image[3]).read_bytes() == img  # seeded: identical rebuild


def test_database_views_add_training_renders_and_keep_every_query_image(tiny, tmp_path):
    more = build_dataset(tiny_cfg("sampling.train_views_per_point=3"), tmp_path / "views3")
    a, b = read_manifest(tiny), read_manifest(more)
    assert (b.split == "train").sum() == 3 * (a.split == "train").sum()
    for split in ("val", "test"):  # the very same query images, byte for byte
        qa, qb = a[a.split == split].reset_index(drop=True), b[b.split == split].reset_index(drop=True)
        assert qa[["image", "sub_street", "lat", "lon"]].equals(qb[["image", "sub_street", "lat", "lon"]])
        assert all((tiny / p).read_bytes() == (more / p).read_bytes() for p in qa.image)
    tr = b[b.split == "train"]
    first, extra = tr.iloc[0], tr[(tr.lat == tr.iloc[0].lat) & (tr.lon == tr.iloc[0].lon)]
    assert len(extra) == 3 and set(extra.sub_street) == {first.sub_street}  # same place, same label
    views = {(more / p).read_bytes() for p in extra.image}
    assert len(views) == 3  # three different captures of it
    stats = json.loads((more / "stats.json").read_text())
    assert stats["splits"]["train"] == len(tr) and stats["images"]["kept"] == len(b)
    assert stats["database_views"] == {"train_views_per_point": 3, "added": 2 * (a.split == "train").sum()}
    assert stats["images"]["sampled"] == stats["images"]["kept"] + stats["images"]["dropped_total"]


def test_killed_build_leaves_no_complete_folder(tmp_path, monkeypatch):
    import data_gen.builder as b

    def boom(*a, **k):
        raise KeyboardInterrupt("killed")
    monkeypatch.setattr(b, "_captions", boom)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(tiny_cfg("sampling.max_images=60"), tmp_path / "ds")
    assert list(tmp_path.iterdir()) == []


def test_changed_settings_are_refused_with_the_reason(tiny):
    before = {p.name: p.stat().st_mtime_ns for p in tiny.iterdir()}
    with pytest.raises(FileExistsError, match=r"config changed \(sampling.max_images: 400 -> 300\).*--overwrite"):
        build_dataset(tiny_cfg("sampling.max_images=300"), tiny)
    with pytest.raises(FileExistsError, match=r"splits.seed: 0 -> 1, vote.k: 5 -> 4\)"):
        build_dataset(tiny_cfg("vote.k=4", "splits.seed=1"), tiny)
    assert build_dataset(tiny_cfg("render.workers=2"), tiny) == tiny  # same content: reused
    assert {p.name: p.stat().st_mtime_ns for p in tiny.iterdir()} == before


def test_foreign_folders_are_never_replaced(tmp_path, tiny):
    import shutil

    from llava_address.common.io import MARKER, NotOurFolderError

    mine = tmp_path / "my_photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"precious")
    for overwrite in (False, True):
        with pytest.raises(NotOurFolderError, match="not a dataset built by llava-address") as ei:
            build_dataset(tiny_cfg(), mine, overwrite=overwrite)
        assert "overwrite" not in str(ei.value)  # the flag would not help: never suggested
    assert [p.name for p in mine.iterdir()] == ["holiday.jpg"] and (mine / "holiday.jpg").read_bytes() == b"precious"
    legacy = tmp_path / "legacy"  # a complete dataset from a version without markers
    shutil.copytree(tiny, legacy, ignore=shutil.ignore_patterns("images", MARKER))
    with pytest.raises(NotOurFolderError, match="older version: delete it yourself"):
        build_dataset(tiny_cfg(), legacy, overwrite=True)
    assert (legacy / "manifest.parquet").is_file()


def test_bad_config_and_empty_map_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="sampling.spacing_m"):
        tiny_cfg("sampling.spacing_m=-1")
    with pytest.raises(ConfigError, match="importer.path"):
        tiny_cfg("importer.kind=csv")
    with pytest.raises(ConfigError, match="nonsense"):
        tiny_cfg("render.nonsense=1")
    with pytest.raises(ConfigError, match=r"splits: .*must sum to 1, got 1.2 \+ 0.1 \+ 0.1 = 1.4"):
        tiny_cfg("splits.train=1.2")
    with pytest.raises(ConfigError, match=r"train_views_per_point \(2\) renders extra SynthCity views; importer.kind=csv"):
        tiny_cfg("sampling.train_views_per_point=2", "importer.kind=csv", "importer.path=x.csv")
    with pytest.raises(ConfigError, match=r"sampling: .*max_images \(3\) is smaller than images_per_point \(5\)"):
        tiny_cfg("sampling.images_per_point=5", "sampling.max_images=3")
    osm = tmp_path / "empty.osm"
    osm.write_text('<?xml version="1.0"?><osm version="0.6"><node id="1" lat="60" lon="24"/></osm>')
    with pytest.raises(ValueError, match="no usable highway"):
        build_dataset(tiny_cfg("map.source=osm", f"map.osm_path={osm}"), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def _gps_jpeg(path, lat, lon, colour, orientation=None):
    from test_importers import write_gps_jpeg
    write_gps_jpeg(path, lat, lon, colour, orientation)


@pytest.mark.parametrize("kind", ["exif_folder", "csv"])
def test_real_photo_path_end_to_end(tmp_path, kind):
    from data_gen.synthcity.sampling import sample_points

    cfg = tiny_cfg()
    net = load_network(cfg)
    sp = sample_points(net, 15.0, seed=1)
    lat, lon = net.projection.to_latlon(sp.x, sp.y)
    photos = tmp_path / "photos"
    photos.mkdir()
    rows = ["path,lat,lon"]
    rng = np.random.default_rng(0)
    for i in range(len(sp)):
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))  # csv: portrait phone photos (EXIF rotate 90)
        _gps_jpeg(photos / f"p{i:04d}.jpg", lat[i], lon[i], colour, 6 if kind == "csv" else None)
        rows.append(f"photos/p{i:04d}.jpg,{lat[i]},{lon[i]}")
    Image.new("RGB", (20, 20)).save(photos / "nogps.jpg")
    rows.append("photos/nogps.jpg,,")
    (photos / "trunc.jpg").write_bytes((photos / "p0000.jpg").read_bytes()[:200])
    rows.append(f"photos/trunc.jpg,{lat[0]},{lon[0]}")
    (photos / "dup.jpg").write_bytes((photos / "p0001.jpg").read_bytes())
    rows.append(f"photos/dup.jpg,{lat[1]},{lon[1]}")
    _gps_jpeg(photos / "far.jpg", lat[0] + 0.5, lon[0], "red")  # ~55 km outside the map
    rows.append(f"photos/far.jpg,{lat[0] + 0.5},{lon[0]}")
    (tmp_path / "photos.csv").write_text("\n".join(rows) + "\n")
    path = photos if kind == "exif_folder" else tmp_path / "photos.csv"
    cfg = tiny_cfg(f"importer.kind={kind}", f"importer.path={path}", "importer.resize=16")
    out = build_dataset(cfg, tmp_path / "ds")
    df = read_manifest(out)
    stats = json.loads((out / "stats.json").read_text())
    drop = stats["images"]["dropped"]
    assert drop["no_gps"] == 1 and drop["corrupt_image"] == 1 and drop["duplicate"] == 1
    assert drop["outside_map"] == 1
    assert stats["images"]["sampled"] == len(sp) + 4
    assert len(df) > 0.5 * len(sp) and set(df.caption) == {""}
    sizes = [Image.open(out / p).size for p in df.image]
    assert set(sizes) == ({(16, 21)} if kind == "csv" else {(21, 16)})  # stored 40x30, shown upright


def test_script_main(tmp_path, capsys):
    import sys
    sys.path.insert(0, "scripts")
    from build_dataset import main

    out = tmp_path / "s"
    assert main(["--config", TINY, "--out", str(out), "--set", "sampling.max_images=60",
                 "--set", "render.workers=1"]) == 0
    assert json.loads(capsys.readouterr().out)["images"]["kept"] == len(read_manifest(out))
    assert main(["--config", TINY, "--out", str(out), "--set", "sampling.spacing_m=oops"]) == 2
    assert "sampling.spacing_m" in capsys.readouterr().err


def test_blip_captions_for_imported_photos(tmp_path):
    from test_captions import _tiny_blip

    from data_gen.synthcity.sampling import sample_points

    net = load_network(tiny_cfg())
    sp = sample_points(net, 40.0, seed=2)
    lat, lon = net.projection.to_latlon(sp.x, sp.y)
    (tmp_path / "p").mkdir()
    for i in range(len(sp)):
        _gps_jpeg(tmp_path / "p" / f"{i}.jpg", lat[i], lon[i], (i * 7 % 255, 90, 30))
    _tiny_blip(tmp_path / "blip")
    cfg = tiny_cfg("importer.kind=exif_folder", f"importer.path={tmp_path / 'p'}", "captions.kind=blip",
                   f"captions.model_dir={tmp_path / 'blip'}", "captions.max_new_tokens=4", "splits.min_points=100")
    df = read_manifest(build_dataset(cfg, tmp_path / "ds"))
    assert len(df) > 0.5 * len(sp) and df.caption.map(type).eq(str).all()
    with pytest.raises(ValueError, match="needs SynthCity images"):
        build_dataset(tiny_cfg("importer.kind=exif_folder", f"importer.path={tmp_path / 'p'}", "captions.kind=scene"),
                      tmp_path / "ds2")
