"""One `RoadNetwork` type for every map source (real OSM extract or procedural city).

All geometry is held in metres in a local azimuthal-equidistant projection centred on the
map (pyproj), because every operation downstream (distances, buffers, arc length,
intersections) wants metric units; lat/lon only appear at the boundaries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterable

import numpy as np
import pyproj
import shapely
from shapely.geometry import LineString, MultiLineString, Point, Polygon, mapping, shape
from shapely.ops import unary_union
from shapely.strtree import STRtree

from llava_address.common.io import atomic_write_text

__all__ = ["LocalProjection", "Way", "Intersection", "RoadNetwork", "EXCLUDED_HIGHWAYS"]

# Road classes that never give an address: service alleys, footways, tracks, ramps.
EXCLUDED_HIGHWAYS = frozenset({
    "service", "footway", "path", "cycleway", "steps", "track", "bridleway", "corridor",
    "pedestrian_area", "platform", "proposed", "construction", "motorway_link", "trunk_link",
    "elevator", "bus_guideway", "raceway", "escape", "via_ferrata",
})


class LocalProjection:
    """lat/lon <-> local metres (azimuthal equidistant around an origin)."""

    def __init__(self, lat0: float, lon0: float):
        if not (-90 <= lat0 <= 90 and -180 <= lon0 <= 180):
            raise ValueError(f"projection origin out of range: lat={lat0}, lon={lon0}")
        self.lat0, self.lon0 = float(lat0), float(lon0)
        crs = pyproj.CRS.from_proj4(f"+proj=aeqd +lat_0={lat0} +lon_0={lon0} +datum=WGS84 +units=m")
        self._fwd = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        self._inv = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)

    def to_xy(self, lat, lon):
        """Vectorised: arrays of lat, lon -> arrays x, y (metres)."""
        x, y = self._fwd.transform(np.asarray(lon, dtype=float), np.asarray(lat, dtype=float))
        return np.asarray(x), np.asarray(y)

    def to_latlon(self, x, y):
        lon, lat = self._inv.transform(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
        return np.asarray(lat), np.asarray(lon)


@dataclass
class Way:
    """One OSM-like way: a polyline in metres with its name ('' if unnamed) and highway class."""

    way_id: int
    name: str
    highway: str
    geometry: LineString

    @property
    def addressable(self) -> bool:
        return bool(self.name) and self.highway not in EXCLUDED_HIGHWAYS


@dataclass(frozen=True)
class Intersection:
    """A point where two or more *differently named* addressable streets meet."""

    x: float
    y: float
    streets: frozenset[str]


@dataclass
class RoadNetwork:
    """Named streets as polylines, intersections as nodes, optional districts.

    ``ways`` keeps unnamed and service roads too: the geocoder must see them so that the
    cleaning step can filter them (a photo on an alley should not silently snap elsewhere).
    """

    name: str
    projection: LocalProjection
    ways: list[Way]
    districts: dict[str, Polygon] = field(default_factory=dict)
    # Free-form provenance/statistics (e.g. osm_reader's trimmed/dropped way counts).
    meta: dict = field(default_factory=dict)

    # ---- derived views -------------------------------------------------------------
    @cached_property
    def streets(self) -> dict[str, MultiLineString]:
        """Addressable street name -> merged geometry (all its ways)."""
        groups: dict[str, list[LineString]] = {}
        for w in self.ways:
            if w.addressable:
                groups.setdefault(w.name, []).append(w.geometry)
        out = {}
        for name, lines in sorted(groups.items()):
            merged = unary_union(lines)
            if isinstance(merged, LineString):
                merged = MultiLineString([merged])
            elif not isinstance(merged, MultiLineString):
                merged = MultiLineString([g for g in getattr(merged, "geoms", []) if isinstance(g, LineString)])
            out[name] = merged
        return out

    @cached_property
    def intersections(self) -> list[Intersection]:
        """Points where differently named addressable streets touch or cross (snapped to 1 m)."""
        names = list(self.streets)
        geoms = [self.streets[n] for n in names]
        tree = STRtree(geoms)
        found: dict[tuple[int, int], set[str]] = {}
        for i, g in enumerate(geoms):
            for j in tree.query(g, predicate="intersects"):
                if j <= i:
                    continue
                inter = g.intersection(geoms[j])
                for p in _points_of(inter):
                    key = (int(round(p.x)), int(round(p.y)))
                    found.setdefault(key, set()).update({names[i], names[j]})
        return [Intersection(float(k[0]), float(k[1]), frozenset(v)) for k, v in sorted(found.items())]

    def district_at(self, x: float, y: float) -> str:
        """District containing the metric point, '' when the map has none there."""
        p = Point(x, y)
        for name, poly in self.districts.items():
            if poly.contains(p):
                return name
        return ""

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) in metres over all ways."""
        b = np.array([w.geometry.bounds for w in self.ways])
        if len(b) == 0:
            raise ValueError(f"road network {self.name!r} has no ways")
        return float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max())

    def summary(self) -> dict:
        return {"name": self.name, "ways": len(self.ways), "named_streets": len(self.streets),
                "intersections": len(self.intersections), "districts": len(self.districts),
                "total_length_km": round(sum(g.length for g in self.streets.values()) / 1000, 2)}

    # ---- persistence -------------------------------------------------------------
    def to_geojson(self) -> dict:
        """GeoJSON FeatureCollection in lon/lat (ways + districts); origin kept in properties."""
        feats = []
        for w in self.ways:
            feats.append({"type": "Feature", "geometry": mapping(_to_lonlat(self.projection, w.geometry)),
                          "properties": {"kind": "way", "way_id": w.way_id, "name": w.name, "highway": w.highway}})
        for dname, poly in self.districts.items():
            feats.append({"type": "Feature", "geometry": mapping(_to_lonlat(self.projection, poly)),
                          "properties": {"kind": "district", "name": dname}})
        return {"type": "FeatureCollection", "features": feats,
                "properties": {"name": self.name, "lat0": self.projection.lat0, "lon0": self.projection.lon0,
                               "meta": self.meta}}

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_geojson()))

    @classmethod
    def from_geojson(cls, data: dict) -> "RoadNetwork":
        props = data.get("properties", {})
        proj = LocalProjection(props["lat0"], props["lon0"])
        ways, districts = [], {}
        for f in data["features"]:
            p = f["properties"]
            geom = _to_xy(proj, shape(f["geometry"]))
            if p.get("kind") == "way":
                ways.append(Way(int(p["way_id"]), p.get("name", ""), p.get("highway", ""), geom))
            elif p.get("kind") == "district":
                districts[p["name"]] = geom
        return cls(props.get("name", "network"), proj, ways, districts, dict(props.get("meta", {})))

    @classmethod
    def load(cls, path: str | Path) -> "RoadNetwork":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"road network file not found: {path}")
        return cls.from_geojson(json.loads(path.read_text()))


def _points_of(geom) -> Iterable[Point]:
    if geom.is_empty:
        return []
    if isinstance(geom, Point):
        return [geom]
    if hasattr(geom, "geoms"):
        pts = []
        for g in geom.geoms:
            pts.extend(_points_of(g))
        return pts
    if isinstance(geom, LineString):  # overlapping collinear pieces: take the ends
        return [Point(geom.coords[0]), Point(geom.coords[-1])]
    return []


def _transform(geom, fn):
    """Apply a vectorised (x, y) -> (x', y') to every coordinate (2-D)."""
    return shapely.transform(geom, lambda c: np.column_stack(fn(c[:, 0], c[:, 1])))


def _to_lonlat(proj: LocalProjection, geom):
    def f(x, y):
        lat, lon = proj.to_latlon(x, y)
        return lon, lat
    return _transform(geom, f)


def _to_xy(proj: LocalProjection, geom):
    def f(lon, lat):
        return proj.to_xy(lat, lon)
    return _transform(geom, f)
