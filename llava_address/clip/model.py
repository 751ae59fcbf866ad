"""AddressCLIP model: a transformers ``CLIPModel`` (or an open_clip model) behind one small wrapper.

``AddressCLIP.forward`` returns L2-normalised image / address / semantic features and the
temperature ``logit_scale`` (already exponentiated) — no loss inside, so the three losses in
``losses.py`` can be switched and weighted freely. The wrapped ``CLIPModel`` is what gets saved,
so a checkpoint loads with ``transformers.CLIPModel.from_pretrained`` and its ``vision_model``
is a ``CLIPVisionModel`` tower that LLaVA can use.
"""

from __future__ import annotations

import itertools
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
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=arch.projection_dim,
                      logit_scale_init_value=arch.logit_scale_init)


def make_image_processor(image_size: int) -> CLIPImageProcessor:
    """CLIP's own preprocessing (resize shortest edge, centre crop, CLIP mean/std) at ``image_size``."""
    return CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                              image_mean=CLIP_MEAN, image_std=CLIP_STD)


MAX_TEXT_GROUPS = 3  # text-tower calls per step in encode_texts_together


def _right_padded(mask: torch.Tensor) -> bool:
    """Every row is ones then zeros (what the tokenizers here produce)."""
    return bool((mask[:, 1:] <= mask[:, :-1]).all())


def _length_groups(lengths: Sequence[int], max_groups: int) -> list[list[int]]:
    """Split positions 0..n-1 of ascending ``lengths`` into at most ``max_groups`` contiguous groups
    with the fewest padded tokens (sum of group size × its longest); cuts only where the length changes."""
    n = len(lengths)
    cuts = [i for i in range(1, n) if lengths[i] != lengths[i - 1]]

    def cost(bounds: list[int]) -> int:
        edges = [0, *bounds, n]
        return sum((b - a) * lengths[b - 1] for a, b in zip(edges, edges[1:]))

    best: list[int] = []
    for k in range(1, max_groups):
        for combo in itertools.combinations(cuts, k):
            if cost(list(combo)) < cost(best):
                best = list(combo)
    edges = [0, *best, n]
    return [list(range(a, b)) for a, b in zip(edges, edges[1:])]


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

    def encode_texts_together(self, batches: Sequence[tuple[torch.Tensor, torch.Tensor | None]]) -> list[torch.Tensor]:
        """``[encode_text(ids, mask) for ids, mask in batches]``, with less text-tower work; same math.

        Why: a training step encodes two text batches, addresses (~7 tokens, the same sub-street
        several times per batch, or every candidate address once with ``address_negatives=vocabulary``)
        and caption + address (~35 tokens, padded to the longest, ~46).
        Here identical texts are encoded once (a repeated row's gradient adds up through the index,
        as it would through separate rows), and all texts are sorted by length into at most
        ``MAX_TEXT_GROUPS`` groups, each padded only to its own longest. With right padding, a causal
        mask, absolute positions and first-EOS pooling, a text's features do not depend on the
        padding after it, so only float rounding changes (tests/test_clip_train_speed.py).
        On CPU only (the grouping reads the token ids on the host).
        """
        if (self.backbone != "hf" or any(m is None or m.device.type != "cpu" for _, m in batches)
                or not all(_right_padded(m) for _, m in batches)):
            # open_clip pads to a fixed context; on a GPU reading the ids here would stall the queue
            return [self.encode_text(ids, mask) for ids, mask in batches]
        keys: dict[tuple[int, ...], int] = {}
        where = []   # per batch: each row's position among the unique texts
        for ids, mask in batches:
            rows = [tuple(r[:n]) for r, n in zip(ids.tolist(), mask.sum(dim=1).tolist())]
            where.append([keys.setdefault(r, len(keys)) for r in rows])
        texts = list(keys)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))   # unique texts, shortest first
        ids_dtype, mask_dtype, dev = batches[0][0].dtype, batches[0][1].dtype, batches[0][0].device
        parts = []
        for group in _length_groups([len(texts[i]) for i in order], MAX_TEXT_GROUPS):
            width = len(texts[order[group[-1]]])
            ids = torch.full((len(group), width), self.pad_token_id, dtype=ids_dtype)
            mask = torch.zeros((len(group), width), dtype=mask_dtype)
            for r, j in enumerate(group):
                t = texts[order[j]]
                ids[r, :len(t)] = torch.tensor(t, dtype=ids_dtype)
                mask[r, :len(t)] = 1
            parts.append(self.encode_text(ids.to(dev), mask.to(dev)))
        rank = torch.empty(len(texts), dtype=torch.long)
        rank[torch.tensor(order)] = torch.arange(len(texts))   # unique text -> row of the sorted features
        feats = torch.cat(parts)
        return [feats[rank[torch.tensor(w)].to(feats.device)] for w in where]

    @property
    def pad_token_id(self) -> int:
        pad = getattr(self.tokenizer, "pad_token_id", None)
        return 0 if pad is None else int(pad)

    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(self, pixel_values: torch.Tensor, address_input_ids: torch.Tensor | None = None,
                address_attention_mask: torch.Tensor | None = None, semantic_input_ids: torch.Tensor | None = None,
                semantic_attention_mask: torch.Tensor | None = None, vocab_input_ids: torch.Tensor | None = None,
                vocab_attention_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        out = {"image_embeds": self.encode_image(pixel_values), "logit_scale": self.logit_scale()}
        texts = {name: (ids, mask) for name, ids, mask in (
            ("vocab_embeds", vocab_input_ids, vocab_attention_mask),   # every candidate (address_negatives=vocabulary)
            ("address_embeds", address_input_ids, address_attention_mask),
            ("semantic_embeds", semantic_input_ids, semantic_attention_mask)) if ids is not None}
        out.update(zip(texts, self.encode_texts_together(list(texts.values()))))
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
