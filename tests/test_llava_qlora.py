"""4-bit QLoRA (bitsandbytes NF4 on CPU): the LM loads quantized, LoRA trains, the export is full precision."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlavaForConditionalGeneration

from _fixtures_llava import make_clip_dir, make_dataset, tiny_overrides

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import train_llava  # noqa: E402

bnb = pytest.importorskip("bitsandbytes")


def test_qlora_stage2_step_and_export(tmp_path):
    from llava_address.llava.config import load_llava_config
    from llava_address.llava.data import LlavaCollator, LlavaJsonDataset
    from llava_address.llava.train import _load_model, apply_lora, freeze_for_stage, prepare_base
    from peft import prepare_model_for_kbit_training
    from transformers import AutoProcessor

    clip, data = make_clip_dir(tmp_path / "clip"), make_dataset(tmp_path / "data")
    sets = tiny_overrides(clip, data, tmp_path / "run") + ["stage2.lora=true", "stage2.qlora=true",
                                                           "stage2.warmup_ratio=0", "stage2.max_steps=1",
                                                           "stage2.without_stage1=true"]
    cfg = load_llava_config(ROOT / "configs" / "llava" / "llava_tiny.yaml", sets)
    base = prepare_base(cfg)
    model = _load_model(cfg, 2, cfg.stage2, base)
    four_bit = [n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert four_bit and all("language_model" in n for n in four_bit)
    assert not any("vision_tower" in n or "multi_modal_projector" in n for n in four_bit)
    freeze_for_stage(model, 2)
    model = apply_lora(prepare_model_for_kbit_training(model, use_gradient_checkpointing=False), cfg.stage2)
    processor = AutoProcessor.from_pretrained(base)
    ds = LlavaJsonDataset(data / "qa" / "qa.json", data)
    batch = LlavaCollator(processor)([ds[i] for i in range(4)])
    loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]  # B starts at 0, so only B has a gradient on step 1
    assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)

    # the whole stage through the script: 4-bit training, merge into the full-precision base
    argv = ["--config", str(ROOT / "configs" / "llava" / "llava_tiny.yaml"), "--stage", "2"]
    assert train_llava.main(argv + [a for s in sets for a in ("--set", s)]) == 0
    run = json.loads((tmp_path / "run" / "stage2" / "run.json").read_text())
    assert run["qlora"] is True and run["global_step"] == 1
    exported = LlavaForConditionalGeneration.from_pretrained(tmp_path / "run" / "export")
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in exported.modules())
    assert exported.model.language_model.layers[0].self_attn.q_proj.weight.dtype == torch.float32
