"""Loss unit tests: known values on hand-made features, gradients, switches, duplicate positives,
and the 2-rank gathered loss/gradient == single-process loss/gradient on the concatenated batch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llava_address.clip.config import LossConfig
from llava_address.clip.losses import AddressCLIPLoss, GeoLoss, multi_positive_infonce, pairwise_haversine_m


def test_infonce_known_value_orthogonal():
    e = torch.eye(2)
    loss = multi_positive_infonce(e, e, torch.tensor([0, 1]), torch.tensor(1.0))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)


def test_duplicate_positives_floor_and_zero_gradient():
    # images 0 and 1 share address 0 (its text appears twice), image 2 has address 1.
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    img = torch.stack([e0, e0, e1]).requires_grad_(True)
    txt = torch.stack([e0, e0, e1])
    loss = multi_positive_infonce(img, txt, torch.tensor([0, 0, 1]), torch.tensor(50.0))
    # rows of address 0 hold probability 1/2 on each duplicate: CE = log 2; row 2 ~ 0.
    assert loss.item() == pytest.approx(2 / 3 * math.log(2), abs=1e-6)
    loss.backward()
    assert img.grad.abs().max().item() < 1e-6  # already optimal: nothing pushes duplicates apart


def _manual_soft_infonce(img, txt, ids, scale):
    logits = scale * img @ txt.t()
    total = 0.0
    for lg in (logits, logits.t()):
        logp = torch.log_softmax(lg, dim=1)
        for i in range(len(ids)):
            pos = [j for j in range(len(ids)) if ids[j] == ids[i]]
            total += -sum(logp[i, j] for j in pos) / len(pos) / len(ids)
    return total / 2


def test_same_address_texts_are_never_negatives():
    """Random features where same-address texts differ (e.g. different prompt wordings): the loss
    is the soft multi-positive CE computed by hand, and differs from plain one-hot CLIP."""
    g = torch.Generator().manual_seed(1)
    img = F.normalize(torch.randn(5, 4, generator=g), dim=-1)
    txt = F.normalize(torch.randn(5, 4, generator=g), dim=-1)
    ids = torch.tensor([3, 3, 7, 3, 9])
    got = multi_positive_infonce(img, txt, ids, torch.tensor(5.0))
    assert got.item() == pytest.approx(_manual_soft_infonce(img, txt, ids, 5.0).item(), rel=1e-5)
    one_hot = multi_positive_infonce(img, txt, torch.arange(5), torch.tensor(5.0))
    assert abs(got.item() - one_hot.item()) > 1e-3


def test_identical_duplicate_texts_match_plain_clip():
    """With identical duplicate texts (our training case) soft targets equal plain CLIP numerically:
    a same-address column has the positive's logit, so it is neutral either way."""
    g = torch.Generator().manual_seed(2)
    img = F.normalize(torch.randn(4, 4, generator=g), dim=-1)
    base = F.normalize(torch.randn(2, 4, generator=g), dim=-1)
    ids = torch.tensor([0, 1, 0, 0])
    txt = base[ids]
    soft = multi_positive_infonce(img, txt, ids, torch.tensor(7.0))
    plain = multi_positive_infonce(img, txt, torch.arange(4), torch.tensor(7.0))
    assert soft.item() == pytest.approx(plain.item(), rel=1e-5)


def test_haversine_known_distance():
    d = pairwise_haversine_m(torch.tensor([60.0, 60.001], dtype=torch.float64), torch.tensor([24.0, 24.0]))
    assert d[0, 1].item() == pytest.approx(111.195, abs=0.01)
    assert d[0, 0].item() == 0.0


def _line_points():
    lat = torch.tensor([60.0, 60.0, 60.0])
    m_per_deg_lon = 111195.0 * math.cos(math.radians(60.0))
    lon = torch.tensor([24.0, 24.0 + 100 / m_per_deg_lon, 24.0 + 300 / m_per_deg_lon], dtype=torch.float64)
    return lat.double(), lon


