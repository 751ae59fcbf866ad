"""Read a real OpenStreetMap extract (`.osm` XML or `.osm.pbf`) into a `RoadNetwork`.

Why pyosmium (`osmium.FileProcessor`): one streaming C++ pass with an in-memory node
location index reads central Helsinki (2.6k highway ways) in ~0.2 s, handles both XML and
PBF, and reports unresolvable node references as invalid locations instead of failing, which
is exactly what clipped extracts need. pyrosm/osmnx build full GeoDataFrames/graphs first
(seconds) and osmnx cannot read PBF at all.

Statistics about what was trimmed or dropped end up in ``network.meta`` (see `read_osm`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import osmium
import shapely
from shapely import wkb
from shapely.geometry import LineString, MultiPoint, Polygon

from data_gen.road_network import LocalProjection, RoadNetwork, Way

__all__ = ["read_osm", "DISTRICT_PLACES"]

log = logging.getLogger(__name__)

DISTRICT_PLACES = frozenset({"suburb", "neighbourhood", "quarter"})
_ADMIN_LEVELS = ("10", "9")  # preferred first; city-block levels (11) are too fine
_HULL_PAD_M = 50.0  # Voronoi districts are clipped to the street hull grown by this much


def _longest_valid_run(nodes) -> list[tuple[float, float]]:
    """Longest run of consecutive nodes whose location is known (clipped extracts)."""
    best: list[tuple[float, float]] = []
    run: list[tuple[float, float]] = []
    for n in nodes:
        loc = n.location
        if loc.valid():
            run.append((loc.lon, loc.lat))
            continue
        if len(run) > len(best):
            best = run
        run = []
    return run if len(run) > len(best) else best


def _district_priority(tags) -> int | None:
    """Lower is better; None = not a district area."""
    if tags.get("boundary") == "administrative" and tags.get("admin_level") in _ADMIN_LEVELS:
        return _ADMIN_LEVELS.index(tags.get("admin_level")) * 2
    if tags.get("place") in DISTRICT_PLACES:
        return 1
    return None


def _scan(path: Path):
    """One streaming pass: highway ways (lon/lat runs), district areas, place nodes."""
    ways, place_nodes, areas = [], [], []
    stats = {"highway_ways": 0, "trimmed_ways": 0, "dropped_ways": 0, "area_ways_skipped": 0}
    wkb_fab = osmium.geom.WKBFactory()
    area_filter = osmium.filter.TagFilter(("boundary", "administrative"), *[("place", p) for p in sorted(DISTRICT_PLACES)])
    fp = osmium.FileProcessor(str(path)).with_locations().with_areas(area_filter)
    for obj in fp:
        if obj.is_node():
            if obj.tags.get("place") in DISTRICT_PLACES and obj.tags.get("name"):
                places = (obj.tags["name"], obj.location.lon, obj.location.lat)
                place_nodes.append(places)
        elif obj.is_way():
            hw = obj.tags.get("highway")
            if hw is None:
                continue
            if obj.tags.get("area") == "yes":  # pedestrian squares etc.: outlines, not streets
                stats["area_ways_skipped"] += 1
                continue
            stats["highway_ways"] += 1
            run = _longest_valid_run(obj.nodes)
            if len(run) < 2:
                stats["dropped_ways"] += 1
                continue
            if len(run) < len(obj.nodes):
                stats["trimmed_ways"] += 1
            ways.append((obj.id, obj.tags.get("name", ""), hw, run))
        elif obj.is_area():
            prio = _district_priority(obj.tags)
            if prio is None or not obj.tags.get("name"):
                continue
            try:
                geom = wkb.loads(wkb_fab.create_multipolygon(obj), hex=True)
            except RuntimeError:  # broken ring geometry: skip, counted
                stats["broken_areas"] = stats.get("broken_areas", 0) + 1
                continue
            areas.append((prio, obj.tags["name"], geom))
    return ways, place_nodes, areas, stats


def read_osm(path: str | Path, name: str | None = None) -> RoadNetwork:
    """Read every highway way (named or not) and districts from an OSM extract.

    - Ways referencing nodes missing from the extract keep their longest run of resolvable
      nodes (>= 2 points); shorter ones are dropped. Highways tagged area=yes (outlines of
      squares) are skipped. ``network.meta`` counts ``highway_ways``, ``trimmed_ways``,
      ``dropped_ways``, ``area_ways_skipped`` and names ``district_source``.
    - Districts: named polygons (boundary=administrative admin_level 10, else 9, or
      place=suburb/neighbourhood/quarter areas) when the extract holds complete ones;
      otherwise Voronoi cells of named place=suburb/neighbourhood/quarter nodes, clipped
      to the street hull (clipped extracts such as pyrosm's Helsinki only hold the nodes).
    - Projection origin: centre of the highway data bounds.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"OSM file not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"OSM file is empty: {path}")
    try:
        ways, place_nodes, areas, stats = _scan(path)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"cannot read OSM file {path}: {exc}") from None
    if not ways:
        raise ValueError(f"OSM file {path} contains no usable highway ways "
                         f"({stats['highway_ways']} highway ways, {stats['dropped_ways']} dropped)")
    all_ll = np.concatenate([np.asarray(r) for *_, r in ways])
    lon0 = float((all_ll[:, 0].min() + all_ll[:, 0].max()) / 2)
    lat0 = float((all_ll[:, 1].min() + all_ll[:, 1].max()) / 2)
    proj = LocalProjection(lat0, lon0)
    xy = np.column_stack(proj.to_xy(all_ll[:, 1], all_ll[:, 0]))  # one vectorised pyproj call
    ends = np.cumsum([len(r) for *_, r in ways])[:-1]
    out_ways = [Way(int(way_id), str(wname), str(hw), LineString(coords))
                for (way_id, wname, hw, _), coords in zip(ways, np.split(xy, ends))]
    hull = shapely.convex_hull(MultiPoint(xy)).buffer(_HULL_PAD_M)
    districts, source = _districts(proj, hull, place_nodes, areas)
    stats.update(district_source=source, source_file=str(path))
    net = RoadNetwork(name or path.name.split(".")[0], proj, out_ways, districts)
    net.meta.update(stats)
    log.info("read %s: %d ways (%d trimmed, %d dropped), %d districts (%s)", path, len(out_ways),
             stats["trimmed_ways"], stats["dropped_ways"], len(districts), source)
    return net


