"""Non-learning baselines scored with the same metrics on the same test images as AddressCLIP.

WHY: an accuracy means little unless a method that cannot learn does clearly worse. Each
baseline ranks the sub-street vocabulary for every image of a split, then `address_metrics`
scores it exactly as `evaluate_locator` scores the model:

- ``pixel_knn``: each image resized to 24×24 RGB, mean-centred per image, cosine similarity to
  every training image; the sub-streets of the 10 nearest training images vote (ties and the
  rest of the ranking by each sub-street's best similarity). ``k=1`` is the 1-NN variant.
- ``embedding_knn``: the same vote over a trained AddressCLIP's own (normalised) image
  embeddings: the retrieval / VPR-style alternative to ranking address texts.
- ``caption_knn``: caption-only lookup: TF-IDF of the scene caption, cosine to the training
  captions, the same vote (no pixels at all).
- ``chance``: a uniformly random ranking (seeded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from data_gen.contract import read_addresses, read_manifest
from llava_address.common.images import load_image
from llava_address.clip.metrics import address_metrics

__all__ = ["MODEL_FREE", "knn_ranking", "pixel_features", "score_ranking", "pixel_knn", "caption_knn", "embedding_knn",
           "chance", "run_baselines"]


# row names of the model-free baselines, in table order
MODEL_FREE = ("chance (random ranking)", "raw-pixel 1-NN (24×24)", "raw-pixel k-NN (24×24, k=10)",
              "caption-only lookup (TF-IDF k-NN, k=10)")


def knn_ranking(train_feats: np.ndarray, train_labels: Sequence[str], query_feats: np.ndarray,
                candidates: Sequence[str], k: int = 10) -> np.ndarray:
    """(N, C) candidate indices best first: votes of the k most cosine-similar training items,
    ties and unvoted candidates ordered by their best single similarity."""
    if len(train_feats) == 0:
        raise ValueError("k-NN baseline needs training items")
    a = train_feats / np.maximum(np.linalg.norm(train_feats, axis=1, keepdims=True), 1e-12)
    q = query_feats / np.maximum(np.linalg.norm(query_feats, axis=1, keepdims=True), 1e-12)
    index = {c: i for i, c in enumerate(candidates)}
    lab = np.array([index[t] for t in train_labels])
    C = len(candidates)
    out = np.empty((len(q), C), dtype=np.int64)
    for s in range(0, len(q), 256):
        sim = q[s:s + 256] @ a.T                                   # (n, T)
        best = np.full((len(sim), C), -2.0)
        for c in np.unique(lab):
            best[:, c] = sim[:, lab == c].max(axis=1)
        top = np.argpartition(-sim, min(k, sim.shape[1]) - 1, axis=1)[:, :k]
        votes = np.zeros((len(sim), C))
        np.add.at(votes, (np.repeat(np.arange(len(sim)), top.shape[1]), lab[top].ravel()), 1.0)
        # votes dominate (similarities lie in [-1, 1]); the best similarity breaks ties and ranks the rest
        out[s:s + 256] = np.argsort(-(votes * 10.0 + best), axis=1, kind="stable")
    return out


def pixel_features(data_dir: Path, rel_paths: Sequence[str], size: int = 24) -> np.ndarray:
    """Images resized to size×size (bilinear), flattened, each centred on its own mean."""
    feats = np.empty((len(rel_paths), size * size * 3), np.float32)
    for i, r in enumerate(tqdm(rel_paths, desc="pixels", leave=False)):
        im = load_image(data_dir / r).resize((size, size), resample=2)
        v = np.asarray(im, np.float32).ravel()
        feats[i] = v - v.mean()
    return feats


def score_ranking(ranked: np.ndarray, data_dir: Path, df: pd.DataFrame) -> dict[str, float]:
    vocab = read_addresses(data_dir)
    cands = list(vocab.sub_street)
    return address_metrics(ranked, cands, list(df["sub_street"]), {s: vocab.street_of(s) for s in cands},
                           {s: vocab.midpoint(s) for s in cands}, df["lat"], df["lon"])


def _split_frames(data_dir: Path, split: str) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    train, query = read_manifest(data_dir, "train"), read_manifest(data_dir, split)
    if query.empty:
        raise ValueError(f"{data_dir}: split {split!r} has no images")
    return train, query, list(read_addresses(data_dir).sub_street)


def pixel_knn(data_dir: str | Path, split: str = "test", k: int = 10, size: int = 24) -> dict[str, float]:
    data_dir = Path(data_dir)
    train, query, cands = _split_frames(data_dir, split)
    ranked = knn_ranking(pixel_features(data_dir, train["image"], size), train["sub_street"],
                         pixel_features(data_dir, query["image"], size), cands, k)
    return score_ranking(ranked, data_dir, query)


def caption_knn(data_dir: str | Path, split: str = "test", k: int = 10) -> dict[str, float]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    data_dir = Path(data_dir)
    train, query, cands = _split_frames(data_dir, split)
    if not train["caption"].str.len().any():
        raise ValueError(f"{data_dir}: no captions to look up")
    tf = TfidfVectorizer(ngram_range=(1, 2)).fit(train["caption"])
    ranked = knn_ranking(tf.transform(train["caption"]).toarray(), train["sub_street"],
                         tf.transform(query["caption"]).toarray(), cands, k)
    return score_ranking(ranked, data_dir, query)


def embedding_knn(encode: Callable[[list], np.ndarray], data_dir: str | Path, split: str = "test", k: int = 10,
                  batch_size: int = 128) -> dict[str, float]:
    """``encode(list of PIL images) -> (n, d)`` is a trained model's image encoder."""
    data_dir = Path(data_dir)
    train, query, cands = _split_frames(data_dir, split)

    def emb(paths):
        out = [encode([load_image(data_dir / p) for p in paths[i:i + batch_size]])
               for i in range(0, len(paths), batch_size)]
        return np.concatenate(out)

    ranked = knn_ranking(emb(list(train["image"])), train["sub_street"], emb(list(query["image"])), cands, k)
    return score_ranking(ranked, data_dir, query)


def chance(data_dir: str | Path, split: str = "test", seed: int = 0) -> dict[str, float]:
    data_dir = Path(data_dir)
    _, query, cands = _split_frames(data_dir, split)
    rng = np.random.default_rng(seed)
    ranked = np.stack([rng.permutation(len(cands)) for _ in range(len(query))])
    return score_ranking(ranked, data_dir, query)


def run_baselines(data_dir: str | Path, split: str = "test") -> dict[str, dict[str, float]]:
    """The model-free baselines of the table: name -> metrics."""
    fns = (lambda: chance(data_dir, split), lambda: pixel_knn(data_dir, split, k=1),
           lambda: pixel_knn(data_dir, split, k=10), lambda: caption_knn(data_dir, split, k=10))
    return {name: fn() for name, fn in zip(MODEL_FREE, fns)}
