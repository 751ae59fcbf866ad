"""Stage 1 / stage 2 training on the tiny fixture: what trains, what stays, export, resume, QLoRA."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoProcessor, LlavaForConditionalGeneration, TrainingArguments

from _fixtures_llava import make_clip_dir, make_dataset, tiny_overrides
from llava_address.llava.config import load_llava_config
from llava_address.llava.data import LlavaCollator, LlavaJsonDataset
from llava_address.llava.generate import LlavaAddressAssistant
from llava_address.llava.train import PROJECTOR, ProjectorLrTrainer, apply_lora, freeze_for_stage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import train_llava  # noqa: E402

CONFIG = ROOT / "configs" / "llava" / "llava_tiny.yaml"


@pytest.fixture(scope="module")
def fixture_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("llava")
    return make_clip_dir(root / "clip"), make_dataset(root / "data"), root


def _argv(clip, data, out, *extra: str) -> list[str]:
    sets = tiny_overrides(clip, data, out) + ["stage1.warmup_ratio=0", "stage2.warmup_ratio=0"] + list(extra)
    return ["--config", str(CONFIG)] + [a for s in sets for a in ("--set", s)]


@pytest.fixture(scope="module")
def trained_run(fixture_dirs):
    """Both stages through the script's main(): stage 2 = LoRA, exported at the end."""
    clip, data, root = fixture_dirs
    out = root / "run"
    assert train_llava.main(_argv(clip, data, out, "stage2.lora=true") + ["--stage", "1", "2"]) == 0
    return out


def test_stage1_changes_only_the_projector(trained_run):
    """Stage 1's checkpoints hold the projector alone (the only part that trains); it moved from the base."""
    base = load_file(str(trained_run / "base" / "model.safetensors"))
    ckpt = trained_run / "stage1" / "checkpoint-2"
    after = load_file(str(ckpt / "projector.safetensors"))
    assert not (ckpt / "model.safetensors").exists()
    in_base = {k.split(f"{PROJECTOR}.")[1]: v for k, v in base.items() if PROJECTOR in k}
    assert after.keys() == in_base.keys() == {"linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias"}
    changed = {k for k in after if not torch.equal(in_base[k], after[k])}
    assert any("linear_1" in k for k in changed) and any("linear_2" in k for k in changed)
    proj = load_file(str(trained_run / "stage1" / "projector.safetensors"))
    for k, v in proj.items():
        assert torch.equal(v, after[k])
    run = json.loads((trained_run / "stage1" / "run.json").read_text())
    assert run["stage"] == 1 and run["global_step"] == 2 and run["deepspeed_enabled"] is False
    assert run["trainable_params"] == sum(v.numel() for v in proj.values())


def test_projector_only_checkpoint_refuses_other_trainable_parameters(trained_run):
    """Saving a projector-only checkpoint while the LM also trains would lose the LM's update: an error."""
    model = LlavaForConditionalGeneration.from_pretrained(trained_run / "base")
    freeze_for_stage(model, 2, full_lm=True)
    args = TrainingArguments(output_dir=str(trained_run / "refuse"), report_to=[], save_strategy="no")
    trainer = ProjectorLrTrainer(model=model, args=args, projector_only=True)
    with pytest.raises(RuntimeError, match="other parameters train too: .*language_model"):
        trainer.save_model(str(trained_run / "refuse" / "ckpt"))
    assert not (trained_run / "refuse" / "ckpt" / "projector.safetensors").exists()


