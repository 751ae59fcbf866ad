"""Top-k softmax over many candidate addresses: exact, or a reduced-precision shortlist re-ranked exactly.

Why: one image against 100k candidates at 512-d is one (1, D) × (D, 100k) product that reads the
whole fp32 matrix (205 MB): ~19 ms on the 2-core CPU, memory-bound. The fast path scans a
reduced-precision copy of the matrix for a shortlist of ``max(8·k, 64)`` candidates, recomputes
their logits in fp32 from the original rows and ranks those: the returned items and their logits
are the exact ones unless a true top-k item falls outside the shortlist (only when the copy's
error, ~1e-3 in cosine, reorders items dozens of places apart: rare near-ties).

The copy: on CPU, int8 rows with a per-row scale (50 MB at 100k × 512), multiplied with
``torch._int_mm`` (exact int32 sums; int8 was the fastest of fp16 / bf16 / int8 here for one query
and for batches, ``benchmarks/topk_fast.py --alternatives``). On CUDA, float16, for ``search="fast"``
only: on an H100 exact fp32 search was faster (0.30 vs 1.38 ms for one image over 100k × 512, 0.008
vs 0.029 ms/image in batches of 64), so the locator's ``auto`` searches exactly on a GPU.

One query on CPU is a matrix-vector product: ``torch._int_mm(codes, q_codes.T)`` with a single
query column runs a gemv kernel, 2.7 ms at 100k × 512 on 2 threads, against 4.4 ms for the
two-row product (query codes + residual codes) that the batch path uses. So a batch
sends each query as int8 codes plus the int8 codes of its rounding residual (exact enough for the
normaliser everywhere), while a single query sends its codes alone and instead computes *every*
candidate whose approximate logit lies within ``SINGLE_MARGIN`` of the best one exactly (at most
``SINGLE_EXACT_CAP``): the residual's error is a shift shared by near-identical candidates, and
those are exactly the ones near the top that carry the normaliser's mass.

Probabilities: ``p = exp(logit - logsumexp(all logits))``. The normaliser uses the exact logits of
the shortlist (the large terms) and the reduced-precision logits of the rest. Largest relative
error of p against exact search (``benchmarks/topk_fast.py``, 256 queries): ~1e-3 on random
candidates; ~5e-3 when hundreds of near-identical candidates share the probability mass (their
small copy errors then partly add up instead of averaging out). ``search="exact"`` where that matters.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

__all__ = ["SEARCH_MODES", "FAST_MIN_ELEMENTS", "SearchMode", "exact_top_k", "logsumexp_", "ShortlistIndex",
           "IndexCache", "shortlist_size"]

SearchMode = Literal["auto", "exact", "fast"]
SEARCH_MODES = ("auto", "exact", "fast")
# auto: the shortlist from 10M matrix elements on (40 MB in fp32, beyond this CPU's 32 MB L3 cache,
# e.g. 20k candidates at 512-d): below that the exact product runs from cache and is as fast
FAST_MIN_ELEMENTS = 10_000_000
BLOCK = 16_384                 # candidates per block of the scan
SINGLE_MARGIN = 8.0            # one query: candidates within this many logits of the best are re-scored exactly
SINGLE_EXACT_CAP = 2_048       # ... but at most this many (exact rows cost ~0.1 ms per 1k at 512-d)


def shortlist_size(k: int, n_candidates: int) -> int:
    """How many candidates the reduced-precision scan keeps for the exact re-rank."""
    return min(n_candidates, max(8 * k, 64))


def logsumexp_(x: torch.Tensor) -> torch.Tensor:
    """(B, 1) logsumexp over the last dim, overwriting ``x`` (B, N).

    Why not ``torch.logsumexp``: with logit scale 100, most terms are e^-100 and below, which
    float32 holds only as denormals, and CPU arithmetic on denormals is 10-40× slower (measured:
    63 ms vs 1.7 ms for 64 × 16k logits). Terms below e^-80 of the largest are clamped there: they
    change the sum by less than N·e^-80 relative (1e-30 at N = 100k).
    """
    m = x.amax(dim=-1, keepdim=True)
    return m + x.sub_(m).clamp_(min=-80.0).exp_().sum(dim=-1, keepdim=True).log_()


def exact_top_k(image_embeds: torch.Tensor, text_embeds: torch.Tensor, scale: float,
                k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact fp32 top-k probabilities and indices: one matmul + topk + logsumexp."""
    logits = scale * (image_embeds @ text_embeds.t())
    top = torch.topk(logits, min(k, logits.shape[-1]), dim=-1)
    return torch.exp(top.values - logsumexp_(logits)), top.indices


