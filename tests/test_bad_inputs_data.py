"""Bad inputs to the dataset builder, driven through the real script as a user would run it.

Each case asserts: the exit code, exactly one ``error:`` line naming the problem, no traceback,
and that every input file is byte-identical afterwards (nothing a user owns is lost).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _image_fixtures import png_bomb, truncated_jpeg

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs/data/tiny.yaml"


def run_script(name: str, *args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)


def run_build(*args: str | Path) -> subprocess.CompletedProcess:
    return run_script("build_dataset.py", *args)


def tree_hash(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def error_line(res: subprocess.CompletedProcess, code: int = 2, prefix: str = "error:") -> str:
    """The one error line of a failed run (asserting exit code and no traceback)."""
    assert res.returncode == code, res.stderr[-2000:]
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith(prefix)]
    assert len(lines) == 1, res.stderr[-2000:]
    return lines[0]


def test_foreign_folder_is_never_deleted(tmp_path):
    mine = tmp_path / "my_photos"
    (mine / "2024").mkdir(parents=True)
    (mine / "2024" / "holiday.jpg").write_bytes(b"\xff\xd8 precious")
    (mine / "places.csv").write_text("path,lat,lon\n2024/holiday.jpg,60.1,24.9\n")
    before = tree_hash(mine)
    for flags in (["--overwrite"], []):
        err = error_line(run_build("--config", TINY, "--out", mine, "--set", "sampling.max_images=40", *flags))
        assert "is not a dataset built by llava-address" in err and str(mine) in err
        assert "--overwrite" not in err  # the flag cannot help: never suggested
    assert tree_hash(mine) == before


@pytest.mark.parametrize("case", ["split_sum", "malformed_yaml", "unknown_field", "max_images", "missing_config"])
def test_bad_configs_fail_with_one_line_naming_the_field(tmp_path, case):
    cfg = tmp_path / "cfg.yaml"
    text = TINY.read_text()
    sets: list[str] = []
    expect = {"split_sum": ["splits", "must sum to 1", "= 1.4"], "malformed_yaml": ["not valid YAML"],
              "unknown_field": ["render.colour", "Extra inputs are not permitted"],
              "max_images": ["sampling", "max_images (2) is smaller than images_per_point (4)"],
              "missing_config": ["config file not found"]}[case]
    if case == "split_sum":
        sets = ["--set", "splits.train=1.2"]
    elif case == "malformed_yaml":
        text += "render: {size: 64\n"  # unclosed flow mapping
    elif case == "unknown_field":
        text = text.replace("render: {size: 64,", "render: {size: 64, colour: red,")
    elif case == "max_images":
        sets = ["--set", "sampling.images_per_point=4", "--set", "sampling.max_images=2"]
    cfg.write_text(text)
    before = tree_hash(tmp_path)
    out = tmp_path / "ds"
    err = error_line(run_build("--config", cfg if case != "missing_config" else tmp_path / "nope.yaml",
                               "--out", out, *sets))
    assert all(w in err for w in expect), err
    assert tree_hash(tmp_path) == before and not out.exists()


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """Geotagged phone photos on the tiny map + the awkward files real dumps contain."""
    from data_gen.build_config import BuildConfig
    from data_gen.builder import load_network
    from data_gen.synthcity.sampling import sample_points
    from llava_address.common.config import load_config
    from test_importers import write_gps_jpeg

    root = tmp_path_factory.mktemp("photos")
    net = load_network(load_config(TINY, BuildConfig))
    sp = sample_points(net, 15.0, seed=1)
    lat, lon = net.projection.to_latlon(sp.x, sp.y)
    rng = np.random.default_rng(0)
    rows = ["path,lat,lon"]
    for i in range(len(sp)):  # portrait phone photos: stored 40x30 with EXIF "rotate 90"
        write_gps_jpeg(root / f"p{i:04d}.jpg", lat[i], lon[i], tuple(int(v) for v in rng.integers(0, 255, 3)), 6)
        rows.append(f"p{i:04d}.jpg,{lat[i]},{lon[i]}")
    png_bomb(root / "bomb.png")
    truncated_jpeg(root / "cut.jpg")
    rows += [f"bomb.png,{lat[0]},{lon[0]}", f"cut.jpg,{lat[1]},{lon[1]}", "p0002.jpg,,"]
    (root / "photos.csv").write_bytes(("\r\n".join(rows) + "\r\n").encode("utf-8-sig"))  # Excel: BOM + CRLF
    return root, len(sp)


def test_real_photo_dump_builds_with_counted_skips(photo_folder, tmp_path):
    root, n = photo_folder
    before = tree_hash(root)
    out = tmp_path / "ds"
    sets = ["--set", "importer.kind=csv", "--set", f"importer.path={root / 'photos.csv'}",
            "--set", "importer.resize=16", "--set", "render.workers=1"]
    res = run_build("--config", TINY, "--out", out, *sets)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-2000:]
    stats = json.loads((out / "stats.json").read_text())
    drop = stats["images"]["dropped"]
    assert drop["too_large"] == 1 and drop["corrupt_image"] == 1 and drop["no_gps"] == 1
    assert stats["images"]["sampled"] == n + 3 and stats["images"]["kept"] > n // 2
    from data_gen.contract import read_manifest
    from PIL import Image

    assert {Image.open(out / p).size for p in read_manifest(out).image} == {(16, 21)}  # upright portrait
    assert tree_hash(root) == before
    built = tree_hash(out)
    # a changed --set: refused with the reason, dataset untouched (reuse of the same settings: test_builder)
    err = error_line(run_build("--config", TINY, "--out", out, *sets, "--set", "importer.resize=24"))
    assert "config changed (importer.resize: 16 -> 24)" in err and "--overwrite" in err
    assert tree_hash(out) == built and tree_hash(root) == before
    # make_qa.py: --out naming an existing folder, --data naming a folder that is not a dataset
    (tmp_path / "qa_dir").mkdir()
    err = error_line(run_script("make_qa.py", "--data", out, "--out", tmp_path / "qa_dir", "--no-progress"),
                     prefix="ERROR")
    assert "qa_dir is a folder; give a file path" in err and not any((tmp_path / "qa_dir").iterdir())
    err = error_line(run_script("make_qa.py", "--data", root, "--out", tmp_path / "qa.json"), prefix="ERROR")
    assert "no addresses.json" in err and not (tmp_path / "qa.json").exists() and tree_hash(root) == before
