"""Nearby sub-streets by great-circle distance between midpoints (hard negatives for QA).

Why a KD-tree over unit vectors: the chord between two points on the sphere grows
monotonically with their haversine distance, so scipy's exact k-nearest query in 3-D gives
the haversine ranking without an N x N distance matrix.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from data_gen.contract import AddressVocabulary
from llava_address.common.geo import EARTH_RADIUS_M, haversine_m

__all__ = ["EARTH_RADIUS_M", "haversine_m", "NearbyIndex"]

def _unit_xyz(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    la, lo = np.radians(lat), np.radians(lon)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


class NearbyIndex:
    """k nearest *other* sub-streets of a sub-street, closest first, with distances in metres.

    All sub-streets' ``k_max`` nearest are computed in one vectorised KD-tree query at
    construction (ties broken by name, so results never depend on vocabulary order);
    larger k falls back to a query of its own. Sub-streets without a midpoint in the
    vocabulary are left out (they have no neighbours and are nobody's neighbour).
    """

    def __init__(self, vocab: AddressVocabulary, k_max: int = 16):
        names, pts = [], []
        for name in vocab.sub_street:
            mid = vocab.sub_street_info.get(name, {}).get("midpoint")
            if mid is None or len(mid) != 2 or not np.all(np.isfinite(np.asarray(mid, dtype=float))):
                continue
            names.append(name)
            pts.append((float(mid[0]), float(mid[1])))
        self.names: list[str] = names
        self._pos = {n: i for i, n in enumerate(names)}
        self._latlon = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        self._rank = np.argsort(np.argsort(np.asarray(names, dtype=object)))  # name order, for ties
        self._tree = cKDTree(_unit_xyz(self._latlon[:, 0], self._latlon[:, 1])) if names else None
        self.k_max = k_max
        self._idx, self._dist = self._query(np.arange(len(names)), k_max)

    def _query(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices, metres) of shape (len(rows), <=k): nearest others, ascending, ties by name."""
        n = len(self.names)
        if self._tree is None or n < 2 or k <= 0:
            return np.zeros((len(rows), 0), int), np.zeros((len(rows), 0))
        kq = min(k + 1, n)
        _, idx = self._tree.query(_unit_xyz(self._latlon[rows, 0], self._latlon[rows, 1]), k=kq)
        idx = idx.reshape(len(rows), kq)
        # drop self; if duplicate midpoints pushed self out of the result, drop the farthest instead
        idx = np.take_along_axis(idx, np.argsort(idx == rows[:, None], axis=1, kind="stable"), axis=1)
        idx = idx[:, :min(k, n - 1)]
        lat, lon = self._latlon[rows, 0][:, None], self._latlon[rows, 1][:, None]
        dist = haversine_m(lat, lon, self._latlon[idx, 0], self._latlon[idx, 1])
        order = np.lexsort((self._rank[idx], dist), axis=-1)
        return np.take_along_axis(idx, order, axis=1), np.take_along_axis(dist, order, axis=1)

    def __contains__(self, name: str) -> bool:
        return name in self._pos

    def nearest(self, name: str, k: int) -> list[tuple[str, float]]:
        """Up to ``k`` (name, metres) pairs, closest first, excluding ``name`` itself."""
        i = self._pos.get(name)
        if i is None or k <= 0:
            return []
        if k <= self.k_max:
            idx, dist = self._idx[i, :k], self._dist[i, :k]
        else:
            idx, dist = (a[0] for a in self._query(np.array([i]), k))
        return [(self.names[j], float(d)) for j, d in zip(idx, dist)]
