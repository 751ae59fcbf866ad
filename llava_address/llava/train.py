"""Two-stage LLaVA-1.5 training with the HF Trainer (plain, DeepSpeed ZeRO-2/3, optional QLoRA).

Layout under ``cfg.output_dir``::

    base/      the assembled model before training (AddressCLIP tower + LM + fresh projector + processor)
    stage1/    Trainer checkpoints (projector + optimizer/scheduler/RNG only), projector.safetensors
               (stage-1 result), run.json
    stage2/    Trainer checkpoints, adapter/ (peft LoRA + projector) or model/ (full fine-tune), run.json
    export/    merged LlavaForConditionalGeneration + processor (loads with no project code)

Stage 1 trains only ``multi_modal_projector`` on the alignment set; stage 2 trains LoRA on the LM
linears (or the whole LM with ``stage2.lora: false``) plus the projector on multi-turn QA,
starting from stage 1's projector. The vision tower is always frozen.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from transformers import (AutoProcessor, BitsAndBytesConfig, LlavaForConditionalGeneration, Trainer,
                          TrainerCallback, TrainingArguments)
from transformers.integrations import deepspeed as hf_ds

from llava_address.common.checkpoint_files import file_problem, folder_problem
from llava_address.common.config import dump_config
from llava_address.common.device import DTYPES as _DTYPES
from llava_address.common.fingerprint import dir_digest, file_digest, json_digest
from llava_address.common.io import atomic_dir, atomic_write_json, read_json
from llava_address.llava.build import build_llava
from llava_address.llava.chat_template import TEMPLATES
from llava_address.llava.checkpoints import (FRESH_HINT, PROJECTOR, PROJECTOR_FILE, CheckpointError,
                                             find_resume_checkpoint, load_checkpoint_weights, projector_module,
                                             verify_restored)
from llava_address.llava.config import LlavaConfigFile, StageConfig
from llava_address.llava.data import LlavaCollator, LlavaJsonDataset, dialogue_texts, read_llava_json
from llava_address.llava.tokenizer import train_tokenizer

__all__ = ["PROJECTOR", "prepare_base", "base_inputs", "stage_inputs", "train_stage", "ProjectorLrTrainer",
           "freeze_for_stage", "apply_lora", "load_projector", "precision_in_use", "StageInputsError"]

log = logging.getLogger(__name__)
BASE_INPUTS_FILE = "base_inputs.json"   # in base/: what the base was assembled from
STAGE_INPUTS_FILE = "inputs.json"       # in stage<N>/: what its checkpoints were trained from


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


class StageInputsError(ValueError):
    """Existing training output was made from other inputs and cannot be continued."""


def base_inputs(cfg: LlavaConfigFile) -> dict[str, Any]:
    """What ``base/`` is assembled from, by content (not paths: a moved output folder stays valid)."""
    m = cfg.model
    if not (Path(m.clip_dir) / "config.json").is_file():
        raise FileNotFoundError(f"model.clip_dir: not an AddressCLIP/CLIP checkpoint (no config.json): {m.clip_dir}")
    broken = folder_problem(Path(m.clip_dir))
    if broken:
        raise CheckpointError(f"model.clip_dir: {broken[0]} is unusable ({broken[1]}); retrain or re-export AddressCLIP")
    inputs: dict[str, Any] = {"clip_dir": dir_digest(m.clip_dir), "init_seed": cfg.stage1.seed,
                              "model": m.model_dump(exclude={"clip_dir", "text", "base_llava_dir"})}
    if m.base_llava_dir is not None:  # model.text is not used then
        inputs["base_llava_dir"] = dir_digest(m.base_llava_dir)
    elif m.text != "tiny":
        from llava_address.llava.pretrained_lm import resolve_text_model

        text = resolve_text_model(m.text)  # a named LM: its converted folder (converted on first use)
        if not (Path(text) / "config.json").is_file():
            raise FileNotFoundError(f"model.text must be 'tiny', a named LM (smollm2-135m-instruct) or a local "
                                    f"causal-LM dir with config.json: {m.text}")
        inputs["text"] = dir_digest(text)
    else:  # the tiny tokenizer is trained on the dialogue corpus
        inputs["text"] = "tiny"
        inputs["tokenizer_corpus"] = {k: file_digest(p) if p.is_file() else None for k, p in
                                      (("align_json", cfg.data.resolve(cfg.data.align_json)),
                                       ("qa_json", cfg.data.resolve(cfg.data.qa_json)))}
    return inputs


def _changed(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """Human-readable list of the top-level inputs that differ."""
    if not isinstance(old, dict):
        return "no record of its inputs (made by an older version)"
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return "changed: " + ", ".join(keys) if keys else "unchanged"


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        rec = read_json(path)
    except (FileNotFoundError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def prepare_base(cfg: LlavaConfigFile) -> Path:
    """Assemble the untrained model into output_dir/base; reuse it only if its inputs are unchanged.

    A base built from another ``model.clip_dir``, LM, tiny config or corpus is rebuilt (with a
    warning naming what changed); stage checkpoints trained on the old base then refuse to resume
    (see :func:`stage_inputs`).
    """
    base = Path(cfg.output_dir) / "base"
    inputs = base_inputs(cfg)
    if (base / "config.json").is_file():
        old = _read_record(base / BASE_INPUTS_FILE)
        broken = next(((f, why) for f in sorted(base.iterdir()) if f.is_file() and (why := file_problem(f))), None)
        if old == inputs and broken is None:
            return base
        reason = f"{broken[0].name} is unusable: {broken[1]}" if broken else \
            f"it was assembled from other inputs ({_changed(old, inputs)})"
        log.warning("rebuilding %s: %s", base, reason)
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
        atomic_write_json(tmp / BASE_INPUTS_FILE, inputs)
    log.info("assembled base model (%.2f M params) -> %s", sum(p.numel() for p in model.parameters()) / 1e6, base)
    return base


# ---------------------------------------------------------------- trainable parts
def freeze_for_stage(model: torch.nn.Module, stage: int, full_lm: bool = False, vision: str = "frozen") -> None:
    """Stage 1: projector only. Stage 2 full fine-tune: LM + projector. Vision tower: only with stage-2 vision=unfrozen."""
    for name, p in model.named_parameters():
        if "vision_tower" in name:
            p.requires_grad_(stage == 2 and vision == "unfrozen")
        elif PROJECTOR in name:
            p.requires_grad_(True)
        else:
            p.requires_grad_(stage == 2 and full_lm)


def apply_lora(model: torch.nn.Module, sc: StageConfig) -> torch.nn.Module:
    """peft LoRA on the LM linears (regex keeps the CLIP tower out) + trainable projector copy."""
    from peft import LoraConfig, get_peft_model

    from llava_address.llava.config import VISION_LORA_TARGET

    target = f"(?:{sc.lora_target})|(?:{VISION_LORA_TARGET})" if sc.vision == "lora" else sc.lora_target
    keep = [PROJECTOR] + (["vision_tower"] if sc.vision == "unfrozen" else [])
    lcfg = LoraConfig(r=sc.lora_r, lora_alpha=sc.lora_alpha, lora_dropout=sc.lora_dropout,
                      target_modules=target, modules_to_save=keep, task_type="CAUSAL_LM")
    # peft upcasts 16-bit adapters to fp32 (our fp32 masters under autocast). Under ZeRO-3 the engine
    # keeps fp32 masters itself and partitions all trainable weights in one dtype: fp32 LoRA beside the
    # bf16 projector failed DeepSpeed's "one dtype" assertion (7B config, bf16, ZeRO-3).
    return get_peft_model(model, lcfg, autocast_adapter_dtype=not hf_ds.is_deepspeed_zero3_enabled())


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
    """The projector's state dict -> ``path`` (all ranks call it: ZeRO-3 gathers its shards)."""
    _, proj = projector_module(model)
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


