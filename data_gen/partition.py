"""Sub-street addresses: each named street split at its crossings with other named streets.

Rules (deterministic, documented here once):
- A street's geometry is line-merged into parts; each part is cut wherever another
  addressable street touches or crosses it (crossings within 1 m are one crossing; if several
  streets meet there the alphabetically first names it).
- A piece bounded by two different crossings is "S between A and B" with A, B in
  alphabetical order (independent of the drawing direction of the OSM ways); a piece with one
  bounding crossing (street end) or bounded twice by the same street is "S near A"; a part
  with no crossing is "S".
- Pieces shorter than ``min_piece_m`` merge into their shorter neighbour (repeatedly, the
  shortest first); the merged piece spans the outer crossings.
- A disconnected part shorter than ``min_piece_m`` is dropped when the street has a part at
  least that long (clipped stubs at the map edge, slip-road fragments).
- Pieces with the same name lying within ``merge_parallel_m`` (Hausdorff) of a longer one
  are the other carriageway of a divided road: only the longer line is kept.
- Remaining duplicate names (a street crossing the same pair twice, disconnected parts) get " (2)",
  " (3)", ... in order of piece midpoint (x, then y), the first keeping the plain name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import LineString, MultiLineString, Point
from shapely.ops import linemerge, substring

from data_gen.road_network import RoadNetwork, _points_of

__all__ = ["SubStreet", "partition_streets", "assign_sub_streets"]

_SNAP_M = 1.0


@dataclass
class SubStreet:
    name: str
    street: str
    from_street: str | None
    to_street: str | None
    geometry: LineString  # metres, network projection
    district: str = ""

    @property
    def midpoint_xy(self) -> tuple[float, float]:
        p = self.geometry.interpolate(0.5, normalized=True)
        return float(p.x), float(p.y)

    @property
    def length_m(self) -> float:
        return float(self.geometry.length)


def _label(street: str, a: str | None, b: str | None) -> str:
    ends = sorted({e for e in (a, b) if e})
    if len(ends) == 2:
        return f"{street} between {ends[0]} and {ends[1]}"
    if len(ends) == 1:
        return f"{street} near {ends[0]}"
    return street


def _crossings(part: LineString, street: str, names: list[str], geoms: list, tree: shapely.STRtree) -> list[tuple[float, str]]:
    """(position along part, crossing street) sorted, clustered within _SNAP_M."""
    hits: list[tuple[float, str]] = []
    for j in tree.query(part, predicate="intersects"):
        other = names[j]
        if other == street:
            continue
        for p in _points_of(part.intersection(geoms[j])):
            hits.append((float(part.project(p)), other))
    hits.sort()
    out: list[tuple[float, str]] = []
    for s, other in hits:
        if out and s - out[-1][0] <= _SNAP_M:
            if other < out[-1][1]:
                out[-1] = (out[-1][0], other)
            continue
        out.append((s, other))
    return out


def _split_part(part: LineString, crossings: list[tuple[float, str]], min_piece_m: float):
    """List of [start, end, from_name, to_name] along the part, short pieces merged."""
    length = part.length
    cuts = [(0.0, None)] + [(s, n) for s, n in crossings if _SNAP_M < s < length - _SNAP_M] + [(length, None)]
    for s, n in crossings:  # crossings at the very ends name the end bounds
        if s <= _SNAP_M:
            cuts[0] = (0.0, n)
        elif s >= length - _SNAP_M:
            cuts[-1] = (length, n)
    pieces = [[cuts[i][0], cuts[i + 1][0], cuts[i][1], cuts[i + 1][1]] for i in range(len(cuts) - 1)]
    while len(pieces) > 1:
        lens = [p[1] - p[0] for p in pieces]
        i = int(np.argmin(lens))
        if lens[i] >= min_piece_m:
            break
        if i == 0:
            j = 1
        elif i == len(pieces) - 1:
            j = i - 1
        else:
            j = i - 1 if lens[i - 1] <= lens[i + 1] else i + 1
        lo, hi = min(i, j), max(i, j)
        pieces[lo:hi + 1] = [[pieces[lo][0], pieces[hi][1], pieces[lo][2], pieces[hi][3]]]
    return pieces


def _collapse_parallel(group: list[SubStreet], within_m: float) -> list[SubStreet]:
    """Same-named pieces within ``within_m`` (Hausdorff) of a longer one are dropped: the
    two carriageways of a divided road are one address; points on the dropped one are
    assigned to the kept line by `assign_sub_streets` (nearest piece of the street)."""
    kept: list[SubStreet] = []
    for p in sorted(group, key=lambda q: (-q.length_m, q.midpoint_xy)):
        if not any(p.geometry.hausdorff_distance(k.geometry) <= within_m for k in kept):
            kept.append(p)
    return kept


def partition_streets(network: RoadNetwork, min_piece_m: float = 40.0,
                      merge_parallel_m: float = 40.0) -> list[SubStreet]:
    """All sub-street pieces of the network's addressable streets, sorted by name.
    ``merge_parallel_m=0`` keeps both carriageways of divided roads as " (2)" pieces."""
    names = list(network.streets)
    geoms = [network.streets[n] for n in names]
    tree = shapely.STRtree(geoms)
    out: list[SubStreet] = []
    for street, geom in zip(names, geoms):
        merged = linemerge(geom) if isinstance(geom, MultiLineString) else geom
        parts = list(merged.geoms) if hasattr(merged, "geoms") else [merged]
        longest = max(p.length for p in parts)
        for part in parts:
            if part.length <= 0 or (part.length < min_piece_m <= longest):
                continue  # stray fragment of a street that has a real stretch elsewhere
            for s0, s1, a, b in _split_part(part, _crossings(part, street, names, geoms, tree), min_piece_m):
                piece = substring(part, s0, s1)
                if not isinstance(piece, LineString) or piece.length == 0:
                    continue
                mid = piece.interpolate(0.5, normalized=True)
                out.append(SubStreet(_label(street, a, b), street, a, b, piece, network.district_at(mid.x, mid.y)))
    by_name: dict[str, list[SubStreet]] = {}
    for p in out:
        by_name.setdefault(p.name, []).append(p)
    out = []
    for base, group in by_name.items():
        group = _collapse_parallel(group, merge_parallel_m)
        out.extend(group)
        if len(group) > 1:
            group.sort(key=lambda p: (round(p.midpoint_xy[0], 3), round(p.midpoint_xy[1], 3)))
            for i, p in enumerate(group[1:], start=2):
                p.name = f"{base} ({i})"
    return sorted(out, key=lambda p: p.name)


def assign_sub_streets(pieces: list[SubStreet], street: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per point: the name of the nearest piece *of its own street* ("" where street is "").

    Vectorised per street (shapely distance matrix points x pieces). Unknown street names
    raise ValueError listing a few of them.
    """
    street = np.asarray(street, dtype=object)
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    out = np.full(len(street), "", dtype=object)
    by_street: dict[str, list[SubStreet]] = {}
    for p in pieces:
        by_street.setdefault(p.street, []).append(p)
    wanted = set(street[street != ""].tolist())
    unknown = sorted(wanted - set(by_street))
    if unknown:
        raise ValueError(f"{len(unknown)} street names have no sub-street pieces, e.g. {unknown[:5]}")
    for s in sorted(wanted):
        rows = np.flatnonzero(street == s)
        group = by_street[s]
        geoms = np.array([p.geometry for p in group], dtype=object)
        names = np.array([p.name for p in group], dtype=object)
        pts = shapely.points(x[rows], y[rows])
        for c in range(0, len(rows), 20000):
            d = shapely.distance(pts[c:c + 20000, None], geoms[None, :])
            out[rows[c:c + 20000]] = names[np.argmin(d, axis=1)]
    return out
