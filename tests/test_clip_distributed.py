"""A real 2-process `accelerate launch` (gloo on CPU): the run reports 2 processes, and its losses
equal a 1-process run on the same global batch (features gathered with gradients + DDP averaging)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _clip_fixtures import FAST, ROOT, TINY, fixture_data, tiny_cfg


@pytest.mark.slow
def test_two_process_accelerate_matches_single_process(tmp_path_factory, tmp_path):
    from llava_address.clip.train import train

    data = fixture_data(tmp_path_factory.getbasetemp())
    sets = [*FAST, "train.max_steps=3"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(ROOT / "scripts" / "train_clip.py"), "--config", str(TINY), "--data", str(data),
           "--output", str(tmp_path / "two"), *[a for s in sets + ["train.batch_size=8"] for a in ("--set", s)]]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((tmp_path / "two" / "run_info.json").read_text())
    assert info["num_processes"] == 2 and info["step"] == 3 and info["images_per_step"] == 16

    train(tiny_cfg("train.max_steps=3", "train.batch_size=16"), data, tmp_path / "one")
    two, one = pd.read_csv(tmp_path / "two" / "log.csv"), pd.read_csv(tmp_path / "one" / "log.csv")
    for col in ("loss", "loss_address", "loss_semantic", "loss_geo"):
        np.testing.assert_allclose(two[col], one[col], rtol=1e-4, atol=1e-5, err_msg=col)
    assert (Path(tmp_path / "two" / "model") / "model.safetensors").is_file()
