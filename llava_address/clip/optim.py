"""Optimizer, learning-rate schedule and run length for AddressCLIP training, from ``TrainConfig``.

The paper's recipe is a set of switches here, not a fork of the trainer: Adam or AdamW with
configurable betas, cosine decay to a minimum learning rate (2.4e-5 → 2.4e-8 in the paper), a run
length in epochs instead of steps, and a global batch (32 × 8 GPUs = 256) split across processes.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from llava_address.clip.config import TrainConfig

__all__ = ["resolve_batch", "resolve_steps", "build_optimizer", "build_scheduler"]

log = logging.getLogger(__name__)


def resolve_batch(tc: TrainConfig, num_processes: int) -> TrainConfig:
    """``global_batch_size`` → per-process ``batch_size`` (global = per-process × processes × grad_accum)."""
    if tc.global_batch_size is None:
        return tc
    per = tc.global_batch_size / (num_processes * tc.grad_accum)
    if per != int(per) or per < 2:
        raise ValueError(f"train.global_batch_size={tc.global_batch_size} does not split into per-process batches "
                         f"of at least 2 over {num_processes} processes × grad_accum {tc.grad_accum}")
    if int(per) != tc.batch_size:
        log.info("global batch %d over %d processes × grad_accum %d: per-process batch %d",
                 tc.global_batch_size, num_processes, tc.grad_accum, int(per))
    return tc.model_copy(update={"batch_size": int(per)})


def resolve_steps(tc: TrainConfig, batches_per_epoch: int) -> TrainConfig:
    """``epochs`` → ``max_steps`` (optimizer steps), given this process's batches per epoch.

    After ``accelerator.prepare`` the loader is sharded, so ``batches_per_epoch`` already counts
    global batches: one epoch = one pass of the whole train split over all processes.
    """
    if tc.epochs is None:
        return tc
    steps = max(1, math.ceil(tc.epochs * batches_per_epoch / tc.grad_accum))
    log.info("%g epochs × %d batches / grad_accum %d = %d optimizer steps", tc.epochs, batches_per_epoch,
             tc.grad_accum, steps)
    return tc.model_copy(update={"max_steps": steps})


def build_optimizer(param_groups: list[dict[str, Any]], tc: TrainConfig) -> torch.optim.Optimizer:
    """Adam (paper; weight decay is then L2 added to the gradient) or AdamW (decoupled decay)."""
    cls = torch.optim.Adam if tc.optimizer == "adam" else torch.optim.AdamW
    return cls(param_groups, lr=tc.lr, betas=tuple(tc.betas), eps=tc.eps)


def build_scheduler(optimizer: torch.optim.Optimizer, tc: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warmup, then cosine from ``lr`` down to ``min_lr`` at ``max_steps``."""
    warm = tc.warmup_steps if tc.warmup_ratio is None else int(round(tc.warmup_ratio * tc.max_steps))
    return get_cosine_with_min_lr_schedule_with_warmup(optimizer, warm, tc.max_steps, min_lr=tc.min_lr)
