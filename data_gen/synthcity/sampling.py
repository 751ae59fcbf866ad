"""Camera positions along a RoadNetwork: evenly spaced points on every addressable way.

Returns the TRUE position and street tangent (what the renderer draws) — the builder adds
simulated GPS noise separately, because the labels must come from the noisy fix as in reality.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from data_gen.road_network import RoadNetwork

__all__ = ["SampledPoints", "sample_points"]


@dataclass
class SampledPoints:
    x: np.ndarray
    y: np.ndarray
    dx: np.ndarray        # unit tangent of the way at the point
    dy: np.ndarray
    street: np.ndarray    # object: name of the way sampled (ground truth, not the vote)
    highway: np.ndarray   # object

    def __len__(self) -> int:
        return len(self.x)

    def take(self, idx) -> "SampledPoints":
        return SampledPoints(*(a[idx] for a in (self.x, self.y, self.dx, self.dy, self.street, self.highway)))


def sample_points(network: RoadNetwork, spacing_m: float, seed: int = 0) -> SampledPoints:
    """Points every ``spacing_m`` along each addressable way (random start offset per way)."""
    if spacing_m <= 0:
        raise ValueError(f"spacing_m must be > 0, got {spacing_m}")
    rng = np.random.default_rng(seed)
    ways = [w for w in network.ways if w.addressable and w.geometry.length > 0]
    if not ways:
        raise ValueError(f"road network {network.name!r} has no addressable (named, non-service) streets")
    geoms, dists, names, hws = [], [], [], []
    for w in ways:
        d = np.arange(rng.uniform(0, min(spacing_m, w.geometry.length)), w.geometry.length, spacing_m)
        geoms.extend([w.geometry] * len(d))
        dists.append(d)
        names.extend([w.name] * len(d))
        hws.extend([w.highway] * len(d))
    g = np.array(geoms, dtype=object)
    d = np.concatenate(dists)
    p = shapely.get_coordinates(shapely.line_interpolate_point(g, d))
    a = shapely.get_coordinates(shapely.line_interpolate_point(g, np.maximum(d - 1.0, 0)))
    b = shapely.get_coordinates(shapely.line_interpolate_point(g, d + 1.0))
    t = b - a
    n = np.linalg.norm(t, axis=1, keepdims=True)
    t = np.where(n > 0, t / np.where(n > 0, n, 1), [[1.0, 0.0]])
    return SampledPoints(p[:, 0], p[:, 1], t[:, 0], t[:, 1], np.array(names, dtype=object),
                         np.array(hws, dtype=object))
