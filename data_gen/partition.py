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
- Natural, unique names (never a numeric suffix): pieces that would still share a name are told
  apart the way a person would, trying in order and taking the first rule that makes every
  name of the group unique and unused elsewhere:
  1. the district/neighbourhood: "S near A in Kamppi" (when all pieces lie in different districts);
  2. the side of the named cross street, for "S near A" pieces: "S north of A" / "S east of A"
     (compass direction from the nearest point of A to the piece midpoint; a loop that meets A
     at both ends is one piece and keeps one name);
  3. the direction along the street from the group's centre: "S between A and B, north end"
     (4, then 8 compass points);
  4. the nearest other named street to the piece midpoint: "S near A at C".
  If no rule alone makes the group unique, the first rule that splits it is applied and the
  rules run again inside each part ("S west of A, north end" for the two carriageways of a
  divided road kept with ``merge_parallel_m=0``).
- Sub-streets with fewer than ``min_images`` located images (the paper merges pieces with
  fewer than 5) merge into their touching neighbour of the same street with the fewest images
  (`merge_sparse_pieces`); the merged piece spans the outer crossings and is renamed by the
  rules above. Pieces with no touching neighbour stay as they are (counted).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import shapely
from shapely.geometry import LineString, MultiLineString, Point
import shapely.ops
from shapely.ops import linemerge, substring

from data_gen.road_network import RoadNetwork, _points_of

__all__ = ["SubStreet", "partition_streets", "name_pieces", "merge_sparse_pieces", "assign_sub_streets"]

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


_COMPASS8 = ("east", "north-east", "north", "north-west", "west", "south-west", "south", "south-east")


