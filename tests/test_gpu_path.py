"""The GPU user's path on this CPU: the shipped full-size configs, run through the real scripts
against shape-faithful stand-ins (tests/standins.py), with only path and size overrides.

What is reduced, honestly (CPU time is the constraint; everything else is the shipped config):
- layers: CLIP ViT-B/16 and ViT-L/14-336 keep their widths, patch and image sizes but have 1–2
  layers; open_clip ViT-B-16 is registered as ``ViT-B-16-2l`` (its config, 2 layers per tower);
- Vicuna-7B / llava-1.5-7b-hf keep 32 heads, vocab 32000/32064, fp16 shards and their tokenizer
  files, but hidden/intermediate are 4096/11008 × 1/16 (256/688) and 1 layer: one real 7B layer is
  ~200 M parameters, several seconds per step here;
- steps, batch sizes and warm-up (0: one step of warm-up would be a zero learning rate) via ``--set``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import standins
from _fixtures_llava import make_dataset

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
TEXT_WIDTH = 1 / 16


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """The bf16 runs here leave accelerate's process-wide state in bf16; a later fp32 ``Accelerator``
    in the same pytest process (README walkthrough's train_clip) would then refuse to start."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="module")
def stand(tmp_path_factory):
    """The stand-ins, built once per session (~10 s)."""
    root = tmp_path_factory.mktemp("standins")
    return {"data": make_dataset(root / "data"), "b16": standins.clip_vitb16(root / "clip-vit-base-patch16", layers=1),
            "l14": standins.clip_vitl14_336(root / "clip-vit-large-patch14-336", layers=2),
            "vicuna": standins.vicuna_7b(root / "vicuna-7b-v1.5", width=TEXT_WIDTH),
            "llava_hf": standins.llava15_7b_hf(root / "llava-1.5-7b-hf", width=TEXT_WIDTH), "root": root}


def _script(name: str):
    """scripts/<name>.py as a module (its main(argv) is what the command line runs)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"gpu_path_{name}", ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sets(*pairs: str) -> list[str]:
    return [a for p in pairs for a in ("--set", p)]


# ---------------------------------------------------------------- AddressCLIP, full-size configs
CLIP_SIZE = ["train.max_steps=1", "train.batch_size=4", "train.warmup_steps=0", "train.eval_every=0",
             "train.log_every=1", "data.num_workers=0", "eval.split=test", "eval.max_images=2", "eval.batch_size=4"]


@pytest.mark.parametrize("tower,config,shape", [("b16", "addressclip_vitb16.yaml", (768, 16)),
                                                ("l14", "addressclip_vitl14_336.yaml", (1024, 14))])
def test_train_clip_full_size_config_on_the_hub_layout(stand, tmp_path, tower, config, shape):
    """The README's AddressCLIP commands with the shipped ViT-B/16 and ViT-L/14-336 (LLaVA-1.5's
    tower) configs, against stand-ins with the real widths, patch, image size and tokenizer."""
    from transformers import CLIPModel

    train_clip = _script("train_clip")

    out = tmp_path / tower
    rc = train_clip.main(["--config", str(CONFIGS / "clip" / config), "--data", str(stand["data"]),
                          "--out", str(out), *_sets(f"model.pretrained_dir={stand[tower]}", *CLIP_SIZE)])
    assert rc == 0
    info = json.loads((out / "run_info.json").read_text())
    assert info["step"] == 1 and info["mixed_precision"] == "no"  # auto on CPU: fp32
    assert info["final_metrics"]["n_images"] == 2  # eval.max_images honoured by the final evaluation
    model = CLIPModel.from_pretrained(out / "model")
    assert (model.config.vision_config.hidden_size, model.config.vision_config.patch_size) == shape
    assert model.config.text_config.vocab_size == 49408


def test_train_open_clip_config_and_hand_its_tower_to_llava(stand, tmp_path):
    """open_clip ViT-B-16 (2 layers, registered under its own name) -> vision_tower/ -> LLaVA base."""
    import open_clip

    from llava_address.llava.build import build_llava
    from llava_address.llava.tokenizer import train_tokenizer
    train_clip = _script("train_clip")

    cfg = json.loads(json.dumps(open_clip.get_model_config("ViT-B-16")))
    cfg["vision_cfg"]["layers"] = cfg["text_cfg"]["layers"] = 2
    (tmp_path / "ViT-B-16-2l.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "ViT-B-16-2l.json")
    torch.manual_seed(0)
    ckpt = tmp_path / "open_clip_vit_b16.pt"
    torch.save(open_clip.create_model("ViT-B-16-2l").state_dict(), ckpt)
    out = tmp_path / "oc"
    rc = train_clip.main(["--config", str(CONFIGS / "clip/open_clip_vitb16.yaml"), "--data", str(stand["data"]),
                          "--out", str(out), *_sets("model.open_clip_name=ViT-B-16-2l",
                                                    f"model.open_clip_checkpoint={ckpt}", *CLIP_SIZE)])
    assert rc == 0 and (out / "model" / "vision_tower" / "config.json").is_file()
    assert not (out / "model" / "config.json").exists()  # the open_clip layout: only vision_tower/ is HF
    tok = train_tokenizer(standins.CORPUS, vocab_size=300)
    model, processor = build_llava(out / "model", "tiny", tok, tiny=dict(hidden_size=32, intermediate_size=64,
                                                                       num_hidden_layers=1, num_attention_heads=2))
    assert model.config.vision_config.hidden_size == 768 and model.config.image_seq_length == 196
    assert processor.image_processor.crop_size["height"] == 224


# ---------------------------------------------------------------- LLaVA-1.5-7B config
LLAVA_SIZE = ["stage1.max_steps=1", "stage2.max_steps=1", "stage1.batch_size=2", "stage2.batch_size=2",
              "stage1.warmup_ratio=0", "stage2.warmup_ratio=0", "stage1.logging_steps=1", "stage2.logging_steps=1"]


def _llava_sets(stand, out: Path, *extra: str) -> list[str]:
    return _sets(f"output_dir={out}", f"model.clip_dir={stand['l14']}", f"model.text={stand['vicuna']}",
                 f"data.dataset_dir={stand['data']}", *LLAVA_SIZE, *extra)


def test_llava_7b_config_vicuna_bf16_stage1_stage2_export_chat(stand, tmp_path, capsys):
    """Vicuna as shipped (tokenizer.model only, fp16 .bin shards), bf16 mixed precision, LoRA r128."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    chat, export_llava, train_llava = (_script(n) for n in ("chat", "export_llava", "train_llava"))

    out = tmp_path / "llava7b"
    argv = ["--config", str(CONFIGS / "llava/llava_v15_7b_lora.yaml"), *_llava_sets(stand, out)]
    assert train_llava.main([*argv, "--stage", "1", "2"]) == 0
    stage1 = load_file(str(out / "stage1" / "projector.safetensors"))
    # stage 1's checkpoint: the projector (what trains) + optimizer/scheduler/RNG state, not the frozen 7B
    ckpt = out / "stage1" / "checkpoint-1"
    in_ckpt = load_file(str(ckpt / "projector.safetensors"))
    assert set(in_ckpt) == {"linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias"}
    assert in_ckpt["linear_1.weight"].shape == (256, 1024) and in_ckpt["linear_1.weight"].dtype == torch.float32
    proj_bytes = sum(v.numel() * 4 for v in in_ckpt.values())
    total = sum(f.stat().st_size for f in ckpt.rglob("*") if f.is_file())
    assert total < 3 * proj_bytes + 64_000 and total * 10 < (out / "base" / "model.safetensors").stat().st_size
    for stage in (1, 2):  # autocast bf16 with fp32 master weights, as run.json records what really ran
        prec = json.loads((out / f"stage{stage}" / "run.json").read_text())["precision"]
        assert prec["autocast"] == "bf16" and prec["trainable"] == prec["optimizer"] == ["float32"], stage
    adapter = load_file(str(out / "stage2" / "adapter" / "adapter_model.safetensors"))
    # fp32 master weights: what trains is stored in fp32 although model.dtype is bfloat16
    trained = {k: v for k, v in adapter.items() if "lora_" in k or "multi_modal_projector" in k}
    assert trained and all(v.dtype == torch.float32 for v in trained.values())
    assert any(v.shape[0] == 128 for k, v in adapter.items() if "lora_A" in k)  # the shipped r128
    # one step at the projector's lr 2e-5 moves (nearly) every element; pure bf16 left 63-82 % unchanged
    for name, before in stage1.items():
        after = next(v for k, v in adapter.items()
                     if k.endswith((f"multi_modal_projector.modules_to_save.default.{name}",
                                    f"multi_modal_projector.{name}")))
        assert (after != before).float().mean() > 0.95, name
    # the export is bf16 on disk (half the bytes of fp32) and plain transformers loads it
    export = out / "export"
    assert json.loads((export / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(str(export / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    model = LlavaForConditionalGeneration.from_pretrained(export)
    n_params = sum(p.numel() for p in model.parameters())
    assert abs((export / "model.safetensors").stat().st_size - 2 * n_params) < 0.01 * 2 * n_params
    assert AutoProcessor.from_pretrained(export).tokenizer.padding_side == "right"
    # re-export through the script: --dtype float32 doubles the size
    assert export_llava.main([*argv, "--out", str(tmp_path / "fp32"), "--dtype", "float32"]) == 0
    assert json.loads((tmp_path / "fp32" / "config.json").read_text())["dtype"] == "float32"
    # chat on CPU: --dtype auto means float32 here even for a bf16 export
    image = stand["data"] / "images" / "0_0.png"
    assert chat.main(["--image", str(image), "--export", str(export), "--candidates", "0", "--question",
                      "Where was this photo taken?", "--max-new-tokens", "3", "--device", "auto"]) == 0
    assert "A:" in capsys.readouterr().out
    # README §3's 7B evaluation command, sized down
    eval_llava = _script("eval_llava")
    assert eval_llava.main(["--export", str(export), "--data", str(stand["data"]), "--max-samples", "2",
                            "--max-new-tokens", "3", "--out", str(tmp_path / "eval.json")]) == 0
    assert len(json.loads((tmp_path / "eval.json").read_text())["answers"]) == 2


def test_precision_in_use_for_bf16_configs(stand, tmp_path):
    """TrainingArguments get bf16 (DeepSpeed "auto" then resolves on); frozen weights stay bf16."""
    from llava_address.llava.config import load_llava_config
    from llava_address.llava.train import _load_model, _training_args, freeze_for_stage, prepare_base

    cfg = load_llava_config(CONFIGS / "llava/llava_v15_7b_lora.yaml", _llava_sets(stand, tmp_path)[1::2])
    args = _training_args(cfg, 1, cfg.stage1, None)
    assert args.bf16 and not args.fp16
    model = _load_model(cfg, 1, cfg.stage1, prepare_base(cfg))
    freeze_for_stage(model, 1)
    dtypes = {(p.requires_grad, p.dtype) for p in model.parameters()}
    assert dtypes == {(True, torch.float32), (False, torch.bfloat16)}
    tiny = load_llava_config(CONFIGS / "llava/llava_tiny.yaml", [f"model.clip_dir={stand['l14']}"])
    assert not (_training_args(tiny, 1, tiny.stage1, None).bf16 or _training_args(tiny, 1, tiny.stage1, None).fp16)


def test_llava_hf_base_keeps_projector_and_pads_right(stand, tmp_path, caplog):
    """llava-1.5-7b-hf with an AddressCLIP ViT-L/14-336 tower: the released projector is kept."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from llava_address.llava.config import load_llava_config
    from llava_address.llava.train import prepare_base

    cfg = load_llava_config(CONFIGS / "llava/llava_v15_7b_lora.yaml",
                            [f"output_dir={tmp_path}", f"model.clip_dir={stand['l14']}",
                             f"model.base_llava_dir={stand['llava_hf']}", f"data.dataset_dir={stand['data']}"])
    with caplog.at_level(logging.INFO, logger="llava_address.llava.build"):
        base = prepare_base(cfg)
    assert "projector kept" in caplog.text
    ref = load_file(str(stand["llava_hf"] / "model.safetensors"))
    got = LlavaForConditionalGeneration.from_pretrained(base).model.multi_modal_projector.state_dict()
    key = next(k for k in ref if k.endswith("multi_modal_projector.linear_1.weight"))
    assert got["linear_1.weight"].dtype == torch.bfloat16  # model.dtype of the base; the Hub's is fp16
    torch.testing.assert_close(got["linear_1.weight"], ref[key].to(torch.bfloat16), atol=0, rtol=0)
    assert AutoProcessor.from_pretrained(stand["llava_hf"]).tokenizer.padding_side == "left"  # as published
    assert AutoProcessor.from_pretrained(base).tokenizer.padding_side == "right"  # training pads right


def test_vicuna_without_sentencepiece_says_so(stand, monkeypatch):
    import importlib.util

    from llava_address.llava.build import check_sentencepiece

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "sentencepiece" else real(name, *a))
    with pytest.raises(ImportError, match="install sentencepiece"):
        check_sentencepiece(stand["vicuna"])
    check_sentencepiece(stand["llava_hf"])  # has tokenizer.json: no sentencepiece needed



def test_deepspeed_auto_resolves_bf16_for_the_7b_config(stand, tmp_path):
    """With model.dtype bfloat16, DeepSpeed's "auto" is bf16 on (ZeRO-3 then partitions bf16, not fp32).

    transformers' own resolver (what the Trainer calls on a DeepSpeed launch) fed with our
    TrainingArguments; the launches themselves are tests/test_llava_deepspeed.py (fp32 tiny config).
    """
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    from llava_address.llava.config import load_llava_config
    from llava_address.llava.train import _training_args

    cfg = load_llava_config(CONFIGS / "llava/llava_v15_7b_lora.yaml", _llava_sets(stand, tmp_path)[1::2])
    args = _training_args(cfg, 2, cfg.stage2, None)
    for zero in ("zero2", "zero3"):
        ds = HfTrainerDeepSpeedConfig(json.loads((CONFIGS / "deepspeed" / f"{zero}.json").read_text()))
        ds.trainer_config_process(args)
        assert ds.config["bf16"]["enabled"] is True and ds.config["fp16"]["enabled"] is False, zero
        assert ds.is_zero3() == (zero == "zero3")


def test_llava_7b_config_qlora_4bit(stand, tmp_path):
    """The 7B config with ``stage2.qlora=true``: NF4 LM linears with bf16 compute, fp32 LoRA masters,
    a bf16 full-precision merge as the export. Stage 2 alone (from the base projector) to save CPU time;
    the ViT-B/16 stand-in (1 layer) as the tower, which the config names as the alternative."""
    import bitsandbytes as bnb
    from transformers import LlavaForConditionalGeneration

    from llava_address.llava.config import load_llava_config
    from llava_address.llava.train import _load_model, prepare_base

    train_llava = _script("train_llava")
    out = tmp_path / "qlora"
    sets = _llava_sets(stand, out, f"model.clip_dir={stand['b16']}", "stage2.qlora=true", "stage2.without_stage1=true")
    cfg = load_llava_config(CONFIGS / "llava/llava_v15_7b_lora.yaml", sets[1::2])
    model = _load_model(cfg, 2, cfg.stage2, prepare_base(cfg))
    four_bit = [m for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(four_bit) == 7 and {m.compute_dtype for m in four_bit} == {torch.bfloat16}  # q k v o gate up down
    assert {m.weight.quant_type for m in four_bit} == {"nf4"}
    del model
    assert train_llava.main(["--config", str(CONFIGS / "llava/llava_v15_7b_lora.yaml"), "--stage", "2", *sets]) == 0
    run = json.loads((out / "stage2" / "run.json").read_text())
    assert run["qlora"] and run["global_step"] == 1
    prec = run["precision"]
    assert prec["linear4bit"] == 7 and prec["autocast"] == "bf16" and prec["deepspeed_bf16"] is None
    assert prec["trainable"] == prec["optimizer"] == ["float32"]  # LoRA + projector masters in fp32
    export = out / "export"
    with safe_open(str(export / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}  # merged, not 4-bit
    merged = LlavaForConditionalGeneration.from_pretrained(export)
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in merged.modules())
