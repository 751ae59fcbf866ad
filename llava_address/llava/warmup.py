"""Text-only warm-up of the tiny LM before stage 1: teach a randomly initialised Llama the words.

Why: the offline tiny LM starts random, so stage 1 (projector only, LM frozen) asks a projector
to align images to a language model that knows no language: its loss sits near the uniform
entropy and barely moves. A short causal-LM pass over the dialogue text itself (address QA +
alignment answers, rendered with the chat template but without images) gives the LM the address
vocabulary and the answer phrasing first. Only the language model and ``lm_head`` train; the
projector and the vision tower are untouched. The full-size path (Vicuna) never runs this.

``warm_up_base(cfg, base_dir)`` trains once and writes the result back into ``base/`` with a
marker (``base/warmup.json``), so stage 1 and stage 2 both start from the warmed LM.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import AutoProcessor, LlavaForConditionalGeneration, get_cosine_schedule_with_warmup

from llava_address.common.io import atomic_dir, atomic_write_json, read_json
from llava_address.llava.config import LlavaConfigFile
from llava_address.llava.data import read_llava_json

__all__ = ["WARMUP_MARKER", "warmup_texts", "warm_up_base"]

log = logging.getLogger(__name__)
WARMUP_MARKER = "warmup.json"


def warmup_texts(records: list[dict[str, Any]], processor: Any) -> list[str]:
    """Each record's conversation rendered with the processor's chat template (Vicuna v1), no image."""
    from llava_address.llava.chat_template import llava_json_to_messages

    texts = []
    for rec in records:
        try:
            msgs = llava_json_to_messages(rec["conversations"], None)
        except (KeyError, ValueError, TypeError):
            continue
        plain = [{"role": m["role"], "content": " ".join(c["text"] for c in m["content"] if c["type"] == "text")}
                 for m in msgs]
        texts.append(processor.apply_chat_template(plain, tokenize=False))
    return texts


def warm_up_base(cfg: LlavaConfigFile, base_dir: str | Path) -> dict[str, Any]:
    """Train the base model's LM on the dialogue text (once); returns the warm-up record."""
    base_dir = Path(base_dir)
    marker = base_dir / WARMUP_MARKER
    if marker.is_file():
        return read_json(marker)
    wc = cfg.warmup
    processor = AutoProcessor.from_pretrained(base_dir, local_files_only=True)
    tok = processor.tokenizer
    records: list[dict[str, Any]] = []
    for name in (cfg.data.qa_json, cfg.data.align_json):
        path = cfg.data.resolve(name)
        if path.is_file():
            records += [r for r in read_llava_json(path) if r.get("split", "train") == "train"]
    texts = warmup_texts(records, processor)
    if not texts:
        raise ValueError(f"warm-up: no training dialogues in {cfg.data.resolve(cfg.data.qa_json)}")
    model = LlavaForConditionalGeneration.from_pretrained(base_dir, local_files_only=True)
    for name, p in model.named_parameters():
        p.requires_grad_("language_model" in name or name.startswith("lm_head"))
    params = [p for p in model.parameters() if p.requires_grad]
    steps_per_epoch = math.ceil(len(texts) / wc.batch_size)
    total = wc.max_steps if wc.max_steps > 0 else max(1, int(wc.epochs * steps_per_epoch))
    opt = torch.optim.AdamW(params, lr=wc.lr, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, max(1, total // 30), total)
    rng = random.Random(wc.seed)
    torch.manual_seed(wc.seed)
    order: list[int] = []
    losses: list[float] = []
    model.train()
    for step in tqdm(range(total), desc="LM warm-up", unit="step"):
        if len(order) < wc.batch_size:
            fresh = list(range(len(texts)))
            rng.shuffle(fresh)
            order += fresh
        batch = [texts[i] for i in order[:wc.batch_size]]
        del order[:wc.batch_size]
        enc = tok(batch, add_special_tokens=False, padding=True, truncation=True, max_length=wc.max_length,
                  return_tensors="pt")
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        loss = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"warm-up loss is {losses[-1]} at step {step}")
    k = max(1, min(10, len(losses) // 5))
    record = {"steps": total, "texts": len(texts), "first_loss": sum(losses[:k]) / k,
              "last_loss": sum(losses[-k:]) / k}
    model.eval()
    with atomic_dir(base_dir, overwrite=True) as tmp:  # the base dir is replaced: its side files kept, weights new
        shutil.copytree(base_dir, tmp, dirs_exist_ok=True)
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        atomic_write_json(Path(tmp) / WARMUP_MARKER, record)
    log.info("LM warm-up: %d steps on %d texts, loss %.3f -> %.3f", total, len(texts), record["first_loss"],
             record["last_loss"])
    return record