def _compass(dx: float, dy: float, points: int = 4) -> str:
    """Compass word of a map vector (x east, y north) with 4 or 8 points."""
    ang = np.degrees(np.arctan2(dy, dx)) % 360.0
    step = 360.0 / points
    return _COMPASS8[(int(((ang + step / 2) % 360.0) // step) * (8 // points)) % 8]


def _nearest_other_street(p: SubStreet, streets: dict, tree: shapely.STRtree, names: list[str]) -> str | None:
    mid = Point(*p.midpoint_xy)
    skip = {p.street, p.from_street, p.to_street}
    best = None
    for j in tree.query(mid, predicate="dwithin", distance=400.0):
        if names[j] in skip:
            continue
        d = streets[names[j]].distance(mid)
        if best is None or (d, names[j]) < best:
            best = (d, names[j])
    return best[1] if best else None


def _disambiguate(group: list[SubStreet], base: str, taken: set[str], streets: dict,
                  tree: shapely.STRtree, names: list[str], depth: int = 0) -> None:
    """Rename a group of pieces named ``base`` with the first rule that makes all names unique;
    if none does, the first rule that splits the group, then the same again inside each part."""
    centre = np.array([p.midpoint_xy for p in group]).mean(axis=0)

    def side_of_cross(p: SubStreet) -> str | None:
        ends = {e for e in (p.from_street, p.to_street) if e}
        if len(ends) != 1 or base != _label(p.street, p.from_street, p.to_street):
            return None
        a = ends.pop()
        q = shapely.ops.nearest_points(streets[a], Point(*p.midpoint_xy))[0]
        mx, my = p.midpoint_xy
        return f"{p.street} {_compass(mx - q.x, my - q.y)} of {a}"

    def end(p: SubStreet, points: int) -> str:
        mx, my = p.midpoint_xy
        return f"{base}, {_compass(mx - centre[0], my - centre[1], points)} end"

    def at(p: SubStreet, stem: str) -> str | None:
        c = _nearest_other_street(p, streets, tree, names)
        return f"{stem} at {c}" if c else None

    rules = [
        lambda p: f"{base} in {p.district}" if p.district and " in " not in base else None,
        side_of_cross,
        lambda p: end(p, 4),
        lambda p: end(p, 8),
        lambda p: at(p, base),
    ]
    split = None
    for rule in rules:
        new = [rule(p) for p in group]
        if not all(new) or taken.intersection(new):
            continue
        if len(set(new)) == len(new):
            for p, n in zip(group, new):
                p.name = n
            return
        if split is None and len(set(new)) > 1:
            split = new
    if split is None or depth > 4:
        raise ValueError(f"cannot give the {len(group)} pieces named {base!r} unique natural names")
    sub: dict[str, list[SubStreet]] = {}
    for p, n in zip(group, split):
        p.name = n
        sub.setdefault(n, []).append(p)
    taken.update(n for n, g in sub.items() if len(g) == 1)
    for n, g in sorted(sub.items()):
        if len(g) > 1:
            _disambiguate(g, n, taken, streets, tree, names, depth + 1)
            taken.update(p.name for p in g)


def name_pieces(pieces: list[SubStreet], network: RoadNetwork) -> list[SubStreet]:
    """Label every piece from its bounds, then make duplicate labels unique (module rules)."""
    for p in pieces:
        p.name = _label(p.street, p.from_street, p.to_street)
    by_name: dict[str, list[SubStreet]] = {}
    for p in pieces:
        by_name.setdefault(p.name, []).append(p)
    dups = {n: g for n, g in by_name.items() if len(g) > 1}
    if dups:
        streets = network.streets
        names = list(streets)
        tree = shapely.STRtree([streets[n] for n in names])
        taken = {n for n in by_name if n not in dups}
        for base in sorted(dups):
            group = sorted(dups[base], key=lambda p: (round(p.midpoint_xy[0], 3), round(p.midpoint_xy[1], 3)))
            _disambiguate(group, base, taken, streets, tree, names)
            taken.update(p.name for p in group)
    return sorted(pieces, key=lambda p: p.name)


def partition_streets(network: RoadNetwork, min_piece_m: float = 40.0,
                      merge_parallel_m: float = 40.0) -> list[SubStreet]:
    """All sub-street pieces of the network's addressable streets, uniquely named, sorted by
    name. ``merge_parallel_m=0`` keeps both carriageways of divided roads as separate pieces."""
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
    out = [p for group in by_name.values() for p in _collapse_parallel(group, merge_parallel_m)]
    return name_pieces(out, network)


def _merge_two(p: SubStreet, q: SubStreet, network: RoadNetwork) -> SubStreet:
    """One piece spanning p and q (touching pieces of one street); bounds are the outer crossings."""
    def ends(g):
        c = shapely.get_coordinates(g)
        return Point(c[0]), Point(c[-1])

    p0, p1 = ends(p.geometry)
    q0, q1 = ends(q.geometry)
    # the far end of p is the end farther from q, and vice versa
    p_far = p.from_street if p0.distance(q.geometry) >= p1.distance(q.geometry) else p.to_street
    q_far = q.from_street if q0.distance(p.geometry) >= q1.distance(p.geometry) else q.to_street
    geom = linemerge(MultiLineString([*_lines(p.geometry), *_lines(q.geometry)]))
    mid = geom.interpolate(0.5, normalized=True) if isinstance(geom, LineString) else geom.centroid
    return SubStreet("", p.street, p_far, q_far, geom, network.district_at(mid.x, mid.y) or p.district)


def _lines(g) -> list[LineString]:
    return list(g.geoms) if hasattr(g, "geoms") else [g]


def merge_sparse_pieces(pieces: list[SubStreet], counts: dict[str, int], min_images: int,
                        network: RoadNetwork) -> tuple[list[SubStreet], dict[str, int]]:
    """Merge pieces with fewer than ``min_images`` images into a touching piece of the same street.

    ``counts``: images per piece name. Repeatedly takes the sparsest piece (ties: name) and merges
    it with its touching same-street neighbour holding the fewest images, until every piece has
    ``min_images`` or has no neighbour. Returns (renamed pieces, {"merged": n, "isolated_small": m}).
    """
    if min_images <= 1:
        return pieces, {"merged": 0, "isolated_small": 0}
    items = [[replace(p), int(counts.get(p.name, 0))] for p in pieces]  # copies: the input keeps its names
    merged = 0
    stuck: set[int] = set()
    while True:
        small = [(c, p.name, id(p)) for p, c in items if c < min_images and id(p) not in stuck]
        if not small:
            break
        _, _, pid = min(small)
        i = next(k for k, (p, _) in enumerate(items) if id(p) == pid)
        p, c = items[i]
        nbrs = [(cq, q.name, k) for k, (q, cq) in enumerate(items)
                if k != i and q.street == p.street and q.geometry.distance(p.geometry) <= _SNAP_M]
        if not nbrs:
            stuck.add(pid)
            continue
        _, _, j = min(nbrs)
        q, cq = items[j]
        items[i] = [_merge_two(p, q, network), c + cq]
        del items[j]
        merged += 1
    out = name_pieces([p for p, _ in items], network)
    return out, {"merged": merged, "isolated_small": len(stuck)}


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
