"""The three AddressCLIP losses; each a small ``nn.Module`` returning a dict of named parts.

L = alpha·L_address + beta·L_semantic + gamma·L_geo   (paper: alpha=1, beta=0.2, gamma=0.8)

Distributed: features are all-gathered WITH gradients (``torch.distributed.nn.functional.all_gather``)
and every rank computes the loss over the global batch. Each rank's local features then receive
N × dL/df through the gather's backward, and DDP's gradient averaging divides by N, so parameter
gradients equal the single-process gradient on the concatenated batch (as in open_clip's
``gather_with_grad`` / ``local_loss=False``).

Duplicate positives: several images in a batch share one address. Targets are soft: image i's
target distribution is uniform over every text whose address id equals its own (and symmetrically
for texts over images), so a same-address text is never a negative. When duplicate texts are
identical strings (plain sub-street text) this equals plain one-hot CLIP numerically — the
duplicate column carries exactly the positive's logit — and the loss floor is log(#duplicates),
not 0 (tested). It stays correct when same-address texts differ (prompt wordings, street vs
sub-street forms), where one-hot CLIP would push an image away from its own address.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from llava_address.clip.config import LossConfig
from llava_address.common.geo import haversine_m

__all__ = ["gather_with_grad", "gather_no_grad", "multi_positive_infonce", "vocabulary_infonce", "pairwise_haversine_m",
           "latlon_to_utm", "paper_geo_target", "AddressLoss", "SemanticLoss", "GeoLoss", "AddressCLIPLoss"]

def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks (rank order), keeping the autograd graph."""
    if _world() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate labels / coordinates from all ranks (no gradient needed)."""
    if _world() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(_world())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def multi_positive_infonce(image: torch.Tensor, text: torch.Tensor, ids: torch.Tensor,
                           logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE where every pair with equal ``ids`` is a positive (soft uniform targets)."""
    logits = logit_scale * image @ text.t()
    same = (ids[:, None] == ids[None, :]).to(logits.dtype)
    targets = same / same.sum(dim=1, keepdim=True)
    # `same` is symmetric, so its row-normalisation serves both directions.
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))


def pairwise_haversine_m(lat: torch.Tensor, lon: torch.Tensor) -> torch.Tensor:
    """(B, B) great-circle distances in metres (float64), via the project's one haversine helper."""
    la, lo = lat.detach().double().cpu().numpy(), lon.detach().double().cpu().numpy()
    return torch.from_numpy(haversine_m(la[:, None], lo[:, None], la[None, :], lo[None, :])).to(lat.device)


