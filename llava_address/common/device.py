"""Where and in which precision inference runs: one rule for every script that loads a model.

``--device auto`` is CUDA when present, else CPU. ``--dtype auto`` is the checkpoint's own dtype
(``config.json``'s ``dtype``/``torch_dtype``) on a GPU and float32 on CPU, where bf16/fp16 matmuls
are slow or unsupported (bf16 autocast measured ~16× slower here, see shared/STACK.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

__all__ = ["DTYPES", "resolve_device", "checkpoint_dtype", "resolve_dtype", "add_device_args", "device_and_dtype"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda' without a GPU is an error, not a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
    return dev


def checkpoint_dtype(model_dir: str | Path) -> torch.dtype:
    """The dtype a checkpoint was saved in (top-level or text_config ``dtype``), float32 if unstated."""
    cfg_path = Path(model_dir) / "config.json"
    if not cfg_path.is_file():
        return torch.float32
    cfg = json.loads(cfg_path.read_text())
    for d in (cfg, cfg.get("text_config") or {}):
        name = d.get("dtype") or d.get("torch_dtype")
        if isinstance(name, str) and name in DTYPES:
            return DTYPES[name]
    return torch.float32


def resolve_dtype(name: str, device: torch.device, model_dir: str | Path | None = None) -> torch.dtype:
    """'auto' -> the checkpoint's dtype on GPU, float32 on CPU; else the named dtype."""
    name = _ALIASES.get(name, name)
    if name == "auto":
        if device.type == "cpu" or model_dir is None:
            return torch.float32
        return checkpoint_dtype(model_dir)
    if name not in DTYPES:
        raise ValueError(f"--dtype {name!r}: choose auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def add_device_args(parser: argparse.ArgumentParser) -> None:
    """The same ``--device`` / ``--dtype`` flags on every inference entry point."""
    parser.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda, cuda:1")
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPES, *_ALIASES],
                        help="auto: the checkpoint's dtype on GPU, float32 on CPU")


def device_and_dtype(args: argparse.Namespace, model_dir: str | Path | None) -> tuple[torch.device, torch.dtype]:
    """Resolve parsed ``--device``/``--dtype`` for the checkpoint at ``model_dir``."""
    dev = resolve_device(args.device)
    return dev, resolve_dtype(args.dtype, dev, model_dir)
