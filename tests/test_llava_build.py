"""Assembling the stock LLaVA around an AddressCLIP tower: tiny LM path and tower replacement."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import LlavaForConditionalGeneration

from _fixtures_llava import make_clip_dir
from llava_address.llava.build import build_llava, load_vision_tower
from llava_address.llava.tokenizer import train_tokenizer

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return make_clip_dir(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["This photo was taken on Main St between 1st Ave and 2nd Ave."] * 20, vocab_size=300)


def test_tiny_llava_uses_addressclip_tower(clip_dir, tokenizer):
    model, processor = build_llava(clip_dir, "tiny", tokenizer, tiny=TINY)
    assert type(model) is LlavaForConditionalGeneration
    tower, _ = load_vision_tower(clip_dir)
    got = model.model.vision_tower.state_dict()
    for k, v in tower.state_dict().items():
        assert torch.equal(got[k], v), k
    cfg = model.config
    assert cfg.image_token_index == tokenizer.convert_tokens_to_ids("<image>")
    assert cfg.image_seq_length == 4 and cfg.vision_feature_layer == -2
    assert cfg.vision_feature_select_strategy == "default" and cfg.projector_hidden_act == "gelu"
    assert model.model.multi_modal_projector.linear_1.in_features == 32
    assert model.model.multi_modal_projector.linear_2.out_features == 32
    assert model.lm_head.out_features == len(tokenizer)
    msgs = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (40, 40))},
                                         {"type": "text", "text": "Where?"}]}]
    inputs = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    assert (inputs["input_ids"] == cfg.image_token_index).sum() == 4
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits.shape == (1, inputs["input_ids"].shape[1], len(tokenizer))
    assert torch.isfinite(out.logits).all()


def test_local_text_dir_path(clip_dir, tokenizer, tmp_path):
    """text=<local causal LM dir> (the Vicuna path) loads weights from disk, adds <image>, no download."""
    from transformers import LlamaConfig, LlamaForCausalLM

    lm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer) - 1, **TINY))
    lm.save_pretrained(tmp_path / "lm")
    tok = train_tokenizer(["plain text for a vicuna stand-in"] * 10, vocab_size=300)
    tok.save_pretrained(tmp_path / "lm")
    model, processor = build_llava(clip_dir, str(tmp_path / "lm"))
    assert processor.tokenizer.convert_tokens_to_ids("<image>") == model.config.image_token_index
    assert torch.equal(model.model.language_model.layers[0].self_attn.q_proj.weight,
                       lm.model.layers[0].self_attn.q_proj.weight)
    with pytest.raises(FileNotFoundError, match="'tiny', a named LM .* or a local causal-LM dir"):
        build_llava(clip_dir, str(tmp_path / "nope"))


def test_replace_tower_keeps_or_reinits_projector(clip_dir, tokenizer, tmp_path):
    base, proc = build_llava(clip_dir, "tiny", tokenizer, tiny=TINY)
    base.save_pretrained(tmp_path / "llava")
    proc.save_pretrained(tmp_path / "llava")
    old = {k: v.clone() for k, v in base.model.multi_modal_projector.state_dict().items()}
    # same width (32): the released projector is kept, the tower is AddressCLIP's
    same = make_clip_dir(tmp_path / "clip_same", width=32)
    torch.manual_seed(1)
    kept, _ = build_llava(same, base_llava_dir=tmp_path / "llava")
    for k, v in kept.model.multi_modal_projector.state_dict().items():
        assert torch.equal(v, old[k]), k
    new_tower, _ = load_vision_tower(same)
    for k, v in new_tower.state_dict().items():
        assert torch.equal(kept.model.vision_tower.state_dict()[k], v), k
    # other width (48) and resolution: fresh projector with the new input width, seq length updated
    other = make_clip_dir(tmp_path / "clip_other", image_size=48, width=48)
    fresh, fproc = build_llava(other, base_llava_dir=tmp_path / "llava")
    assert fresh.model.multi_modal_projector.linear_1.in_features == 48
    assert fresh.config.image_seq_length == 9 and fresh.config.vision_config.hidden_size == 48
    assert fproc.image_processor.crop_size["height"] == 48
    # LM weights untouched by the swap
    assert torch.equal(fresh.lm_head.weight, base.lm_head.weight)
    inputs = fproc.apply_chat_template(
        [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (60, 60))},
                                      {"type": "text", "text": "Where?"}]}],
        add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(fresh(**inputs).logits).all()


def test_missing_clip_dir_is_a_clear_error(tmp_path, tokenizer):
    with pytest.raises(FileNotFoundError, match="CLIP checkpoint"):
        build_llava(tmp_path / "nothing", "tiny", tokenizer, tiny=TINY)


def test_full_strategy_keeps_cls_token(clip_dir, tokenizer):
    model, processor = build_llava(clip_dir, "tiny", tokenizer, tiny=TINY, vision_feature_layer=-1,
                                   vision_feature_select_strategy="full")
    assert model.config.image_seq_length == 5 and model.config.vision_feature_layer == -1
    msgs = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (40, 40))},
                                         {"type": "text", "text": "Where?"}]}]
    inputs = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    assert (inputs["input_ids"] == model.config.image_token_index).sum() == 5
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()
