"""SSA/SA and distance error computed right on a hand-made prediction set; config error messages."""

from __future__ import annotations

import numpy as np
import pytest

from llava_address.clip.config import load_clip_config
from llava_address.clip.metrics import address_metrics, haversine_m, street_ranking
from llava_address.common.config import ConfigError

CANDS = ["A st between 1 and 2", "A st between 2 and 3", "B st between 1 and 2", "C st between 1 and 2"]
STREET = {CANDS[0]: "A st", CANDS[1]: "A st", CANDS[2]: "B st", CANDS[3]: "C st"}
MID = {c: (60.0 + 0.001 * i, 24.0) for i, c in enumerate(CANDS)}  # 111.195 m apart along a meridian


def test_street_ranking_dedupes_in_rank_order():
    assert street_ranking([CANDS[1], CANDS[0], CANDS[3], CANDS[2]], STREET, 2) == ["A st", "C st"]


def test_hand_made_predictions():
    ranked = np.array([[0, 1, 2, 3],   # truth A12: SSA-1 hit
                       [0, 1, 2, 3],   # truth A23: SSA-1 miss (same street -> SA-1 hit), SSA-2 hit
                       [1, 0, 3, 2],   # truth B12: SSA-1/2 miss; streets A, C, B -> SA-1 miss, SA-2 miss
                       [2, 3, 0, 1]])  # truth C12: SSA-2 hit; streets B, C -> SA-2 hit
    truth = [CANDS[0], CANDS[1], CANDS[2], CANDS[3]]
    lat = [60.0, 60.001, 60.002, 60.003]  # each image exactly at its true midpoint
    m = address_metrics(ranked, CANDS, truth, STREET, MID, lat, [24.0] * 4, ks=(1, 2))
    assert m["SSA-1"] == pytest.approx(1 / 4)
    assert m["SSA-2"] == pytest.approx(3 / 4)
    assert m["SA-1"] == pytest.approx(2 / 4)
    assert m["SA-2"] == pytest.approx(3 / 4)
    # top-1 midpoints: idx 0, 0, 1, 2 vs truth 0, 1, 2, 3 -> errors 0, 1, 1, 1 steps of 111.195 m
    assert m["mean_error_m"] == pytest.approx(0.75 * 111.195, abs=0.05)
    assert m["median_error_m"] == pytest.approx(111.195, abs=0.05)


def test_metric_input_errors():
    with pytest.raises(ValueError, match="ranked must be"):
        address_metrics(np.zeros((2, 4), int), CANDS, [CANDS[0]], STREET, MID, [60.0], [24.0])
    with pytest.raises(ValueError, match="no images"):
        address_metrics(np.zeros((0, 4), int), CANDS, [], STREET, MID, [], [])


def test_haversine_numpy_matches_known_distance():
    assert haversine_m(60.0, 24.0, 60.001, 24.0) == pytest.approx(111.195, abs=0.01)


@pytest.mark.parametrize("override,needle", [
    ("train.batch_sise=3", "train.batch_sise"),
    ("train.batch_size=1", "train.batch_size"),
    ("loss.beta=-1", "loss.beta"),
    ("model.tiny.image_size=50", "not a multiple of patch_size"),
    ("model.prompt=no placeholder", "{address}"),
    ("model.backbone=open_clip", "open_clip_name"),
    ("train.mixed_precision=fp8", "train.mixed_precision"),
])
def test_config_errors_name_the_field(override, needle):
    from pathlib import Path

    tiny = Path(__file__).resolve().parents[1] / "configs" / "clip" / "tiny.yaml"
    with pytest.raises(ConfigError) as err:
        load_clip_config(tiny, [override])
    assert needle in str(err.value)


def test_all_losses_off_is_rejected():
    with pytest.raises(ConfigError, match="all loss terms are switched off"):
        load_clip_config(None, ["loss.use_address=false", "loss.use_semantic=false", "loss.use_geo=false"])


def test_shipped_configs_load():
    from pathlib import Path

    import yaml

    from llava_address.clip.table import TableConfig
    from llava_address.common.config import load_config

    root = Path(__file__).resolve().parents[1]
    for p in sorted((root / "configs" / "clip").glob("*.yaml")):
        if "variants" in yaml.safe_load(p.read_text()):  # a run_table config (table, augmentation screens)
            table = load_config(p, TableConfig)
            if p.name == "table.yaml":
                names = [v.name for v in table.variants]
                assert len(table.seeds) >= 3 and "AddressCLIP full" in names
                assert "AddressCLIP full, in-batch negatives (paper)" in names  # the loss choice has its control row
            for v in table.variants:  # every variant's overrides are valid for the base config
                load_clip_config(root / table.base_config, [*table.overrides, *v.overrides])
        else:
            load_clip_config(p)
