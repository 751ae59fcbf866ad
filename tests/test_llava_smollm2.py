"""The offline default LLaVA (configs/llava/llava_smollm2.yaml: pretrained SmolLM2-135M-Instruct, ChatML, LoRA,
self-distilled general answers) trained 2 + 2 steps on tiny data: the export is a plain transformers LLaVA that
loads strictly, keeps the LM's format and still answers a general question as the base LM does."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from _fixtures_llava import make_clip_dir, make_dataset
from llava_address.llava.config import load_llava_config
from llava_address.llava.general import DISTILL_PROMPTS
from llava_address.llava.train import train_stage

CONFIG = "configs/llava/llava_smollm2.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory, smollm2_dir):
    root = tmp_path_factory.mktemp("smol")
    clip, data = make_clip_dir(root / "clip"), make_dataset(root / "data")
    sets = [f"output_dir={root / 'out'}", f"model.clip_dir={clip}", f"data.dataset_dir={data}",
            "stage1.max_steps=2", "stage2.max_steps=2", "stage1.batch_size=2", "stage2.batch_size=2",
            "stage1.logging_steps=1", "stage2.logging_steps=1", "data.general.repeats=1"]
    cfg = load_llava_config(CONFIG, sets)
    torch.manual_seed(0)
    recs = [train_stage(cfg, 1), train_stage(cfg, 2)]
    return cfg, recs, root / "out"


def test_default_lm_is_the_pretrained_one():
    cfg = load_llava_config(CONFIG, ["model.clip_dir=x", "data.dataset_dir=y"])
    assert cfg.model.text == "smollm2-135m-instruct" and cfg.stage2.lora and cfg.data.general.enabled


def test_real_lm_trains_and_exports_a_plain_llava(run, smollm2_dir):
    cfg, (s1, s2), out = run
    assert s1["global_step"] == 2 and s2["global_step"] == 2 and s2["lora"]
    assert 1e5 < s2["trainable_params"] < 2e7  # LoRA r=16 + projector, not the whole 135 M LM
    assert all(torch.isfinite(torch.tensor(list(r["losses"].values()))).all() for r in (s1, s2))
    general = json.loads((out / "stage2_general.json").read_text())
    assert general and {r["conversations"][0]["value"].split("\n", 1)[1] for r in general} <= set(DISTILL_PROMPTS)
    model, info = LlavaForConditionalGeneration.from_pretrained(out / "export", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert model.config.text_config.num_hidden_layers == 30
    proc = AutoProcessor.from_pretrained(out / "export")
    assert "<|im_start|>assistant" in proc.chat_template and proc.tokenizer.eos_token == "<|im_end|>"


def test_tuned_export_still_answers_like_the_base(run):
    from llava_address.llava.generate import LlavaAddressAssistant

    _, _, out = run
    assistant = LlavaAddressAssistant.from_pretrained(out / "export")
    image = sorted((out.parent / "data" / "images").glob("*.png"))[0]
    (answer,) = assistant.answer_batch([image], ["What is the capital of France?"], max_new_tokens=12)
    assert "Paris" in answer
