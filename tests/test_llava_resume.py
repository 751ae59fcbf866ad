"""LLaVA resume restores exactly what was saved: kill-and-resume equals an uninterrupted run (full
fine-tune, LoRA, QLoRA), a finished run is reused untouched, broken checkpoints fall back or stop
with one line, and reuse of base/ and stage outputs follows their inputs (issues 14 and 16).

All runs share one tiny base model (assembled once, copied into each run folder); steps are few.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from _fixtures_llava import make_clip_dir, make_dataset, tiny_overrides
from llava_address.llava.checkpoints import CheckpointError, load_model_weights, verify_restored
from llava_address.llava.config import load_llava_config
from llava_address.llava.train import StageInputsError, prepare_base, train_stage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import train_llava  # noqa: E402

CONFIG = ROOT / "configs" / "llava" / "llava_tiny.yaml"
STEPS = ["stage1.max_steps=2", "stage2.max_steps=3", "stage1.warmup_ratio=0", "stage2.warmup_ratio=0"]
MODES = {"full": ["stage2.lora=false"], "lora": ["stage2.lora=true"],
         "qlora": ["stage2.lora=true", "stage2.qlora=true"]}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """(clip dir, dataset, root, template run folder holding the shared base/)."""
    root = tmp_path_factory.mktemp("resume")
    clip, data = make_clip_dir(root / "clip"), make_dataset(root / "data")
    template = root / "template"
    prepare_base(load_llava_config(CONFIG, tiny_overrides(clip, data, template)))
    return clip, data, root, template


def _run_dir(env, name: str) -> Path:
    out = env[2] / name
    shutil.copytree(env[3] / "base", out / "base")
    return out


def _main(env, out: Path, *args: str, sets: tuple[str, ...] = ()) -> int:
    overrides = tiny_overrides(env[0], env[1], out) + STEPS + list(sets)
    return train_llava.main(["--config", str(CONFIG), *args] + [a for s in overrides for a in ("--set", s)])


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"{len(diff)} tensors differ, e.g. {diff[:3]}"


def _run(out: Path, stage: int) -> dict:
    return json.loads((out / f"stage{stage}" / "run.json").read_text())


def _snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(env):
    """Uninterrupted runs per mode, made on first use."""
    made: dict[str, Path] = {}

    def get(mode: str) -> Path:
        if mode not in made:
            out = _run_dir(env, f"ref_{mode}")
            assert _main(env, out, "--stage", "1", "2", sets=tuple(MODES[mode])) == 0
            made[mode] = out
        return made[mode]
    return get


def _assert_projector_only(ckpt: Path, base: Path) -> None:
    """A stage-1 checkpoint: the projector's tensors (names and shapes) plus optimizer state sized for them."""
    from transformers import LlavaForConditionalGeneration

    proj = LlavaForConditionalGeneration.from_pretrained(base).model.multi_modal_projector.state_dict()
    saved = _weights(ckpt / "projector.safetensors")
    assert {k: v.shape for k, v in saved.items()} == {k: v.shape for k, v in proj.items()}
    assert all(v.dtype == torch.float32 for v in saved.values())  # the fp32 master weights
    assert not list(ckpt.glob("model*.safetensors")) and not list(ckpt.glob("pytorch_model*"))
    n_bytes = sum(v.numel() * 4 for v in proj.values())
    optim = torch.load(ckpt / "optimizer.pt", weights_only=True)["state"]
    assert sum(t.numel() for s in optim.values() for t in s.values() if t.dim()) == 2 * n_bytes // 4  # Adam m, v
    total = sum(f.stat().st_size for f in ckpt.rglob("*") if f.is_file())
    assert total < 3 * n_bytes + 64_000 < (base / "model.safetensors").stat().st_size  # weights + m + v + states