def test_geo_loss_known_values_and_sign():
    lat, lon = _line_points()  # pairwise 100, 300, 200 m -> min-max targets 0, 1, 0.5
    same = F.normalize(torch.ones(3, 4), dim=-1)
    assert GeoLoss()(same, lat, lon)["loss_geo"].item() == pytest.approx((0 + 1 + 0.25) / 3, abs=1e-3)
    assert GeoLoss(scale_m=300.0)(same, lat, lon)["loss_geo"].item() == pytest.approx((1 / 9 + 1 + 4 / 9) / 3, abs=1e-3)
    # features arranged like the geography beat the reversed arrangement (distance fitted to distance)
    ang = torch.tensor([0.0, 0.5, 1.5])
    geo_like = torch.stack([ang.cos(), ang.sin()], 1)
    reversed_ = torch.stack([ang.flip(0).cos(), ang.flip(0).sin()], 1)
    lat2, lon2 = lat, torch.stack([lon[0], lon[2], lon[1]])  # point 1 is now the far one
    assert GeoLoss()(geo_like, lat, lon)["loss_geo"] < GeoLoss()(geo_like, lat2, lon2)["loss_geo"]
    assert reversed_.shape == geo_like.shape


def _batch(n=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {"image_embeds": F.normalize(torch.randn(n, d, generator=g), dim=-1).requires_grad_(True),
           "address_embeds": F.normalize(torch.randn(n, d, generator=g), dim=-1).requires_grad_(True),
           "semantic_embeds": F.normalize(torch.randn(n, d, generator=g), dim=-1).requires_grad_(True),
           "logit_scale": torch.tensor(10.0)}
    batch = {"address_ids": torch.tensor([0, 0, 1, 2, 2, 2])[:n], "semantic_ids": torch.arange(n),
             "lat": 60 + torch.rand(n, generator=g).double() * 1e-3, "lon": 24 + torch.rand(n, generator=g).double() * 1e-3}
    return out, batch


def test_total_is_weighted_sum_and_every_part_has_gradient():
    out, batch = _batch()
    parts = AddressCLIPLoss(LossConfig(alpha=1.0, beta=0.2, gamma=0.8))(out, batch)
    assert set(parts) == {"loss", "loss_address", "loss_semantic", "loss_geo"}
    expect = parts["loss_address"] + 0.2 * parts["loss_semantic"] + 0.8 * parts["loss_geo"]
    assert parts["loss"].item() == pytest.approx(expect.item(), rel=1e-6)
    parts["loss"].backward()
    for k in ("image_embeds", "address_embeds", "semantic_embeds"):
        assert out[k].grad is not None and out[k].grad.abs().sum() > 0, k


@pytest.mark.parametrize("switch,absent", [("use_semantic", "loss_semantic"), ("use_geo", "loss_geo"),
                                           ("use_address", "loss_address")])
def test_switches_remove_terms(switch, absent):
    out, batch = _batch()
    full = AddressCLIPLoss(LossConfig())(out, batch)
    parts = AddressCLIPLoss(LossConfig(**{switch: False}))(out, batch)
    assert absent not in parts
    w = {"loss_address": 1.0, "loss_semantic": 0.2, "loss_geo": 0.8}
    assert parts["loss"].item() == pytest.approx(full["loss"].item() - w[absent] * full[absent].item(), rel=1e-5)


def test_semantic_off_needs_no_semantic_inputs():
    out, batch = _batch()
    del out["semantic_embeds"], batch["semantic_ids"]
    parts = AddressCLIPLoss(LossConfig(use_semantic=False))(out, batch)
    assert torch.isfinite(parts["loss"])


def test_two_ranks_gathered_loss_equals_single_process(tmp_path):
    """2 gloo processes, each with half the batch (duplicate addresses across ranks): the gathered loss
    equals the full-batch loss, and each rank's feature gradient equals N x the full-batch gradient
    (DDP's averaging then gives the single-process parameter gradient)."""
    import torch.multiprocessing as mp

    from llava_address.clip.testing import distributed_loss_worker

    out, batch = _batch()
    full = AddressCLIPLoss(LossConfig())(out, batch)
    full["loss"].backward()
    try:
        mp.spawn(distributed_loss_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    except mp.ProcessExitedException as exc:
        # gloo can abort in its own teardown after both ranks saved their results (torch, not our
        # code); a worker that died before saving still fails here, and the values are checked below
        if exc.signal_name != "SIGABRT" or not all((tmp_path / f"rank{r}.pt").is_file() for r in range(2)):
            raise
    for r in range(2):
        res = torch.load(tmp_path / f"rank{r}.pt")
        assert res["loss"] == pytest.approx(full["loss"].item(), rel=1e-5)
        sl = slice(3 * r, 3 * r + 3)
        for k in ("image_embeds", "address_embeds", "semantic_embeds"):
            torch.testing.assert_close(res["grad_" + k] / 2, out[k].grad[sl], atol=1e-6, rtol=1e-4)


def _paper_geo_numpy(feats, east, north):
    """The paper's L_geo transcribed literally: per-axis min-max UTM, L1, target 1 − D, MSE over B × B."""
    import numpy as np

    f = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    e = (east - east.min()) / (east.max() - east.min())
    n = (north - north.min()) / (north.max() - north.min())
    b = len(f)
    total = 0.0
    for i in range(b):
        for j in range(b):
            d = abs(e[i] - e[j]) + abs(n[i] - n[j])
            total += (float(f[i] @ f[j]) - (1.0 - d)) ** 2
    return total / (b * b)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paper_geo_loss_equals_numpy_transcription(seed):
    import numpy as np

    from data_gen.importers import utm_to_latlon

    rng = np.random.default_rng(seed)
    b = 7
    east = 585_000 + rng.uniform(0, 3000, b)  # Pittsburgh, UTM 17N
    north = 4_477_000 + rng.uniform(0, 3000, b)
    ll = np.array([utm_to_latlon(e, n, 17) for e, n in zip(east, north)])
    feats = rng.normal(size=(b, 16))
    img = F.normalize(torch.tensor(feats, dtype=torch.float64), dim=-1).requires_grad_(True)
    out = GeoLoss(form="paper")(img, torch.tensor(ll[:, 0]), torch.tensor(ll[:, 1]))["loss_geo"]
    assert out.item() == pytest.approx(_paper_geo_numpy(feats, east, north), rel=1e-6)
    out.backward()
    assert torch.isfinite(img.grad).all() and img.grad.abs().sum() > 0


def test_paper_geo_sign_pulls_neighbours_together():
    # two images at one place and one far away: the loss is lower when the neighbours look alike.
    lat, lon = torch.tensor([40.44, 40.44, 40.46]), torch.tensor([-79.99, -79.99, -79.95])
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    geo = GeoLoss(form="paper")
    alike = geo(torch.stack([e0, e0, -e0]), lat, lon)["loss_geo"]
    apart = geo(torch.stack([e0, e1, -e0]), lat, lon)["loss_geo"]
    assert alike.item() == pytest.approx(0.0, abs=1e-9) and apart.item() > 0.1


def test_geo_form_config_is_checked():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="geo_scale_m only applies"):
        LossConfig(geo_form="paper", geo_scale_m=500.0)
    with pytest.raises(ValidationError, match="geo_form"):
        LossConfig(geo_form="haversine")
    assert AddressCLIPLoss(LossConfig(geo_form="paper")).geo.form == "paper"


def test_vocabulary_negatives_rank_every_candidate_and_train_every_address_text():
    from llava_address.clip.losses import vocabulary_infonce

    out, batch = _batch()
    g = torch.Generator().manual_seed(1)
    vocab = F.normalize(torch.randn(5, 8, generator=g), dim=-1).requires_grad_(True)  # 5 addresses, batch uses 0-2
    out["vocab_embeds"] = vocab
    parts = AddressCLIPLoss(LossConfig(address_negatives="vocabulary"))(out, batch)
    logits = 10.0 * out["image_embeds"] @ vocab.t()
    manual = -(logits.log_softmax(dim=1)[torch.arange(6), batch["address_ids"]]).mean()
    assert parts["loss_address"].item() == pytest.approx(manual.item(), rel=1e-6)
    parts["loss"].backward()
    # addresses 3 and 4 have no image in the batch: still pushed away (in-batch CLIP never sees them)
    assert (vocab.grad[3:].abs().sum(dim=1) > 0).all()
    assert out["address_embeds"].grad is None  # the batch's own address texts are not needed
    # data parallel: ranks holding equal halves each take their local mean; DDP averages the
    # gradients -> identical to one process on the whole batch (nothing to gather)
    img = out["image_embeds"].detach()
    halves = [vocabulary_infonce(img[s], vocab, batch["address_ids"][s], torch.tensor(10.0))
              for s in (slice(0, 3), slice(3, 6))]
    full = vocabulary_infonce(img, vocab, batch["address_ids"], torch.tensor(10.0))
    assert full.item() == pytest.approx(sum(h.item() for h in halves) / 2, rel=1e-6)


def test_address_negatives_option_is_validated():
    with pytest.raises(ValueError, match="address_negatives"):
        LossConfig(address_negatives="everything")