def test_stage2_lora_step_changes_only_lora_and_projector(trained_run, fixture_dirs):
    clip, data, _ = fixture_dirs
    cfg = load_llava_config(CONFIG, tiny_overrides(clip, data, trained_run) + ["stage2.lora=true"])
    base = trained_run / "base"
    model = LlavaForConditionalGeneration.from_pretrained(base)
    freeze_for_stage(model, 2)
    model = apply_lora(model, cfg.stage2)
    lora_names = [n for n, _ in model.named_parameters() if "lora_" in n]
    assert lora_names and not any("vision_tower" in n for n in lora_names)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == \
        set(lora_names) | {n for n, _ in model.named_parameters() if "modules_to_save" in n}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    processor = AutoProcessor.from_pretrained(base)
    ds = LlavaJsonDataset(Path(cfg.data.dataset_dir) / "qa" / "qa.json", cfg.data.dataset_dir)
    args = TrainingArguments(output_dir=str(trained_run / "unit"), max_steps=1, per_device_train_batch_size=4,
                             learning_rate=1e-2, report_to=[], remove_unused_columns=False, save_strategy="no",
                             dataloader_pin_memory=False)
    trainer = ProjectorLrTrainer(model=model, args=args, train_dataset=ds, data_collator=LlavaCollator(processor),
                                 projector_lr=3e-3)
    trainer.train()
    assert sorted(trainer.lr_scheduler.base_lrs) == [3e-3, 1e-2]  # projector group has its own lr
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any("lora_B" in n for n in changed)
    assert any("modules_to_save" in n and PROJECTOR in n for n in changed)
    assert all("lora_" in n or "modules_to_save" in n for n in changed), changed
    assert not any("vision_tower" in n for n in changed)


