"""Spatial splits: held-out stretches, buffer gap, every sub-street keeps training images."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from data_gen.splits import SplitConfigLike, assign_splits


def _streets(n_streets=12, n=60, spacing=5.0, seed=0):
    rng = np.random.default_rng(seed)
    g, s, x, y = [], [], [], []
    for k in range(n_streets):
        arc = np.sort(rng.uniform(0, n * spacing, n))
        g += [f"S{k}"] * n
        s.append(arc)
        x.append(arc)
        y.append(np.full(n, k * 100.0))  # parallel streets 100 m apart
    return np.array(g, dtype=object), np.concatenate(s), np.concatenate(x), np.concatenate(y)


def test_test_points_are_never_near_train_points():
    g, s, x, y = _streets()
    cfg = SplitConfigLike(buffer_m=15.0, seed=1)
    r = assign_splits(g, s, x, y, cfg)
    sp = r.split
    c = r.counts()
    assert c["train"] > 0.6 * len(g) and c["val"] > 0 and c["test"] > 0
    assert r.dropped["split_buffer"] == int((sp == "").sum()) > 0
    tree = cKDTree(np.c_[x[sp == "train"], y[sp == "train"]])
    for held in ("test", "val"):
        d, _ = tree.query(np.c_[x[sp == held], y[sp == held]])
        assert d.min() >= cfg.buffer_m
    for k in range(12):  # every sub-street keeps training images
        assert (sp[g == f"S{k}"] == "train").sum() > 0


def test_one_contiguous_held_out_stretch_per_sub_street_and_balanced_splits():
    g, s, x, y = _streets(n_streets=20, n=100)
    r = assign_splits(g, s, x, y, SplitConfigLike(seed=3))
    for k in range(20):
        m = g == f"S{k}"
        lab = [v for v in r.split[m][np.argsort(s[m])] if v]
        runs = [lab[0]] + [b for a, b in zip(lab, lab[1:]) if a != b]
        held = [v for v in runs if v != "train"]
        assert len(held) == 1  # exactly one held-out stretch (val or test)
    c = r.counts()
    kept = sum(c.values())
    assert 0.05 < c["val"] / kept < 0.15 and 0.05 < c["test"] / kept < 0.15


def test_tiny_sub_streets_go_to_train_and_seed_reproducible():
    g, s, x, y = _streets(n_streets=3, n=60)
    g = np.concatenate([g, ["tiny"] * 4]).astype(object)
    s, x, y = np.r_[s, [0, 1, 2, 3]], np.r_[x, [0, 1, 2, 3]], np.r_[y, [1000] * 4]
    r1 = assign_splits(g, s, x, y, SplitConfigLike(min_points=10, seed=5))
    r2 = assign_splits(g, s, x, y, SplitConfigLike(min_points=10, seed=5))
    assert (r1.split[g == "tiny"] == "train").all() and r1.train_only_sub_streets == 1
    assert (r1.split == r2.split).all()


def test_same_position_same_split_and_bad_input():
    g = np.array(["A"] * 40, dtype=object)
    s = np.repeat(np.arange(20) * 10.0, 2)
    sp = assign_splits(g, s, s, np.zeros(40), SplitConfigLike(buffer_m=5)).split
    assert (sp[0::2] == sp[1::2]).all()
    with pytest.raises(ValueError, match="same length"):
        assign_splits(g, s[:3], s, s)
    with pytest.raises(ValueError, match="ratios"):
        assign_splits(g, s, s, s, SplitConfigLike(train=0.0))
