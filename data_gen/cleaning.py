"""Street labels from noisy GPS: filter geocoder candidates, vote over nearby probe points.

A phone GPS fix is off by several metres, so the label of one point is unreliable near
corners. Each fix is queried together with ``n_probes`` points on a ring of
``probe_radius_m`` around it (a seeded random rotation per fix). Candidates that are
unnamed, of an excluded highway class or farther than ``max_distance_m`` are removed;
every query point that still has a candidate casts ONE plain (unweighted) vote for its
nearest surviving street. Confidence = winner votes / votes cast. Reasons for dropping:

- ``no_street_nearby``: no way at all (named or not) within max_distance_m of any query point;
- ``unnamed_or_service``: ways nearby, but none that gives an address;
- ``ambiguous``: confidence below ``min_confidence`` (corners, parallel streets).

Ties in the vote go to the street with the smaller summed distance, then alphabetically.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from data_gen.geocoder import ReverseGeocoder, check_latlon
from data_gen.road_network import EXCLUDED_HIGHWAYS

__all__ = ["VoteConfig", "VoteResult", "vote_streets", "summarize_reasons", "REASONS"]

REASONS = ("no_street_nearby", "unnamed_or_service", "ambiguous")
_EARTH_M_PER_DEG = 111_320.0


@dataclass
class VoteConfig:
    k: int = 5                    # candidates asked from the geocoder per query point
    max_distance_m: float = 30.0  # farther candidates never vote
    n_probes: int = 8             # ring points around each fix (0 = use the fix only)
    probe_radius_m: float = 8.0   # ring radius ~ GPS error
    min_confidence: float = 0.6   # winner's share of the votes cast
    drop_highways: frozenset = field(default_factory=lambda: EXCLUDED_HIGHWAYS)

    def __post_init__(self):
        if self.k < 1 or self.n_probes < 0 or self.max_distance_m <= 0 or self.probe_radius_m < 0:
            raise ValueError(f"invalid VoteConfig: {self}")
        if not 0 < self.min_confidence <= 1:
            raise ValueError(f"VoteConfig.min_confidence must be in (0, 1], got {self.min_confidence}")
        self.drop_highways = frozenset(self.drop_highways)


@dataclass
class VoteResult:
    street: np.ndarray      # object, "" when dropped
    confidence: np.ndarray  # float, share of votes for the winner (0 when nobody voted)
    reason: np.ndarray      # object, "" if kept else one of REASONS


def probe_points(lat: np.ndarray, lon: np.ndarray, cfg: VoteConfig, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N, 1 + n_probes) lat/lon: the fix, then the ring (local flat-earth offsets)."""
    rng = np.random.default_rng(seed)
    n = len(lat)
    ang = rng.uniform(0, 2 * np.pi, (n, 1)) + np.arange(cfg.n_probes) * 2 * np.pi / max(cfg.n_probes, 1)
    dx, dy = cfg.probe_radius_m * np.cos(ang), cfg.probe_radius_m * np.sin(ang)
    plat = lat[:, None] + dy / _EARTH_M_PER_DEG
    plon = lon[:, None] + dx / (_EARTH_M_PER_DEG * np.maximum(np.cos(np.radians(lat[:, None])), 1e-6))
    plat = np.clip(plat, -90, 90)
    plon = (plon + 180) % 360 - 180
    return np.concatenate([lat[:, None], plat], 1), np.concatenate([lon[:, None], plon], 1)


def vote_streets(geocoder: ReverseGeocoder, lat, lon, cfg: VoteConfig, seed: int = 0) -> VoteResult:
    """One street label (or a drop reason) per GPS fix; one geocoder call for all probes."""
    lat, lon = check_latlon(lat, lon)
    n, q = len(lat), 1 + cfg.n_probes
    qlat, qlon = probe_points(lat, lon, cfg, seed)
    res = geocoder.reverse(qlat.ravel(), qlon.ravel(), k=cfg.k)
    names = res.names.reshape(n, q, -1)
    hws = res.highways.reshape(n, q, -1)
    dist = res.distances_m.reshape(n, q, -1)
    near = np.isfinite(dist) & (dist <= cfg.max_distance_m)
    drop_hw = pd.Series(hws.ravel(), dtype=object).isin(cfg.drop_highways).to_numpy().reshape(hws.shape)  # hashed: fast on objects
    ok = near & (names != "") & ~drop_hw
    # nearest surviving candidate per query point (candidates arrive sorted by distance)
    has = ok.any(-1)
    first = np.argmax(ok, axis=-1)
    vote = np.where(has, np.take_along_axis(names, first[..., None], -1)[..., 0], "")
    vdist = np.where(has, np.take_along_axis(dist, first[..., None], -1)[..., 0], 0.0)

    street = np.full(n, "", dtype=object)
    conf = np.zeros(n)
    cast = has.sum(1)
    fi, qi = np.nonzero(has)
    if len(fi):  # tally (fix, street) pairs; codes from np.unique are alphabetical
        codes, code = np.unique(vote[fi, qi].astype(str), return_inverse=True)
        pair, inv, count = np.unique(fi * len(codes) + code, return_inverse=True, return_counts=True)
        dsum = np.bincount(inv.ravel(), weights=vdist[fi, qi])
        pf, pc = pair // len(codes), pair % len(codes)
        order = np.lexsort((pc, dsum, -count, pf))
        win = order[np.r_[True, pf[order][1:] != pf[order][:-1]]]
        street[pf[win]] = codes[pc[win]].astype(object)
        conf[pf[win]] = count[win] / cast[pf[win]]
    reason = np.full(n, "", dtype=object)
    reason[cast == 0] = "unnamed_or_service"
    reason[~near.any(-1).any(-1)] = "no_street_nearby"
    reason[(cast > 0) & (conf < cfg.min_confidence)] = "ambiguous"
    street[reason != ""] = ""
    return VoteResult(street, conf, reason)


def summarize_reasons(result: VoteResult) -> dict[str, int]:
    """{"kept": n, "no_street_nearby": n, "unnamed_or_service": n, "ambiguous": n}."""
    out = {"kept": int((result.reason == "").sum())}
    out.update({r: int((result.reason == r).sum()) for r in REASONS})
    return out
