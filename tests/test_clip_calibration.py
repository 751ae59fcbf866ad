"""Calibration, coarse-to-fine levels and coordinates: unit tests on synthetic numbers (fast)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llava_address.clip.calibration import (coverage_accuracy, expected_calibration_error, fit_temperature,
                                            load_calibration, nll, reliability_bins, save_calibration)
from llava_address.clip.coordinates import (Gallery, knn_estimate, midpoint_estimate, radius_m, radius_scale_for,
                                            within_metrics)
from llava_address.clip.hierarchy import (Hierarchy, answer_levels, choose_threshold, level_metrics,
                                          wilson_lower_bound)
from llava_address.common.geo import haversine_m


def _sampled(n=4000, c=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = 2.0 * torch.randn(n, c, generator=g, dtype=torch.float64)
    y = torch.multinomial(torch.softmax(z, -1), 1, generator=g).squeeze(1)
    return z, y  # softmax(z) is the true label distribution: z is perfectly calibrated


def test_fit_temperature_recovers_the_overconfidence_factor():
    z, y = _sampled()
    t = fit_temperature(3.0 * z, y)
    assert t == pytest.approx(3.0, rel=0.08)
    assert nll(3.0 * z, y, t) < nll(3.0 * z, y) - 0.1


def test_temperature_scaling_brings_ece_down():
    z, y = _sampled(seed=1)
    logits = 2.5 * z
    before = torch.softmax(logits, -1)
    after = torch.softmax(logits / fit_temperature(logits, y), -1)
    ece = [expected_calibration_error(p.max(1).values.numpy(), (p.argmax(1) == y).numpy()) for p in (before, after)]
    assert ece[0] > 0.1 and ece[1] < 0.03


def test_ece_and_bins_by_hand():
    conf = np.array([0.95] * 10 + [0.55] * 10)
    correct = np.array([1] * 9 + [0] + [1] * 2 + [0] * 8)
    # bin of 0.95: acc 0.9 (gap 0.05); bin of 0.55: acc 0.2 (gap 0.35); equal weights
    assert expected_calibration_error(conf, correct, 15) == pytest.approx(0.5 * 0.05 + 0.5 * 0.35)
    b = reliability_bins(conf, correct, 15)
    assert b["count"].sum() == 20 and b["count"][14] == 10
    with pytest.raises(ValueError, match="same length"):
        reliability_bins(conf, correct[:3])


def test_coverage_accuracy_answers_the_most_confident_first():
    c = coverage_accuracy([0.2, 0.9, 0.6], [0, 1, 0])
    np.testing.assert_allclose(c["threshold"], [0.9, 0.6, 0.2])
    np.testing.assert_allclose(c["coverage"], [1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(c["accuracy"], [1.0, 0.5, 1 / 3])


def test_fit_temperature_rejects_bad_input():
    with pytest.raises(ValueError, match="no validation images"):
        fit_temperature(torch.zeros(0, 3), torch.zeros(0))
    with pytest.raises(ValueError, match="index the 3 candidates"):
        fit_temperature(torch.zeros(2, 3), torch.tensor([0, 3]))


def test_calibration_file_round_trip_and_validation(tmp_path):
    save_calibration(tmp_path, {"temperature": 1.7, "level_threshold": 0.6})
    assert load_calibration(tmp_path) == {"temperature": 1.7, "level_threshold": 0.6}
    assert load_calibration(tmp_path / "nowhere") is None
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        save_calibration(tmp_path, {"temperature": -1})
    (tmp_path / "calibration.json").write_text('{"temperature": "hot"}')
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        load_calibration(tmp_path)


# ---- hierarchy ----------------------------------------------------------------------------
@pytest.fixture
def hier():
    subs = ["A1", "A2", "B1", "C1"]
    return Hierarchy.from_maps(subs, {"A1": "A", "A2": "A", "B1": "B", "C1": "C"},
                               {"A1": "North", "A2": "North", "B1": "North", "C1": ""})


def test_aggregate_sums_children(hier):
    p = np.array([[0.4, 0.3, 0.2, 0.1]])
    agg = hier.aggregate(p)
    np.testing.assert_allclose(agg["street"], [[0.7, 0.2, 0.1]])
    np.testing.assert_allclose(agg["district"], [[0.9]])  # C1 has no district: its mass is in none
    assert hier.district == ["North"]
    with pytest.raises(ValueError, match=r"must be \(N, 4\)"):
        hier.aggregate(np.ones((1, 3)))


def test_answer_at_the_finest_level_that_clears_the_threshold(hier):
    p = np.array([[0.9, 0.05, 0.03, 0.02],    # sure of the sub-street
                  [0.4, 0.4, 0.1, 0.1],       # sure of the street only (A 0.8)
                  [0.2, 0.1, 0.15, 0.55],     # nothing reaches 0.6 (C1 0.55, North 0.45): none
                  [0.35, 0.2, 0.3, 0.15]])    # street A 0.55, district North 0.85
    ans = answer_levels(hier, p, threshold=0.6)
    assert list(ans.level) == ["sub_street", "street", "none", "district"]
    assert ans.answer(1) == ("street", "A", pytest.approx(0.8))
    assert ans.answer(3) == ("district", "North", pytest.approx(0.85))
    assert ans.answer(2) == ("none", "North", pytest.approx(0.45))  # the coarsest guess, flagged
    truth = {"sub_street": ["A1", "A2", "C1", "B1"], "street": ["A", "A", "C", "B"],
             "district": ["North", "North", "", "North"]}
    m = level_metrics(ans, truth)
    assert m["level_aware_accuracy"] == pytest.approx(1.0)   # 3 answered, all right at their level
    assert m["answered"] == pytest.approx(0.75)
    assert m["sub_street_accuracy"] == pytest.approx(0.5)     # rows 0 and 3 have top-1 A1
    assert m["coverage_street"] == pytest.approx(0.25) and m["coverage_none"] == pytest.approx(0.25)


def test_choose_threshold_meets_the_target_on_the_data_it_sees(hier):
    rng = np.random.default_rng(0)
    n = 400
    truth_idx = rng.integers(0, 4, n)
    logits = rng.normal(0, 1, (n, 4))
    logits[np.arange(n), truth_idx] += rng.uniform(0, 4, n)   # confidence varies per image
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    subs = np.array(hier.sub_street)[truth_idx]
    street_of = {"A1": "A", "A2": "A", "B1": "B", "C1": "C"}
    dist_of = {"A1": "North", "A2": "North", "B1": "North", "C1": ""}
    truth = {"sub_street": list(subs), "street": [street_of[s] for s in subs], "district": [dist_of[s] for s in subs]}
    t, m = choose_threshold(hier, p, truth, target=0.9)
    assert m["level_aware_accuracy_lower_bound"] >= 0.9 and m["level_aware_accuracy"] > 0.9
    t0, m0 = choose_threshold(hier, p, truth, target=0.9, z=0.0)   # point estimate: a lower threshold
    assert t0 <= t and m0["level_aware_accuracy"] >= 0.9
    lower = level_metrics(answer_levels(hier, p, t - 0.2), truth)
    assert lower["answered"] >= m["answered"]  # a lower threshold answers more


def test_coverage_ceiling_is_the_best_cut_on_the_images_given(hier):
    from llava_address.clip.hierarchy import coverage_ceiling

    # district North holds A1, A2, B1: its confidence is their sum; C1 has no district
    p = np.array([[0.7, 0.2, 0.05, 0.05], [0.5, 0.3, 0.1, 0.1], [0.1, 0.1, 0.75, 0.05], [0.1, 0.1, 0.7, 0.1],
                  [0.05, 0.05, 0.05, 0.85]])
    subs = ["A2", "A1", "B1", "C1", "C1"]
    street_of = {"A1": "A", "A2": "A", "B1": "B", "C1": "C"}
    truth = {"sub_street": subs, "street": [street_of[s] for s in subs],
             "district": ["North", "North", "North", "", ""]}
    c = coverage_ceiling(hier, p, truth, target=0.75)
    # sub-street, most confident first: C1 .85 right, B1 .75 right, A1 .7 wrong (2/3), B1 .7 wrong, A1 .5 wrong
    assert c["coverage_ceiling_sub_street"] == pytest.approx(2 / 5)
    # street: A .9, C .85, A .8, B .75 right, then B .7 wrong: 4/5 right overall
    assert c["coverage_ceiling_street"] == pytest.approx(1.0)
    # district North: .95, .95, .9 right, .9 wrong (no district), .15 wrong: 3/4 = .75 still reaches the target
    assert c["coverage_ceiling_district"] == pytest.approx(4 / 5)
    strict = coverage_ceiling(hier, p, truth, target=0.9)
    assert (strict["coverage_ceiling_sub_street"], strict["coverage_ceiling_street"],
            strict["coverage_ceiling_district"]) == pytest.approx((2 / 5, 4 / 5, 3 / 5))


# ---- coordinates --------------------------------------------------------------------------
def test_one_haversine_helper_everywhere():
    import data_gen.nominatim
    import data_gen.qa.neighbours
    import llava_address.clip.metrics

    assert data_gen.nominatim.haversine_m is data_gen.qa.neighbours.haversine_m is haversine_m
    assert llava_address.clip.metrics.haversine_m is haversine_m
    assert haversine_m(60.0, 24.0, 60.001, 24.0) == pytest.approx(111.195, abs=0.01)


def test_midpoint_estimate_and_spread():
    mids = np.array([[60.0, 24.0], [60.001, 24.0], [60.01, 24.0]])
    lat, lon, spread = midpoint_estimate(np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]), mids, k=2)
    assert lat[0] in (60.0, 60.001) and lat[1] == 60.0 and lon[1] == 24.0
    assert spread[0] == pytest.approx(np.sqrt(0.5) * 111.195, rel=1e-3) and spread[1] == 0


def test_knn_estimate_stays_inside_the_top_k_sub_streets():
    emb = np.eye(4, dtype=np.float32)
    gal = Gallery(emb, np.array([60.0, 60.001, 60.002, 60.003]), np.full(4, 24.0), np.array([0, 0, 1, 2]))
    q = np.array([[0, 0, 0, 1.0]], dtype=np.float32)            # identical to gallery image 3 (candidate 2)
    p = np.array([[0.1, 0.8, 0.1]])
    lat, _, _ = knn_estimate(q, p, gal, k=1, n_neighbours=1)     # only candidate 1 allowed -> image 2
    assert lat[0] == pytest.approx(60.002)
    lat, _, _ = knn_estimate(q, p, gal, k=3, n_neighbours=1, scale=100.0)
    assert lat[0] == pytest.approx(60.003)
    with pytest.raises(ValueError, match="gallery"):
        Gallery(emb, np.zeros(3), np.zeros(4), np.zeros(4, int))


def test_gallery_round_trip_and_radius(tmp_path):
    gal = Gallery(np.ones((2, 3), np.float32), np.array([60.0, 60.1]), np.array([24.0, 24.1]), np.array([1, 0]))
    gal.save(tmp_path, ["a", "b"])
    back = Gallery.load(tmp_path, ["a", "b"])
    np.testing.assert_array_equal(back.cand_idx, [1, 0])
    np.testing.assert_allclose(back.lat, gal.lat)
    with pytest.raises(ValueError, match="not among the candidates"):
        Gallery.load(tmp_path, ["a", "c"])
    err, spread = np.array([5.0, 20.0, 40.0, 80.0]), np.array([10.0, 10.0, 20.0, 20.0])
    a = radius_scale_for(spread, err, coverage=0.5)
    assert np.mean(err <= radius_m(spread, a)) >= 0.5
    m = within_metrics(err, radius_m(spread, a))
    assert m["within_25m"] == 0.5 and m["median_error_m"] == 30.0


def test_wilson_lower_bound_known_values():
    assert wilson_lower_bound(1.0, 35, 1.645) == pytest.approx(35 / (35 + 1.645 ** 2))
    assert wilson_lower_bound(0.9, 100, 1.645) == pytest.approx(0.8396, abs=1e-3)  # by hand: (0.9135 - 0.0512) / 1.0271
    assert wilson_lower_bound(0.9, 100, 0.0) == pytest.approx(0.9)
