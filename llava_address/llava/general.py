"""General questions: the self-distillation guard mixed into stage 2, and the retention check after it.

Why: LoRA-tuning an instruct LM only on address dialogues teaches it that every question has an
address for an answer ("What is 2 plus 3?" -> "This photo was taken on France."). LLaVA-1.5 mixes
ShareGPT text into its instruction data for the same reason. Offline there is no such data, so the
base LM writes it itself: :data:`DISTILL_PROMPTS` are answered by the untuned LM (greedy, its own
chat template) and those answers become stage-2 turns beside a training photo, so tuning keeps
what the model said before (self-distillation). :data:`RETENTION_SET` is disjoint from them: fixed
questions with keyword answers, asked of the base LM and of the tuned LLaVA (with a photo, as in
chat); retention = share of the base's right answers the tuned model still gets right.
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

__all__ = ["ensure_general_json", "base_lm_answers", "DISTILL_PROMPTS", "RETENTION_SET", "distill_answers", "build_general_json", "keyword_right",
           "retention_report", "generate_text"]

log = logging.getLogger(__name__)

_COUNTRIES = ("Spain", "Canada", "Egypt", "Norway", "Brazil", "Kenya", "Greece", "Poland", "Portugal", "Mexico",
              "Sweden", "Ireland", "Austria", "Peru", "Chile", "Thailand", "Vietnam", "Argentina", "Australia",
              "India", "China", "Russia", "Turkey", "Denmark", "Hungary")
_TOPICS = ("the ocean", "autumn leaves", "a busy market", "mountains", "a rainy morning", "friendship", "coffee",
           "the moon", "a quiet library", "trains", "bicycles", "a summer garden")
_WORDS = ("happy", "big", "fast", "cold", "bright", "quiet", "old", "small", "angry", "easy")
_THINGS = ("a bicycle", "a refrigerator", "a volcano", "a rainbow", "a library", "an umbrella", "a compass",
           "a bridge", "a lighthouse", "a thermometer", "photosynthesis", "gravity", "a calendar", "an airport")

DISTILL_PROMPTS: tuple[str, ...] = (
    tuple(f"What is the capital of {c}?" for c in _COUNTRIES)
    + tuple(f"Write one short sentence about {t}." for t in _TOPICS)
    + tuple(f"Give me a word that means the opposite of '{w}'." for w in _WORDS)
    + tuple(f"Explain in one or two sentences what {t} is." for t in _THINGS)
    + tuple(f"What is {a} plus {b}?" for a, b in ((3, 4), (10, 5), (6, 7), (12, 8), (20, 22), (9, 9)))
    + ("Hello! How are you today?", "Tell me a fun fact about animals.", "Name three colours.",
       "What should I pack for a beach trip?", "Give me a tip for learning a new language.",
       "What is a good way to start the morning?", "Name three kinds of fruit.", "Why do people like music?",
       "Suggest a name for a pet cat.", "What is the difference between weather and climate?",
       "How do I make a cup of tea?", "What is a haiku?", "Thank you for your help!",
       "Can you recommend a healthy snack?", "What are the four seasons?", "Why is exercise important?")
)

# (question, accepted keywords: any one, case-insensitive, word-bounded); none of these is in DISTILL_PROMPTS
RETENTION_SET: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("What is the capital of France?", ("paris",)),
    ("What is the capital of Japan?", ("tokyo",)),
    ("What is the capital of Italy?", ("rome",)),
    ("What is the capital of Germany?", ("berlin",)),
    ("What is the capital of the United Kingdom?", ("london",)),
    ("What is the largest planet in our solar system?", ("jupiter",)),
    ("What planet do we live on?", ("earth",)),
    ("Who wrote Romeo and Juliet?", ("shakespeare",)),
    ("Who painted the Mona Lisa?", ("leonardo", "vinci")),
    ("What is the opposite of hot?", ("cold",)),
    ("What color is grass?", ("green",)),
    ("What color is the sky on a clear day?", ("blue",)),
    ("How many days are there in a week?", ("seven", "7")),
    ("How many legs does a spider have?", ("eight", "8")),
    ("How many hours are there in a day?", ("24", "twenty-four", "twenty four")),
    ("What do bees make?", ("honey",)),
    ("Which animal is known as the king of the jungle?", ("lion",)),
    ("What is the fastest land animal?", ("cheetah",)),
    ("What is the tallest animal in the world?", ("giraffe",)),
    ("What language is spoken in Brazil?", ("portuguese",)),
    ("What is frozen water called?", ("ice",)),
    ("What gas do plants take in from the air?", ("carbon dioxide", "co2")),
    ("What is the largest ocean on Earth?", ("pacific",)),
    ("What is 2 plus 2?", ("4", "four")),
    ("In which continent is Egypt?", ("africa",)),
    ("What is the boiling point of water in degrees Celsius?", ("100",)),
)


def keyword_right(answer: str, keywords: Sequence[str]) -> bool:
    """True when the answer contains one of the keywords as a word (case-insensitive)."""
    text = answer.lower()
    return any(re.search(rf"(?<![a-z0-9]){re.escape(k)}(?![a-z0-9])", text) for k in keywords)


def _trim(text: str) -> str | None:
    """Cut a generated answer after its last complete sentence (None: no sentence ended)."""
    text = text.strip()
    if not text:
        return None
    if text[-1] in ".!?":
        return text
    cut = max(text.rfind(". "), text.rfind("! "), text.rfind("? "))
    return text[:cut + 1] if cut > 0 else None


@torch.inference_mode()
def generate_text(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int = 64,
                  batch_size: int = 16, desc: str = "general answers") -> list[str]:
    """Greedy answers of a causal LM to text-only prompts, through the tokenizer's own chat template."""
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    out: list[str] = []
    try:
        for lo in tqdm(range(0, len(prompts), batch_size), desc=desc, unit="batch"):
            chunk = [[{"role": "user", "content": p}] for p in prompts[lo:lo + batch_size]]
            enc = tokenizer.apply_chat_template(chunk, add_generation_prompt=True, tokenize=True, padding=True,
                                                return_dict=True, return_tensors="pt")
            enc = {k: v.to(model.device) for k, v in enc.items()}
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            out += [t.strip() for t in tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:],
                                                              skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
    return out


