"""A lat/lon estimate with an uncertainty radius for each image.

Two rules:
- ``midpoint``: the top-1 sub-street's midpoint (what the metrics used so far); spread = the
  probability-weighted RMS distance of the top-k candidates' midpoints from it.
- ``knn`` (PIGEON-style refinement): among training images of the top-k sub-streets only (the
  "gallery", kept beside the checkpoint as ``gallery_embeddings.npy`` + ``gallery.parquet``), the
  n most similar to the query; the estimate is their mean position weighted by the candidate's
  probability × exp(scale · cosine); spread = the weighted RMS distance of those neighbours from it.
The radius is ``radius_scale`` × max(spread, 10 m), with the scale chosen on val so that the
stated circle holds the true position for ``RADIUS_COVERAGE`` of val images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from llava_address.common.geo import haversine_m

__all__ = ["GALLERY_EMBEDDINGS", "GALLERY_TABLE", "RADIUS_COVERAGE", "Gallery", "midpoint_estimate",
           "knn_estimate", "radius_scale_for", "radius_m", "within_metrics", "midpoints_array"]

GALLERY_EMBEDDINGS = "gallery_embeddings.npy"
GALLERY_TABLE = "gallery.parquet"
RADIUS_COVERAGE = 0.68   # a one-sigma-like circle
MIN_SPREAD_M = 10.0


@dataclass
class Gallery:
    """Training-image embeddings (M, D), their positions and the candidate index of their sub-street."""

    embeddings: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    cand_idx: np.ndarray

    def __post_init__(self):
        n = len(self.embeddings)
        if self.embeddings.ndim != 2 or not (len(self.lat) == len(self.lon) == len(self.cand_idx) == n) or n == 0:
            raise ValueError(f"gallery: need (M, D) embeddings with M lat/lon/cand_idx rows, got "
                             f"{self.embeddings.shape}, {len(self.lat)}, {len(self.lon)}, {len(self.cand_idx)}")

    def save(self, model_dir: str | Path, candidates: Sequence[str]) -> None:
        """Write beside the checkpoint atomically (temp name + rename); rows name their sub-street."""
        from llava_address.common.io import atomic_write_bytes

        d = Path(model_dir)
        tmp = d / f".{GALLERY_EMBEDDINGS}.tmp.npy"
        np.save(tmp, self.embeddings.astype(np.float32))
        tmp.replace(d / GALLERY_EMBEDDINGS)
        table = pd.DataFrame({"lat": self.lat, "lon": self.lon,
                              "sub_street": [candidates[i] for i in self.cand_idx]})
        atomic_write_bytes(d / GALLERY_TABLE, table.to_parquet(index=False))

    @classmethod
    def load(cls, model_dir: str | Path, candidates: Sequence[str]) -> "Gallery | None":
        """The checkpoint's gallery, or None when it keeps none; unknown sub-streets are an error."""
        d = Path(model_dir)
        if not (d / GALLERY_EMBEDDINGS).is_file() or not (d / GALLERY_TABLE).is_file():
            return None
        emb = np.load(d / GALLERY_EMBEDDINGS)
        table = pd.read_parquet(d / GALLERY_TABLE)
        pos = {c: i for i, c in enumerate(candidates)}
        unknown = sorted(set(table["sub_street"]) - set(pos))
        if unknown:
            raise ValueError(f"{d / GALLERY_TABLE}: sub-streets not among the candidates, e.g. {unknown[:3]}")
        return cls(emb, table["lat"].to_numpy(float), table["lon"].to_numpy(float),
                   np.array([pos[s] for s in table["sub_street"]]))


def _weighted_spread(lat, lon, w, elat, elon) -> np.ndarray:
    d = haversine_m(lat, lon, elat[:, None], elon[:, None])
    return np.sqrt(np.sum(w * d ** 2, axis=1) / np.maximum(w.sum(axis=1), 1e-12))


