"""AddressLocator.top_k: the int8 shortlist + exact fp32 re-rank agrees with exact fp32 search.

Random and clustered (many near-ties) candidate sets above the auto threshold; one query and a
batch; the returned items are the exact top-k with their exact logits and near-exact
probabilities; ``search`` forces a mode.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llava_address.clip.locator import AddressLocator
from llava_address.clip.topk import FAST_MIN_ELEMENTS, exact_top_k, logsumexp_

D, K = 256, 5
N = FAST_MIN_ELEMENTS // D + 1_000   # just above the auto threshold


class _ScaleOnly(nn.Module):
    """The one model method top_k needs: the learnt logit scale (CLIP's maximum, 100)."""

    def __init__(self):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(100.0)))

    def logit_scale(self) -> torch.Tensor:
        return self.log_scale.exp()


def _locator(**kw) -> AddressLocator:
    return AddressLocator(_ScaleOnly(), {}, **kw)


def _random(gen: torch.Generator) -> torch.Tensor:
    return F.normalize(torch.randn(N, D, generator=gen), dim=-1)


def _clustered(gen: torch.Generator) -> torch.Tensor:
    """300 tight clusters: dozens of candidates within ~0.01 cosine of each other (near-ties)."""
    centres = F.normalize(torch.randn(300, D, generator=gen), dim=-1)
    return F.normalize(centres[torch.randint(0, 300, (N,), generator=gen)]
                       + 0.08 * torch.randn(N, D, generator=gen) / math.sqrt(D), dim=-1)