def vocabulary_infonce(image: torch.Tensor, vocab: torch.Tensor, ids: torch.Tensor,
                       logit_scale: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each image over ALL candidate address texts (``ids`` index ``vocab`` rows)."""
    return F.cross_entropy(logit_scale * image @ vocab.t(), ids)


class AddressLoss(nn.Module):
    """L_image-address: symmetric multi-positive InfoNCE, image vs its (sub-street) address text.

    With ``vocab_embeds`` (``loss.address_negatives=vocabulary``) each image is contrasted with
    every candidate address instead of the batch's: a closed address set is small next to CLIP's
    web-scale text space, and a small batch (64 images from a few hundred sub-streets) shows each
    address only a few negatives per step, so a text tower trained from scratch learns slowly. It is
    the inference task itself (rank the whole candidate set). Distributed: every rank encodes the same
    vocabulary with the same weights and takes the mean over its own images; DDP's gradient average
    then equals the single-process mean over the global batch, so nothing is gathered.
    """

    def forward(self, image_embeds, address_embeds, address_ids, logit_scale,
                vocab_embeds: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if vocab_embeds is not None:
            return {"loss_address": vocabulary_infonce(image_embeds, vocab_embeds, address_ids, logit_scale)}
        img, txt = gather_with_grad(image_embeds), gather_with_grad(address_embeds)
        ids = gather_no_grad(address_ids)
        return {"loss_address": multi_positive_infonce(img, txt, ids, logit_scale)}


class SemanticLoss(nn.Module):
    """L_image-semantic: InfoNCE, image vs join_caption_address(caption, address); identical texts share."""

    def forward(self, image_embeds, semantic_embeds, semantic_ids, logit_scale) -> dict[str, torch.Tensor]:
        img, txt = gather_with_grad(image_embeds), gather_with_grad(semantic_embeds)
        ids = gather_no_grad(semantic_ids)
        return {"loss_semantic": multi_positive_infonce(img, txt, ids, logit_scale)}


def latlon_to_utm(lat: torch.Tensor, lon: torch.Tensor) -> torch.Tensor:
    """(B, 2) UTM easting/northing in metres (float64), in the zone of the batch's mean longitude.

    One zone for the whole batch: a city (Pittsburgh: 17N, San Francisco: 10N) lies in one zone,
    and pairwise distances must not jump at a zone edge.
    """
    import numpy as np

    la, lo = lat.detach().double().cpu().numpy(), lon.detach().double().cpu().numpy()
    zone = int((np.floor((lo.mean() + 180.0) / 6.0) % 60) + 1)
    t = _utm_transformer(zone, bool(la.mean() >= 0))
    e, n = t.transform(lo, la)
    return torch.as_tensor(np.stack([e, n], axis=1), dtype=torch.float64, device=lat.device)


_UTM: dict[tuple[int, bool], object] = {}


def _utm_transformer(zone: int, north: bool):
    import pyproj

    key = (zone, north)
    if key not in _UTM:
        crs = pyproj.CRS.from_dict({"proj": "utm", "zone": zone, "south": not north})
        _UTM[key] = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    return _UTM[key]


def paper_geo_target(utm: torch.Tensor) -> torch.Tensor:
    """(B, B) target similarity 1 − D of the paper form (see GeoLoss); ``utm`` is (B, 2) metres.

    Each axis is min-max normalised over the batch to [0, 1] (an axis with no spread maps to 0),
    D_ij = |e'_i − e'_j| + |n'_i − n'_j| ∈ [0, 2] (L1), so 1 − D ∈ [−1, 1], the range of a cosine.
    """
    lo, hi = utm.min(dim=0).values, utm.max(dim=0).values
    span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    u = (utm - lo) / span
    d = (u[:, None, :] - u[None, :, :]).abs().sum(dim=-1)
    return 1.0 - d


class GeoLoss(nn.Module):
    """L_geo, two forms (``LossConfig.geo_form``).

    ``distance`` (project default): MSE between pairwise image-feature DISTANCE and normalised
    geographic distance. The paper writes the loss as fitting image-feature similarity to
    geographic distance, which taken literally would make far-apart images look alike. The intent
    (nearby places look alike) needs a distance on both sides, so we regress
    1 − cos(img_i, img_j) ∈ [0, 2] onto d_ij ∈ [0, 1]: d_ij is the haversine distance min-max
    normalised over the batch's off-diagonal pairs, or d/scale clipped at 1 when ``scale_m`` is
    set. The diagonal is excluded.

    ``paper`` (the paper's recipe, as summarised): the full B × B matrices, diagonal included,

        L_geo = mean_ij ( cos(img_i, img_j) − (1 − D_ij) )²,
        D_ij = |ê_i − ê_j| + |n̂_i − n̂_j|,   ê = (e − min e) / (max e − min e) over the batch (n̂ alike),

    with (e, n) the UTM coordinates. Sign convention: the similarity target is 1 − D, so the
    same place (D = 0) targets cos = 1 and the batch's opposite corners (D = 2) target cos = −1;
    similar places get high similarity, which is what the paper's text intends. The diagonal
    terms are (1 − 1)² = 0 for unit features: they only dilute the mean by B/B², as in the paper.
    """

    def __init__(self, scale_m: float | None = None, form: str = "distance"):
        super().__init__()
        if form not in ("distance", "paper"):
            raise ValueError(f"loss.geo_form must be 'distance' or 'paper', got {form!r}")
        self.scale_m, self.form = scale_m, form

    def forward(self, image_embeds, lat, lon) -> dict[str, torch.Tensor]:
        img = gather_with_grad(image_embeds)
        lat, lon = gather_no_grad(lat), gather_no_grad(lon)
        n = img.shape[0]
        if n < 2:
            return {"loss_geo": img.sum() * 0.0}
        if self.form == "paper":
            target = paper_geo_target(latlon_to_utm(lat, lon)).to(img.dtype)
            return {"loss_geo": F.mse_loss(img @ img.t(), target)}
        off = ~torch.eye(n, dtype=torch.bool, device=img.device)
        d = pairwise_haversine_m(lat, lon)[off]
        if self.scale_m is not None:
            target = (d / self.scale_m).clamp(max=1.0)
        else:
            lo, hi = d.min(), d.max()
            target = (d - lo) / (hi - lo) if hi > lo else torch.zeros_like(d)
        feat_dist = 1.0 - (img @ img.t())[off]
        return {"loss_geo": F.mse_loss(feat_dist, target.to(feat_dist.dtype))}


class AddressCLIPLoss(nn.Module):
    """Weights and switches in one place: returns every part plus ``loss`` = the weighted sum."""

    def __init__(self, cfg: LossConfig):
        super().__init__()
        self.cfg = cfg
        self.address, self.semantic, self.geo = AddressLoss(), SemanticLoss(), GeoLoss(cfg.geo_scale_m, cfg.geo_form)

    def forward(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c, parts, total = self.cfg, {}, 0.0
        if c.use_address:
            p = self.address(out["image_embeds"], out.get("address_embeds"), batch["address_ids"], out["logit_scale"],
                             out.get("vocab_embeds"))
            parts.update(p)
            total = total + c.alpha * p["loss_address"]
        if c.use_semantic:
            p = self.semantic(out["image_embeds"], out["semantic_embeds"], batch["semantic_ids"], out["logit_scale"])
            parts.update(p)
            total = total + c.beta * p["loss_semantic"]
        if c.use_geo:
            p = self.geo(out["image_embeds"], batch["lat"], batch["lon"])
            parts.update(p)
            total = total + c.gamma * p["loss_geo"]
        parts["loss"] = total
        return parts
