"""OfflineGeocoder: exact vs brute force (grid and KD paths), distinct names, limits, osmnx."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import shapely

from data_gen.geocoder import GeocodeResult, OfflineGeocoder, ReverseGeocoder
from data_gen.osm_reader import read_osm
from data_gen.procedural_city import make_procedural_city

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def city():
    return make_procedural_city(5, size_m=700, block_m=100, n_alleys=8)


def brute_force(net, x, y, k, max_d):
    """k nearest distinct names by shapely distance to every way ('' ways each distinct)."""
    geoms = np.array([w.geometry for w in net.ways], dtype=object)
    d = shapely.distance(shapely.points(x, y)[:, None], geoms[None, :])
    out_n, out_d = [], []
    for row in d:
        seen, names, dists = set(), [], []
        for j in np.argsort(row, kind="stable"):
            if row[j] > max_d:
                break
            key = net.ways[j].name or ("#", j)
            if key in seen:
                continue
            seen.add(key)
            names.append(net.ways[j].name)
            dists.append(row[j])
            if len(names) == k:
                break
        out_n.append(names + [""] * (k - len(names)))
        out_d.append(dists + [np.inf] * (k - len(dists)))
    return np.array(out_n, dtype=object), np.array(out_d)


@pytest.mark.parametrize("k", [1, 4])
def test_exact_against_brute_force(city, k):
    geo = OfflineGeocoder(city, max_distance_m=60.0)
    rng = np.random.default_rng(k)
    x0, y0, x1, y1 = city.bounds
    # inside the map, plus points beyond the grid margin (the KD fallback path)
    x = np.concatenate([rng.uniform(x0, x1, 400), rng.uniform(x1 + 70, x1 + 120, 20)])
    y = np.concatenate([rng.uniform(y0, y1, 400), rng.uniform(y0, y1, 20)])
    lat, lon = city.projection.to_latlon(x, y)
    res = geo.reverse(lat, lon, k=k)
    assert res.names.shape == res.distances_m.shape == res.highways.shape == (420, k)
    xb, yb = city.projection.to_xy(lat, lon)
    names, dists = brute_force(city, xb, yb, k, 60.0)
    np.testing.assert_allclose(res.distances_m, dists, atol=1e-6)
    # names agree except where two candidates tie in distance
    tie = np.zeros_like(dists, dtype=bool)
    tie[:, :-1] |= np.isclose(dists[:, :-1], dists[:, 1:], atol=1e-6)
    tie[:, 1:] |= tie[:, :-1]
    assert np.all((res.names == names) | tie)
    for row, drow in zip(res.names, res.distances_m):  # named candidates are distinct
        named = [n for n, d in zip(row, drow) if n and np.isfinite(d)]
        assert len(named) == len(set(named))
    with np.errstate(invalid="ignore"):
        steps = np.diff(res.distances_m, axis=1)
    assert np.all(steps[np.isfinite(res.distances_m[:, 1:])] >= 0)


def test_unnamed_ways_are_separate_candidates_and_max_distance():
    net = read_osm(ROOT / "tests" / "data" / "tiny.osm")
    geo = OfflineGeocoder(net, max_distance_m=50.0)
    assert isinstance(geo, ReverseGeocoder)
    res = geo.reverse([60.00050, 60.1], [25.00325, 25.0], k=3)  # on the service alley; far away
    assert res.names[0, 0] == "" and res.highways[0, 0] == "service" and res.distances_m[0, 0] < 1.0
    assert list(res.names[1]) == ["", "", ""] and np.all(np.isinf(res.distances_m[1]))
    assert isinstance(res, GeocodeResult) and res.names.dtype == object


def test_out_of_range_and_shape_errors(city):
    geo = OfflineGeocoder(city)
    with pytest.raises(ValueError, match="out-of-range"):
        geo.reverse([37.7, 95.0], [-122.4, -122.4])
    with pytest.raises(ValueError, match="out-of-range"):
        geo.reverse([np.nan], [0.0])
    with pytest.raises(ValueError, match="differ in length"):
        geo.reverse([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="k must be"):
        geo.reverse([37.76], [-122.42], k=0)


def test_agrees_with_osmnx_nearest_edges(city):
    ox = pytest.importorskip("osmnx")
    spec = importlib.util.spec_from_file_location("bench_geocode", ROOT / "benchmarks" / "geocode.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    graph = bench.network_to_osmnx(city)
    rng = np.random.default_rng(0)
    x0, y0, x1, y1 = city.bounds
    x, y = rng.uniform(x0, x1, 2000), rng.uniform(y0, y1, 2000)
    edges, d_ox = ox.distance.nearest_edges(graph, x, y, return_dist=True)
    ox_names = np.array([graph.edges[e]["name"] for e in edges], dtype=object)
    res = OfflineGeocoder(city, max_distance_m=1e6).reverse_xy(x, y, k=1)
    np.testing.assert_allclose(res.distances_m[:, 0], d_ox, atol=1e-6)
    differ = res.names[:, 0] != ox_names
    assert np.all(np.abs(res.distances_m[differ, 0] - d_ox[differ]) < 0.01)  # only ties
