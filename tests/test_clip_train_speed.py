"""The faster training step computes what the old one did: same features, losses and gradients.

Old step (reference, written out here): one text-tower call per text batch (addresses, then
caption + address), and the geo loss's distances through numpy. New step: identical texts encoded
once and texts grouped by length (``AddressCLIP.encode_texts_together``), distances in torch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _clip_fixtures import tiny_cfg

from llava_address.clip.losses import AddressCLIPLoss, pairwise_haversine_m
from llava_address.clip.model import _length_groups, build_model
from llava_address.common.geo import haversine_m

STREETS = ["Mannerheimintie between Kaivokatu and Postikatu", "Aleksanterinkatu", "Hämeentie near Kallio",
           "Unioninkatu north of Kaisaniemenkatu"]
CAPTIONS = ["a red house", "a tall grey building with many windows and a bakery sign under trees at dusk",
            "trees", "a tram stop, yellow facades, a kiosk and a cyclist in the rain on a wide street"]


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = build_model(cfg.model, STREETS + CAPTIONS)
    b = 12
    addr = [STREETS[i % 3] for i in range(b)]                       # repeated sub-streets, as in a real batch
    sem = [f"{CAPTIONS[(i * 7) % 4]}, at {a}" for i, a in enumerate(addr)]  # lengths vary
    at, st = model.tokenize(addr), model.tokenize(sem)
    batch = {"pixel_values": torch.randn(b, 3, cfg.model.tiny.image_size, cfg.model.tiny.image_size),
             "address_input_ids": at["input_ids"], "address_attention_mask": at["attention_mask"],
             "semantic_input_ids": st["input_ids"], "semantic_attention_mask": st["attention_mask"],
             "address_ids": torch.arange(b) % 3, "semantic_ids": torch.arange(b),
             "lat": 60.16 + 0.01 * torch.rand(b, dtype=torch.float64),
             "lon": 24.93 + 0.01 * torch.rand(b, dtype=torch.float64)}
    return cfg, model, batch


def _old_forward(model, batch):
    out = {"image_embeds": model.encode_image(batch["pixel_values"]), "logit_scale": model.logit_scale()}
    for name in ("vocab", "address", "semantic"):
        if f"{name}_input_ids" in batch:
            out[f"{name}_embeds"] = model.encode_text(batch[f"{name}_input_ids"], batch[f"{name}_attention_mask"])
    return out


def _old_pairwise(lat, lon):
    la, lo = lat.double().numpy(), lon.double().numpy()
    return torch.from_numpy(haversine_m(la[:, None], lo[:, None], la[None, :], lo[None, :]))


def _loss_and_grads(model, loss_fn, forward, batch):
    model.zero_grad()
    parts = loss_fn(forward(batch), batch)
    parts["loss"].backward()
    return ({k: v.detach().clone() for k, v in parts.items()},
            {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})


@pytest.mark.parametrize("negatives", ["batch", "vocabulary"])
def test_new_step_matches_old_losses_and_gradients(setup, monkeypatch, negatives):
    cfg, model, batch = setup
    model.train()
    if negatives == "vocabulary":   # every candidate address instead of the batch's address texts
        vt = model.tokenize(STREETS)
        batch = {k: v for k, v in batch.items() if not k.startswith("address_") or k == "address_ids"}
        batch.update(vocab_input_ids=vt["input_ids"], vocab_attention_mask=vt["attention_mask"])
    loss_fn = AddressCLIPLoss(cfg.loss.model_copy(update={"address_negatives": negatives}))
    inputs = {k: v for k, v in batch.items() if "input_ids" in k or "mask" in k or k == "pixel_values"}
    new_parts, new_grads = _loss_and_grads(model, loss_fn, lambda b: model(**inputs), batch)
    with monkeypatch.context() as m:
        m.setattr("llava_address.clip.losses.pairwise_haversine_m", _old_pairwise)
        old_parts, old_grads = _loss_and_grads(model, loss_fn, lambda b: _old_forward(model, b), batch)
    assert set(new_parts) == {"loss", "loss_address", "loss_semantic", "loss_geo"}
    for k in old_parts:
        torch.testing.assert_close(new_parts[k], old_parts[k], rtol=1e-5, atol=1e-6)
    assert set(new_grads) == set(old_grads) and any("text_model" in n for n in new_grads)
    for n in old_grads:
        torch.testing.assert_close(new_grads[n], old_grads[n], rtol=1e-4, atol=1e-6, msg=n)


def test_texts_are_deduplicated_and_grouped_by_length(setup, monkeypatch):
    _, model, batch = setup
    calls = []
    real = model.encode_text
    monkeypatch.setattr(model, "encode_text", lambda ids, mask=None: calls.append(tuple(ids.shape)) or real(ids, mask))
    with torch.no_grad():
        a, s = model.encode_texts_together([(batch["address_input_ids"], batch["address_attention_mask"]),
                                            (batch["semantic_input_ids"], batch["semantic_attention_mask"])])
        ref_a = real(batch["address_input_ids"], batch["address_attention_mask"])
        ref_s = real(batch["semantic_input_ids"], batch["semantic_attention_mask"])
    torch.testing.assert_close(a, ref_a, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s, ref_s, rtol=1e-5, atol=1e-6)
    n_unique = 3 + len({tuple(r.tolist()) for r in batch["semantic_input_ids"]})
    assert sum(r for r, _ in calls) == n_unique and len(calls) <= 3
    padded_old = batch["address_input_ids"].numel() + batch["semantic_input_ids"].numel()
    assert sum(r * w for r, w in calls) < 0.65 * padded_old   # 327 of 552 token slots here


def test_length_groups_minimise_padding():
    assert _length_groups([5, 5, 5], 3) == [[0, 1, 2]]
    assert _length_groups([2, 2, 9, 9, 30], 3) == [[0, 1], [2, 3], [4]]
    assert _length_groups([2, 2, 9, 9, 30], 2) == [[0, 1, 2, 3], [4]]   # 4·9 + 30 = 66 < 2·2 + 3·30 = 94


def test_torch_haversine_matches_numpy_and_stays_on_device():
    rng = np.random.default_rng(0)
    lat, lon = 60 + rng.random(20) * 0.1, 24.9 + rng.random(20) * 0.1
    got = pairwise_haversine_m(torch.tensor(lat), torch.tensor(lon))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), haversine_m(lat[:, None], lon[:, None], lat[None, :], lon[None, :]),
                               rtol=1e-12, atol=1e-6)
    assert float(haversine_m(torch.tensor(60.0), 24.0, 60.001, 24.0)) == pytest.approx(111.195, abs=0.01)