def _quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: ``x ≈ scale[:, None] * q``."""
    scale = x.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
    return torch.round(x / scale).to(torch.int8), scale


class ShortlistIndex:
    """A reduced-precision copy of one (C, D) fp32 candidate matrix, for shortlisting (see module doc)."""

    def __init__(self, text_embeds: torch.Tensor, device: torch.device | str | None = None):
        self.text = text_embeds.float()
        self.device = torch.device(device) if device is not None else self.text.device
        if self.device.type == "cuda":
            self.kind = "float16"
            self.half = self.text.to(self.device, torch.float16)
        else:
            self.kind = "int8"
            self.codes, self.row_scale = _quantize_rows(self.text)        # (C, D) int8, (C, 1)
            self.row_scale = self.row_scale.t().contiguous()               # (1, C)

    def _blocks(self, q: torch.Tensor, scale: float):
        """Yield (first column, (B, block) float32 approximate logits) over blocks of candidates.

        Blocks keep each (B, block) slab in cache for the top-m and logsumexp passes that follow.
        """
        if self.kind == "float16":
            qh = q.to(self.device, torch.float16)
            for lo in range(0, self.text.shape[0], BLOCK):
                yield lo, (qh @ self.half[lo:lo + BLOCK].t()).float().mul_(scale)
            return
        # CPU int8: integer products are exact sums. The query goes in as int8 codes plus int8 codes
        # of its rounding residual (two rows per query): the residual shifts a whole cluster of
        # near-identical candidates alike, so it does not average out in the normaliser (measured on
        # clustered candidates: max relative error of p 8.8e-2 without it, 5.4e-3 with it).
        hi, s_hi = _quantize_rows(q)
        lo_codes, s_lo = _quantize_rows(q - hi.float() * s_hi)
        codes, s = torch.cat([hi, lo_codes]), torch.cat([s_hi, s_lo]) * scale
        b = q.shape[0]
        for lo in range(0, self.text.shape[0], BLOCK):
            prod = torch.mul(torch._int_mm(codes, self.codes[lo:lo + BLOCK].t()), self.row_scale[:, lo:lo + BLOCK])
            prod.mul_(s)
            yield lo, prod[:b].add_(prod[b:])

    def _single_query(self, q: torch.Tensor, scale: float, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One CPU query: int8 gemv, exact fp32 logits for everything near the top (see module doc)."""
        codes, s = _quantize_rows(q)
        approx = torch._int_mm(self.codes, codes.t().contiguous()).view(-1).float()
        approx.mul_(self.row_scale.view(-1)).mul_(float(s) * scale)
        n = approx.shape[0]
        near = int((approx >= approx.max() - SINGLE_MARGIN).sum())
        m = min(n, max(shortlist_size(k, n), min(near, SINGLE_EXACT_CAP)))
        cand = torch.topk(approx, m, sorted=False).indices
        exact = scale * (self.text.index_select(0, cand) @ q[0])
        approx.index_fill_(0, cand, -math.inf)
        terms = torch.stack([torch.logsumexp(exact.double(), 0), torch.logsumexp(approx.double(), 0)])
        lse = torch.logsumexp(terms, 0)
        top = torch.topk(exact, min(k, n))
        return torch.exp(top.values.double() - lse).float()[None], cand[top.indices][None]

    @torch.inference_mode()
    def top_k(self, image_embeds: torch.Tensor, scale: float, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k probabilities (fp32, on the queries' device) and indices, like ``exact_top_k``."""
        q = image_embeds.float()
        if self.kind == "int8" and q.shape[0] == 1:
            return self._single_query(q, scale, k)
        n, m = self.text.shape[0], shortlist_size(k, self.text.shape[0])
        k = min(k, n)
        vals, idxs, lses = [], [], []
        for lo, logits in self._blocks(q, scale):
            v, i = torch.topk(logits, min(m, logits.shape[1]), dim=-1, sorted=False)
            vals.append(v)
            idxs.append(i + lo)
            lses.append(logsumexp_(logits))
        v, i = torch.cat(vals, dim=1), torch.cat(idxs, dim=1)
        sel = torch.topk(v, m, dim=-1, sorted=False).indices
        cand, approx = i.gather(1, sel).to(q.device), v.gather(1, sel).to(q.device).double()
        exact = scale * torch.einsum("bd,bmd->bm", q, self.text[cand])   # fp32, from the original rows
        # normaliser: every approximate term, with the shortlist's swapped for its exact ones
        lse_approx = torch.logsumexp(torch.cat(lses, dim=1), dim=-1, keepdim=True).to(q.device).double()
        ref = torch.maximum(lse_approx, exact.double().amax(dim=-1, keepdim=True))
        tail = (torch.exp(lse_approx - ref) - torch.exp(approx - ref).sum(-1, keepdim=True)).clamp_min(0)
        lse = ref + torch.log(tail + torch.exp(exact.double() - ref).sum(-1, keepdim=True))
        top = torch.topk(exact, k, dim=-1)
        return torch.exp(top.values.double() - lse).float(), cand.gather(1, top.indices)


class IndexCache:
    """``ShortlistIndex`` per candidate matrix, keyed by the tensor object; the last ``max_items`` kept
    (each holds its matrix, so an id cannot be reused by another tensor while it is cached)."""

    def __init__(self, max_items: int = 4):
        self.max_items = max_items
        self._items: dict[int, tuple[torch.Tensor, ShortlistIndex]] = {}

    def get(self, text_embeds: torch.Tensor, device: torch.device | str | None = None) -> ShortlistIndex:
        hit = self._items.get(id(text_embeds))
        if hit is not None and hit[0] is text_embeds:
            return hit[1]
        while len(self._items) >= self.max_items:
            self._items.pop(next(iter(self._items)))
        index = ShortlistIndex(text_embeds, device)
        self._items[id(text_embeds)] = (text_embeds, index)
        return index
