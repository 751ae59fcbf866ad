"""Shared helpers for tests/test_clip_*.py: the fixture dataset and one trained tiny checkpoint.

Results are cached on disk under pytest's session base temp, so several test modules reuse one
dataset and one training run.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from llava_address.clip.config import AddressCLIPConfig, load_clip_config  # noqa: E402
from llava_address.clip.testing import make_fixture_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "clip" / "tiny.yaml"
FAST = ["train.log_every=1", "train.eval_every=0", "train.warmup_steps=2", "train.torch_threads=1"]


def tiny_cfg(*overrides: str) -> AddressCLIPConfig:
    return load_clip_config(TINY, [*FAST, *overrides])


def fixture_data(base: Path, name: str = "fixture", **kw) -> Path:
    d = Path(base) / name
    if not (d / "addresses.json").is_file():
        make_fixture_dataset(d, **kw)
    return d


def trained_model(base: Path) -> Path:
    """Train the tiny config for 16 steps on the fixture once per session; returns the model dir."""
    from llava_address.clip.train import train

    out = Path(base) / "trained"
    if not (out / "run_info.json").is_file():
        train(tiny_cfg("train.max_steps=16"), fixture_data(base), out)
    return out / "model"
