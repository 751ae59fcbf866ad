"""Captioners: scene pass-through and BLIP loaded from a tiny local random checkpoint."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from data_gen.captions import BlipCaptioner, Captioner, SceneCaptioner, make_captioner

os.environ.setdefault("HF_HUB_OFFLINE", "1")


TRAIN = [(Image.new("RGB", (40, 30), "red"), "a red shop sign"),
         (Image.new("RGB", (50, 50), "blue"), "a street with trees")]


def _tiny_blip(path):
    """A tiny BLIP trained for a few steps to caption a red and a blue image differently."""
    import torch

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import (BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor,
                              PreTrainedTokenizerFast)

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # WordPiece's trainer may split a word ("wi", "##th") depending on its tie order: decode the pieces back
    tok.decoder = decoders.WordPiece()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(["a street with trees", "tall grey buildings at dusk", "a red shop sign", "a street view of"] * 5,
                            trainers.WordPieceTrainer(vocab_size=80, special_tokens=special))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", bos_token="[CLS]", eos_token="[SEP]")
    v = tok.get_vocab_size()
    cfg = BlipConfig(
        text_config=dict(vocab_size=v, hidden_size=32, encoder_hidden_size=32, intermediate_size=37,
                         num_hidden_layers=1, num_attention_heads=4, max_position_embeddings=40,
                         pad_token_id=fast.pad_token_id, bos_token_id=fast.cls_token_id,
                         eos_token_id=fast.sep_token_id, sep_token_id=fast.sep_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=32)
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(cfg)
    proc = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=fast)
    # a few steps on (image, caption) pairs: a captioner that ignores the model or the image cannot pass
    batch = proc(images=[im for im, _ in TRAIN], text=[c for _, c in TRAIN], return_tensors="pt", padding=True)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = model(pixel_values=batch["pixel_values"], input_ids=batch["input_ids"],
                     attention_mask=batch["attention_mask"], labels=batch["input_ids"]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(path)
    proc.save_pretrained(path)


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("blip") / "blip"
    _tiny_blip(path)
    return path


def test_scene_captioner_passes_through_in_order():
    cap = SceneCaptioner(["a", "b", "c"])
    assert isinstance(cap, Captioner)
    ims = [Image.new("RGB", (8, 8))] * 2
    assert cap.caption(ims) == ["a", "b"]
    assert cap.caption(ims[:1]) == ["c"]
    with pytest.raises(ValueError, match="scene captions only exist"):
        cap.caption(ims[:1])


def test_blip_missing_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        BlipCaptioner(tmp_path / "nope")
    with pytest.raises(ValueError, match="model_dir"):
        make_captioner("blip")
    with pytest.raises(ValueError, match="unknown captioner"):
        make_captioner("gpt")


def test_blip_tiny_local_checkpoint_captions(blip_dir):
    cap = make_captioner("blip", blip_dir, batch_size=1, max_new_tokens=8)
    assert isinstance(cap, Captioner)
    # different sizes than in training: the processor resizes; batch_size=1 vs 2 must not matter
    out = cap.caption([Image.new("RGB", (64, 48), "red"), Image.new("RGB", (20, 20), "blue")])
    assert out == [c for _, c in TRAIN]
    assert make_captioner("blip", blip_dir, batch_size=2).caption([TRAIN[1][0], TRAIN[0][0]]) == \
        [TRAIN[1][1], TRAIN[0][1]]


def test_blip_prompt_and_length_bounds(blip_dir):
    """The paper's conditional prompt starts every caption; min/max new tokens bound its length."""
    cap = BlipCaptioner(blip_dir, batch_size=2, prompt="a street view of", min_new_tokens=4,
                        max_new_tokens=4)
    out = cap.caption([Image.new("RGB", (40, 30), "red"), Image.new("RGB", (50, 50), "blue")])
    for t in out:
        assert t.startswith("a street view of"), t
        assert 1 <= len(t.split()) - 4 <= 4, t
    with pytest.raises(ValueError, match="min_new_tokens 5 > max_new_tokens 3"):
        BlipCaptioner(blip_dir, min_new_tokens=5, max_new_tokens=3)
