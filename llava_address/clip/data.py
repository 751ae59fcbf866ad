"""Torch dataset over a data_gen manifest + collator that tokenizes address and semantic texts.

Images load through ``common.images.load_image`` (EXIF orientation, pixel cap); undecodable
or oversized images are a counted skip with one warning each (never a crash mid-epoch).
Augmentation is seeded per (seed, epoch, index), so a resumed run sees exactly the same pixels
as an uninterrupted one; the sampler is a seeded per-epoch permutation for the same reason.
"""

from __future__ import annotations

import logging
import math
import zlib
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import Dataset, Sampler
from torchvision import transforms as T

from data_gen.contract import AddressVocabulary, join_caption_address, read_manifest
from llava_address.clip.config import DataConfig
from llava_address.clip.model import CLIP_MEAN, CLIP_STD
from llava_address.common.images import ImageLoadError, load_image

__all__ = ["AddressImageDataset", "AddressCollator", "EpochPermutationSampler", "train_transform",
           "text_id"]

log = logging.getLogger(__name__)


def text_id(text: str) -> int:
    """Stable id of a text string (same on every rank), used to find identical texts in a batch."""
    return zlib.crc32(text.encode("utf-8"))


def train_transform(image_size: int, data: DataConfig) -> T.Compose:
    """Training augmentation from ``data`` (``DataConfig``), each op standing for one capture shift.

    Geometry on the PIL image (perspective: pitch/yaw/height; rotation: roll; random-resized crop:
    field of view and heading), then photometry (brightness/contrast/saturation for time of day and
    weather; blur for fog and rain), CLIP normalisation, then erasing (occluders) on the tensor.
    Areas that perspective/rotation uncover and erased boxes take the CLIP mean colour (0 after
    normalisation). All randomness comes from torch's generator, so ``AddressImageDataset``'s
    per-(seed, epoch, index) seeding makes it reproducible.
    """
    mean_fill = [round(255 * m) for m in CLIP_MEAN]
    ops: list = []
    if data.perspective > 0:
        ops.append(T.RandomPerspective(data.perspective, p=0.5, fill=mean_fill))
    if data.rotation_deg > 0:
        ops.append(T.RandomRotation(data.rotation_deg, interpolation=T.InterpolationMode.BILINEAR, fill=mean_fill))
    ops.append(T.RandomResizedCrop(image_size, scale=(data.crop_scale_min, 1.0), ratio=tuple(data.crop_ratio),
                                   interpolation=T.InterpolationMode.BICUBIC))
    bright = data.color_jitter if data.brightness is None else data.brightness
    contrast = data.color_jitter if data.contrast is None else data.contrast
    if bright > 0 or contrast > 0 or data.color_jitter > 0:
        ops.append(T.ColorJitter(bright, contrast, data.color_jitter))  # no hue: hue is the place cue
    if data.blur_p > 0:
        kernel = 2 * math.ceil(2 * data.blur_sigma[1]) + 1  # covers ±2 sigma
        ops.append(T.RandomApply([T.GaussianBlur(kernel, sigma=tuple(data.blur_sigma))], p=data.blur_p))
    ops += [T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)]
    if data.erase_p > 0:
        ops.append(T.RandomErasing(p=data.erase_p, scale=tuple(data.erase_scale), ratio=(0.3, 3.3), value=0))
    return T.Compose(ops)


class AddressImageDataset(Dataset):
    """One split of a dataset folder. Items: pixel_values, address, semantic text, address id, lat, lon."""

    def __init__(self, dataset_dir: str | Path, split: str, vocab: AddressVocabulary, image_processor,
                 transform: T.Compose | None = None, seed: int = 0, max_items: int | None = None):
        self.root = Path(dataset_dir)
        df = read_manifest(self.root, split)
        if max_items is not None and len(df) > max_items:  # evenly spaced subset, deterministic
            df = df.iloc[torch.linspace(0, len(df) - 1, max_items).long().tolist()].reset_index(drop=True)
        unknown = sorted(set(df["sub_street"]) - set(vocab.sub_street))
        if unknown:
            raise ValueError(f"{self.root}: {len(unknown)} sub-streets in split {split!r} are not in "
                             f"addresses.json, e.g. {unknown[:3]}")
        self.df = df
        self.index = {a: i for i, a in enumerate(vocab.sub_street)}
        self.processor, self.transform, self.seed = image_processor, transform, seed
        self.epoch, self.failed = 0, set()

    def __len__(self) -> int:
        return len(self.df)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def skipped(self) -> int:
        """Distinct images that failed to decode (each counted once, whatever the epoch)."""
        return len(self.failed)

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        row = self.df.iloc[i]
        try:
            img = load_image(self.root / row["image"])
        except ImageLoadError as exc:
            if i not in self.failed:
                self.failed.add(i)
                log.warning("skipping undecodable image (%d so far): %s", len(self.failed), exc)
            return None
        if self.transform is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + i)
                pixels = self.transform(img)
        else:
            pixels = self.processor(images=img, return_tensors="pt")["pixel_values"][0]
        return {"pixel_values": pixels, "address": row["sub_street"], "address_id": self.index[row["sub_street"]],
                "semantic": join_caption_address(row["caption"], row["sub_street"]),
                "lat": float(row["lat"]), "lon": float(row["lon"]), "index": i}


class AddressCollator:
    """Stacks pixels and tokenizes texts with the model's own tokenizer; drops skipped (None) items."""

    def __init__(self, tokenize, prompt: str | None = None, with_semantic: bool = True,
                 vocabulary: Sequence[str] | None = None):
        self.tokenize, self.prompt, self.with_semantic = tokenize, prompt, with_semantic
        # the whole candidate set, tokenised once (loss.address_negatives=vocabulary)
        self.vocab_tok = self.tokenize([self._wrap(a) for a in vocabulary]) if vocabulary is not None else None

    def _wrap(self, address: str) -> str:
        return self.prompt.format(address=address) if self.prompt else address

    def __call__(self, items: Sequence[dict[str, Any] | None]) -> dict[str, torch.Tensor]:
        items = [x for x in items if x is not None]
        if not items:
            raise ValueError("every image in this batch failed to decode")
        addresses = [x["address"] for x in items]
        batch = {"pixel_values": torch.stack([x["pixel_values"] for x in items]),
                 "address_ids": torch.tensor([x["address_id"] for x in items]),
                 "lat": torch.tensor([x["lat"] for x in items], dtype=torch.float64),
                 "lon": torch.tensor([x["lon"] for x in items], dtype=torch.float64),
                 "index": torch.tensor([x["index"] for x in items])}
        if self.vocab_tok is None:  # in-batch negatives: the batch's own address texts
            tok = self.tokenize([self._wrap(a) for a in addresses])
            batch["address_input_ids"] = tok["input_ids"]
            if "attention_mask" in tok:
                batch["address_attention_mask"] = tok["attention_mask"]
        else:
            batch["vocab_input_ids"] = self.vocab_tok["input_ids"]
            if "attention_mask" in self.vocab_tok:
                batch["vocab_attention_mask"] = self.vocab_tok["attention_mask"]
        if self.with_semantic:
            sem = [x["semantic"] for x in items]
            stok = self.tokenize(sem)
            batch["semantic_input_ids"] = stok["input_ids"]
            if "attention_mask" in stok:
                batch["semantic_attention_mask"] = stok["attention_mask"]
            batch["semantic_ids"] = torch.tensor([text_id(s) for s in sem], dtype=torch.int64)
        return batch


class EpochPermutationSampler(Sampler[int]):
    """A seeded permutation per epoch: identical order after a resume."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())
