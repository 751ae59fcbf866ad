"""The paper's recipe as switches: Adam betas, cosine to a minimum lr, epoch-based length, global batch."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from _clip_fixtures import fixture_data, tiny_cfg
from llava_address.clip.config import TrainConfig
from llava_address.clip.optim import build_optimizer, build_scheduler, resolve_batch, resolve_steps


def test_adam_betas_and_cosine_reaches_min_lr():
    tc = TrainConfig(optimizer="adam", betas=(0.9, 0.98), lr=2.4e-5, min_lr=2.4e-8, warmup_steps=2, max_steps=10,
                     weight_decay=0.0)
    w = torch.nn.Parameter(torch.ones(3))
    opt = build_optimizer([{"params": [w], "weight_decay": 0.0}], tc)
    assert type(opt) is torch.optim.Adam and opt.defaults["betas"] == (0.9, 0.98)
    sched = build_scheduler(opt, tc)
    lrs = []
    for _ in range(tc.max_steps):
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    assert lrs[1] == pytest.approx(2.4e-5)  # end of warmup: peak
    assert lrs[-1] == pytest.approx(2.4e-8, rel=1e-6)  # cosine floor at the last step
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))


def test_global_batch_and_epochs_resolve():
    tc = TrainConfig(global_batch_size=256, grad_accum=1, epochs=100)
    assert resolve_batch(tc, 8).batch_size == 32  # paper: 32 per GPU × 8 GPUs
    assert resolve_batch(tc.model_copy(update={"grad_accum": 2}), 2).batch_size == 64
    with pytest.raises(ValueError, match="global_batch_size=256"):
        resolve_batch(tc, 3)
    assert resolve_steps(tc, 27).max_steps == 2700
    assert resolve_steps(tc.model_copy(update={"epochs": 0.5, "grad_accum": 2}), 27).max_steps == 7
    with pytest.raises(ValidationError, match="min_lr"):
        TrainConfig(lr=1e-5, min_lr=1e-4)


def test_epoch_based_run_trains_whole_epochs_with_global_batch(tmp_path):
    from data_gen.contract import read_manifest
    from llava_address.clip.train import train

    data = fixture_data(tmp_path, per_sub_street=8)
    n_train = len(read_manifest(data, "train"))
    cfg = tiny_cfg("train.epochs=2", "train.global_batch_size=8", "train.batch_size=64", "train.optimizer=adam",
                   "train.min_lr=1.0e-6", "loss.geo_form=paper")
    info = train(cfg, data, tmp_path / "run")
    assert info["images_per_step"] == 8 and info["step"] == 2 * (n_train // 8)
    import pandas as pd

    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert log.lr.iloc[-1] == pytest.approx(1e-6, rel=1e-4) and math.isfinite(log.loss_geo.iloc[-1])
