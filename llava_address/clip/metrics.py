"""SSA-k / SA-k / distance error from ranked sub-street predictions (pure numpy, unit-tested).

SSA-k: the true sub-street is among the top-k ranked sub-street candidates.
SA-k:  street level. A sub-street prediction counts for its street: the street ranking is the
       sub-street ranking mapped to streets with repeats removed (a street scores as its best
       sub-street), and SA-k asks whether the true street is among its first k entries.
Distance error: haversine metres from the top-1 predicted sub-street's midpoint to the image GPS.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from llava_address.common.geo import haversine_m

__all__ = ["haversine_m", "street_ranking", "address_metrics"]

def street_ranking(ranked_sub_streets: Sequence[str], street_of: Mapping[str, str], k: int) -> list[str]:
    """First ``k`` distinct streets in the order their sub-streets are ranked."""
    out: list[str] = []
    for s in ranked_sub_streets:
        st = street_of[s]
        if st not in out:
            out.append(st)
            if len(out) == k:
                break
    return out


def address_metrics(ranked: np.ndarray, candidates: Sequence[str], truth: Sequence[str],
                    street_of: Mapping[str, str], midpoints: Mapping[str, Sequence[float]],
                    lat: Sequence[float], lon: Sequence[float], ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """``ranked``: (N, C') candidate indices best first (C' ≥ enough to reach k distinct streets)."""
    ranked = np.asarray(ranked)
    if ranked.ndim != 2 or len(ranked) != len(truth):
        raise ValueError(f"ranked must be (N, C) with N={len(truth)}, got shape {ranked.shape}")
    if len(truth) == 0:
        raise ValueError("no images to score")
    names = np.asarray(candidates, dtype=object)
    out: dict[str, float] = {"n_images": float(len(truth))}
    for k in ks:
        out[f"SSA-{k}"] = float(np.mean([t in set(names[r[:k]]) for r, t in zip(ranked, truth)]))
        out[f"SA-{k}"] = float(np.mean([street_of[t] in street_ranking(names[r], street_of, k)
                                        for r, t in zip(ranked, truth)]))
    top1 = names[ranked[:, 0]]
    mid = np.array([midpoints[s] for s in top1], dtype=float)
    err = haversine_m(mid[:, 0], mid[:, 1], lat, lon)
    out["mean_error_m"] = float(err.mean())
    out["median_error_m"] = float(np.median(err))
    return out
