"""Spatially disjoint train/val/test splits along each sub-street.

WHY: neighbouring street-view shots look alike, so a random split leaks test images into
training. Each long-enough sub-street gets ONE contiguous held-out stretch (val or test,
alternating so the two splits balance by image count) at a seeded random position along
it; the rest is train, so every sub-street keeps training images (the paper's closed
candidate set). Points within ``buffer_m / 2`` of a stretch boundary are dropped; the
stretch is lengthened so that after this drop val+test hold ~(val+test) of the images.
Sub-streets shorter than 4 buffers or with < ``min_points`` go to train. Finally we drop
held-out points that still lie within ``buffer_m`` (straight-line) of ANY train point, e.g. across an
intersection on a neighbouring sub-street (counted as ``split_buffer_cross``).
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
    b = cfg.buffer_m
    held_pts = {"val": 0, "test": 0}
    groups = sorted(set(group.tolist()))
    for gi in rng.permutation(len(groups)):
        idx = np.flatnonzero(group == groups[gi])
        n_pos = len(np.unique(np.round(s[idx], 2)))
        lo, hi = s[idx].min(), s[idx].max()
        length = hi - lo
        if fv + ft == 0 or len(idx) < cfg.min_points or n_pos < 4 or length < 4 * b:
            out[idx] = "train"
            res.train_only_sub_streets += 1
            continue
        # one held-out stretch per sub-street; its label balances val/test by points so far
        lab_held = "val" if (fv > 0 and (ft == 0 or held_pts["val"] / fv <= held_pts["test"] / ft)) else "test"
        h = b + (fv + ft) * (length - 2 * b)  # after dropping b/2 at both cuts, share ~= fv + ft
        a = lo + rng.uniform(0, length - h)  # stretch [a, a + h], never wrapping around
        lab = np.where((s[idx] >= a) & (s[idx] <= a + h), lab_held, "train").astype(object)
        near = np.zeros(len(idx), bool)
        for c in (a, a + h):
            if lo + 1e-6 < c < hi - 1e-6:  # a cut at the very end of the piece is no boundary
                near |= np.abs(s[idx] - c) < b / 2
        out[idx] = np.where(near, "", lab)
        res.dropped["split_buffer"] += int(near.sum())
        held_pts[lab_held] += int(((lab == lab_held) & ~near).sum())
    # global guard: no held-out point within buffer_m of any train point (any sub-street)
    tr = out == "train"
    held = np.flatnonzero((out == "val") | (out == "test"))
    if tr.any() and len(held):
        d, _ = cKDTree(np.c_[x[tr], y[tr]]).query(np.c_[x[held], y[held]], k=1)
        bad = held[d < cfg.buffer_m]
        out[bad] = ""
        res.dropped["split_buffer_cross"] += len(bad)
    return res
