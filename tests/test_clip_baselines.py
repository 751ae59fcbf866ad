"""Table baselines: k-NN vote ranking, raw-pixel / caption / embedding k-NN and chance on the fixture."""

from __future__ import annotations

import numpy as np
import pytest

from _clip_fixtures import fixture_data
from data_gen.contract import read_addresses, read_manifest
from llava_address.clip.baselines import (caption_knn, chance, embedding_knn, knn_ranking, pixel_features,
                                          pixel_knn)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return fixture_data(tmp_path_factory.getbasetemp())


def test_knn_ranking_votes_then_similarity():
    train = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.7, 0.7]])
    labels = ["A", "A", "B", "C"]
    q = np.array([[1.0, 0.05], [0.1, 1.0]])
    r = knn_ranking(train, labels, q, ["A", "B", "C", "D"], k=2)
    assert r.tolist() == [[0, 2, 1, 3], [1, 2, 0, 3]]  # 2 votes A; then C (0.74) before B; D never seen
    r1 = knn_ranking(train, labels, q, ["A", "B", "C", "D"], k=1)
    assert r1[1].tolist()[:2] == [1, 2]
    with pytest.raises(ValueError, match="training items"):
        knn_ranking(np.zeros((0, 2)), [], q, ["A"], k=1)


def test_pixel_features_are_mean_centred(data_dir):
    df = read_manifest(data_dir, "test")
    f = pixel_features(data_dir, list(df["image"][:3]), size=24)
    assert f.shape == (3, 24 * 24 * 3) and np.allclose(f.mean(axis=1), 0, atol=1e-3)


def test_baselines_score_the_same_images(data_dir):
    n_test = len(read_manifest(data_dir, "test"))
    n_cands = len(read_addresses(data_dir).sub_street)
    px = pixel_knn(data_dir, "test", k=10)
    cap = caption_knn(data_dir, "test")
    ch = chance(data_dir, "test")
    assert px["n_images"] == cap["n_images"] == ch["n_images"] == n_test
    assert px["SSA-1"] > 1 / n_cands  # fixture pixels carry the sub-street
    assert cap["SA-1"] == 1.0  # fixture captions name the street's house colour
    assert ch == chance(data_dir, "test") and ch["SSA-1"] <= ch["SSA-5"]
    # the embedding k-NN with pixels as the "embedding" is exactly the pixel k-NN
    emb = embedding_knn(lambda ims: np.stack([np.asarray(im.resize((24, 24), resample=2), np.float32).ravel()
                                              - np.asarray(im.resize((24, 24), resample=2), np.float32).mean()
                                              for im in ims]), data_dir, "test")
    assert emb == pytest.approx(px)