@pytest.mark.parametrize("mode", ["full", "lora", "qlora"])
def test_killed_and_resumed_equals_uninterrupted(env, reference, mode, caplog):
    """Bit-equal weights and per-step losses (plain PyTorch on CPU is deterministic here)."""
    if mode == "qlora":
        pytest.importorskip("bitsandbytes")
    ref, out, sets = reference(mode), _run_dir(env, f"killed_{mode}"), tuple(MODES[mode])
    if mode == "full":  # stage 1 killed too: its checkpoint holds the projector, not the frozen model
        assert _main(env, out, "--stage", "1", "--stop-after", "1", sets=sets) == 0
        assert not (out / "stage1" / "projector.safetensors").exists()
        _assert_projector_only(out / "stage1" / "checkpoint-1", out / "base")
    assert _main(env, out, "--stage", "1", "2", "--stop-after", "1", sets=sets) == 0
    assert not (out / "export").exists()  # a stopped stage 2 exports nothing
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert _main(env, out, "--stage", "1", "2", sets=sets) == 0
    assert not [r for r in caplog.records if "keys" in r.getMessage()]  # no missing/unexpected-key warnings
    run2 = _run(out, 2)
    assert run2["resumed_from"].endswith("checkpoint-1") and run2["steps_this_run"] == 2
    assert run2["losses"] == _run(ref, 2)["losses"] and len(run2["losses"]) == 3
    if mode == "full":
        assert _run(out, 1)["resumed_from"].endswith("checkpoint-1")
        assert _run(out, 1)["losses"] == _run(ref, 1)["losses"]
    _assert_same(_weights(ref / "stage1" / "projector.safetensors"), _weights(out / "stage1" / "projector.safetensors"))
    _assert_same(_weights(ref / "export" / "model.safetensors"), _weights(out / "export" / "model.safetensors"))


def test_resuming_a_finished_run_changes_nothing(env, reference, capsys):
    ref = reference("lora")
    before = _snapshot(ref)
    capsys.readouterr()
    assert _main(env, ref, "--stage", "1", "2", sets=tuple(MODES["lora"])) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r.get("reused") for r in records] == [True, True]
    assert records[1]["export_dir"] == str(ref / "export")
    assert _snapshot(ref) == before  # not one file rewritten (mtime and hash), export included