def _load_engine_checkpoint_lenient(engine: Any, *a: Any, **kw: Any) -> Any:
    """DeepSpeed's load_checkpoint with ``load_module_strict=False`` (stage-1 engine files hold
    only the projector); anything else the checkpoint holds still loads."""
    kw["load_module_strict"] = False
    return type(engine).load_checkpoint(engine, *a, **kw)


class ProjectorLrTrainer(Trainer):
    """Trainer whose optimizer gives the projector its own learning rate (LLaVA-1.5 stage 2).

    ``projector_only`` (stage 1): checkpoints store only the projector (``projector.safetensors``),
    the one part that trains, like LLaVA's ``mm_projector.bin``; the optimizer, scheduler, RNG and
    trainer states are saved by the Trainer as usual.
    """

    def __init__(self, *a: Any, projector_lr: float | None = None, projector_only: bool = False,
                 sparse_logits: bool = False, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.projector_lr = projector_lr
        self.projector_only = projector_only
        self.sparse_logits = sparse_logits

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        """``stage.sparse_logits``: the LM head runs only where a label is trained.

        Why: with a 49k vocabulary the head is ~20 % of SmolLM2's compute per token, and only the
        answers (~1/4 of a dialogue's tokens) are trained. ``logits_to_keep`` (a transformers
        argument) keeps the positions whose next token is a label in any row; the loss is the same
        token-summed cross entropy over the same labels, normalised as the Trainer's own
        (``num_items_in_batch`` across accumulation steps and devices), so values and gradients
        equal the dense path (tested).
        """
        if not self.sparse_logits or return_outputs or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        from llava_address.llava.data import IGNORE_INDEX

        inputs = dict(inputs)
        target = inputs.pop("labels")[:, 1:]
        keep = (target != IGNORE_INDEX).any(dim=0).nonzero().flatten()
        logits = model(**inputs, logits_to_keep=keep).logits
        tgt = target[:, keep]
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), tgt.flatten(),
                                                 ignore_index=IGNORE_INDEX, reduction="sum")
        if num_items_in_batch is None:
            return loss / (tgt != IGNORE_INDEX).sum().clamp(min=1)
        loss = loss / num_items_in_batch
        if self.args.average_tokens_across_devices and self.model_accepts_loss_kwargs:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())  # as Trainer.compute_loss
        return loss

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Stage 1: the projector alone (every rank calls this: ZeRO-3 gathers just the projector)."""
        if not self.projector_only:
            return super().save_model(output_dir, _internal_call)
        prefix = projector_module(self.model)[0]
        others = [n for n, p in self.model.named_parameters() if p.requires_grad and not n.startswith(prefix)]
        if others:  # they would be lost: a projector-only checkpoint cannot hold them
            raise RuntimeError(f"projector-only checkpoint, but other parameters train too: {others[:3]}")
        out = Path(output_dir or self.args.output_dir)
        if self.args.should_save:
            out.mkdir(parents=True, exist_ok=True)
        _save_projector(self.model, out / PROJECTOR_FILE, self.args.should_save)

    def _frozen_out_of_engine_files(self) -> bool:
        return self.projector_only and self.is_deepspeed_enabled

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        """Stage 1 under DeepSpeed: the engine's files leave out the frozen weights too
        (``exclude_frozen_parameters``); transformers passes it for peft models only."""
        if not self._frozen_out_of_engine_files():
            return super()._save_optimizer_and_scheduler(output_dir)
        engine = self.model_wrapped
        engine.save_checkpoint = functools.partial(type(engine).save_checkpoint, engine, exclude_frozen_parameters=True)
        try:
            super()._save_optimizer_and_scheduler(output_dir)
        finally:
            del engine.save_checkpoint

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        """Last hook between DeepSpeed's engine init and the Trainer's resume: a stage-1 engine
        checkpoint holds no frozen weight, so its module load must not be strict (the frozen parts
        come from base/; ``_VerifyResumed`` then checks the projector against the checkpoint)."""
        out = super().create_scheduler(num_training_steps, optimizer)
        wrapped = getattr(self.accelerator, "deepspeed_engine_wrapped", None)
        if self._frozen_out_of_engine_files() and wrapped is not None:
            engine = wrapped.engine
            engine.load_checkpoint = functools.partial(_load_engine_checkpoint_lenient, engine)
        return out

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

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        """``stage.group_by_length``: batches of similar length (LLaVA's own trainer groups by length
        too). A grounded dialogue is ~240 tokens, a weather question ~85: mixed at random, most batches
        pad to the longest. :class:`~llava_address.llava.data.LengthGroupedBatches` keeps the batch
        order random (transformers' sampler would order a short run by length)."""
        ds = self.train_dataset if train_dataset is None else train_dataset
        lengths = getattr(ds, "lengths", None)
        if self.args.train_sampling_strategy != "group_by_length" or lengths is None:
            return super()._get_train_sampler(train_dataset)
        from llava_address.llava.data import LengthGroupedBatches

        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return LengthGroupedBatches(lengths, self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                    seed=seed)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        """Strict replacement of the Trainer's loader (it only logs a warning when no key matches).

        The Trainer calls this for plain (non-DeepSpeed) resumes; DeepSpeed restores its own engine
        checkpoint, whose keys are the model's. See :mod:`llava_address.llava.checkpoints`.
        """
        if self.is_fsdp_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_checkpoint_weights(self.model if model is None else model, Path(resume_from_checkpoint))


class _VerifyResumed(TrainerCallback):
    """After the Trainer restored ``ckpt`` (any path: plain, peft, DeepSpeed): weights must equal the saved ones."""

    def __init__(self, ckpt: Path):
        self.ckpt = ckpt

    def on_train_begin(self, args, state, control, model=None, **kw):  # noqa: ANN001 - TrainerCallback signature
        if not hf_ds.is_deepspeed_zero3_enabled():
            verify_restored(model, self.ckpt)
        elif getattr(model, "peft_config", None):  # ZeRO-3 + LoRA: DeepSpeed loaded non-strictly; check the adapter
            import deepspeed
            with deepspeed.zero.GatheredParameters([p for p in model.parameters() if p.requires_grad]):
                verify_restored(model, self.ckpt)
        # ZeRO-3 full model: DeepSpeed's engine load is strict (load_module_strict=True)
        return control


class _StopAfter(TrainerCallback):
    """Save and stop at global step N: a deterministic stand-in for a killed run (tests, --stop-after)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kw):  # noqa: ANN001 - TrainerCallback signature
        if state.global_step >= self.step:
            control.should_save = True
            control.should_training_stop = True
        return control


# ---------------------------------------------------------------- one stage
def _cpu_shm_buffer_path() -> str:
    """This rank's /dev/shm segment made by DeepSpeed's CPU shared-memory all-reduce op.

    DeepSpeed builds that op at ``init_distributed`` on CPU when all ranks share a machine (LOCAL_SIZE
    == world size) and creates one 66 MiB segment per rank that it never unlinks: each CPU launch of
    two ranks left 132 MiB of RAM behind until reboot, and 270 of them filled 18 GiB of /dev/shm on
    a 24 GiB machine (a later test run was killed for memory). Training never uses the op (it serves
    inference all-reduce), so each rank removes its own segment at exit. Name as in DeepSpeed's
    ``shm.cpp``: ``deepspeed_allreduce_buffer_<uid>_<MASTER_ADDR>_<MASTER_PORT>_<rank>``.
    """
    env = os.environ
    return (f"/dev/shm/deepspeed_allreduce_buffer_{os.getuid()}_{env.get('MASTER_ADDR', '')}"
            f"_{env.get('MASTER_PORT', '')}_{env.get('RANK', '0')}")


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

    atexit.register(functools.partial(Path(_cpu_shm_buffer_path()).unlink, missing_ok=True))
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
        train_sampling_strategy="group_by_length" if sc.group_by_length else "random",
        deepspeed=deepspeed, activation_checkpointing=sc.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if sc.gradient_checkpointing else None,
        # pinned memory only serves copies to a GPU (on CPU torch warns that it is ignored)
        dataloader_pin_memory=torch.cuda.is_available(),
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
    model, info = LlavaForConditionalGeneration.from_pretrained(base, output_loading_info=True, **kw)
    bad = {k: sorted(v)[:5] for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if bad:  # a base that does not fill the model would train from random weights
        raise CheckpointError(f"{base}: weights do not match the model ({bad}); delete {base} to rebuild it")
    if stage == 2:
        proj = _stage1_projector(cfg)
        if proj is not None:
            load_projector(model, proj)
        else:
            log.warning("stage2.without_stage1: stage 2 starts from the base projector")
    if not hf_ds.is_deepspeed_zero3_enabled():
        model.model.multi_modal_projector.float()
    return model


def _stage1_projector(cfg: LlavaConfigFile) -> Path | None:
    """Stage 1's projector for stage 2: required (and from this base) unless stage2.without_stage1."""
    proj = Path(cfg.output_dir) / "stage1" / PROJECTOR_FILE
    if cfg.stage2.without_stage1:
        return None
    if not proj.is_file():
        raise FileNotFoundError(f"no stage-1 projector at {proj}: run --stage 1 first, or set "
                                "stage2.without_stage1=true to start stage 2 from the base projector")
    run = _read_record(proj.parent / "run.json") or {}
    base = _read_record(Path(cfg.output_dir) / "base" / BASE_INPUTS_FILE)
    if run.get("base_inputs") != json_digest(base):
        raise StageInputsError(f"{proj} was trained on another base model than {Path(cfg.output_dir) / 'base'}: "
                               "run --stage 1 again (with --no-resume)")
    return proj


# ---------------------------------------------------------------- resume / reuse
def stage_inputs(cfg: LlavaConfigFile, stage: int) -> dict[str, Any]:
    """Everything a stage's result depends on, by content: base, stage config, data, stage-1 projector.

    Checkpoints are resumed and a finished stage is reused only when this is unchanged.
    Settings that do not change the numbers (saving, logging, workers, checkpointing) are left out.
    """
    sc = cfg.stage1 if stage == 1 else cfg.stage2
    json_path = cfg.data.resolve(cfg.data.align_json if stage == 1 else cfg.data.qa_json)
    out = Path(cfg.output_dir)
    inputs: dict[str, Any] = {
        "stage": stage, "base_inputs": json_digest(_read_record(out / "base" / BASE_INPUTS_FILE)),
        "train": sc.model_dump(exclude={"save_steps", "save_total_limit", "logging_steps", "num_workers",
                                        "gradient_checkpointing"}),
        "data": cfg.data.model_dump(exclude={"dataset_dir", "align_json", "qa_json", "eval_question"}),
        "json": file_digest(json_path) if json_path.is_file() else None}
    if stage == 2:
        proj = out / "stage1" / PROJECTOR_FILE
        inputs["projector"] = file_digest(proj) if proj.is_file() and not sc.without_stage1 else None
        if cfg.data.general.enabled:  # the base LM's own answers, made (or read from the cache) here
            inputs["general"] = file_digest(_general_json(cfg))
    return inputs


def general_json_path(cfg: LlavaConfigFile) -> Path:
    return Path(cfg.output_dir) / "stage2_general.json"


def _general_json(cfg: LlavaConfigFile) -> Path:
    """Stage 2's self-distilled general records (llava_address.llava.general), rebuilt from the cache."""
    from llava_address.llava.general import ensure_general_json
    from llava_address.llava.pretrained_lm import resolve_text_model

    g = cfg.data.general
    return ensure_general_json(resolve_text_model(cfg.model.text), cfg.data.resolve(cfg.data.qa_json),
                               general_json_path(cfg), g.repeats, g.max_new_tokens, cfg.stage2.seed)


def _stage_result_exists(cfg: LlavaConfigFile, stage: int) -> bool:
    out = Path(cfg.output_dir)
    if stage == 1:
        return (out / "stage1" / PROJECTOR_FILE).is_file()
    trained = out / "stage2" / ("adapter" if cfg.stage2.lora else "model")
    return trained.is_dir() and (out / "export" / "config.json").is_file()


def _finished_record(cfg: LlavaConfigFile, stage: int, inputs: dict[str, Any]) -> dict[str, Any] | None:
    """run.json of a finished stage with these inputs whose outputs are all there, else None."""
    stage_dir = Path(cfg.output_dir) / f"stage{stage}"
    rec = _read_record(stage_dir / "run.json")
    if not rec or rec.get("inputs") != inputs or not _stage_result_exists(cfg, stage):
        return None
    rec = {**rec, "reused": True, "resumed_from": None}
    if stage == 2:
        rec["export_dir"] = str(Path(cfg.output_dir) / "export")
    return rec


def _prepare_stage_dir(stage_dir: Path, inputs: dict[str, Any], resume: bool, is_main: bool) -> Path | None:
    """Checkpoint to resume from (None: start fresh). Checkpoints of other inputs are refused, not used.

    Starting fresh removes this stage's own earlier checkpoints and records, so a later resume can
    never pick up a checkpoint of an older run.
    """
    if resume:
        last = find_resume_checkpoint(stage_dir)
        if last is not None:
            old = _read_record(stage_dir / STAGE_INPUTS_FILE)
            if old != inputs:
                raise StageInputsError(f"{stage_dir} holds checkpoints trained from other inputs "
                                       f"({_changed(old, inputs)}); {FRESH_HINT}")
            return last
    if is_main and stage_dir.is_dir():
        import shutil
        for p in stage_dir.glob("checkpoint-*"):
            shutil.rmtree(p)
        for name in ("run.json", STAGE_INPUTS_FILE):
            (stage_dir / name).unlink(missing_ok=True)
    if is_main:
        atomic_write_json(stage_dir / STAGE_INPUTS_FILE, inputs)
    return None


def train_stage(cfg: LlavaConfigFile, stage: int, deepspeed: str | None = None,
                resume: bool = True, stop_after: int | None = None) -> dict[str, Any]:
    """Run stage 1 or 2; returns (and writes to stage<N>/run.json) what happened.

    ``resume``: continue from the newest usable checkpoint made from the same inputs, and reuse a
    finished stage as it is (nothing retrained or rewritten, ``"reused": True``); otherwise the
    stage starts fresh. ``stop_after``: save and stop at that step, as if killed (no export).
    """
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage}")
    sc = cfg.stage1 if stage == 1 else cfg.stage2
    args = _training_args(cfg, stage, sc, deepspeed)
    stage_dir = Path(args.output_dir)
    is_main = args.process_index == 0
    with args.main_process_first(local=False, desc="assemble base model"):
        with _zero3_paused(args):
            base = prepare_base(cfg) if is_main else Path(cfg.output_dir) / "base"
            if stage == 1 and cfg.warmup.enabled and is_main:
                from llava_address.llava.warmup import warm_up_base
                warm_up_base(cfg, base)
    inputs = stage_inputs(cfg, stage)
    done = _finished_record(cfg, stage, inputs) if resume else None
    if done is not None:
        log.info("stage %d already finished with the same inputs (%s): reused, nothing rewritten", stage, stage_dir)
        return done
    with args.main_process_first(local=False, desc="check checkpoints"):
        last = _prepare_stage_dir(stage_dir, inputs, resume, is_main)
    processor = AutoProcessor.from_pretrained(base, local_files_only=True)
    model = _load_model(cfg, stage, sc, base)
    full_lm = stage == 2 and not sc.lora
    freeze_for_stage(model, stage, full_lm, sc.vision)
    if stage == 2 and sc.lora:
        if sc.qlora:
            from peft import prepare_model_for_kbit_training
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=sc.gradient_checkpointing)
        elif sc.gradient_checkpointing:
            model.enable_input_require_grads()
        model = apply_lora(model, sc)
        for name, p in model.named_parameters():  # peft must not wake the tower up (unless asked to)
            if "vision_tower" in name:
                p.requires_grad_(sc.vision == "unfrozen" or (sc.vision == "lora" and "lora_" in name))
    trainable = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad)
    json_name = cfg.data.align_json if stage == 1 else cfg.data.qa_json
    dataset = LlavaJsonDataset(cfg.data.resolve(json_name), cfg.data.dataset_dir, "train", cfg.data.max_samples,
                               processor=processor, max_length=cfg.data.max_length)
    if stage == 2 and (cfg.data.extra_json or cfg.data.general.enabled):
        dataset = _with_extra(dataset, cfg)
    trainer = ProjectorLrTrainer(model=model, args=args, train_dataset=dataset,
                                 data_collator=LlavaCollator(processor, cfg.data.max_length, TEMPLATES[sc.template]),
                                 projector_lr=sc.projector_lr if stage == 2 else None, projector_only=stage == 1,
                                 sparse_logits=sc.sparse_logits,
                                 callbacks=[_StopAfter(stop_after)] if stop_after else None)
    if last:
        trainer.add_callback(_VerifyResumed(last))
    if deepspeed and not trainer.is_deepspeed_enabled:
        raise RuntimeError(f"--deepspeed {deepspeed} given but the Trainer did not engage DeepSpeed")
    start_step = 0
    if last:
        start_step = int((_read_record(last / "trainer_state.json") or {}).get("global_step", 0))
        log.info("resuming stage %d from %s (step %d)", stage, last, start_step)
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=str(last) if last else None)
    record = {
        "stage": stage, "deepspeed_enabled": bool(trainer.is_deepspeed_enabled),
        "zero_stage": _zero_stage(deepspeed) if deepspeed else 0,
        "world_size": args.world_size, "global_step": result.global_step, "train_loss": result.training_loss,
        "steps_this_run": result.global_step - start_step,
        "losses": {int(h["step"]): h["loss"] for h in trainer.state.log_history if "loss" in h},
        "train_seconds": round(time.time() - t0, 2), "resumed_from": str(last) if last else None,
        "samples": len(dataset), "skipped": dataset.skipped, "trainable_params": trainable,
        "lora": bool(stage == 2 and sc.lora), "qlora": bool(stage == 2 and sc.qlora),
        "precision": precision_in_use(trainer), "inputs": inputs,
        "base_inputs": inputs["base_inputs"],
    }
    if stop_after is not None and result.global_step < trainer.state.max_steps:
        log.info("stage %d stopped at step %d (stop_after): checkpoint kept, no result written", stage,
                 result.global_step)
        return {**record, "stopped": True}
    if stage == 1:
        _save_projector(trainer.model, stage_dir / PROJECTOR_FILE, is_main)
    else:
        target = stage_dir / ("adapter" if sc.lora else "model")
        trainer.save_model(str(target))
        if is_main:
            processor.save_pretrained(target)
    if dist.is_initialized():
        dist.barrier()
    if is_main:
        if stage == 2:  # the weights were just trained or strictly loaded: safe to replace the export
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


