"""Two-stage LLaVA-1.5 training with the HF Trainer (plain, DeepSpeed ZeRO-2/3, optional QLoRA).

Layout under ``cfg.output_dir``::

    base/      the assembled model before training (AddressCLIP tower + LM + fresh projector + processor)
    stage1/    Trainer checkpoints, projector.safetensors (stage-1 result), run.json
    stage2/    Trainer checkpoints, adapter/ (peft LoRA + projector) or model/ (full fine-tune), run.json
    export/    merged LlavaForConditionalGeneration + processor (loads with no project code)

Stage 1 trains only ``multi_modal_projector`` on the alignment set; stage 2 trains LoRA on the LM
linears (or the whole LM with ``stage2.lora: false``) plus the projector on multi-turn QA,
starting from stage 1's projector. The vision tower is always frozen.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from transformers import (AutoProcessor, BitsAndBytesConfig, LlavaForConditionalGeneration, Trainer,
                          TrainingArguments)
from transformers.integrations import deepspeed as hf_ds
from transformers.trainer_utils import get_last_checkpoint

from llava_address.common.config import dump_config
from llava_address.common.device import DTYPES as _DTYPES
from llava_address.common.io import atomic_dir, atomic_write_json
from llava_address.llava.build import build_llava
from llava_address.llava.config import LlavaConfigFile, StageConfig
from llava_address.llava.data import LlavaCollator, LlavaJsonDataset, dialogue_texts, read_llava_json
from llava_address.llava.tokenizer import train_tokenizer

__all__ = ["PROJECTOR", "prepare_base", "train_stage", "ProjectorLrTrainer", "freeze_for_stage",
           "apply_lora", "load_projector"]

log = logging.getLogger(__name__)
PROJECTOR = "multi_modal_projector"
PROJECTOR_FILE = "projector.safetensors"


# ---------------------------------------------------------------- base model
@contextlib.contextmanager
def _zero3_paused(args: TrainingArguments) -> Iterator[None]:
    """Build/load plain (unpartitioned) modules even while a ZeRO-3 config is active."""
    ds_cfg = getattr(args, "hf_deepspeed_config", None)
    hf_ds.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if ds_cfg is not None:
            hf_ds.set_hf_deepspeed_config(ds_cfg)


def prepare_base(cfg: LlavaConfigFile) -> Path:
    """Assemble the untrained model once (tokenizer trained here for the tiny LM) into output_dir/base."""
    base = Path(cfg.output_dir) / "base"
    if (base / "config.json").is_file():
        return base
    m = cfg.model
    tokenizer = None
    if m.text == "tiny" and m.base_llava_dir is None:
        corpus = []
        for name in (cfg.data.align_json, cfg.data.qa_json):
            path = cfg.data.resolve(name)
            if path.is_file():
                corpus += dialogue_texts(read_llava_json(path))
        if not corpus:
            raise FileNotFoundError(f"no dialogue corpus to train the tiny tokenizer: {cfg.data.resolve(cfg.data.qa_json)}")
        from llava_address.llava.chat_template import SYSTEM_PROMPT
        tokenizer = train_tokenizer(corpus + [SYSTEM_PROMPT] * 10, vocab_size=m.tiny.vocab_size)
    torch.manual_seed(cfg.stage1.seed)  # the tiny LM's and the projector's init are part of the run
    model, processor = build_llava(m.clip_dir, m.text, tokenizer, tiny=m.tiny.llama_kwargs(),
                                   base_llava_dir=m.base_llava_dir, dtype=_DTYPES[m.dtype],
                                   vision_feature_layer=m.vision_feature_layer,
                                   vision_feature_select_strategy=m.vision_feature_select_strategy)
    with atomic_dir(base, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    log.info("assembled base model (%.2f M params) -> %s", sum(p.numel() for p in model.parameters()) / 1e6, base)
    return base


# ---------------------------------------------------------------- trainable parts
def freeze_for_stage(model: torch.nn.Module, stage: int, full_lm: bool = False) -> None:
    """Stage 1: projector only. Stage 2 full fine-tune: LM + projector. Vision tower: never."""
    for name, p in model.named_parameters():
        if "vision_tower" in name:
            p.requires_grad_(False)
        elif PROJECTOR in name:
            p.requires_grad_(True)
        else:
            p.requires_grad_(stage == 2 and full_lm)


def apply_lora(model: torch.nn.Module, sc: StageConfig) -> torch.nn.Module:
    """peft LoRA on the LM linears (regex keeps the CLIP tower out) + trainable projector copy."""
    from peft import LoraConfig, get_peft_model

    lcfg = LoraConfig(r=sc.lora_r, lora_alpha=sc.lora_alpha, lora_dropout=sc.lora_dropout,
                      target_modules=sc.lora_target, modules_to_save=[PROJECTOR], task_type="CAUSAL_LM")
    return get_peft_model(model, lcfg)


def load_projector(model: LlavaForConditionalGeneration, path: Path) -> None:
    """Copy stage-1 projector weights in (gathering ZeRO-3 shards to modify them)."""
    state = load_file(str(path))
    proj = model.model.multi_modal_projector
    params = list(proj.parameters())
    ctx = contextlib.nullcontext()
    if hf_ds.is_deepspeed_zero3_enabled():
        import deepspeed
        ctx = deepspeed.zero.GatheredParameters(params, modifier_rank=0)
    with ctx:
        proj.load_state_dict(state, strict=True)  # every rank: gathered copies are re-partitioned from rank 0


def _save_projector(model: torch.nn.Module, path: Path, is_main: bool) -> None:
    proj = dict(model.named_modules())
    proj = next(m for n, m in proj.items() if n.endswith(PROJECTOR))
    params = list(proj.parameters())
    ctx = contextlib.nullcontext()
    if hf_ds.is_deepspeed_zero3_enabled():
        import deepspeed
        ctx = deepspeed.zero.GatheredParameters(params)
    with ctx:
        if is_main:
            state = {k: v.detach().cpu().contiguous() for k, v in proj.state_dict().items()}
            tmp = path.with_suffix(".tmp")
            save_file(state, str(tmp))
            tmp.replace(path)


class ProjectorLrTrainer(Trainer):
    """Trainer whose optimizer gives the projector its own learning rate (LLaVA-1.5 stage 2)."""

    def __init__(self, *a: Any, projector_lr: float | None = None, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.projector_lr = projector_lr

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        if self.optimizer is not None or self.projector_lr is None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        named = [(n, p) for n, p in opt_model.named_parameters() if p.requires_grad]
        groups = [{"params": [p for n, p in named if PROJECTOR not in n], "weight_decay": self.args.weight_decay},
                  {"params": [p for n, p in named if PROJECTOR in n], "weight_decay": 0.0, "lr": self.projector_lr}]
        groups = [g for g in groups if g["params"]]
        cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = cls(groups, **kwargs)
        return self.optimizer


# ---------------------------------------------------------------- one stage
def _configure_cpu_deepspeed(deepspeed: str | None) -> bool:
    """Pre-configure accelerate for a DeepSpeed launch on CPU; True if done.

    Without CUDA, accelerate 1.15 picks no backend for a DeepSpeed launch and reports ONE process
    per rank (every rank then thinks it is rank 0 and sees all data). A PartialState built with
    the gloo backend counts ranks correctly; TrainingArguments then reuses it.
    """
    if not deepspeed or torch.cuda.is_available() or os.environ.get("LOCAL_RANK") is None:
        return False
    from accelerate import PartialState
    from accelerate.state import AcceleratorState

    # what TrainingArguments does itself when it builds the state (a 2nd stage in the same launch)
    AcceleratorState._reset_state(reset_partial_state=False)
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    try:
        PartialState(backend="gloo")
    finally:
        del os.environ["ACCELERATE_USE_DEEPSPEED"]
    return True


def _training_args(cfg: LlavaConfigFile, stage: int, sc: StageConfig, deepspeed: str | None) -> TrainingArguments:
    """Trainer settings of one stage. ``model.dtype`` bf16/fp16 means mixed precision (autocast, fp32
    master weights: see ``_load_model``), which also makes DeepSpeed's ``"auto"`` resolve bf16/fp16
    on (ZeRO-3 then partitions 16-bit parameters). Loading in bf16 alone would train in pure bf16,
    where a projector update at lr 2e-5 rounds away."""
    configured = _configure_cpu_deepspeed(deepspeed)
    mixed = cfg.model.dtype != "float32"
    return TrainingArguments(
        bf16=cfg.model.dtype == "bfloat16", fp16=cfg.model.dtype == "float16",
        # CPU autocast must be asked for (tests of the bf16 configs; slow, never the tiny configs)
        use_cpu=mixed and not torch.cuda.is_available(),
        accelerator_config={"use_configured_state": True} if configured else None,
        output_dir=str(Path(cfg.output_dir) / f"stage{stage}"), per_device_train_batch_size=sc.batch_size,
        gradient_accumulation_steps=sc.grad_accum, learning_rate=sc.lr, num_train_epochs=sc.epochs,
        max_steps=sc.max_steps, lr_scheduler_type=sc.scheduler, warmup_steps=sc.warmup_ratio,
        weight_decay=sc.weight_decay, logging_steps=sc.logging_steps, save_steps=sc.save_steps,
        save_total_limit=sc.save_total_limit, seed=sc.seed, report_to=[], remove_unused_columns=False,
        deepspeed=deepspeed, gradient_checkpointing=sc.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if sc.gradient_checkpointing else None,
        dataloader_num_workers=sc.num_workers, ddp_find_unused_parameters=False)


def _load_model(cfg: LlavaConfigFile, stage: int, sc: StageConfig, base: Path) -> LlavaForConditionalGeneration:
    """Frozen weights in ``model.dtype`` (half the memory in bf16); what trains in fp32.

    Mixed precision keeps fp32 master weights: the projector is upcast here, peft creates LoRA
    weights in fp32, a full-LM stage 2 loads everything in fp32 and 4-bit QLoRA upcasts in
    ``prepare_model_for_kbit_training``. Under DeepSpeed the engine keeps the fp32 masters itself
    (ZeRO-3 parameters are partitioned, so they are left as loaded).
    """
    dtype = _DTYPES[cfg.model.dtype]
    if dtype != torch.float32 and stage == 2 and not sc.lora:
        dtype = torch.float32  # the whole LM trains
    kw: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
    if stage == 2 and sc.qlora:
        kw["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=_DTYPES[cfg.model.dtype],
            llm_int8_skip_modules=[r".*vision_tower", rf".*{PROJECTOR}", "lm_head"])
    model = LlavaForConditionalGeneration.from_pretrained(base, **kw)
    if stage == 2:
        proj = Path(cfg.output_dir) / "stage1" / PROJECTOR_FILE
        if proj.is_file():
            load_projector(model, proj)
        else:
            log.warning("no stage-1 projector at %s: stage 2 starts from the base projector", proj)
    if not hf_ds.is_deepspeed_zero3_enabled():
        model.model.multi_modal_projector.float()
    return model


def train_stage(cfg: LlavaConfigFile, stage: int, deepspeed: str | None = None,
                resume: bool = True) -> dict[str, Any]:
    """Run stage 1 or 2; returns (and writes to stage<N>/run.json) what happened."""
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage}")
    sc = cfg.stage1 if stage == 1 else cfg.stage2
    args = _training_args(cfg, stage, sc, deepspeed)
    stage_dir = Path(args.output_dir)
    with args.main_process_first(local=False, desc="assemble base model"):
        with _zero3_paused(args):
            base = prepare_base(cfg) if args.process_index == 0 else Path(cfg.output_dir) / "base"
    processor = AutoProcessor.from_pretrained(base, local_files_only=True)
    model = _load_model(cfg, stage, sc, base)
    full_lm = stage == 2 and not sc.lora
    freeze_for_stage(model, stage, full_lm)
    if stage == 2 and sc.lora:
        if sc.qlora:
            from peft import prepare_model_for_kbit_training
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=sc.gradient_checkpointing)
        elif sc.gradient_checkpointing:
            model.enable_input_require_grads()
        model = apply_lora(model, sc)
        for name, p in model.named_parameters():  # peft must not wake the tower up
            if "vision_tower" in name:
                p.requires_grad_(False)
    trainable = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad)
    json_name = cfg.data.align_json if stage == 1 else cfg.data.qa_json
    dataset = LlavaJsonDataset(cfg.data.resolve(json_name), cfg.data.dataset_dir, "train", cfg.data.max_samples,
                               processor=processor, max_length=cfg.data.max_length)
    trainer = ProjectorLrTrainer(model=model, args=args, train_dataset=dataset,
                                 data_collator=LlavaCollator(processor, cfg.data.max_length),
                                 projector_lr=sc.projector_lr if stage == 2 else None)
    if deepspeed and not trainer.is_deepspeed_enabled:
        raise RuntimeError(f"--deepspeed {deepspeed} given but the Trainer did not engage DeepSpeed")
    last = get_last_checkpoint(str(stage_dir)) if resume and stage_dir.is_dir() else None
    if last:
        log.info("resuming stage %d from %s", stage, last)
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=last)
    is_main = trainer.is_world_process_zero()
    if stage == 1:
        _save_projector(trainer.model, stage_dir / PROJECTOR_FILE, is_main)
    else:
        target = stage_dir / ("adapter" if sc.lora else "model")
        trainer.save_model(str(target))
        if is_main:
            processor.save_pretrained(target)
    record = {
        "stage": stage, "deepspeed_enabled": bool(trainer.is_deepspeed_enabled),
        "zero_stage": _zero_stage(deepspeed) if deepspeed else 0,
        "world_size": args.world_size, "global_step": result.global_step, "train_loss": result.training_loss,
        "train_seconds": round(time.time() - t0, 2), "resumed_from": last, "samples": len(dataset),
        "skipped": dataset.skipped, "trainable_params": trainable, "lora": bool(stage == 2 and sc.lora),
        "qlora": bool(stage == 2 and sc.qlora),
    }
    if dist.is_initialized():
        dist.barrier()
    if is_main:
        if stage == 2:
            from llava_address.llava.export import export_from_stage2
            hf_ds.unset_hf_deepspeed_config()  # reload plain, unpartitioned weights for the merge
            record["export_dir"] = str(export_from_stage2(cfg))
        atomic_write_json(stage_dir / "run.json", record)
        from llava_address.common.curves import plot_curves

        history = trainer.state.log_history
        plot_curves({f"stage {stage} loss": (history, ["loss"]), "learning rate": (history, ["learning_rate"])},
                    stage_dir / "training_curves.png", title=f"LLaVA stage {stage}")
        dump_config(cfg, stage_dir / "llava_config.yaml")
    if dist.is_initialized():
        dist.barrier()
    return record


def _zero_stage(path: str) -> int:
    import json
    return int(json.loads(Path(path).read_text()).get("zero_optimization", {}).get("stage", 0))
