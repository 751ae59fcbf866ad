"""LLaVA-JSON dataset + collator: images + chat template -> input_ids / pixel_values / labels.

Labels come from the chat template's ``{% generation %}`` spans
(``return_assistant_tokens_mask=True``): only assistant answers and their "</s>" are learned,
the system prompt, user turns, image tokens and padding are -100. No global state: each batch
is rendered from its own conversations.

Bad data is a counted skip, never a crash mid-epoch or a silent ``train_loss 0.0``: records that
are not objects or lack fields, missing or undecodable images, and dialogues whose first answer
starts beyond ``max_length`` (no token left to learn) are skipped and counted in ``skipped``;
a batch with no supervised token at all is an error.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset
from transformers import ProcessorMixin

from llava_address.common.images import load_image
from llava_address.common.io import read_json
from llava_address.llava.chat_template import llava_json_to_messages

__all__ = ["IGNORE_INDEX", "read_llava_json", "LlavaJsonDataset", "LlavaCollator", "dialogue_texts",
           "prompt_length", "image_token_count", "pad_longest", "LengthGroupedBatches"]


def pad_longest() -> dict[str, Any]:
    """``processor_kwargs`` that pad to the longest dialogue. A saved tokenizer can carry a
    ``max_length`` init kwarg (e.g. from the warm-up); with padding=True and no truncation
    transformers ignores it but warns on every batch, so it is cleared here (the collator cuts the
    tail itself). A new dict per call: ``apply_chat_template`` writes into the one it is given."""
    return {"padding": True, "max_length": None}


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


def dialogue_texts(records: Sequence[Any]) -> list[str]:
    """Every turn's text (tokenizer-training corpus); malformed records and turns are left out."""
    texts = []
    for r in records:
        turns = r.get("conversations") if isinstance(r, dict) else None
        if isinstance(turns, list):
            texts += [str(t.get("value", "")) for t in turns if isinstance(t, dict)]
    return texts


def prompt_length(processor: ProcessorMixin, conversations: Sequence[dict[str, str]], image_tokens: int) -> int:
    """Tokens before the first answer token (system prompt, image tokens, first question, "ASSISTANT:")."""
    first = llava_json_to_messages(conversations, None)[:1]
    text = processor.apply_chat_template(first, tokenize=False, add_generation_prompt=True)
    ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    return len(ids) + ids.count(image_id) * (image_tokens - 1)


def image_token_count(processor: ProcessorMixin) -> int:
    """How many tokens one "<image>" expands to (the processor's fixed crop size decides it)."""
    out = processor(images=Image.new("RGB", (8, 8)), text=processor.image_token, return_tensors="pt")
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    return int((out["input_ids"] == image_id).sum())


class LlavaJsonDataset(Dataset):
    """Records of one split whose image exists and whose turns alternate human/gpt; others are counted skips.

    With ``processor`` and ``max_length``, dialogues whose first answer would be cut off entirely
    are skipped too ("answer beyond max_length"). Images that fail to decode while training are
    counted under "corrupt image" and their items dropped by :class:`LlavaCollator`.
    """

    def __init__(self, json_path: str | Path, dataset_dir: str | Path, split: str | None = "train",
                 max_samples: int | None = None, processor: ProcessorMixin | None = None,
                 max_length: int | None = None) -> None:
        self.dataset_dir = Path(dataset_dir)
        self.records: list[dict[str, Any]] = []
        self.skipped: dict[str, int] = {}
        self._failed: set[int] = set()
        self._processor, self._max_length = processor, max_length
        self._image_tokens = image_token_count(processor) if processor is not None and max_length else 0
        for rec in read_llava_json(json_path):
            why = self._problem(rec)
            if why is None and split is not None and rec.get("split", split) != split:
                continue
            if why is None:
                why = self._too_long(rec)
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
        if not isinstance(rec["image"], str) or not isinstance(rec["conversations"], list):
            return "malformed record"
        if not (self.dataset_dir / rec["image"]).is_file():
            return "missing image"
        try:
            llava_json_to_messages(rec["conversations"], None)
        except (ValueError, AttributeError, TypeError):
            return "bad conversation"
        return None

    def _too_long(self, rec: dict[str, Any]) -> str | None:
        if self._processor is None or not self._max_length:
            return None
        n = prompt_length(self._processor, rec["conversations"], self._image_tokens)
        return "answer beyond max_length" if n >= self._max_length else None

    def __len__(self) -> int:
        return len(self.records)

    @property
    def lengths(self) -> list[int]:
        """Rough size of each dialogue (characters of its turns) for the length-grouped sampler."""
        return [sum(len(str(t.get("value", ""))) for t in r["conversations"]) for r in self.records]

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        rec = self.records[i]
        try:
            image = load_image(self.dataset_dir / rec["image"])  # upright (EXIF), bounded
        except ValueError as exc:  # ImageLoadError: undecodable, truncated or a decompression bomb
            if i not in self._failed:  # counted once, whatever the epoch
                self._failed.add(i)
                self.skipped["corrupt image"] = self.skipped.get("corrupt image", 0) + 1
                log.warning("skipping undecodable image (%d so far): %s", len(self._failed), exc)
            return None
        return {"id": rec.get("id", str(i)), "image": image, "conversations": rec["conversations"]}


