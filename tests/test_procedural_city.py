"""procedural_city: reproducible, realistic names, districts, unnamed alleys, real lat/lon."""

import re

import numpy as np
import pytest

from data_gen.procedural_city import make_procedural_city
from data_gen.road_network import RoadNetwork

NAME = re.compile(r"^(\d+(st|nd|rd|th) Ave|[A-Z][a-z]+ (St|Rd|Ln|Way|Dr|Pl|Blvd))$")


def test_same_seed_same_network_other_seed_differs():
    a, b, c = make_procedural_city(3), make_procedural_city(3), make_procedural_city(4)
    assert a.to_geojson() == b.to_geojson()
    assert a.to_geojson() != c.to_geojson()


def test_names_highways_alleys_and_intersections():
    net = make_procedural_city(0, size_m=1200, block_m=100, n_alleys=5)
    names = set(net.streets)
    assert all(NAME.match(n) for n in names), sorted(names)
    assert {"1st Ave", "2nd Ave", "3rd Ave", "11th Ave"} <= names
    assert any(n.endswith("Blvd") for n in names)
    alleys = [w for w in net.ways if not w.name]
    assert len(alleys) == 5 and all(w.highway == "service" and not w.addressable for w in alleys)
    n_grid = 13  # 1200 / 100 + 1 streets each way
    assert len(net.intersections) >= n_grid * n_grid
    curved = [w for w in net.ways if w.name and len(w.geometry.coords) > 2]
    assert curved  # some gentle curves


def test_districts_cover_the_map_and_are_disjoint():
    net = make_procedural_city(1, n_districts=4)
    assert len(net.districts) == 4
    polys = list(net.districts.values())
    for i in range(4):
        for j in range(i + 1, 4):
            assert polys[i].intersection(polys[j]).area < 1e-6
    mids = [w.geometry.interpolate(0.5, normalized=True) for w in net.ways]
    assert all(net.district_at(p.x, p.y) for p in mids)


def test_real_latlon_and_geojson_round_trip(tmp_path):
    net = make_procedural_city(2, size_m=600, lat0=48.85, lon0=2.35)
    lat, lon = net.projection.to_latlon(*np.array(net.ways[0].geometry.coords).T)
    assert np.all(np.abs(lat - 48.85) < 0.01) and np.all(np.abs(lon - 2.35) < 0.01)
    net.save(tmp_path / "city.geojson")
    back = RoadNetwork.load(tmp_path / "city.geojson")
    assert back.summary() == net.summary() and back.meta["seed"] == 2


def test_bad_parameters():
    with pytest.raises(ValueError, match="block"):
        make_procedural_city(size_m=100, block_m=120)
    with pytest.raises(ValueError, match="n_districts"):
        make_procedural_city(n_districts=0)
