"""Spatially disjoint train/val/test splits along each sub-street.

WHY: neighbouring street-view shots look alike, so a random split leaks test images into
training. Within each sub-street we cut the arc-length range into contiguous stretches
(cyclic order val -> test -> train from a seeded random start, so train keeps the largest
stretch and every sub-street keeps training images — the closed candidate set of the paper),
drop points within ``buffer_m / 2`` of a stretch boundary, and finally drop held-out points
that still lie within ``buffer_m`` (straight-line) of ANY train point, e.g. across an
intersection on a neighbouring sub-street.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["SplitConfigLike", "SplitResult", "assign_splits"]


@dataclass
class SplitConfigLike:
    """Defaults; the builder passes its pydantic ``splits`` section (same field names)."""

    train: float = 0.8
    val: float = 0.1
    test: float = 0.1
    buffer_m: float = 15.0
    min_points: int = 10
    seed: int = 0


@dataclass
class SplitResult:
    split: np.ndarray                 # object array: "train"/"val"/"test", "" = dropped
    dropped: Counter = field(default_factory=Counter)   # reason -> count
    train_only_sub_streets: int = 0

    def counts(self) -> dict[str, int]:
        c = Counter(self.split.tolist())
        return {k: int(c.get(k, 0)) for k in ("train", "val", "test")}


def assign_splits(group: np.ndarray, s: np.ndarray, x: np.ndarray, y: np.ndarray, cfg=None) -> SplitResult:
    """Split points of sub-street ``group`` at arc length ``s`` (m) with metric positions x, y.

    Points with the same position get the same split. Ratios need not sum to 1 (normalised).
    """
    cfg = cfg or SplitConfigLike()
    group = np.asarray(group, dtype=object)
    s, x, y = (np.asarray(a, dtype=float) for a in (s, x, y))
    n = len(group)
    if not (len(s) == len(x) == len(y) == n):
        raise ValueError("group, s, x, y must have the same length")
    tot = cfg.train + cfg.val + cfg.test
    if tot <= 0 or min(cfg.train, cfg.val, cfg.test) < 0 or cfg.train <= 0:
        raise ValueError(f"bad split ratios train={cfg.train} val={cfg.val} test={cfg.test}")
    fv, ft = cfg.val / tot, cfg.test / tot
    out = np.full(n, "", dtype=object)
    res = SplitResult(out)
    rng = np.random.default_rng(cfg.seed)
    for g in sorted(set(group.tolist())):
        idx = np.flatnonzero(group == g)
        n_pos = len(np.unique(np.round(s[idx], 2)))
        lo, hi = s[idx].min(), s[idx].max()
        if len(idx) < cfg.min_points or n_pos < 3 or hi - lo < 3 * cfg.buffer_m:
            out[idx] = "train"
            res.train_only_sub_streets += 1
            continue
        length = hi - lo + 1e-9
        u = rng.random()
        q = ((s[idx] - lo) / length - u) % 1.0
        lab = np.where(q < fv, "val", np.where(q < fv + ft, "test", "train")).astype(object)
        # stretch boundaries in arc length (cyclic cut points mapped back to s)
        cuts = [lo + ((u + c) % 1.0) * length for c in (0.0, fv, fv + ft)]
        near = np.zeros(len(idx), bool)
        for c in cuts:
            if lo + 1e-6 < c < hi - 1e-6:
                near |= np.abs(s[idx] - c) < cfg.buffer_m / 2
        out[idx] = np.where(near, "", lab)
        res.dropped["split_buffer"] += int(near.sum())
    # global guard: no held-out point within buffer_m of any train point (any sub-street)
    tr = out == "train"
    held = np.flatnonzero((out == "val") | (out == "test"))
    if tr.any() and len(held):
        d, _ = cKDTree(np.c_[x[tr], y[tr]]).query(np.c_[x[held], y[held]], k=1)
        bad = held[d < cfg.buffer_m]
        out[bad] = ""
        res.dropped["split_buffer"] += len(bad)
    return res
