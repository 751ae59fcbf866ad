"""DeepSpeed launches on CPU (gloo): ZeRO-2/3, 1 and 2 processes, both stages, export after ZeRO-3.

Each launch costs ~30-60 s (process start + DeepSpeed init), so three launches cover the matrix:
ZeRO-3 x 2 procs (stage 1 + LoRA stage 2), ZeRO-2 x 2 procs (stage 1 + full stage 2), ZeRO-3 x 1 proc
(stage 2). run.json records what the Trainer really engaged. More launches check that a run killed
and resumed equals the uninterrupted launch: ZeRO-2 killed in stage 1 and again in stage 2, ZeRO-3
killed in stage 2. Two launches run the shipped 7B config (bf16) against stand-ins: stage 1 under
ZeRO-2, stage 2 LoRA under ZeRO-3, asserting the precision DeepSpeed really used.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlavaForConditionalGeneration

from _fixtures_llava import make_clip_dir, make_dataset, tiny_overrides

ROOT = Path(__file__).resolve().parents[1]
DEEPSPEED = Path(sys.executable).parent / "deepspeed"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not DEEPSPEED.exists(), reason="deepspeed launcher not installed")]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    return make_clip_dir(root / "clip"), make_dataset(root / "data"), root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_LAUNCHED: dict[tuple, Path] = {}


def _launch(dirs, name: str, nprocs: int, zero: str, stages: list[str], *sets: str, extra: tuple[str, ...] = (),
            config: str = "llava_tiny.yaml", base_sets: list[str] | None = None) -> Path:
    """One deepspeed launch of scripts/train_llava.py; the same launch twice in a module runs once.

    ``base_sets``: the overrides that size the run (default: the tiny config's, for ``dirs``).
    """
    key = (name, nprocs, zero, tuple(stages), sets, extra, config)
    if key in _LAUNCHED:
        return _LAUNCHED[key]
    clip, data, root = dirs
    out = root / name
    if base_sets is None:
        base_sets = tiny_overrides(clip, data, out)
    overrides = base_sets + ["stage1.warmup_ratio=0", "stage2.warmup_ratio=0", *sets]
    port = _free_port()
    cmd = [str(DEEPSPEED), "--num_gpus", str(nprocs), "--master_port", str(port),
           str(ROOT / "scripts" / "train_llava.py"), "--config", str(ROOT / "configs/llava" / config),
           "--deepspeed", str(ROOT / "configs/deepspeed" / f"{zero}.json"), "--stage", *stages, *extra]
    cmd += [a for s in overrides for a in ("--set", s)]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
    except subprocess.TimeoutExpired as exc:  # show where it hung
        tail = lambda b: (b.decode(errors="replace") if isinstance(b, bytes) else b or "")[-3000:]  # noqa: E731
        pytest.fail(f"launch {name} timed out:\n{tail(exc.stdout)}\n{tail(exc.stderr)}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # DeepSpeed's CPU shm all-reduce leaves a 66 MiB /dev/shm segment per rank unless we remove it
    leaked = sorted(p.name for p in Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))
    assert not leaked, f"shared-memory segments left behind by the launch: {leaked}"
    _LAUNCHED[key] = out
    return out


def _run(out: Path, stage: int) -> dict:
    return json.loads((out / f"stage{stage}" / "run.json").read_text())


def test_zero3_two_procs_both_stages_lora(dirs):
    out = _launch(dirs, "z3x2", 2, "zero3", ["1", "2"], "stage2.lora=true")
    for stage in (1, 2):
        run = _run(out, stage)
        assert run["deepspeed_enabled"] is True and run["zero_stage"] == 3 and run["world_size"] == 2
        assert run["global_step"] == 2 and run["trainable_params"] > 0
    # stage 1's projector was gathered from ZeRO-3 shards: full shapes, trained (differs from base)
    base = LlavaForConditionalGeneration.from_pretrained(out / "base")
    proj = load_file(str(out / "stage1" / "projector.safetensors"))
    ref = base.model.multi_modal_projector.state_dict()
    assert {k: v.shape for k, v in proj.items()} == {k: v.shape for k, v in ref.items()}
    assert any(not torch.equal(proj[k], ref[k]) for k in ref)
    # the export merged the ZeRO-3-trained adapter: its projector is the adapter's, LoRA deltas are in
    merged = LlavaForConditionalGeneration.from_pretrained(out / "export")
    adapter = load_file(str(out / "stage2" / "adapter" / "adapter_model.safetensors"))
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.numel() > 0 for v in lora_b) and any(v.abs().sum() > 0 for v in lora_b)
    key = next(k for k in adapter if "multi_modal_projector" in k and "linear_2.weight" in k)
    assert torch.equal(merged.model.multi_modal_projector.linear_2.weight, adapter[key])
    q = merged.model.language_model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(q, base.model.language_model.layers[0].self_attn.q_proj.weight)


def test_zero2_two_procs_both_stages_full_lm(dirs):
    out = _launch(dirs, "z2x2", 2, "zero2", ["1", "2"], "stage2.lora=false")
    for stage in (1, 2):
        run = _run(out, stage)
        assert run["deepspeed_enabled"] is True and run["zero_stage"] == 2 and run["world_size"] == 2
    assert LlavaForConditionalGeneration.from_pretrained(out / "export").config.image_seq_length == 5  # 4 patches + CLS ("full")


def test_zero3_one_proc_stage2(dirs):
    out = _launch(dirs, "z3x1", 1, "zero3", ["2"], "stage2.lora=false", "stage2.without_stage1=true")
    run = _run(out, 2)
    assert run["deepspeed_enabled"] is True and run["zero_stage"] == 3 and run["world_size"] == 1
    base = LlavaForConditionalGeneration.from_pretrained(out / "base").state_dict()
    exported = LlavaForConditionalGeneration.from_pretrained(out / "export").state_dict()
    changed = {k for k in base if not torch.equal(base[k], exported[k])}
    assert any("language_model" in k for k in changed) and not any("vision_tower" in k for k in changed)


def _assert_close(ref: Path, out: Path) -> None:
    """DeepSpeed resume vs an uninterrupted launch: per-step losses and exported weights.

    Tolerance: rtol 1e-5 / atol 1e-6 (DeepSpeed's reductions over ranks need not be bit-identical
    between launches); in practice on CPU/gloo they come out equal.
    """
    a, b = _run(ref, 2), _run(out, 2)
    assert b["resumed_from"].endswith("checkpoint-1") and b["steps_this_run"] == 1
    assert a["losses"].keys() == b["losses"].keys() and len(a["losses"]) == 2
    for k in a["losses"]:
        assert b["losses"][k] == pytest.approx(a["losses"][k], rel=1e-5, abs=1e-6)
    wa = load_file(str(ref / "export" / "model.safetensors"))
    wb = load_file(str(out / "export" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-5, atol=1e-6, msg=k)


def test_zero2_two_procs_resume_equals_uninterrupted(dirs):
    """Killed in stage 1 (projector-only Trainer checkpoint + DeepSpeed's engine files), then in stage 2."""
    ref = _launch(dirs, "z2x2", 2, "zero2", ["1", "2"], "stage2.lora=false")
    killed = _launch(dirs, "z2x2_killed", 2, "zero2", ["1"], "stage2.lora=false", extra=("--stop-after", "1"))
    ckpt = killed / "stage1" / "checkpoint-1"
    assert (ckpt / "projector.safetensors").is_file() and not (ckpt / "model.safetensors").exists()
    _launch(dirs, "z2x2_killed", 2, "zero2", ["1", "2"], "stage2.lora=false", extra=("--stop-after", "1"))
    out = _launch(dirs, "z2x2_killed", 2, "zero2", ["1", "2"], "stage2.lora=false")
    a, b = _run(ref, 1), _run(out, 1)
    assert b["global_step"] == 2 and b["resumed_from"].endswith("checkpoint-1") and b["steps_this_run"] == 1
    assert a["losses"].keys() == b["losses"].keys()
    for k in a["losses"]:
        assert b["losses"][k] == pytest.approx(a["losses"][k], rel=1e-5, abs=1e-6)
    pa, pb = (load_file(str(o / "stage1" / "projector.safetensors")) for o in (ref, out))
    for k in pa:
        torch.testing.assert_close(pb[k], pa[k], rtol=1e-5, atol=1e-6, msg=k)
    _assert_close(ref, out)


def test_zero3_two_procs_lora_resume_equals_uninterrupted(dirs):
    """ZeRO-3 + LoRA: DeepSpeed restores a peft model non-strictly; the resume check gathers and verifies it."""
    ref = _launch(dirs, "z3x2", 2, "zero3", ["1", "2"], "stage2.lora=true")
    _launch(dirs, "z3x2_killed", 2, "zero3", ["1", "2"], "stage2.lora=true", extra=("--stop-after", "1"))
    _assert_close(ref, _launch(dirs, "z3x2_killed", 2, "zero3", ["1", "2"], "stage2.lora=true"))


# ---------------------------------------------------------------- the shipped 7B config, bf16
@pytest.fixture(scope="module")
def stand7b(dirs):
    """Stand-ins for the 7B config (tests/standins.py): Vicuna-7B's layout at 1/64 width and one layer,
    CLIP ViT-B/16 with one layer (the config's ViT-B/16 alternative). Only widths/layers/steps shrink."""
    import standins

    root = dirs[2] / "standins"
    return {"vicuna": standins.vicuna_7b(root / "vicuna-7b-v1.5", width=1 / 64),
            "b16": standins.clip_vitb16(root / "clip-vit-base-patch16", layers=1), "data": dirs[1]}


def _sets_7b(stand7b, out: Path) -> list[str]:
    return [f"output_dir={out}", f"model.clip_dir={stand7b['b16']}", f"model.text={stand7b['vicuna']}",
            f"data.dataset_dir={stand7b['data']}", "stage1.max_steps=1", "stage2.max_steps=1",
            "stage1.batch_size=2", "stage2.batch_size=2", "stage1.logging_steps=1", "stage2.logging_steps=1"]


def _launch_7b(dirs, stand7b, zero: str, stage: str) -> Path:
    """The README's 7B recipe: stage 1 under ZeRO-2, then stage 2 (LoRA r128) under ZeRO-3, 2 processes each."""
    return _launch(dirs, "v15_7b", 2, zero, [stage], config="llava_v15_7b_lora.yaml",
                   base_sets=_sets_7b(stand7b, dirs[2] / "v15_7b"))


def test_7b_config_stage1_zero2_two_procs_bf16(dirs, stand7b):
    """model.dtype bfloat16 under ZeRO-2: DeepSpeed's bf16 is on, the optimizer holds fp32 masters of the
    bf16 projector, and the checkpoint holds only the projector, in the Trainer's file and in DeepSpeed's."""
    out = _launch_7b(dirs, stand7b, "zero2", "1")
    run = _run(out, 1)
    assert run["deepspeed_enabled"] and run["zero_stage"] == 2 and run["world_size"] == 2 and run["global_step"] == 1
    prec = run["precision"]
    assert prec["deepspeed_bf16"] is True and prec["deepspeed_fp16"] is False
    assert prec["trainable"] == ["bfloat16"] and prec["optimizer"] == ["float32"]
    ckpt = out / "stage1" / "checkpoint-1"
    proj = load_file(str(ckpt / "projector.safetensors"))
    assert set(proj) == {"linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias"}
    assert proj["linear_1.weight"].shape == (64, 768)  # 7B text width / 64, ViT-B/16 features
    assert not (ckpt / "model.safetensors").exists() and (ckpt / "global_step1").is_dir()
    torch.testing.assert_close(load_file(str(out / "stage1" / "projector.safetensors")), proj, rtol=0, atol=0)
    # DeepSpeed's own files leave the frozen LM and tower out too: all of global_step1 is a small
    # fraction of the base weights (it held the whole model, 24 MB here, before)
    engine_bytes = sum(f.stat().st_size for f in (ckpt / "global_step1").rglob("*") if f.is_file())
    base_bytes = sum(f.stat().st_size for f in (out / "base").glob("*.safetensors"))
    assert engine_bytes < 0.1 * base_bytes, (engine_bytes, base_bytes)


def test_7b_config_stage2_lora_zero3_two_procs_bf16_export(dirs, stand7b):
    out = _launch_7b(dirs, stand7b, "zero2", "1")
    out = _launch_7b(dirs, stand7b, "zero3", "2")
    run = _run(out, 2)
    assert run["deepspeed_enabled"] and run["zero_stage"] == 3 and run["world_size"] == 2 and run["lora"]
    prec = run["precision"]
    assert prec["deepspeed_bf16"] is True and prec["optimizer"] == ["float32"]  # fp32 masters of bf16 LoRA
    adapter = load_file(str(out / "stage2" / "adapter" / "adapter_model.safetensors"))
    assert any(v.shape[0] == 128 for k, v in adapter.items() if "lora_A" in k)  # the shipped r128
    export = out / "export"
    assert json.loads((export / "config.json").read_text())["dtype"] == "bfloat16"
    merged = LlavaForConditionalGeneration.from_pretrained(export)
    assert {p.dtype for p in merged.parameters()} == {torch.bfloat16}
    assert merged.config.text_config.vocab_size >= 32000 and merged.config.vision_config.patch_size == 16
