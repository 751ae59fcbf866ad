"""The address template with district (paper), alone and with merge-by-count (partition.min_images) in a build."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import LineString

from data_gen.address_template import apply_address_template
from data_gen.partition import SubStreet


def _main_st():
    xs = [0, 100, 200, 300]
    cross = ["A St", "B St", "C St", "D St"]
    return [SubStreet(f"Main St between {cross[i]} and {cross[i + 1]}", "Main St", cross[i], cross[i + 1],
                      LineString([(xs[i], 0), (xs[i + 1], 0)]), "Old Town" if i < 2 else "")
            for i in range(3)] + [SubStreet("Lone Rd", "Lone Rd", None, None, LineString([(0, 500), (50, 500)]))]


def test_address_template_adds_the_district_where_known():
    pieces = _main_st()
    names = np.array([p.name for p in pieces], dtype=object)
    new = apply_address_template(pieces, names, "{sub_street}, {district}")
    assert new[0] == "Main St between A St and B St, Old Town" == pieces[0].name
    assert new[2] == "Main St between C St and D St"  # no district: plain name


def test_builder_applies_min_images_and_template(tmp_path):
    from data_gen.build_config import BuildConfig
    from data_gen.builder import build_dataset
    from data_gen.contract import read_addresses, read_manifest
    from llava_address.common.config import ConfigError, load_config

    def build(name, *over):
        cfg = load_config("configs/data/tiny.yaml", BuildConfig,
                          ["render.workers=1", "sampling.max_images=150", *over])
        out = build_dataset(cfg, tmp_path / name)
        return read_manifest(out), read_addresses(out)

    plain, _ = build("plain")
    df, voc = build("paper", "partition.min_images=8", "partition.address_template='{sub_street}, {district}'")
    assert set(df.sub_street) == set(voc.sub_street)
    for sub, d in zip(df.sub_street, df.district):
        assert sub.endswith(f", {d}") if d else "," not in sub
    small_before = (plain.groupby("sub_street").size() < 8).sum()
    small_after = (df.groupby("sub_street").size() < 8).sum()
    assert small_before >= 5 and small_after < small_before / 2
    assert df.sub_street.nunique() < plain.sub_street.nunique()
    with pytest.raises(ConfigError, match="address_template"):
        load_config("configs/data/tiny.yaml", BuildConfig, ["partition.address_template={street}"])
