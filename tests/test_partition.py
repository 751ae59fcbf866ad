"""partition: naming, merging of short pieces, duplicates, districts, assignment."""

import numpy as np
import pytest
from shapely.geometry import LineString, box

from data_gen.partition import assign_sub_streets, partition_streets
from data_gen.procedural_city import make_procedural_city
from data_gen.road_network import LocalProjection, RoadNetwork, Way


@pytest.fixture(scope="module")
def grid():
    ways = [
        Way(1, "Main St", "residential", LineString([(0, 0), (150, 0)])),
        Way(2, "Main St", "residential", LineString([(150, 0), (300, 0)])),  # two ways, one street
        Way(3, "1st Ave", "tertiary", LineString([(100, -100), (100, 100)])),
        Way(4, "2nd Ave", "tertiary", LineString([(200, 100), (200, -100)])),
        Way(5, "Short Rd", "residential", LineString([(120, 0), (120, -60)])),  # T at Main, 20 m from 1st
        Way(6, "Lonely Ln", "residential", LineString([(0, 500), (100, 500)])),
        Way(7, "", "service", LineString([(150, 0), (150, 50)])),  # unnamed: not a crossing
    ]
    districts = {"West": box(-50, -150, 150, 550), "East": box(150, -150, 350, 550)}
    return RoadNetwork("grid", LocalProjection(40.0, -74.0), ways, districts)


def test_names_merging_and_districts(grid):
    pieces = partition_streets(grid, min_piece_m=40.0)
    main = {p.name: p for p in pieces if p.street == "Main St"}
    assert sorted(main) == ["Main St between 1st Ave and 2nd Ave", "Main St near 1st Ave", "Main St near 2nd Ave"]
    mid = main["Main St between 1st Ave and 2nd Ave"]  # the 20 m stub to Short Rd merged into it
    assert mid.length_m == pytest.approx(100.0) and mid.midpoint_xy == pytest.approx((150.0, 0.0))
    assert {mid.from_street, mid.to_street} == {"1st Ave", "2nd Ave"}
    assert main["Main St near 1st Ave"].district == "West" and main["Main St near 2nd Ave"].district == "East"
    first = sorted(p.name for p in pieces if p.street == "1st Ave")
    assert first == ["1st Ave near Main St", "1st Ave near Main St (2)"]
    by_name = {p.name: p for p in pieces}
    assert by_name["1st Ave near Main St"].midpoint_xy[1] < 0  # lower midpoint keeps the plain name
    assert [p.name for p in pieces if p.street == "Short Rd"] == ["Short Rd near Main St"]
    assert [p.name for p in pieces if p.street == "Lonely Ln"] == ["Lonely Ln"]
    assert len({p.name for p in pieces}) == len(pieces)


def test_no_merge_when_min_piece_small(grid):
    names = {p.name for p in partition_streets(grid, min_piece_m=5.0) if p.street == "Main St"}
    assert {"Main St between 1st Ave and Short Rd", "Main St between 2nd Ave and Short Rd"} <= names


def test_assign_sub_streets(grid):
    pieces = partition_streets(grid)
    street = np.array(["Main St", "Main St", "1st Ave", "1st Ave", "", "Lonely Ln"], dtype=object)
    x = np.array([50.0, 160.0, 103.0, 97.0, 0.0, 20.0])
    y = np.array([5.0, -3.0, -30.0, 40.0, 0.0, 480.0])
    out = assign_sub_streets(pieces, street, x, y)
    assert list(out) == ["Main St near 1st Ave", "Main St between 1st Ave and 2nd Ave", "1st Ave near Main St",
                         "1st Ave near Main St (2)", "", "Lonely Ln"]
    with pytest.raises(ValueError, match="Nowhere Rd"):
        assign_sub_streets(pieces, np.array(["Nowhere Rd"], dtype=object), np.zeros(1), np.zeros(1))


def test_procedural_city_partition_is_complete_and_unique():
    net = make_procedural_city(0, size_m=900, block_m=100)
    pieces = partition_streets(net, min_piece_m=40.0)
    assert len({p.name for p in pieces}) == len(pieces) > 2 * len(net.streets)
    for street, geom in net.streets.items():
        total = sum(p.length_m for p in pieces if p.street == street)
        assert total == pytest.approx(geom.length, rel=1e-6)
    assert min(p.length_m for p in pieces) >= 40.0
    assert all(p.district for p in pieces)


def test_divided_road_carriageways_collapse():
    ways = [
        Way(1, "Dual Rd", "primary", LineString([(0, 0), (300, 0)])),
        Way(2, "Dual Rd", "primary", LineString([(300, 12), (0, 12)])),  # other carriageway, reversed
        Way(3, "Cross St", "residential", LineString([(100, -50), (100, 60)])),
    ]
    net = RoadNetwork("dual", LocalProjection(40.0, -74.0), ways)
    pieces = [p for p in partition_streets(net) if p.street == "Dual Rd"]
    assert sorted(p.name for p in pieces) == ["Dual Rd near Cross St", "Dual Rd near Cross St (2)"]
    assert sorted(round(p.length_m) for p in pieces) == [100, 200]
    kept = {round(p.length_m): p.name for p in pieces}
    out = assign_sub_streets(pieces, np.array(["Dual Rd"] * 2, dtype=object), np.array([250.0, 30.0]),
                             np.array([13.0, -1.0]))
    assert list(out) == [kept[200], kept[100]]
    both = [p for p in partition_streets(net, merge_parallel_m=0) if p.street == "Dual Rd"]
    assert len(both) == 4 and len({p.name for p in both}) == 4