class LlavaCollator:
    """Batch of {"image", "conversations"} -> model inputs with answer-only labels.

    Items that are None (undecodable image) are dropped; so are rows whose answers all lie past
    ``max_length`` (counted in ``dropped``). A batch left with no supervised token is an error:
    the loss would be 0 or NaN and the run would report nothing learned as success.
    """

    def __init__(self, processor: ProcessorMixin, max_length: int = 1024, chat_template: str | None = None) -> None:
        self.processor = processor
        self.max_length = max_length
        self.chat_template = chat_template  # None: the processor's (Vicuna v1); chat_template.PLAIN_TEMPLATE for stage 1
        self.dropped = 0

    def __call__(self, batch: Sequence[dict[str, Any] | None]) -> dict[str, torch.Tensor]:
        batch = [b for b in batch if b is not None]
        if not batch:
            raise ValueError("every image in this batch failed to decode (see the warnings above)")
        out = self._render(batch)
        keep = (out["labels"] != IGNORE_INDEX).any(dim=1)
        if not keep.all():
            n = int((~keep).sum())
            self.dropped += n
            log.warning("dropped %d dialogue(s) with no answer token within max_length=%d (%d so far)",
                        n, self.max_length, self.dropped)
            if not keep.any():
                raise ValueError(f"no answer token within max_length={self.max_length} in this batch: "
                                 "raise data.max_length or shorten the prompts")
            out = {k: v[keep] for k, v in out.items()}
        return out

    def _render(self, batch: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        messages = [llava_json_to_messages(b["conversations"], b["image"]) for b in batch]
        kw = {"chat_template": self.chat_template} if self.chat_template else {}
        out = self.processor.apply_chat_template(
            messages, **kw, tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
            return_tensors="pt", processor_kwargs=pad_longest())
        mask = torch.as_tensor(out["assistant_masks"]).bool()
        labels = out["input_ids"].masked_fill(~mask, IGNORE_INDEX)
        n = self.max_length  # image tokens come first, so cutting the tail keeps them whole
        return {"input_ids": out["input_ids"][:, :n], "attention_mask": out["attention_mask"][:, :n],
                "pixel_values": out["pixel_values"], "labels": labels[:, :n]}


class LengthGroupedBatches(torch.utils.data.Sampler):
    """Sample indices in batches of similar length, the batches themselves in random order.

    Why not transformers' ``LengthGroupedSampler``: it sorts megabatches of 50 batches longest first,
    so a run shorter than 50 steps (the CPU recipe trains 40) meets its dialogues ordered by length:
    every grounded one first, the short types last, at the end of the LR schedule. Here a seeded
    permutation is cut into groups of ``group`` batches; each group is sorted by length and cut into
    batches (similar lengths: little padding), and all full batches are shuffled (a partial one goes
    last, so every batch the loader slices is one of these). ``set_epoch`` reseeds per epoch, so a
    resumed run sees the same order.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, group: int = 8, seed: int = 0) -> None:
        if batch_size < 1 or group < 1:
            raise ValueError(f"batch_size and group must be >= 1, got {batch_size}, {group}")
        self.lengths, self.batch_size, self.group, self.seed, self.epoch = list(lengths), batch_size, group, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        perm = torch.randperm(len(self.lengths), generator=g).tolist()
        size = self.group * self.batch_size
        full, partial = [], []
        for lo in range(0, len(perm), size):
            chunk = sorted(perm[lo:lo + size], key=lambda i: (self.lengths[i], i))
            for b in range(0, len(chunk), self.batch_size):
                (full if len(chunk[b:b + self.batch_size]) == self.batch_size else partial).append(
                    chunk[b:b + self.batch_size])
        order = torch.randperm(len(full), generator=g).tolist()
        return [full[i] for i in order] + partial

    def __iter__(self):
        return iter([i for b in self.batches() for i in b])