def precision_in_use(trainer: Trainer) -> dict[str, Any]:
    """The precision a run really trained in (not what the config asked for), for run.json.

    ``autocast``: accelerate's mixed-precision mode; ``deepspeed_bf16``/``deepspeed_fp16``: the
    engine's 16-bit mode (None without DeepSpeed); ``trainable``: dtypes of the trainable
    parameters in the model; ``optimizer``: dtypes of the tensors the optimizer updates, i.e. the
    master weights (DeepSpeed's ZeRO optimizers hold fp32 partitions of 16-bit parameters);
    ``linear4bit``: how many bitsandbytes 4-bit linears the model holds (QLoRA).
    """
    engine = trainer.deepspeed if trainer.is_deepspeed_enabled else None
    names = lambda ts: sorted({str(t.dtype).removeprefix("torch.") for t in ts})  # noqa: E731
    return {"autocast": str(trainer.accelerator.mixed_precision),
            "deepspeed_bf16": engine.bfloat16_enabled() if engine is not None else None,
            "deepspeed_fp16": engine.fp16_enabled() if engine is not None else None,
            "trainable": names(p for p in trainer.model.parameters() if p.requires_grad),
            "optimizer": names(_master_weights(trainer.optimizer if engine is None else engine.optimizer)),
            "linear4bit": sum(type(m).__name__ == "Linear4bit" and type(m).__module__.startswith("bitsandbytes")
                              for m in trainer.model.modules())}  # peft's LoRA wrapper has the same name


