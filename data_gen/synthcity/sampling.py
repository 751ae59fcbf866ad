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


def sample_points(network: RoadNetwork, spacing_m: float, seed: int = 0,
                  unaddressable_spacing_m: float | None = None) -> SampledPoints:
    """Points every ``spacing_m`` along each addressable way (random start offset per way).

    With ``unaddressable_spacing_m``, unnamed/service ways are sampled too (sparser): real
    photo dumps contain shots from alleys and footpaths, which the cleaning vote must drop
    or snap to a nearby named street — so the synthetic build exercises that path as well.
    """
    if spacing_m <= 0:
        raise ValueError(f"spacing_m must be > 0, got {spacing_m}")
    rng = np.random.default_rng(seed)
    ways = [(w, spacing_m) for w in network.ways if w.addressable and w.geometry.length > 0]
    if not ways:
        raise ValueError(f"road network {network.name!r} has no addressable (named, non-service) streets")
    if unaddressable_spacing_m:
        ways += [(w, unaddressable_spacing_m) for w in network.ways
                 if not w.addressable and w.geometry.length > 0]
    geoms, dists, names, hws = [], [], [], []
    for w, sp in ways:
        d = np.arange(rng.uniform(0, min(sp, w.geometry.length)), w.geometry.length, sp)
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
