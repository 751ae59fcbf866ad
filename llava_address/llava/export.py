"""Export: LoRA merged into the base -> a plain LlavaForConditionalGeneration + processor directory.

The export loads with ``LlavaForConditionalGeneration.from_pretrained`` and
``AutoProcessor.from_pretrained`` and nothing from this project; the processor carries the
Vicuna v1 chat template. Merging always reloads unpartitioned full-precision weights from disk,
so it is the same after plain, ZeRO-2, ZeRO-3 or 4-bit (QLoRA) training. Every load here is
strict: a base, model or adapter whose keys do not all match raises before the export is touched,
so an existing good export is never replaced by partly random weights.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from llava_address.common.io import atomic_dir
from llava_address.common.checkpoint_files import folder_problem
from llava_address.llava.checkpoints import CheckpointError, load_adapter_weights

__all__ = ["load_llava_strict", "merge_adapter", "export_llava", "export_from_stage2"]

log = logging.getLogger(__name__)


def load_llava_strict(model_dir: str | Path, dtype: torch.dtype = torch.float32) -> LlavaForConditionalGeneration:
    """``from_pretrained`` that raises on any missing/unexpected/mismatched key instead of warning."""
    model, info = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=dtype, local_files_only=True,
                                                                output_loading_info=True)
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if bad:
        raise CheckpointError(f"{model_dir}: weights do not match the model ({ {k: sorted(v)[:5] for k, v in bad.items()} })")
    return model


def merge_adapter(base_dir: str | Path, adapter_dir: str | Path,
                  dtype: torch.dtype = torch.float32) -> LlavaForConditionalGeneration:
    """Base weights + peft adapter (LoRA + projector copy) -> merged plain model."""
    from peft import PeftConfig, get_peft_model

    base = load_llava_strict(base_dir, dtype)
    peft_model = get_peft_model(base, PeftConfig.from_pretrained(str(adapter_dir)))
    load_adapter_weights(peft_model, Path(adapter_dir))
    return peft_model.merge_and_unload()


def export_llava(trained_dir: str | Path, export_dir: str | Path, base_dir: str | Path | None = None,
                 processor_dir: str | Path | None = None, dtype: torch.dtype = torch.float32) -> Path:
    """Write the export. ``trained_dir`` is a peft adapter dir (needs ``base_dir``) or a full model dir."""
    trained_dir = Path(trained_dir)
    for d in (trained_dir, base_dir):
        broken = folder_problem(Path(d)) if d is not None and Path(d).is_dir() else None
        if broken:
            raise CheckpointError(f"cannot export: {broken[0]} is unusable ({broken[1]}); the existing export is kept")
    if (trained_dir / "adapter_config.json").is_file():
        if base_dir is None:
            raise ValueError(f"{trained_dir} holds a LoRA adapter: pass the base model dir to merge it into")
        model = merge_adapter(base_dir, trained_dir, dtype)
    elif (trained_dir / "config.json").is_file():
        model = load_llava_strict(trained_dir, dtype)
    else:
        raise FileNotFoundError(f"neither a peft adapter nor a model dir: {trained_dir}")
    processor = AutoProcessor.from_pretrained(processor_dir or base_dir or trained_dir, local_files_only=True)
    model.eval()
    with atomic_dir(export_dir, overwrite=True) as tmp:
        model.save_pretrained(tmp, state_dict={k: v.contiguous() for k, v in model.state_dict().items()})
        processor.save_pretrained(tmp)
    log.info("exported merged LLaVA -> %s", export_dir)
    return Path(export_dir)


def export_from_stage2(cfg) -> Path:
    """The run layout's export: output_dir/stage2/{adapter|model} (+ base) -> output_dir/export."""
    out = Path(cfg.output_dir)
    trained = out / "stage2" / ("adapter" if cfg.stage2.lora else "model")
    return export_llava(trained, out / "export", base_dir=out / "base", processor_dir=out / "base",
                        dtype=getattr(torch, cfg.model.dtype))