def _queries(cands: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """Half noisy copies of candidates (a photo resembles its address), half random directions."""
    near = cands[torch.randint(0, len(cands), (n - n // 2,), generator=gen)] + 0.3 * torch.randn(
        n - n // 2, D, generator=gen) / math.sqrt(D)
    return F.normalize(torch.cat([near, torch.randn(n // 2, D, generator=gen)]), dim=-1)


def _check_against_exact(loc: AddressLocator, cands: torch.Tensor, q: torch.Tensor, p_rtol: float) -> None:
    probs, idx = loc.top_k(q, cands, K)
    e_probs, e_idx = exact_top_k(q, cands, loc.scale, K)
    assert probs.shape == idx.shape == (len(q), K) and probs.dtype == torch.float32
    logits = loc.scale * q @ cands.t()
    # the items returned are the exact top-k: their exact logits equal the exact top-k logits rank by rank
    torch.testing.assert_close(logits.gather(1, idx), logits.gather(1, e_idx), rtol=0, atol=1e-4)
    # ranks agree except where two exact logits tie to within float32 rounding
    differ = idx != e_idx
    assert differ.float().mean() <= 0.05
    # probabilities: exact logits over a normaliser whose small terms come from the int8 copy
    exact_p = torch.softmax(logits.double(), dim=-1).gather(1, idx)
    torch.testing.assert_close(probs.double(), exact_p, rtol=p_rtol, atol=1e-12)
    torch.testing.assert_close(probs, e_probs, rtol=p_rtol, atol=1e-9)


@pytest.mark.parametrize("kind", ["random", "clustered"])
@pytest.mark.parametrize("batch", [1, 16])
def test_fast_top_k_agrees_with_exact_search(kind, batch):
    gen = torch.Generator().manual_seed(0 if kind == "random" else 1)
    cands = _random(gen) if kind == "random" else _clustered(gen)
    loc = _locator()
    _check_against_exact(loc, cands, _queries(cands, batch, gen), p_rtol=2e-3 if kind == "random" else 1e-2)
    assert [v[1].kind for v in loc._indexes._items.values()] == ["int8"]  # auto chose the shortlist at this size


def test_auto_is_exact_below_threshold_and_search_option_forces_a_mode():
    gen = torch.Generator().manual_seed(2)
    small = F.normalize(torch.randn(3_000, D, generator=gen), dim=-1)
    q = _queries(small, 4, gen)
    loc = _locator()
    exact = exact_top_k(q, small, loc.scale, K)
    for got in (loc.top_k(q, small, K), _locator(search="exact").top_k(q, small, K)):
        assert torch.equal(got[0], exact[0]) and torch.equal(got[1], exact[1])
    assert not loc._indexes._items  # no int8 copy was made
    forced = _locator(search="fast")
    _check_against_exact(forced, small, q, p_rtol=2e-3)
    assert forced._indexes._items
    big = _random(gen)
    qb = _queries(big, 3, gen)
    got = _locator(search="exact").top_k(qb, big, K)
    ref = exact_top_k(qb, big, loc.scale, K)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    # per-call override, k larger than the candidate list
    p, i = loc.top_k(q[:1], small[:10], 50, search="fast")
    assert i.shape == (1, 10) and sorted(i[0].tolist()) == list(range(10))
    torch.testing.assert_close(p.sum(), torch.tensor(1.0), rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match="search must be one of"):
        _locator(search="approximate")
    with pytest.raises(ValueError, match="search must be one of"):
        loc.top_k(q, small, K, search="int8")


def test_locate_uses_the_fast_path_with_the_same_answers(monkeypatch):
    """locate() on a long candidate list goes through the shortlist and names the exact top-k."""
    gen = torch.Generator().manual_seed(3)
    cands = _random(gen)
    names = [f"Street {i}" for i in range(N)]
    q = _queries(cands, 2, gen)
    loc = _locator()
    monkeypatch.setattr(loc, "encode_images", lambda images: q)
    monkeypatch.setattr(loc, "candidate_embeddings", lambda c: cands)
    got = loc.locate(["a.jpg", "b.jpg"], candidates=names, k=3)
    e_p, e_i = exact_top_k(q, cands, loc.scale, 3)
    assert [[n for n, _ in r] for r in got] == [[names[j] for j in row] for row in e_i.tolist()]
    torch.testing.assert_close(torch.tensor([[p for _, p in r] for r in got]), e_p, rtol=1e-4, atol=1e-9)
    assert loc._indexes._items


def test_logsumexp_matches_torch_on_logits_that_underflow():
    """Scale-100 logits: most exp terms are float32 denormals; the clamped sum still equals torch's."""
    gen = torch.Generator().manual_seed(4)
    logits = 100 * F.normalize(torch.randn(8, D, generator=gen), dim=-1) @ _random(gen).t()
    ref = torch.logsumexp(logits.double(), dim=-1, keepdim=True)
    got = logsumexp_(logits.clone())
    assert got.shape == (8, 1)
    torch.testing.assert_close(got.double(), ref, rtol=1e-6, atol=1e-5)


def test_one_query_rescores_the_near_ties_at_the_top_exactly():
    """One query (int8 codes without residual): a group of 500 near-identical candidates right at
    the query, far more than the 64-item shortlist, still gets probabilities within 1e-3 of exact
    search, because every candidate within SINGLE_MARGIN logits of the best is re-scored in fp32."""
    gen = torch.Generator().manual_seed(5)
    cands = _random(gen)
    centre = cands[0]
    cands[:500] = F.normalize(centre + 0.02 * torch.randn(500, D, generator=gen) / math.sqrt(D), dim=-1)
    q = F.normalize(centre + 0.3 * torch.randn(D, generator=gen) / math.sqrt(D), dim=-1)[None]
    loc = _locator()
    probs, idx = loc.top_k(q, cands, K)
    exact = torch.softmax(loc.scale * q.double() @ cands.double().t(), dim=-1)
    assert set(idx[0].tolist()) == set(exact.topk(K).indices[0].tolist())
    torch.testing.assert_close(probs.double(), exact.gather(1, idx), rtol=1e-3, atol=0)
    assert exact[0, :500].sum() > 0.99 and exact.topk(K).values.sum() < 0.1  # the mass sits beyond the top-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device machine)")
@pytest.mark.parametrize("batch", [1, 16])
def test_cuda_float16_shortlist_agrees_with_exact(batch):
    """On CUDA, auto is exact search (faster there); search="fast" keeps a float16 copy on the GPU
    whose answers match exact fp32 search."""
    gen = torch.Generator().manual_seed(6)
    cands = _clustered(gen).cuda()
    q = _queries(cands.cpu(), batch, gen).cuda()
    auto = _locator(device="cuda")
    got, ref = auto.top_k(q, cands, K), exact_top_k(q, cands, auto.scale, K)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1]) and not auto._indexes._items
    fast = _locator(device="cuda", search="fast")
    _check_against_exact(fast, cands, q, p_rtol=1e-2)
    assert [v[1].kind for v in fast._indexes._items.values()] == ["float16"]