def _generate_with_lm(lm_dir: str | Path, prompts: Sequence[str], max_new_tokens: int, desc: str) -> list[str]:
    """Load the causal LM at ``lm_dir`` and answer ``prompts`` greedily (uncached)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(lm_dir, local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(lm_dir, local_files_only=True, dtype=torch.float32).eval()
    return generate_text(model, tok, list(prompts), max_new_tokens, desc=desc)


def base_lm_answers(lm_dir: str | Path, prompts: Sequence[str], max_new_tokens: int = 64,
                    desc: str = "base LM answers") -> list[str]:
    """The base LM's text-only greedy answers to ``prompts``, cached by content (LM, prompts, length cap).

    Why cached: they depend on nothing else, so every run and seed on a machine generates them once
    (the 83 distillation prompts take ~70 s on 2 cores) under ``cache_root()/base_answers``.
    """
    from llava_address.common.fingerprint import dir_digest, json_digest
    from llava_address.common.io import atomic_write_json, read_json
    from llava_address.llava.pretrained_lm import cache_root

    key = json_digest({"lm": dir_digest(lm_dir), "prompts": list(prompts), "max_new_tokens": max_new_tokens})
    cached = cache_root() / "base_answers" / f"{key}.json"
    try:
        return [str(a) for a in read_json(cached)]
    except (FileNotFoundError, ValueError):
        answers = _generate_with_lm(lm_dir, prompts, max_new_tokens, desc)
        atomic_write_json(cached, answers)
        return answers


def distill_answers(lm_dir: str | Path, prompts: Sequence[str] = DISTILL_PROMPTS,
                    max_new_tokens: int = 64) -> list[tuple[str, str]]:
    """(prompt, the base LM's own greedy answer) pairs; answers with no finished sentence are dropped."""
    answers = base_lm_answers(lm_dir, prompts, max_new_tokens, desc="self-distillation")
    pairs = [(p, t) for p, a in zip(prompts, answers) if (t := _trim(a))]
    if len(pairs) < len(prompts):
        log.info("self-distillation: %d of %d answers kept (the others ended mid-sentence)", len(pairs), len(prompts))
    return pairs


def build_general_json(pairs: Sequence[tuple[str, str]], images: Sequence[str], repeats: int = 1,
                       seed: int = 0) -> list[dict[str, Any]]:
    """LLaVA records: each (prompt, answer) asked beside a training photo (``repeats`` photos each).

    The photo is there because the assistant is always asked about one: it must learn to answer a
    general question as the base LM did whatever the image shows.
    """
    if not images:
        raise ValueError("no training images to pair the general questions with")
    rng = random.Random(f"{seed}|general")
    recs = []
    for r in range(repeats):
        for i, (q, a) in enumerate(pairs):
            recs.append({"id": f"general-{r}-{i}", "image": rng.choice(list(images)), "split": "train",
                         "conversations": [{"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": a}],
                         "turn_types": ["general"]})
    return recs


def retention_report(base_answers: Sequence[str], tuned_answers: Sequence[str],
                     items: Sequence[tuple[str, tuple[str, ...]]] = RETENTION_SET) -> dict[str, Any]:
    """Base vs tuned right answers on the fixed set; retention = tuned right among base right."""
    base_ok = [keyword_right(a, k) for a, (_, k) in zip(base_answers, items)]
    tuned_ok = [keyword_right(a, k) for a, (_, k) in zip(tuned_answers, items)]
    kept = sum(b and t for b, t in zip(base_ok, tuned_ok))
    return {"questions": len(items), "base_right": sum(base_ok), "tuned_right": sum(tuned_ok),
            "tuned_right_of_base_right": kept, "retention": kept / max(sum(base_ok), 1),
            "items": [{"question": q, "keywords": list(k), "base": b, "tuned": t, "base_right": bo, "tuned_right": to}
                      for (q, k), b, t, bo, to in zip(items, base_answers, tuned_answers, base_ok, tuned_ok)]}


def ensure_general_json(lm_dir: str | Path, qa_json: str | Path, out: str | Path, repeats: int = 1,
                        max_new_tokens: int = 64, seed: int = 0) -> Path:
    """Write the stage-2 general records to ``out`` (photos from ``qa_json``'s training records).

    The base LM's answers come from :func:`base_lm_answers` (cached by content, generated once per machine).
    """
    from llava_address.common.io import atomic_write_json
    from llava_address.llava.data import read_llava_json

    pairs = distill_answers(lm_dir, DISTILL_PROMPTS, max_new_tokens)
    images = sorted({r["image"] for r in read_llava_json(qa_json)
                     if isinstance(r, dict) and isinstance(r.get("image"), str) and r.get("split", "train") == "train"})
    atomic_write_json(out, build_general_json(pairs, images, repeats, seed))
    return Path(out)
