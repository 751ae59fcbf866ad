"""Reverse geocoding: (lat, lon) -> ranked candidate streets, one interface for every backend.

`OfflineGeocoder` is exact and vectorised: every way is cut into straight segments no longer
than ``max_segment_m``; a scipy cKDTree over segment midpoints proposes the ``m`` nearest
segments per point, numpy computes exact point-segment distances, and rows are reduced to
the ``k`` nearest *distinct* streets. Because a segment of length <= L cannot be closer than
(midpoint distance - L/2), a row is certified exact when its k-th distance is within that
bound of the m-th midpoint distance; uncertified rows are re-queried with 4x more
neighbours, so the answer is exact, not "nearest midpoint".

That KD path needs many neighbours for k > 1 (one street owns many nearby segments), so
bulk queries go through a candidate grid built lazily per k: for each cell (side c, centre
C, half-diagonal r) the k-th distinct distance D_k(C) is computed exactly with the KD path;
any point p in the cell has D_k(p) <= D_k(C) + r, so only segments within D_k(C) + 2r of C
can matter, and of each street only the segments within D_street(C) + 2r (triangle
inequality). Each point then checks just its cell's short list. Exact again, no heuristics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import shapely
from scipy.spatial import cKDTree

from data_gen.road_network import RoadNetwork

__all__ = ["GeocodeResult", "ReverseGeocoder", "OfflineGeocoder", "check_latlon"]


@dataclass
class GeocodeResult:
    """Arrays of shape (N, k), nearest first; empty slots have name "" and distance inf."""

    names: np.ndarray        # object: street names ("" for unnamed ways and empty slots)
    highways: np.ndarray     # object: OSM highway class ("" for empty slots)
    distances_m: np.ndarray  # float64

    @classmethod
    def empty(cls, n: int, k: int) -> "GeocodeResult":
        return cls(np.full((n, k), "", dtype=object), np.full((n, k), "", dtype=object),
                   np.full((n, k), np.inf))


@runtime_checkable
class ReverseGeocoder(Protocol):
    def reverse(self, lat: np.ndarray, lon: np.ndarray, k: int = 5) -> GeocodeResult: ...


def check_latlon(lat, lon) -> tuple[np.ndarray, np.ndarray]:
    """1-D float arrays, or ValueError saying how many points are bad and showing the first."""
    lat = np.atleast_1d(np.asarray(lat, dtype=float)).ravel()
    lon = np.atleast_1d(np.asarray(lon, dtype=float)).ravel()
    if lat.shape != lon.shape:
        raise ValueError(f"lat and lon differ in length: {lat.shape[0]} vs {lon.shape[0]}")
    bad = ~(np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{int(bad.sum())} of {lat.size} points have out-of-range or non-finite "
                         f"lat/lon (first: index {i}, lat={lat[i]}, lon={lon[i]})")
    return lat, lon


class OfflineGeocoder:
    """k nearest distinct streets over a `RoadNetwork` (every way, named or not).

    Candidates are distinct street names; each unnamed way is its own candidate (name "").
    Points farther than ``max_distance_m`` from a way get no candidate for it.
    """

    def __init__(self, network: RoadNetwork, max_distance_m: float = 200.0, max_segment_m: float = 10.0,
                 cell_m: float = 8.0, max_cells: int = 2_000_000, chunk: int = 65536):
        if not network.ways:
            raise ValueError(f"road network {network.name!r} has no ways to geocode against")
        self.network, self.max_distance_m = network, float(max_distance_m)
        self.L, self.chunk = float(max_segment_m), int(chunk)
        self.cell_m, self.max_cells = float(cell_m), int(max_cells)
        self._grids: dict[tuple[int, float], dict] = {}
        names = [w.name for w in network.ways]
        # key per way: one per distinct street name, each unnamed way its own key
        key_names = sorted(set(names) - {""})
        key_of_name = {n: i for i, n in enumerate(key_names)}
        way_key = np.empty(len(names), dtype=np.int64)
        for i, n in enumerate(names):
            if n:
                way_key[i] = key_of_name[n]
            else:
                way_key[i] = len(key_names)
                key_names.append("")
        hw_names = sorted({w.highway for w in network.ways})
        hw_id = {h: i for i, h in enumerate(hw_names)}
        way_hw = np.array([hw_id[w.highway] for w in network.ways], dtype=np.int64)
        coords, way = shapely.get_coordinates([w.geometry for w in network.ways], return_index=True)
        seg = np.flatnonzero(way[1:] == way[:-1])  # consecutive vertices of the same way
        a, ab = coords[seg], coords[seg + 1] - coords[seg]
        raw_key, raw_hw = way_key[way[seg]], way_hw[way[seg]]
        ab2 = np.maximum((ab ** 2).sum(1), 1e-12)
        # unsplit segments: the grid path; split copies (<= max_segment_m): the KD path
        self._raw = (a, ab, ab2, raw_key, raw_hw)
        self._flat = (a[:, 0].copy(), a[:, 1].copy(), ab[:, 0].copy(), ab[:, 1].copy(), ab2, raw_key)
        n_sub = np.maximum(1, np.ceil(np.sqrt(ab2) / self.L)).astype(np.int64)
        self._s2r = np.repeat(np.arange(len(a)), n_sub)
        j = np.arange(len(self._s2r)) - np.repeat(np.cumsum(n_sub) - n_sub, n_sub)
        frac = (j / n_sub[self._s2r])[:, None]
        self._ab = ab[self._s2r] / n_sub[self._s2r][:, None]
        self._a = a[self._s2r] + frac * ab[self._s2r]
        self._ab2 = np.maximum((self._ab ** 2).sum(1), 1e-12)
        self._key = raw_key[self._s2r]
        self._key_names = np.array(key_names + [""], dtype=object)  # index -1 -> ""
        self._hw_names = np.array(hw_names + [""], dtype=object)
        self._tree = cKDTree(self._a + self._ab / 2)
        self.n_segments = len(self._a)
        self._bounds = network.bounds

    def reverse(self, lat, lon, k: int = 5) -> GeocodeResult:
        """k nearest distinct street names per point (pure function of lat, lon)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        lat, lon = check_latlon(lat, lon)
        x, y = self.network.projection.to_xy(lat, lon)
        return self.reverse_xy(np.asarray(x), np.asarray(y), k)

    def reverse_xy(self, x: np.ndarray, y: np.ndarray, k: int = 5) -> GeocodeResult:
        """Same as `reverse` for points already in the network's metric projection."""
        pts = np.column_stack([np.ravel(x), np.ravel(y)]).astype(float)
        keys = np.full((len(pts), k), -1, dtype=np.int64)
        segs = np.full((len(pts), k), -1, dtype=np.int64)
        dist = np.full((len(pts), k), np.inf)
        for s in range(0, len(pts), self.chunk):
            sl = slice(s, s + self.chunk)
            keys[sl], segs[sl], dist[sl] = self._query_grid(pts[sl], k)
        hw = np.where(segs >= 0, self._raw[4][segs], -1)
        return GeocodeResult(self._key_names[keys], self._hw_names[hw], dist)

    # ---- internals -------------------------------------------------------------
    def _query_kd(self, pts: np.ndarray, k: int):
        """Exact k nearest distinct keys via the midpoint KD-tree; returns split-segment ids."""
        n = len(pts)
        keys = np.full((n, k), -1, dtype=np.int64)
        segs = np.full((n, k), -1, dtype=np.int64)
        dist = np.full((n, k), np.inf)
        todo = np.arange(n)
        m = min(self.n_segments, max(8, 4 * k))
        radius = self.max_distance_m + self.L / 2
        while len(todo):
            dm, idx = self._tree.query(pts[todo], k=m, distance_upper_bound=radius, workers=-1)
            dm, idx = dm.reshape(len(todo), m), idx.reshape(len(todo), m)
            kk, ss, dd = self._reduce(pts[todo], idx, k)
            bound = dm[:, -1] - self.L / 2  # no unseen segment is closer than this
            done = (m >= self.n_segments) | (dd[:, -1] <= bound) | (bound >= self.max_distance_m)
            keys[todo[done]], segs[todo[done]], dist[todo[done]] = kk[done], ss[done], dd[done]
            todo = todo[~done]
            m = min(self.n_segments, m * 4)
        return keys, segs, dist

    def _reduce(self, pts: np.ndarray, idx: np.ndarray, k: int, segs=None):
        """Exact distances to the proposed segments, then the k nearest distinct keys."""
        a_all, ab_all, ab2_all, key_all = segs or (self._a, self._ab, self._ab2, self._key)
        valid = idx < len(a_all)
        idx = np.where(valid, idx, 0)
        ax, ay, bx, by = a_all[idx, 0], a_all[idx, 1], ab_all[idx, 0], ab_all[idx, 1]
        rx, ry = pts[:, 0:1] - ax, pts[:, 1:2] - ay
        t = np.clip((rx * bx + ry * by) / ab2_all[idx], 0.0, 1.0)
        d = np.hypot(rx - t * bx, ry - t * by)
        d[~valid | (d > self.max_distance_m)] = np.inf
        order = np.argsort(d, axis=1)
        d = np.take_along_axis(d, order, 1)
        idx = np.take_along_axis(idx, order, 1)
        key = np.where(np.isfinite(d), key_all[idx], -1)
        # first occurrence of each key in distance order = that street's nearest segment
        by_key = np.argsort(key, axis=1, kind="stable")
        ks = np.take_along_axis(key, by_key, 1)
        first_sorted = np.ones_like(ks, dtype=bool)
        first_sorted[:, 1:] = ks[:, 1:] != ks[:, :-1]
        first = np.empty_like(first_sorted)
        np.put_along_axis(first, by_key, first_sorted, 1)
        first &= key >= 0
        rank = np.cumsum(first, axis=1) - 1
        r, c = np.nonzero(first & (rank < k))
        n = len(pts)
        out_k = np.full((n, k), -1, dtype=np.int64)
        out_s = np.full((n, k), -1, dtype=np.int64)
        out_d = np.full((n, k), np.inf)
        slot = rank[r, c]
        out_k[r, slot], out_s[r, slot], out_d[r, slot] = key[r, c], idx[r, c], d[r, c]
        return out_k, out_s, out_d

    def _grid_for(self, k: int, cell_m: float | None = None) -> dict:
        """Lazily built per-k candidate grid (see module docstring). The exact D_k at the
        cell centres comes from a 4x coarser grid (recursively), or the KD path at the top."""
        x0, y0, x1, y1 = self._bounds
        pad = min(self.max_distance_m, 100.0)  # farther points take the KD path (rare)
        x0, y0, x1, y1 = x0 - pad, y0 - pad, x1 + pad, y1 + pad
        c = max(cell_m or self.cell_m, float(np.sqrt((x1 - x0) * (y1 - y0) / self.max_cells)))
        if (k, c) in self._grids:
            return self._grids[(k, c)]
        nx, ny = int(np.ceil((x1 - x0) / c)) + 1, int(np.ceil((y1 - y0) / c)) + 1
        gx, gy = np.meshgrid(x0 + (np.arange(nx) + 0.5) * c, y0 + (np.arange(ny) + 0.5) * c)
        centres = np.column_stack([gx.ravel(), gy.ravel()])
        r = c * np.sqrt(0.5)
        coarse = 4 * c if len(centres) > 4096 else None
        query = (lambda p: self._query_grid(p, k, coarse)) if coarse else (lambda p: self._query_kd(p, k))
        dk = np.concatenate([query(centres[s:s + self.chunk])[2][:, -1] for s in range(0, len(centres), self.chunk)])
        reach = np.minimum(dk + r, self.max_distance_m) + r + 1e-6
        reach = np.where(np.isfinite(reach), reach, 1e12)
        a, ab, ab2, key, _ = self._raw
        lines = shapely.linestrings(np.stack([a, a + ab], axis=1))
        ci, si = shapely.STRtree(lines).query(shapely.points(centres), predicate="dwithin", distance=reach)
        rx, ry = centres[ci, 0] - a[si, 0], centres[ci, 1] - a[si, 1]
        t = np.clip((rx * ab[si, 0] + ry * ab[si, 1]) / ab2[si], 0, 1)
        d = np.hypot(rx - t * ab[si, 0], ry - t * ab[si, 1])
        order = np.lexsort((key[si], ci))
        ci, si, d = ci[order], si[order], d[order]
        grp = np.ones(len(ci), dtype=bool)
        grp[1:] = (ci[1:] != ci[:-1]) | (key[si][1:] != key[si][:-1])
        starts = np.flatnonzero(grp)
        dkey = np.repeat(np.minimum.reduceat(d, starts), np.diff(np.append(starts, len(d)))) if len(d) else d
        keep = d <= np.minimum(dkey + 2 * r, reach[ci]) + 1e-6
        ci, si = ci[keep], si[keep]
        offsets = np.searchsorted(ci, np.arange(nx * ny + 1))
        grid = {"x0": x0, "y0": y0, "c": c, "nx": nx, "ny": ny, "offsets": offsets, "segs": si}
        self._grids[(k, c)] = grid
        return grid

    def _query_grid(self, pts: np.ndarray, k: int, cell_m: float | None = None):
        """Exact k nearest distinct keys using the candidate grid; raw-segment ids."""
        g = self._grid_for(k, cell_m)
        n = len(pts)
        keys = np.full((n, k), -1, dtype=np.int64)
        segs = np.full((n, k), -1, dtype=np.int64)
        dist = np.full((n, k), np.inf)
        ix = np.floor((pts[:, 0] - g["x0"]) / g["c"]).astype(np.int64)
        iy = np.floor((pts[:, 1] - g["y0"]) / g["c"]).astype(np.int64)
        inside = (ix >= 0) & (ix < g["nx"]) & (iy >= 0) & (iy < g["ny"])
        outside = np.flatnonzero(~inside)
        if len(outside):
            kk, ss, dd = self._query_kd(pts[outside], k)  # rare: far from the map
            keys[outside], segs[outside], dist[outside] = kk, np.where(ss >= 0, self._s2r[ss], -1), dd
        cell = (iy * g["nx"] + ix)[inside]
        rows = np.flatnonzero(inside)
        start = g["offsets"][cell]
        cnt = g["offsets"][cell + 1] - start
        width = -(-cnt // 4) * 4  # pad rows to a multiple of 4: little waste, few batches
        for w in np.unique(width):
            if w == 0:
                continue
            sel = width == w
            cols = np.arange(w)
            pos = start[sel][:, None] + cols
            valid = cols < cnt[sel][:, None]
            idx = np.where(valid, g["segs"][np.minimum(pos, len(g["segs"]) - 1)], 0)
            kk, ss, dd = self._reduce_grouped(pts[rows[sel]], idx, valid, k)
            keys[rows[sel]], segs[rows[sel]], dist[rows[sel]] = kk, ss, dd
        return keys, segs, dist

    def _reduce_grouped(self, pts: np.ndarray, idx: np.ndarray, valid: np.ndarray, k: int):
        """Like `_reduce`, for rows whose columns are already grouped by key (the grid lists):
        per-key minima are a linear `minimum.reduceat`, then a partial sort picks k."""
        ax, ay, bx, by, ab2, key_all = self._flat
        rx, ry = pts[:, 0:1] - ax[idx], pts[:, 1:2] - ay[idx]
        sbx, sby = bx[idx], by[idx]
        t = np.clip((rx * sbx + ry * sby) / ab2[idx], 0.0, 1.0)
        d = np.hypot(rx - t * sbx, ry - t * sby)
        d[~valid | (d > self.max_distance_m)] = np.inf
        n, w = d.shape
        key = key_all[idx]
        if k > 1:  # keep only each key's nearest segment in the row (first on ties)
            newgrp = np.ones((n, w), dtype=bool)
            newgrp[:, 1:] = key[:, 1:] != key[:, :-1]
            flat_d = d.ravel()
            starts = np.flatnonzero(newgrp.ravel())
            gid = np.cumsum(newgrp.ravel()) - 1
            gmin = np.minimum.reduceat(flat_d, starts)[gid]
            is_min = flat_d == gmin
            first = np.zeros(n * w, dtype=bool)
            hits = np.flatnonzero(is_min)
            keep = np.ones(len(hits), dtype=bool)
            keep[1:] = gid[hits[1:]] != gid[hits[:-1]]
            first[hits[keep]] = True
            d = np.where(first.reshape(n, w), d, np.inf)
        if k >= w:
            order = np.argsort(d, axis=1)
        else:
            order = np.argpartition(d, k - 1, axis=1)[:, :k]
            order = np.take_along_axis(order, np.argsort(np.take_along_axis(d, order, 1), axis=1), 1)
        order = order[:, :k]
        dd = np.take_along_axis(d, order, 1)
        ss = np.take_along_axis(idx, order, 1)
        found = np.isfinite(dd)
        out = (np.full((n, k), -1, dtype=np.int64), np.full((n, k), -1, dtype=np.int64), np.full((n, k), np.inf))
        m = order.shape[1]
        out[0][:, :m] = np.where(found, key_all[ss], -1)
        out[1][:, :m] = np.where(found, ss, -1)
        out[2][:, :m] = dd
        return out