def midpoint_estimate(probs: np.ndarray, midpoints: np.ndarray,
                      k: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lat, lon, spread_m) per image from (N, C) probabilities and (C, 2) candidate midpoints."""
    probs = np.asarray(probs, dtype=float)
    top = np.argsort(-probs, axis=1)[:, :k]
    w = np.take_along_axis(probs, top, axis=1)
    lat, lon = midpoints[top[:, 0], 0], midpoints[top[:, 0], 1]
    spread = _weighted_spread(midpoints[top, 0], midpoints[top, 1], w, lat, lon)
    return lat, lon, spread


def knn_estimate(query: np.ndarray, probs: np.ndarray, gallery: Gallery, k: int = 5, n_neighbours: int = 8,
                 scale: float = 100.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lat, lon, spread_m) per image: neighbours among gallery images of the top-``k`` sub-streets."""
    query, probs = np.asarray(query, dtype=np.float32), np.asarray(probs, dtype=float)
    top = np.argsort(-probs, axis=1)[:, :k]
    member = np.zeros(probs.shape, dtype=bool)
    np.put_along_axis(member, top, True, axis=1)
    allowed = member[:, gallery.cand_idx]                          # (N, M)
    sims = np.where(allowed, query @ gallery.embeddings.T, -np.inf)
    n = min(n_neighbours, sims.shape[1])
    nb = np.argpartition(-sims, n - 1, axis=1)[:, :n]              # (N, n) unordered nearest
    s = np.take_along_axis(sims, nb, axis=1)
    p = np.take_along_axis(probs, gallery.cand_idx[nb], axis=1)
    logw = np.where(np.isfinite(s), scale * s + np.log(np.maximum(p, 1e-300)), -np.inf)
    w = np.exp(logw - logw.max(axis=1, keepdims=True))
    w = np.where(np.isfinite(s), w, 0.0)
    lat_n, lon_n = gallery.lat[nb], gallery.lon[nb]
    lat = np.sum(w * lat_n, axis=1) / w.sum(axis=1)
    lon = np.sum(w * lon_n, axis=1) / w.sum(axis=1)
    return lat, lon, _weighted_spread(lat_n, lon_n, w, lat, lon)


def radius_scale_for(spread: np.ndarray, error: np.ndarray, coverage: float = RADIUS_COVERAGE) -> float:
    """The factor a with error ≤ a · max(spread, 10 m) for ``coverage`` of the images (fitted on val)."""
    ratio = np.asarray(error, dtype=float) / np.maximum(np.asarray(spread, dtype=float), MIN_SPREAD_M)
    if len(ratio) == 0:
        raise ValueError("no images to fit the radius on")
    return float(np.quantile(ratio, coverage))


def radius_m(spread: np.ndarray, radius_scale: float) -> np.ndarray:
    return radius_scale * np.maximum(np.asarray(spread, dtype=float), MIN_SPREAD_M)


def within_metrics(error_m: np.ndarray, radius: np.ndarray | None = None,
                   thresholds: Sequence[int] = (25, 50, 100, 250)) -> dict[str, float]:
    """Share within 25/50/100/250 m, mean/median error and (given radii) the share inside its circle."""
    e = np.asarray(error_m, dtype=float)
    out = {f"within_{t}m": float(np.mean(e <= t)) for t in thresholds}
    out.update(mean_error_m=float(e.mean()), median_error_m=float(np.median(e)))
    if radius is not None:
        out["inside_radius"] = float(np.mean(e <= np.asarray(radius)))
        out["median_radius_m"] = float(np.median(radius))
    return out


def midpoints_array(candidates: Sequence[str], midpoint: Mapping[str, Sequence[float]]) -> np.ndarray:
    """(C, 2) lat/lon of each candidate's midpoint."""
    missing = [c for c in candidates if c not in midpoint]
    if missing:
        raise ValueError(f"no midpoint for {len(missing)} candidates, e.g. {missing[:3]}")
    return np.array([midpoint[c] for c in candidates], dtype=float)