def test_broken_newest_checkpoint_falls_back_to_the_previous(env, reference, caplog):
    ref, out = reference("full"), _run_dir(env, "fallback")
    sets = (*MODES["full"], "stage2.save_total_limit=2")
    assert _main(env, out, "--stage", "1", "2", "--stop-after", "2", sets=sets) == 0
    newest = out / "stage2" / "checkpoint-2" / "model.safetensors"
    os.truncate(newest, newest.stat().st_size // 2)
    with caplog.at_level(logging.WARNING):
        assert _main(env, out, "--stage", "1", "2", sets=sets) == 0
    warned = [r.getMessage() for r in caplog.records if "unusable" in r.getMessage()]
    assert warned and str(newest) in warned[0] and "checkpoint-1" in warned[0]
    assert _run(out, 2)["resumed_from"].endswith("checkpoint-1")
    _assert_same(_weights(ref / "export" / "model.safetensors"), _weights(out / "export" / "model.safetensors"))


@pytest.mark.parametrize("victim", ["optimizer.pt", "projector.safetensors", "trainer_state.json"])
def test_only_checkpoint_broken_stops_with_one_line(env, victim, capsys):
    out = _run_dir(env, f"broken_{victim}")
    assert _main(env, out, "--stage", "1", "--stop-after", "1") == 0
    path = out / "stage1" / "checkpoint-1" / victim
    if victim == "trainer_state.json":
        path.unlink()  # a save killed before its last file
    else:
        os.truncate(path, path.stat().st_size // 3)
    capsys.readouterr()
    assert _main(env, out, "--stage", "1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "--no-resume" in err[0] and "Traceback" not in err[0]
    assert _main(env, out, "--stage", "1", "--no-resume") == 0
    run = _run(out, 1)
    assert run["resumed_from"] is None and run["global_step"] == 2


def test_checkpoint_in_another_key_layout_is_an_error(env, tmp_path):
    """The root cause of issue 16: a state dict whose names do not map onto the model is refused."""
    from transformers import LlavaForConditionalGeneration

    base = env[3] / "base"
    model = LlavaForConditionalGeneration.from_pretrained(base)
    state = load_file(str(base / "model.safetensors"))
    load_model_weights(model, base)  # the save_pretrained layout itself maps back onto every key
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    save_file({f"model.{k}": v for k, v in state.items()}, str(ckpt / "model.safetensors"))  # wrong prefix
    with pytest.raises(CheckpointError, match="missing keys") as err:
        load_model_weights(model, ckpt)
    assert str(ckpt / "model.safetensors") in str(err.value)
    verify_restored(model, base)  # what the Trainer restored is checked against the file, too
    with torch.no_grad():
        model.model.multi_modal_projector.linear_1.bias.add_(1e-3)
    with pytest.raises(CheckpointError, match="did not restore 1 of"):
        verify_restored(model, base)


def test_base_follows_its_inputs_and_stale_checkpoints_are_refused(env, caplog):
    clip, data, root, _ = env
    out = _run_dir(env, "inputs")
    assert _main(env, out, "--stage", "1", "--stop-after", "1") == 0
    other_clip = make_clip_dir(root / "clip_other", width=48)  # a different AddressCLIP tower
    cfg = load_llava_config(CONFIG, tiny_overrides(other_clip, data, out) + STEPS)
    with caplog.at_level(logging.WARNING):
        base = prepare_base(cfg)
    assert any("rebuilding" in r.getMessage() and "clip_dir" in r.getMessage() for r in caplog.records)
    from transformers import LlavaConfig
    assert LlavaConfig.from_pretrained(base).vision_config.hidden_size == 48
    with pytest.raises(StageInputsError, match="other inputs .*base_inputs.*--no-resume"):
        train_stage(cfg, 1)
    assert prepare_base(cfg) == base  # unchanged inputs: reused as is
    mtime = (base / "model.safetensors").stat().st_mtime_ns
    os.truncate(base / "model.safetensors", 100)  # a broken base is rebuilt, not loaded
    prepare_base(cfg)
    assert (base / "model.safetensors").stat().st_mtime_ns != mtime
    LlavaConfig.from_pretrained(base)


def test_stage2_needs_stage1_projector_from_this_base(env, capsys):
    out = _run_dir(env, "no_stage1")
    assert _main(env, out, "--stage", "2") == 2
    err = capsys.readouterr().err
    assert "stage-1 projector" in err and "stage2.without_stage1=true" in err
    assert _main(env, out, "--stage", "2", sets=("stage2.without_stage1=true", "stage2.max_steps=1")) == 0
    assert _run(out, 2)["global_step"] == 1


def test_broken_model_dirs_stop_with_one_line_and_keep_the_export(env, reference, capsys):
    """A truncated AddressCLIP dir or stage-2 adapter: exit 2 naming the file; the good export stays."""
    import export_llava

    clip = env[2] / "clip_broken"
    shutil.copytree(env[0], clip)
    os.truncate(clip / "model.safetensors", 50)
    capsys.readouterr()
    rc = train_llava.main(["--config", str(CONFIG), "--stage", "1"]
                          + [a for s in tiny_overrides(clip, env[1], env[2] / "o") for a in ("--set", s)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and str(clip / "model.safetensors") in err[0]

    run = env[2] / "export_kept"
    shutil.copytree(reference("lora"), run)
    export = _snapshot(run / "export")
    os.truncate(run / "stage2" / "adapter" / "adapter_model.safetensors", 100)
    sets = tiny_overrides(env[0], env[1], run) + STEPS + MODES["lora"]
    capsys.readouterr()
    assert export_llava.main(["--config", str(CONFIG)] + [a for s in sets for a in ("--set", s)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "adapter_model.safetensors" in err[0] and "export is kept" in err[0]
    assert _snapshot(run / "export") == export
