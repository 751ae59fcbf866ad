"""SynthCity renderer: reproducible, street-like, smooth in space, captions match the drawing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from shapely.geometry import LineString

from data_gen.road_network import LocalProjection, RoadNetwork, Way
from data_gen.synthcity import STYLES, SmoothField, SynthCity, colour_name, render_view
from data_gen.synthcity.sampling import sample_points


def _render(city, x, y, seed, size=64, street="Main St", highway="residential", district=""):
    return render_view(city.view(x, y, 1.0, 0.0, street, highway, district), np.random.default_rng(seed), size)


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
    assert cap.startswith("a quiet residential street lined with")


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
    caps = [_render(city, 50 * i, 0, i, highway=h)[1] for i, h in enumerate(["primary"] * 5 + ["residential"] * 5)]
    assert all(c.startswith("a wide avenue") for c in caps[:5])
    assert all(c.startswith("a quiet residential street") for c in caps[5:])
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
