"""Trainer checkpoints of one LLaVA stage: pick the newest loadable one, load its weights strictly.

Why this module exists: transformers 5.x ``save_pretrained`` writes LLaVA weights in the original
(Hub) key layout (``language_model.model.*``, ``vision_tower.*``, ``multi_modal_projector.*``)
by reverting the conversion mapping it applies on load, while ``Trainer._load_from_checkpoint``
feeds that file straight to ``model.load_state_dict(..., strict=False)`` whose names are
``model.language_model.*`` etc. Nothing matched, transformers only logged "There were missing
keys ...", and a resumed stage went on from the weights it started with. Here a checkpoint's
names are mapped with the model's own conversion and every key must match, or
:class:`CheckpointError` names the file. peft adapters load through peft, checked the same way.

Stage 1 trains only the projector, so its checkpoints hold only ``projector.safetensors`` (the
projector's own state dict, the layout of ``stage1/projector.safetensors``) beside the optimizer,
scheduler and RNG states: ~250 MB for 7B with a ViT-L tower (21 M projector parameters and their
Adam moments) instead of ~14 GB. The frozen parts come from ``base/`` on resume, which is what the
stage started from anyway. Under DeepSpeed the engine adds its own files (see docs/resume.md).

A checkpoint is usable when every file in it opens (see
:mod:`llava_address.common.checkpoint_files`); a killed save or a truncated copy is skipped in
favour of the previous checkpoint, with a warning.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from llava_address.common.checkpoint_files import CheckpointError, first_usable, folder_problem

__all__ = ["CheckpointError", "FRESH_HINT", "PROJECTOR", "PROJECTOR_FILE", "checkpoint_problem",
           "find_resume_checkpoint", "projector_module", "load_model_weights", "load_adapter_weights",
           "load_projector_weights", "load_checkpoint_weights", "verify_restored"]

log = logging.getLogger(__name__)
FRESH_HINT = "rerun with --no-resume to start this stage fresh (scripts/demo.py: --fresh)"
_CKPT = re.compile(r"^checkpoint-(\d+)$")
PROJECTOR = "multi_modal_projector"
PROJECTOR_FILE = "projector.safetensors"  # stage 1's checkpoints and result: the projector's state dict


def checkpoint_problem(ckpt: Path) -> tuple[Path, str] | None:
    """(file, reason) for the first unusable file of a Trainer checkpoint dir, or None if it looks whole."""
    if not (ckpt / "trainer_state.json").is_file():
        return ckpt / "trainer_state.json", "missing (the save did not finish)"
    weights = [ckpt / n for n in ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors",
                                  "pytorch_model.bin", PROJECTOR_FILE)]
    if not any(w.is_file() for w in weights) and not any(ckpt.glob("global_step*")):
        return ckpt, "no model weights in it"
    return folder_problem(ckpt)


def _checkpoints(stage_dir: Path) -> list[Path]:
    found = [(int(m.group(1)), p) for p in stage_dir.iterdir() if p.is_dir() and (m := _CKPT.match(p.name))] \
        if stage_dir.is_dir() else []
    return [p for _, p in sorted(found, reverse=True)]


def find_resume_checkpoint(stage_dir: Path) -> Path | None:
    """Newest usable ``checkpoint-N`` in ``stage_dir``; falls back past broken ones with a warning.

    None when there is no checkpoint at all; :class:`CheckpointError` when there are some and none
    is usable (the message names the newest broken file).
    """
    return first_usable(_checkpoints(stage_dir), checkpoint_problem, "checkpoint", FRESH_HINT)


def _native_names(model: torch.nn.Module) -> dict[str, str]:
    """On-disk (save_pretrained) key -> model state_dict key, from the model's own conversion mapping."""
    from transformers.core_model_loading import revert_weight_conversion

    state = model.state_dict()
    by_id = {id(t): k for k, t in state.items()}
    reverted = revert_weight_conversion(model, dict(state))
    mapping = {saved: by_id[id(t)] for saved, t in reverted.items() if id(t) in by_id}
    if len(mapping) != len(reverted):  # a real converter (merge/split), not a renaming
        raise CheckpointError(f"{type(model).__name__}: checkpoint key conversion is not a pure renaming")
    return mapping


def _read_weights(ckpt: Path) -> tuple[dict[str, torch.Tensor], Path]:
    single = ckpt / "model.safetensors"
    if single.is_file():
        return load_file(str(single)), single
    index = ckpt / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for s in shards:
            state.update(load_file(str(ckpt / s)))
        return state, index
    raise CheckpointError(f"no model.safetensors in {ckpt}; {FRESH_HINT}")


