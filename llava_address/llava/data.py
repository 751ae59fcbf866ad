"""LLaVA-JSON dataset + collator: images + chat template -> input_ids / pixel_values / labels.

Labels come from the chat template's ``{% generation %}`` spans
(``return_assistant_tokens_mask=True``): only assistant answers and their "</s>" are learned,
the system prompt, user turns, image tokens and padding are -100. No global state: each batch
is rendered from its own conversations.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset
from transformers import ProcessorMixin

from llava_address.common.io import read_json
from llava_address.llava.chat_template import llava_json_to_messages

__all__ = ["IGNORE_INDEX", "read_llava_json", "LlavaJsonDataset", "LlavaCollator", "dialogue_texts"]

log = logging.getLogger(__name__)
IGNORE_INDEX = -100


def read_llava_json(path: str | Path) -> list[dict[str, Any]]:
    """Read a LLaVA conversation JSON (a list of records); clear error when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LLaVA JSON not found: {path} (build it with scripts/make_qa.py)")
    data = read_json(path)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of records, got {type(data).__name__}")
    return data


def dialogue_texts(records: Sequence[dict[str, Any]]) -> list[str]:
    """Every turn's text (tokenizer-training corpus)."""
    return [str(t.get("value", "")) for r in records for t in r.get("conversations", [])]


class LlavaJsonDataset(Dataset):
    """Records of one split whose image exists and whose turns alternate human/gpt; others are counted skips."""

    def __init__(self, json_path: str | Path, dataset_dir: str | Path, split: str | None = "train",
                 max_samples: int | None = None) -> None:
        self.dataset_dir = Path(dataset_dir)
        self.records: list[dict[str, Any]] = []
        self.skipped: dict[str, int] = {}
        for rec in read_llava_json(json_path):
            why = self._problem(rec)
            if why is None and split is not None and rec.get("split", split) != split:
                continue
            if why is not None:
                self.skipped[why] = self.skipped.get(why, 0) + 1
                continue
            self.records.append(rec)
            if max_samples is not None and len(self.records) >= max_samples:
                break
        if self.skipped:
            log.warning("%s: skipped %s", json_path, self.skipped)
        if not self.records:
            raise ValueError(f"{json_path}: no usable records for split {split!r} (skipped: {self.skipped})")

    def _problem(self, rec: Any) -> str | None:
        if not isinstance(rec, dict) or "image" not in rec or "conversations" not in rec:
            return "malformed record"
        if not (self.dataset_dir / rec["image"]).is_file():
            return "missing image"
        try:
            llava_json_to_messages(rec["conversations"], None)
        except (ValueError, AttributeError, TypeError):
            return "bad conversation"
        return None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rec = self.records[i]
        with Image.open(self.dataset_dir / rec["image"]) as im:
            image = im.convert("RGB")
        return {"id": rec.get("id", str(i)), "image": image, "conversations": rec["conversations"]}


class LlavaCollator:
    """Batch of {"image", "conversations"} -> model inputs with answer-only labels."""

    def __init__(self, processor: ProcessorMixin, max_length: int = 1024, chat_template: str | None = None) -> None:
        self.processor = processor
        self.max_length = max_length
        self.chat_template = chat_template  # None: the processor's (Vicuna v1); chat_template.PLAIN_TEMPLATE for stage 1

    def __call__(self, batch: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        messages = [llava_json_to_messages(b["conversations"], b["image"]) for b in batch]
        kw = {"chat_template": self.chat_template} if self.chat_template else {}
        out = self.processor.apply_chat_template(
            messages, **kw, tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
            return_tensors="pt", processor_kwargs={"padding": True})
        mask = torch.as_tensor(out["assistant_masks"]).bool()
        labels = out["input_ids"].masked_fill(~mask, IGNORE_INDEX)
        n = self.max_length  # image tokens come first, so cutting the tail keeps them whole
        return {"input_ids": out["input_ids"][:, :n], "attention_mask": out["attention_mask"][:, :n],
                "pixel_values": out["pixel_values"], "labels": labels[:, :n]}
