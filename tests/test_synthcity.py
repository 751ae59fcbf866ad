"""SynthCity renderer: reproducible, street-like, smooth in space, captions match the drawing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from shapely.geometry import LineString

from data_gen.contract import read_manifest
from data_gen.road_network import LocalProjection, RoadNetwork, Way
from data_gen.synthcity import STYLES, SmoothField, SynthCity, colour_name, render_view
from data_gen.synthcity.conditions import DATABASE, QUERY, CaptureConditions
from data_gen.synthcity.sampling import sample_points


def _render(city, x, y, seed, size=64, street="Main St", highway="residential", district="", cond=None):
    return render_view(city.view(x, y, 1.0, 0.0, street, highway, district), np.random.default_rng(seed), size, cond)


def test_same_seed_same_image_and_caption():
    city = SynthCity(seed=3)
    a, ca = _render(city, 100, 200, 7)
    b, cb = _render(SynthCity(seed=3), 100, 200, 7)
    c, _ = _render(city, 100, 200, 8)
    assert a.size == (64, 64) and a.mode == "RGB"
    assert np.array_equal(np.asarray(a), np.asarray(b)) and ca == cb
    assert not np.array_equal(np.asarray(a), np.asarray(c))


@pytest.mark.parametrize("size", [32, 96, 336])
def test_sizes(size):
    img, cap = _render(SynthCity(0), 0, 0, 0, size=size)
    assert img.size == (size, size)
    assert "a quiet residential street" in cap


def test_bad_size_is_clear_error():
    with pytest.raises(ValueError, match="image size"):
        _render(SynthCity(0), 0, 0, 0, size=4)


def test_smooth_field_is_smooth_and_bounded():
    f = SmoothField(1)
    xs = np.linspace(0, 5000, 2001)
    v = f(xs, np.zeros_like(xs))
    assert v.min() > 0 and v.max() < 1 and v.std() > 0.05
    assert np.abs(np.diff(v)).max() < 0.05  # 2.5 m steps change the field very little
    near = abs(f(0, 0) - f(20, 0))
    far = np.mean([abs(f(0, 0) - f(d, d)) for d in range(800, 3000, 100)])
    assert near < far


def test_neighbours_look_more_alike_than_distant_places():
    city = SynthCity(seed=0, bounds=(0, 0, 3000, 3000))
    def feat(x, y):  # mean image over nuisance seeds = the location's appearance
        return np.mean([np.asarray(_render(city, x, y, s)[0], float) for s in range(12)], axis=0)
    rng = np.random.default_rng(0)
    near, far = [], []
    for _ in range(4):
        x, y = rng.uniform(0, 3000, 2)
        f0 = feat(x, y)
        near.append(np.abs(f0 - feat(x + 15, y)).mean())
        far.append(np.abs(f0 - feat((x + 1500) % 3000, (y + 1100) % 3000)).mean())
    assert np.mean(near) < np.mean(far)


def test_caption_reflects_scene():
    city = SynthCity(0)
    along = CaptureConditions(across_p=0.0)
    caps = [_render(city, 50 * i, 0, i, highway=h, cond=along)[1]
            for i, h in enumerate(["primary"] * 5 + ["residential"] * 5)]
    assert all(c.startswith("a wide avenue lined with") for c in caps[:5])
    assert all(c.startswith("a quiet residential street lined with") for c in caps[5:])
    assert any("shop sign" in c for c in caps) and any(c.endswith("in daylight") for c in caps)
    assert any(s.facade in " ".join(caps) for s in STYLES)


def test_street_sign_hue_is_a_per_street_cue():
    city = SynthCity(0)
    assert city.street_hue("A St") == city.street_hue("A St")
    assert len({round(city.street_hue(f"S{i}"), 3) for i in range(20)}) > 15


def test_colour_names():
    assert colour_name(0.0, 0.5, 0.9) == "red"
    assert colour_name(0.6, 0.5, 0.9) == "blue"
    assert colour_name(0.3, 0.5, 0.05) == "grey"


def test_sample_points_along_addressable_ways_only():
    net = RoadNetwork("t", LocalProjection(60, 25), [
        Way(1, "Main St", "residential", LineString([(0, 0), (100, 0)])),
        Way(2, "", "residential", LineString([(0, 10), (100, 10)])),
        Way(3, "Alley", "service", LineString([(0, 20), (100, 20)]))])
    sp = sample_points(net, 10.0, seed=0)
    assert len(sp) == 10 and set(sp.street) == {"Main St"}
    assert np.allclose(sp.y, 0) and np.allclose(sp.dx, 1) and np.allclose(sp.dy, 0)
    sp2 = sample_points(net, 10.0, seed=0, unaddressable_spacing_m=25.0)
    assert len(sp2) == 10 + 2 * 4 and set(sp2.street) == {"Main St", "", "Alley"}
    with pytest.raises(ValueError, match="no addressable"):
        sample_points(RoadNetwork("e", LocalProjection(60, 25), [net.ways[2]]), 10.0)


def test_capture_conditions_change_the_view_not_the_place():
    city = SynthCity(0)
    across = CaptureConditions(across_p=1.0, time_of_day={"night": 1.0}, weather={"snow": 1.0})
    img, cap = _render(city, 100, 0, 1, cond=across)
    assert cap.startswith("looking across a quiet residential street at") and cap.endswith("at night in snow")
    day = CaptureConditions(across_p=0.0, time_of_day={"day": 1.0}, weather={"clear": 1.0})
    bright = np.asarray(_render(city, 100, 0, 1, cond=day)[0], float).mean()
    assert np.asarray(img, float).mean() < bright  # night is darker than day at the same place
    # queries come from a wider, shifted distribution than the database
    def share(cond, words):
        caps = [_render(city, 30 * i, 0, i, size=32, cond=cond)[1] for i in range(60)]
        return np.mean([any(w in c for w in words) for c in caps])
    hard = ("looking across", "at night", "in fog", "in snow")
    assert 0 < share(DATABASE, hard) < share(QUERY, hard)
    assert share(CaptureConditions(across_p=0, time_of_day={"day": 1}, weather={"clear": 1}), hard) == 0


def test_capture_conditions_validation_names_the_field():
    with pytest.raises(ValueError, match="time_of_day: unknown keys \\['noon'\\]"):
        CaptureConditions(time_of_day={"noon": 1.0})
    with pytest.raises(ValueError, match="weather"):
        CaptureConditions(weather={"rain": 0.0})
    with pytest.raises(ValueError, match="across_p"):
        CaptureConditions(across_p=1.5)
    from data_gen.build_config import RenderConfig

    with pytest.raises(ValueError, match="missing \\['test'\\]"):
        RenderConfig(conditions={"train": {}, "val": {}})


def test_landmarks_are_seen_at_their_bearing():
    city = SynthCity(0, bounds=(0, 0, 1000, 1000))
    lx, ly = city.landmarks[0, :2]
    near = city.landmarks_near(lx + 300.0, ly)
    assert len(near) >= 1 and any(np.allclose(r[:2], (lx, ly)) for r in near)
    assert len(city.landmarks_near(lx + 5000.0, ly + 5000.0)) == 0


@pytest.mark.slow
def test_render_pool_is_worker_count_independent(tmp_path):
    import pandas as pd

    from data_gen.build_config import RenderConfig
    from data_gen.synthcity.render_pool import render_to_files

    n = 24
    df = pd.DataFrame({"tx": np.linspace(0, 500, n), "ty": np.zeros(n), "dx": np.ones(n), "dy": np.zeros(n),
                       "street_true": ["A St"] * n, "highway": ["primary"] * n, "district": [""] * n})
    outs = []
    for w in (1, 2):
        d = tmp_path / f"w{w}"
        d.mkdir()
        rel, caps = render_to_files(RenderConfig(size=48, workers=w), (0, 0, 500, 500), df, d, chunk=5)
        outs.append(([np.asarray(Image.open(tmp_path / f"w{w}" / r.split("/")[1])) for r in rel], caps))
    assert outs[0][1] == outs[1][1] and len(outs[0][1]) == n
    assert all(np.array_equal(a, b) for a, b in zip(outs[0][0], outs[1][0]))
    # the split picks the capture conditions: test rows render differently from the same train rows
    d = tmp_path / "split"
    d.mkdir()
    rel, caps = render_to_files(RenderConfig(size=48), (0, 0, 500, 500), df.assign(split=["test"] * n), d, chunk=5)
    assert caps != outs[0][1]
    with pytest.raises(ValueError, match="no entry for split"):
        render_to_files(RenderConfig(size=48), (0, 0, 500, 500), df.assign(split=["dev"] * n), d)


def test_example_pairs_png(tmp_path):
    from _clip_fixtures import fixture_data
    from data_gen.synthcity.pairs import example_pairs

    data = fixture_data(tmp_path)
    rows = example_pairs(data, tmp_path / "pairs.png", n=3)
    assert len(rows) == 3 and all(m >= 0 for *_, m in rows)
    df = read_manifest(data)
    split = dict(zip(df.image, df.split))
    sub = dict(zip(df.image, df.sub_street))
    assert all(split[t] == "train" and split[q] == "test" and sub[t] == sub[q] for t, q, _ in rows)
    assert Image.open(tmp_path / "pairs.png").size == (2 * 48 + 4, 3 * (48 + 12) + 12)


def test_block_facade_key_is_the_same_for_both_way_directions_and_differs_by_side():
    city = SynthCity(seed=0, bounds=(0, 0, 500, 500), block_palette=1.0)
    east = city.view(100, 0, 1.0, 0.0, "A St", "residential", block="A St between B St and C St")
    west = city.view(140, 0, -1.0, 0.0, "A St", "residential", block="A St between B St and C St")
    north_side, south_side = (120, 9), (120, -9)
    assert east.facade_key(*north_side) == west.facade_key(*north_side)   # one block drawn both ways
    assert east.facade_key(*south_side) == west.facade_key(*south_side)
    assert east.facade_key(*north_side) != east.facade_key(*south_side)
    other = city.view(100, 0, 1.0, 0.0, "A St", "residential", block="A St between C St and D St")
    assert other.facade_key(*north_side) != east.facade_key(*north_side)
    # no block known (imported photos, plain views): a map cell stands in
    assert city.view(100, 0, 1.0, 0.0, "A St", "residential").facade_key(120, 9).startswith("cell|")


def test_block_palette_paints_a_whole_block_facade_and_only_when_asked():
    plain = SynthCity(seed=0, bounds=(0, 0, 500, 500))
    city = SynthCity(seed=0, bounds=(0, 0, 500, 500), block_palette=1.0)
    xs, ys = np.linspace(0, 400, 9), np.full(9, 20.0)
    keys = ["A St between B St and C St|1"] * 9
    b = city.buildings(xs, ys, "", keys)
    assert {(d["hue"], d["light"], d["accent"]) for d in b} == {(b[0]["hue"], b[0]["light"], b[0]["accent"])}
    assert all("accent" not in d for d in plain.buildings(xs, ys, "", keys))  # strength 0: v2 look
    # discrete schemes: 12 body hues x 3 lightness levels; many façades use many of them
    pals = [city.palette(f"S{i}|1") for i in range(300)]
    assert len({round(p["hue"] * 12) % 12 for p in pals}) == 12
    assert {p["light"] for p in pals} == {0.32, 0.5, 0.7}
    half = SynthCity(seed=0, bounds=(0, 0, 500, 500), block_palette=0.5)
    share = np.mean(["accent" in d for d in half.buildings(np.linspace(0, 2000, 200), np.zeros(200), "",
                                                           ["S|1"] * 200)])
    assert 0.3 < share < 0.7   # the strength is the share of a block's lots that wear its palette


def test_physical_blocks_come_from_the_true_street_not_the_label():
    import pandas as pd

    from data_gen.build_config import BuildConfig
    from data_gen.builder import _physical_blocks
    from llava_address.common.config import load_config

    ways = [Way(1, "A St", "residential", LineString([(0, 0), (300, 0)])),
            Way(2, "B St", "residential", LineString([(150, -150), (150, 150)]))]
    net = RoadNetwork("t", LocalProjection(60.0, 25.0), ways)
    cfg = load_config("configs/data/tiny.yaml", BuildConfig)
    df = pd.DataFrame({"tx": [40.0, 260.0, 150.0, 999.0], "ty": [0.0, 0.0, 80.0, 999.0],
                       "street_true": ["A St", "A St", "B St", ""]})
    blocks = _physical_blocks(cfg, net, df)
    assert blocks[0] != blocks[1] and blocks[0].startswith("A St") and blocks[1].startswith("A St")
    assert blocks[2].startswith("B St") and blocks[3] == ""
