"""cleaning.vote_streets on constructed cases: clear street, alley only, corner, far away."""

import numpy as np
import pytest
from shapely.geometry import LineString

from data_gen.cleaning import VoteConfig, probe_points, summarize_reasons, vote_streets
from data_gen.geocoder import GeocodeResult, OfflineGeocoder
from data_gen.road_network import LocalProjection, RoadNetwork, Way


@pytest.fixture(scope="module")
def geo():
    ways = [
        Way(1, "A St", "residential", LineString([(-200, 0), (200, 0)])),
        Way(2, "B Ave", "residential", LineString([(0, -200), (0, 200)])),
        Way(3, "", "service", LineString([(300, 100), (300, 200)])),          # alley, far from A/B
        Way(4, "Mall Walk", "footway", LineString([(500, -50), (500, 50)])),  # named but excluded
    ]
    net = RoadNetwork("t", LocalProjection(52.0, 13.0), ways)
    return OfflineGeocoder(net, max_distance_m=100.0)


def latlon(geo, xy):
    xy = np.asarray(xy, dtype=float)
    return geo.network.projection.to_latlon(xy[:, 0], xy[:, 1])


def test_constructed_cases(geo):
    cfg = VoteConfig()
    pts = [(100, 3), (302, 150), (4, 4), (1000, 1000), (501, 0), (-150, -6)]
    res = vote_streets(geo, *latlon(geo, pts), cfg, seed=0)
    assert list(res.street) == ["A St", "", "", "", "", "A St"]
    assert list(res.reason) == ["", "unnamed_or_service", "ambiguous", "no_street_nearby", "unnamed_or_service", ""]
    assert res.confidence[0] == 1.0 and res.confidence[5] == 1.0
    assert 0.3 < res.confidence[2] < 0.6  # the corner splits the votes
    assert summarize_reasons(res) == {"kept": 2, "no_street_nearby": 1, "unnamed_or_service": 2, "ambiguous": 1}


def test_footway_allowed_when_not_excluded_and_single_query(geo):
    cfg = VoteConfig(drop_highways=frozenset(), n_probes=0)
    res = vote_streets(geo, *latlon(geo, [(501, 0), (4, 5)]), cfg)
    assert list(res.street) == ["Mall Walk", "B Ave"]  # (4, 5) is 4 m from B Ave, 5 m from A St
    assert list(res.confidence) == [1.0, 1.0]


def test_max_distance_and_min_confidence(geo):
    far = latlon(geo, [(100, 25)])
    assert vote_streets(geo, *far, VoteConfig(max_distance_m=20.0, probe_radius_m=2.0)).reason[0] == "no_street_nearby"
    assert vote_streets(geo, *far, VoteConfig(max_distance_m=30.0)).street[0] == "A St"
    corner = latlon(geo, [(4, 4)])
    assert vote_streets(geo, *corner, VoteConfig(min_confidence=0.3)).street[0] in {"A St", "B Ave"}


class CountingGeocoder:
    """Records how many times and with how many points it was called."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def reverse(self, lat, lon, k=5) -> GeocodeResult:
        self.calls.append(len(lat))
        return self.inner.reverse(lat, lon, k)


def test_one_geocoder_call_and_probe_ring(geo):
    cg = CountingGeocoder(geo)
    lat, lon = latlon(geo, [(100, 3)] * 7)
    vote_streets(cg, lat, lon, VoteConfig(n_probes=5))
    assert cg.calls == [7 * 6]
    cfg = VoteConfig(n_probes=6, probe_radius_m=10.0)
    plat, plon = probe_points(lat, lon, cfg, seed=1)
    x, y = geo.network.projection.to_xy(plat, plon)
    r = np.hypot(x[:, 1:] - x[:, :1], y[:, 1:] - y[:, :1])
    np.testing.assert_allclose(r, 10.0, rtol=0.01)
    np.testing.assert_allclose(x[:, 0], 100.0, atol=1e-6)


def test_bad_config_and_input(geo):
    with pytest.raises(ValueError, match="min_confidence"):
        VoteConfig(min_confidence=1.5)
    with pytest.raises(ValueError, match="out-of-range"):
        vote_streets(geo, [100.0], [13.0], VoteConfig())