def _master_weights(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The tensors an optimizer updates. DeepSpeed's ZeRO optimizers keep them beside their param groups
    (ZeRO-3 empties its groups between steps)."""
    for attr in ("fp32_partitioned_groups_flat", "single_partition_of_fp32_groups"):  # ZeRO-3, ZeRO-1/2
        if getattr(opt, attr, None):
            return list(getattr(opt, attr))
    return [p for g in opt.param_groups for p in g["params"]]


def _with_extra(dataset: LlavaJsonDataset, cfg: LlavaConfigFile) -> torch.utils.data.ConcatDataset:
    """Stage-2 address QA + the extra LLaVA JSON sets (``data.extra_json``), skips counted per set."""
    parts = [dataset] + [LlavaJsonDataset(e.path, e.image_dir, "train") for e in cfg.data.extra_json]
    if cfg.data.general.enabled:
        parts.append(LlavaJsonDataset(general_json_path(cfg), cfg.data.dataset_dir, "train"))
    joined = torch.utils.data.ConcatDataset(parts)
    joined.lengths = [n for p in parts for n in p.lengths]
    joined.skipped = {k: sum(p.skipped.get(k, 0) for p in parts) for p in parts for k in p.skipped}
    log.info("stage 2 data: %d address QA + %s extra/general records", len(dataset), [len(p) for p in parts[1:]])
    return joined


def _zero_stage(path: str) -> int:
    import json
    return int(json.loads(Path(path).read_text()).get("zero_optimization", {}).get("stage", 0))
