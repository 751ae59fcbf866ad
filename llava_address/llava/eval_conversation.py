"""Does the assistant converse? Time-of-day and weather questions scored against the caption, and retention
of the base LM's general knowledge, with answers per second.

Time of day / weather: each test photo whose caption states it (:func:`data_gen.qa.scene.scene_facts`) is
asked one fixed question; the answer is parsed with the same word lists the QA answers use and compared
with the caption. The majority-class rate (always answering the most common test condition) stands beside
it: a model that ignores the image cannot beat it.

Retention (:mod:`llava_address.llava.general`): the base LM answers the fixed set text-only (cached per LM
by content), the tuned LLaVA answers it beside a test photo, as a chat user would ask it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from data_gen.contract import read_manifest
from data_gen.qa.scene import parse_time_answer, parse_weather_answer, scene_facts

__all__ = ["TIME_QUESTION", "WEATHER_QUESTION", "evaluate_conditions", "base_retention_answers",
           "evaluate_retention"]

log = logging.getLogger(__name__)
TIME_QUESTION = "What time of day was this photo taken?"
WEATHER_QUESTION = "What is the weather like in this photo?"


def evaluate_conditions(assistant: Any, data_dir: str | Path, split: str = "test", max_images: int | None = None,
                        batch_size: int = 16, max_new_tokens: int = 16) -> dict[str, Any]:
    """Accuracy of time-of-day / weather answers against the captions, beside the majority-class rate."""
    df = read_manifest(data_dir, split)
    rows = [(r.image, scene_facts(r.caption)) for r in df.itertuples()]
    rows = [(im, f) for im, f in rows if f.time_of_day is not None]
    if max_images is not None and max_images < len(rows):  # evenly spread, as the address evals
        rows = [rows[i] for i in sorted({round(x) for x in np.linspace(0, len(rows) - 1, max_images)})]
    if not rows:
        raise ValueError(f"{data_dir}: no {split} caption states a time of day; nothing to score")
    images = [Path(data_dir) / im for im, _ in rows]
    out: dict[str, Any] = {"n_images": len(rows)}
    for name, question, truth_of, parse in (("time_of_day", TIME_QUESTION, lambda f: f.time_of_day, parse_time_answer),
                                            ("weather", WEATHER_QUESTION, lambda f: f.weather, parse_weather_answer)):
        truths = [truth_of(f) for _, f in rows]
        t0, answers = time.perf_counter(), []
        for lo in range(0, len(images), batch_size):
            answers += assistant.answer_batch(images[lo:lo + batch_size], [question] * len(images[lo:lo + batch_size]),
                                              max_new_tokens=max_new_tokens)
        seconds = time.perf_counter() - t0
        parsed = [parse(a) for a in answers]
        majority, count = Counter(truths).most_common(1)[0]
        out[f"{name}_accuracy"] = sum(p == t for p, t in zip(parsed, truths)) / len(truths)
        out[f"{name}_majority_rate"] = count / len(truths)
        out[f"{name}_majority_class"] = majority
        out[f"{name}_unparsed_rate"] = sum(p is None for p in parsed) / len(truths)
        out[f"{name}_answers_per_s"] = len(answers) / max(seconds, 1e-9)
        out[f"{name}_examples"] = [{"image": str(im), "truth": t, "answer": a}
                                   for im, t, a in list(zip(images, truths, answers))[:5]]
    night = [t == "night" for t in (f.time_of_day for _, f in rows)]
    out["night_share"] = sum(night) / len(night)
    return out


def base_retention_answers(lm_dir: str | Path, max_new_tokens: int = 48) -> list[str]:
    """The base LM's text-only answers to the retention set (cached per LM content)."""
    from llava_address.llava.general import RETENTION_SET, base_lm_answers

    return base_lm_answers(lm_dir, [q for q, _ in RETENTION_SET], max_new_tokens, desc="base retention")


def evaluate_retention(assistant: Any, lm_dir: str | Path, image: str | Path, max_new_tokens: int = 48,
                       batch_size: int = 16) -> dict[str, Any]:
    """Base vs tuned answers on the fixed general set (tuned: asked beside ``image``)."""
    from llava_address.llava.general import RETENTION_SET, retention_report

    base = base_retention_answers(lm_dir, max_new_tokens)
    questions = [q for q, _ in RETENTION_SET]
    t0, tuned = time.perf_counter(), []
    for lo in range(0, len(questions), batch_size):
        chunk = questions[lo:lo + batch_size]
        tuned += assistant.answer_batch([image] * len(chunk), chunk, max_new_tokens=max_new_tokens)
    rep = retention_report(base, tuned)
    rep["answers_per_s"] = len(tuned) / max(time.perf_counter() - t0, 1e-9)
    return rep
