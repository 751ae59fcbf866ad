"""AddressCLIP model: a transformers ``CLIPModel`` (or an open_clip model) behind one small wrapper.

``AddressCLIP.forward`` returns L2-normalised image / address / semantic features and the
temperature ``logit_scale`` (already exponentiated) — no loss inside, so the three losses in
``losses.py`` can be switched and weighted freely. The wrapped ``CLIPModel`` is what gets saved,
so a checkpoint loads with ``transformers.CLIPModel.from_pretrained`` and its ``vision_model``
is a ``CLIPVisionModel`` tower that LLaVA can use.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

from llava_address.clip.config import ModelConfig, TinyArch
from llava_address.clip.tokenizer import train_tokenizer

__all__ = ["AddressCLIP", "build_model", "tiny_clip_config", "make_image_processor", "CLIP_MEAN", "CLIP_STD"]

log = logging.getLogger(__name__)
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
MAX_LOGIT_SCALE = 100.0  # CLIP clamps the learnt temperature at 100


def tiny_clip_config(arch: TinyArch, tokenizer) -> CLIPConfig:
    """A from-scratch CLIP sized by ``arch``; special token ids come from ``tokenizer``."""
    text = dict(vocab_size=len(tokenizer), hidden_size=arch.text_width, intermediate_size=4 * arch.text_width,
                num_hidden_layers=arch.text_layers, num_attention_heads=arch.text_heads,
                max_position_embeddings=arch.max_text_len, projection_dim=arch.projection_dim,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=arch.vision_width, intermediate_size=4 * arch.vision_width,
                  num_hidden_layers=arch.vision_layers, num_attention_heads=arch.vision_heads,
                  image_size=arch.image_size, patch_size=arch.patch_size, projection_dim=arch.projection_dim)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=arch.projection_dim)


def make_image_processor(image_size: int) -> CLIPImageProcessor:
    """CLIP's own preprocessing (resize shortest edge, centre crop, CLIP mean/std) at ``image_size``."""
    return CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                              image_mean=CLIP_MEAN, image_std=CLIP_STD)


class AddressCLIP(nn.Module):
    """Wraps a ``CLIPModel`` (``backbone='hf'``) or an open_clip model (``backbone='open_clip'``)."""

    def __init__(self, clip: nn.Module, tokenizer: Any, image_processor: CLIPImageProcessor,
                 backbone: str = "hf", max_text_len: int | None = None):
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.backbone = backbone
        if max_text_len is None and backbone == "hf":
            max_text_len = clip.config.text_config.max_position_embeddings
        self.max_text_len = max_text_len

    @property
    def image_size(self) -> int:
        return int(self.image_processor.crop_size["height"])

    # ---- encoders -------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        if self.backbone == "open_clip":
            return {"input_ids": self.tokenizer(list(texts))}
        return dict(self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_text_len,
                                   return_tensors="pt"))

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.backbone == "open_clip":
            feats = self.clip.encode_image(pixel_values)
        else:
            pooled = self.clip.vision_model(pixel_values=pixel_values).pooler_output
            feats = self.clip.visual_projection(pooled)
        return F.normalize(feats, dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.backbone == "open_clip":
            feats = self.clip.encode_text(input_ids)
        else:
            pooled = self.clip.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
            feats = self.clip.text_projection(pooled)
        return F.normalize(feats, dim=-1)

    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(self, pixel_values: torch.Tensor, address_input_ids: torch.Tensor | None = None,
                address_attention_mask: torch.Tensor | None = None, semantic_input_ids: torch.Tensor | None = None,
                semantic_attention_mask: torch.Tensor | None = None, vocab_input_ids: torch.Tensor | None = None,
                vocab_attention_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        out = {"image_embeds": self.encode_image(pixel_values), "logit_scale": self.logit_scale()}
        if vocab_input_ids is not None:  # every candidate address (loss.address_negatives=vocabulary)
            out["vocab_embeds"] = self.encode_text(vocab_input_ids, vocab_attention_mask)
        if address_input_ids is not None:
            out["address_embeds"] = self.encode_text(address_input_ids, address_attention_mask)
        if semantic_input_ids is not None:
            out["semantic_embeds"] = self.encode_text(semantic_input_ids, semantic_attention_mask)
        return out


def build_model(cfg: ModelConfig, corpus: Iterable[str] | None = None) -> AddressCLIP:
    """Build the initial model named by ``cfg``.

    tiny: a tokenizer is trained on ``corpus`` (the dataset's address + caption texts) and a CLIP is
    initialised from scratch; pretrained_dir: ``CLIPModel`` + its tokenizer/processor from a local
    folder (no download); open_clip: ``create_model_and_transforms(name, pretrained=<local file>)``.
    """
    if cfg.backbone == "open_clip":
        from llava_address.clip.open_clip_export import load_open_clip

        return load_open_clip(cfg.open_clip_name, cfg.open_clip_checkpoint)
    if cfg.pretrained_dir:
        return load_pretrained_dir(cfg.pretrained_dir)
    if corpus is None:
        raise ValueError("a tiny model needs a text corpus to train its tokenizer")
    tok = train_tokenizer(corpus, cfg.tiny.vocab_size, cfg.tiny.max_text_len)
    clip = CLIPModel(tiny_clip_config(cfg.tiny, tok))
    return AddressCLIP(clip, tok, make_image_processor(cfg.tiny.image_size))


def load_pretrained_dir(path: str) -> AddressCLIP:
    """CLIPModel + tokenizer + image processor from a local folder (HF layout), offline."""
    from pathlib import Path

    from transformers import AutoTokenizer

    p = Path(path)
    missing = [f for f in ("config.json",) if not (p / f).is_file()]
    if not p.is_dir() or missing:
        raise FileNotFoundError(f"not a CLIPModel directory: {p} (missing {missing or ['the folder itself']})")
    clip = CLIPModel.from_pretrained(p, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(p, local_files_only=True)
    try:
        proc = CLIPImageProcessor.from_pretrained(p, local_files_only=True)
    except OSError:
        proc = make_image_processor(clip.config.vision_config.image_size)
    return AddressCLIP(clip, tok, proc)