def load_model_weights(model: torch.nn.Module, ckpt: Path) -> None:
    """Full-model checkpoint (any save_pretrained layout) -> ``model``; every key must match."""
    state, src = _read_weights(ckpt)
    names = _native_names(model)
    mapped = {names.get(k, k): v for k, v in state.items()}
    result = model.load_state_dict(mapped, strict=False)
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    missing = [k for k in result.missing_keys if k not in tied]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{src} does not match the model: missing keys {missing[:5]} ({len(missing)}), "
                              f"unexpected keys {result.unexpected_keys[:5]} ({len(result.unexpected_keys)}); "
                              f"{FRESH_HINT}")


def projector_module(model: torch.nn.Module) -> tuple[str, torch.nn.Module]:
    """(state-dict prefix, module) of the LLaVA projector inside ``model``."""
    found = [(n, m) for n, m in model.named_modules() if n.endswith(PROJECTOR)]
    if len(found) != 1:
        raise ValueError(f"{type(model).__name__}: expected one {PROJECTOR}, found {[n for n, _ in found]}")
    return found[0][0] + ".", found[0][1]


def load_projector_weights(model: torch.nn.Module, ckpt: Path) -> None:
    """A projector-only checkpoint (stage 1) -> the projector of ``model``; every key and shape must match."""
    src = ckpt / PROJECTOR_FILE
    _, proj = projector_module(model)
    try:
        proj.load_state_dict(load_file(str(src)), strict=True)
    except RuntimeError as exc:  # torch lists missing/unexpected keys and shape mismatches
        raise CheckpointError(f"{src} does not match the model's projector ({str(exc).splitlines()[0]}); "
                              f"{FRESH_HINT}") from exc


def load_adapter_weights(model: torch.nn.Module, adapter_dir: Path) -> None:
    """peft adapter (LoRA + modules_to_save) -> the active adapter of ``model``; every adapter key must match."""
    from peft import set_peft_model_state_dict

    src = adapter_dir / "adapter_model.safetensors"
    if not src.is_file():
        raise CheckpointError(f"no adapter_model.safetensors in {adapter_dir}; {FRESH_HINT}")
    state = load_file(str(src))
    result = set_peft_model_state_dict(model, state, adapter_name=model.active_adapter)
    ours = [k for k in result.missing_keys if "lora_" in k or "modules_to_save" in k]
    if ours or result.unexpected_keys:
        raise CheckpointError(f"{src} does not match the model: missing adapter keys {ours[:5]} ({len(ours)}), "
                              f"unexpected keys {result.unexpected_keys[:5]} ({len(result.unexpected_keys)}); "
                              f"{FRESH_HINT}")


def load_checkpoint_weights(model: torch.nn.Module, ckpt: Path) -> None:
    """A Trainer checkpoint's weights into ``model`` (peft model: its adapter; else the full model)."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        load_adapter_weights(model, ckpt)
    elif (ckpt / PROJECTOR_FILE).is_file():
        load_projector_weights(model, ckpt)
    else:
        load_model_weights(model, ckpt)
    log.info("loaded weights of %s (every key matched)", ckpt)


def verify_restored(model: torch.nn.Module, ckpt: Path) -> None:
    """The model's weights equal the checkpoint's saved ones (run after the Trainer restored it).

    Catches any restore path that loads less than it should without saying so (e.g. DeepSpeed's
    non-strict module load for peft models). Not for ZeRO-3-partitioned parameters.
    """
    from peft import PeftModel, get_peft_model_state_dict

    if isinstance(model, PeftModel):
        src = ckpt / "adapter_model.safetensors"
        saved, current = load_file(str(src)), get_peft_model_state_dict(model)
    elif (ckpt / PROJECTOR_FILE).is_file():
        src, prefix = ckpt / PROJECTOR_FILE, projector_module(model)[0]
        saved, current = {prefix + k: v for k, v in load_file(str(src)).items()}, model.state_dict()
    else:
        saved, src = _read_weights(ckpt)
        names = _native_names(model)
        saved = {names.get(k, k): v for k, v in saved.items()}
        current = model.state_dict()
    wrong = [k for k, v in saved.items() if k not in current
             or not torch.equal(current[k].detach().cpu(), v.to(current[k].dtype))]
    if wrong:
        raise CheckpointError(f"resume did not restore {len(wrong)} of {len(saved)} tensors of {src}, "
                              f"e.g. {wrong[:3]}; {FRESH_HINT}")