def test_export_loads_without_project_code_and_generates_the_same(trained_run):
    from peft import PeftModel

    export = trained_run / "export"
    run = json.loads((trained_run / "stage2" / "run.json").read_text())
    assert run["lora"] is True and run["export_dir"] == str(export)
    base = LlavaForConditionalGeneration.from_pretrained(trained_run / "base")
    unmerged = PeftModel.from_pretrained(base, str(trained_run / "stage2" / "adapter")).eval()
    merged = LlavaForConditionalGeneration.from_pretrained(export).eval()
    processor = AutoProcessor.from_pretrained(export)
    assert processor.tokenizer.chat_template and "ASSISTANT:" in processor.tokenizer.chat_template
    image = Image.open(next((trained_run.parent / "data" / "images").glob("2_*.png"))).convert("RGB")
    msgs = [{"role": "user", "content": [{"type": "image", "image": image},
                                         {"type": "text", "text": "Where was this photo taken?"}]}]
    inputs = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    with torch.no_grad():
        a = unmerged.generate(**inputs, max_new_tokens=12, do_sample=False)
        b = merged.generate(**inputs, max_new_tokens=12, do_sample=False)
        la, lb = unmerged(**inputs).logits, merged(**inputs).logits
    assert torch.equal(a, b)
    assert torch.allclose(la, lb, atol=1e-4)
    # the merged weights really contain the trained projector (not the base one)
    adapter = load_file(str(trained_run / "stage2" / "adapter" / "adapter_model.safetensors"))
    key = next(k for k in adapter if PROJECTOR in k and "linear_1.weight" in k)
    assert torch.equal(merged.model.multi_modal_projector.linear_1.weight, adapter[key])
    assistant = LlavaAddressAssistant(merged, processor)
    text = assistant.answer(image, "Where was this photo taken?", max_new_tokens=12)
    assert text == processor.decode(b[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    streamed = "".join(assistant.stream(image, "Where was this photo taken?", max_new_tokens=12))
    assert streamed.strip() == text
    follow = assistant.answer(image, "Which street is that?", history=[("Where was this photo taken?", text)],
                              max_new_tokens=4)
    assert isinstance(follow, str)


def test_export_script_reexports_the_same_weights(trained_run, fixture_dirs):
    import export_llava

    clip, data, _ = fixture_dirs
    again = trained_run.parent / "export_again"
    sets = tiny_overrides(clip, data, trained_run) + ["stage2.lora=true"]
    assert export_llava.main(["--config", str(CONFIG), "--out", str(again)] + [a for s in sets for a in ("--set", s)]) == 0
    a = load_file(str(trained_run / "export" / "model.safetensors"))
    b = load_file(str(again / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_full_finetune_stage2_trains_the_lm(fixture_dirs, capsys):
    clip, data, root = fixture_dirs
    out = root / "full"
    assert train_llava.main(_argv(clip, data, out, "stage2.lora=false") + ["--stage", "2"]) == 2  # no stage 1
    assert "stage2.without_stage1" in capsys.readouterr().err
    assert train_llava.main(_argv(clip, data, out, "stage2.lora=false", "stage2.without_stage1=true")
                            + ["--stage", "2"]) == 0
    run = json.loads((out / "stage2" / "run.json").read_text())
    assert run["lora"] is False and (out / "stage2" / "model" / "config.json").is_file()
    base = LlavaForConditionalGeneration.from_pretrained(out / "base").state_dict()
    exported = LlavaForConditionalGeneration.from_pretrained(out / "export").state_dict()
    changed = {k for k in base if not torch.equal(base[k], exported[k])}
    assert any("language_model" in k for k in changed) and any(PROJECTOR in k for k in changed)
    assert not any("vision_tower" in k for k in changed)


def test_bad_config_is_reported(fixture_dirs, capsys):
    clip, data, root = fixture_dirs
    assert train_llava.main(_argv(clip, data, root / "bad", "stage2.lora_r=0") + ["--stage", "2"]) == 2
    assert "stage2.lora_r" in capsys.readouterr().err
    assert train_llava.main(_argv(clip, data, root / "bad", "data.qa_json=missing.json",
                                  "stage2.without_stage1=true") + ["--stage", "2"]) == 2
    assert "LLaVA JSON not found" in capsys.readouterr().err


def test_sparse_logits_loss_and_gradients_equal_the_dense_path(trained_run, fixture_dirs):
    """stage.sparse_logits: the LM head on trained positions only gives the model's own loss and gradients,
    alone and with gradient accumulation's num_items_in_batch normalisation."""
    clip, data, _ = fixture_dirs
    cfg = load_llava_config(CONFIG, tiny_overrides(clip, data, trained_run) + ["stage2.lora=true"])
    base = trained_run / "base"
    model = apply_lora(LlavaForConditionalGeneration.from_pretrained(base), cfg.stage2)
    model.eval()  # LoRA dropout off: both paths must see the same network
    processor = AutoProcessor.from_pretrained(base)
    ds = LlavaJsonDataset(Path(cfg.data.dataset_dir) / "qa" / "qa.json", cfg.data.dataset_dir)
    batch = LlavaCollator(processor)([ds[i] for i in range(4)])
    args = TrainingArguments(output_dir=str(trained_run / "sparse"), report_to=[], remove_unused_columns=False,
                             dataloader_pin_memory=False)
    dense_tr = ProjectorLrTrainer(model=model, args=args, train_dataset=ds, data_collator=LlavaCollator(processor))
    sparse_tr = ProjectorLrTrainer(model=model, args=args, train_dataset=ds, data_collator=LlavaCollator(processor),
                                   sparse_logits=True)
    trained = [p for p in model.parameters() if p.requires_grad]
    results = []
    for tr, n_items in ((dense_tr, None), (sparse_tr, None), (dense_tr, 37), (sparse_tr, 37)):
        model.zero_grad()
        loss = tr.compute_loss(model, dict(batch), num_items_in_batch=n_items)
        loss.backward()
        results.append((float(loss.detach()), [p.grad.clone() for p in trained]))
    for (ld, gd), (ls, gs) in (results[:2], results[2:]):
        assert ls == pytest.approx(ld, rel=1e-5)
        worst = max(float((a - b).abs().max() / (a.abs().max() + 1e-12)) for a, b in zip(gd, gs))
        assert worst < 1e-4, worst
    assert results[2][0] != pytest.approx(results[0][0])  # num_items_in_batch really normalises