def _districts(proj: LocalProjection, hull: Polygon, place_nodes, areas) -> tuple[dict[str, Polygon], str]:
    if areas:
        best = min(p for p, *_ in areas)
        out: dict[str, Polygon] = {}
        for prio, dname, geom in sorted(areas, key=lambda a: a[1]):
            if prio != best:
                continue
            xy = shapely.transform(geom, lambda c: np.column_stack(proj.to_xy(c[:, 1], c[:, 0])))
            clipped = xy.intersection(hull)
            if not clipped.is_empty:
                out[dname] = clipped if dname not in out else out[dname].union(clipped)
        if out:
            return out, "areas"
    if not place_nodes:
        return {}, "none"
    uniq: dict[str, tuple[float, float]] = {}
    for dname, lon, lat in place_nodes:
        uniq.setdefault(dname, (lon, lat))  # first node per name wins (deterministic file order)
    names = sorted(uniq)
    ll = np.array([uniq[n] for n in names])
    x, y = proj.to_xy(ll[:, 1], ll[:, 0])
    if len(names) == 1:
        return {names[0]: hull}, "place_nodes"
    cells = shapely.voronoi_polygons(MultiPoint(np.column_stack([x, y])), extend_to=hull)
    out = {}
    for cell in cells.geoms:
        for i, n in enumerate(names):
            if cell.contains(shapely.Point(x[i], y[i])):
                piece = cell.intersection(hull)
                if not piece.is_empty:
                    out[n] = piece
                break
    return out, "place_nodes"
