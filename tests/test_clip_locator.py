"""AddressLocator errors and caching: empty / duplicate / unicode candidates, bad images, missing files."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch
from _clip_fixtures import fixture_data, trained_model
from PIL import Image


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return trained_model(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def locator(model_dir):
    from llava_address.clip.locator import AddressLocator

    return AddressLocator.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return Image.open(fixture_data(tmp_path_factory.getbasetemp()) / "images" / "00000.png").convert("RGB")


def test_empty_candidates(locator, image):
    with pytest.raises(ValueError, match="candidate address list is empty"):
        locator.locate([image], candidates=[])
    with pytest.raises(ValueError, match="non-empty strings"):
        locator.locate([image], candidates=["Main St", "  "])
    with pytest.raises(TypeError, match="not one string"):
        locator.locate([image], candidates="Main St")


def test_duplicates_are_dropped_with_warning(locator, image, caplog):
    with caplog.at_level(logging.WARNING):
        res = locator.locate([image], candidates=["Hämeentie", "Kallio", "Hämeentie"], k=5)[0]
    assert sorted(a for a, _ in res) == ["Hämeentie", "Kallio"]
    assert "dropped 1 duplicate" in caplog.text


def test_unicode_and_free_text_candidates(locator, image):
    cands = ["Töölöntori", "Åbo gatan 3", "東京都", "Bulevardi Länsi"]
    res = locator.locate([image], candidates=cands, k=4)[0]
    assert sorted(a for a, _ in res) == sorted(cands)
    assert sum(p for _, p in res) == pytest.approx(1.0, abs=1e-5)


def test_bad_images_name_the_file(locator, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="broken.jpg"):
        locator.locate([bad])
    with pytest.raises(FileNotFoundError, match="missing.png"):
        locator.locate([tmp_path / "missing.png"])
    with pytest.raises(ValueError, match="k must be"):
        locator.locate([tmp_path / "missing.png"], k=0)


def test_missing_checkpoint_files_are_named(model_dir, tmp_path):
    from llava_address.clip.locator import AddressLocator

    broken = tmp_path / "ckpt"
    shutil.copytree(model_dir, broken)
    (broken / "tokenizer_config.json").unlink()
    (broken / "candidates.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing \['tokenizer_config.json', 'candidates.json'\]"):
        AddressLocator.from_pretrained(broken)
    with pytest.raises(FileNotFoundError, match="not found"):
        AddressLocator.from_pretrained(tmp_path / "nowhere")


def test_candidate_embeddings_are_cached_in_memory_and_on_disk(model_dir, tmp_path, image):
    from llava_address.clip.locator import AddressLocator

    ck = tmp_path / "ck"
    shutil.copytree(model_dir, ck, ignore=shutil.ignore_patterns("candidate_cache"))
    loc = AddressLocator.from_pretrained(ck)
    a = loc.candidate_embeddings(loc.default_candidates)
    assert loc.candidate_embeddings(loc.default_candidates) is a
    files = list((ck / "candidate_cache").glob("*.npy"))
    assert len(files) == 1
    fresh = AddressLocator.from_pretrained(ck)
    calls = []
    fresh.encode_texts = lambda *a, **k: calls.append(1)  # must not be needed: the disk cache answers
    torch.testing.assert_close(fresh.candidate_embeddings(fresh.default_candidates), a)
    assert not calls
    assert loc.locate([image], k=2) == fresh.locate([image], k=2)


def test_encoders_return_unit_vectors(locator, image):
    img = locator.encode_images([image, image])
    txt = locator.encode_texts(["Hämeentie", "Kallio"])
    assert img.shape == (2, txt.shape[1])
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(txt.norm(dim=-1), torch.ones(2))
