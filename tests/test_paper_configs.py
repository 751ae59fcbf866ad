"""Every paper-reproduction config loads and validates; every table variant's overrides apply."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_gen.build_config import BuildConfig
from data_gen.ial_annotations import IALConfig
from llava_address.clip.config import load_clip_config
from llava_address.clip.table import TableConfig
from llava_address.common.config import load_config

ROOT = Path(__file__).resolve().parents[1]
PAPER = {"pitts_ial": (80.39, 82.62), "sf_ial_base": (86.32, 87.44), "sf_ial_large": (85.92, 88.10)}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_clip_and_data_configs(name):
    cfg = load_clip_config(ROOT / f"configs/clip/paper_{name}.yaml")
    t = cfg.train
    assert (t.optimizer, tuple(t.betas), t.lr, t.min_lr, t.epochs, t.global_batch_size) == (
        "adam", (0.9, 0.98), 2.4e-5, 2.4e-8, 100, 256)
    assert cfg.loss.geo_form == "paper" and (cfg.loss.alpha, cfg.loss.beta, cfg.loss.gamma) == (1.0, 0.2, 0.8)
    text = (ROOT / f"configs/clip/paper_{name}.yaml").read_text()
    ssa, sa = PAPER[name]
    assert f"SSA-1 {ssa:.2f}, SA-1 {sa:.2f}" in text
    ial = load_config(ROOT / f"configs/data/{name}.yaml", IALConfig)
    assert cfg.data.dataset_dir == f"data/{ial.name}"


@pytest.mark.parametrize("table", sorted(p.name for p in (ROOT / "configs/clip").glob("table_paper_*.yaml")))
def test_paper_table_variants_validate(table):
    tc = load_config(ROOT / "configs/clip" / table, TableConfig)
    for v in tc.variants:
        load_clip_config(ROOT / tc.base_config, [*tc.overrides, *v.overrides])
    if table != "table_paper_geo.yaml":
        text = (ROOT / "configs/clip" / table).read_text()
        assert "paper: about 1 %" in text and text.count("# paper:") == len(tc.variants) - 1
    else:
        assert "loss.geo_form=paper" in tc.overrides and tc.seeds == [0, 1, 2]


@pytest.mark.parametrize("name", ["pitts250k_osm", "sfxl_osm"])
def test_relabel_data_configs(name):
    cfg = load_config(ROOT / f"configs/data/{name}.yaml", BuildConfig)
    assert cfg.partition.min_images == 5 and cfg.captions.prompt == "a street view of"
