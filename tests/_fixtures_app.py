"""Tiny models + data for the app tests (chat CLI, web), built once per test process.

Built with the real builders: the tiny SynthCity dataset (data_gen.builder on configs/data/tiny.yaml),
an AddressCLIP trained a few steps (llava_address.clip.train on configs/clip/tiny.yaml) and a
random-init tiny LLaVA around that AddressCLIP tower (llava_address.llava.build) saved as an export.
Answers of a random LM are gibberish; the tests check the plumbing, not the quality.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

_CACHE: dict[str, "TinyApp"] = {}


@dataclass(frozen=True)
class TinyApp:
    data: Path
    clip: Path
    llava: Path


def _dataset(out: Path) -> Path:
    from data_gen.build_config import BuildConfig
    from data_gen.builder import build_dataset
    from llava_address.common.config import load_config

    # denser sampling + narrow split buffer: the tiny city then keeps a held-out test split
    cfg = load_config(REPO / "configs/data/tiny.yaml", BuildConfig,
                      ["sampling.spacing_m=10", "sampling.max_images=400", "splits.buffer_m=2", "splits.min_points=4"])
    return build_dataset(cfg, out)


def _clip(data: Path, out: Path) -> Path:
    from llava_address.clip.config import load_clip_config
    from llava_address.clip.train import train

    cfg = load_clip_config(REPO / "configs/clip/tiny.yaml",
                           ["train.max_steps=2", "train.eval_every=0", "train.save_every=100", "train.batch_size=8"])
    return Path(train(cfg, data, out)["model_dir"])


def _llava(clip_dir: Path, data: Path, out: Path) -> Path:
    import torch

    from data_gen.contract import read_addresses
    from llava_address.llava.build import build_llava
    from llava_address.llava.tokenizer import train_tokenizer

    vocab = read_addresses(data)
    texts = [f"This photo was taken on {s}." for s in vocab.sub_street] + ["Where was this photo taken?"] * 3
    tok = train_tokenizer(texts, vocab_size=400, min_frequency=1)
    torch.manual_seed(0)
    tiny = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=2, max_position_embeddings=256)
    model, processor = build_llava(clip_dir, "tiny", tok, tiny=tiny)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def tiny_app(root: Path) -> TinyApp:
    """Dataset + AddressCLIP + LLaVA export under ``root`` (first call builds, later calls reuse)."""
    if "app" not in _CACHE:
        import torch

        torch.set_num_threads(2)
        data = _dataset(root / "data")
        clip = _clip(data, root / "clip")
        _CACHE["app"] = TinyApp(data, clip, _llava(clip, data, root / "llava_export"))
    return _CACHE["app"]


def noise_photo(path: Path, size: int = 80, seed: int = 0) -> Path:
    """A generated photo-like image (any size/format the app must accept)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size, size + 13, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path
