"""Generative evaluation: ask each test image "Where was this photo taken?", parse the answer back
to a sub-street candidate and score it with AddressCLIP's metric code (SSA-1 / SA-1 / distance).

Unparseable answers count as wrong for SSA/SA; distance errors are over parsed answers only
(``parsed_rate`` says how many). Parsing is data_gen.qa's ``parse_answer_to_candidate``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from data_gen.contract import read_addresses, read_manifest
from data_gen.qa.parse import parse_answer_to_candidate
from llava_address.clip.metrics import address_metrics
from llava_address.common.io import atomic_write_json
from llava_address.llava.generate import LlavaAddressAssistant

__all__ = ["DEFAULT_QUESTION", "evaluate_generative", "score_answers"]

log = logging.getLogger(__name__)
DEFAULT_QUESTION = "Where was this photo taken?"
_NONE = "\u0000unparsed"


def score_answers(answers: list[str], truth: list[str], lat: list[float], lon: list[float],
                  vocab) -> tuple[dict[str, float], list[str | None]]:
    """Parse answers to candidates and compute SSA-1/SA-1 (+ distance over parsed answers)."""
    cands = list(vocab.sub_street)
    street_of = {c: vocab.street_of(c) for c in cands}
    preds = [parse_answer_to_candidate(a, cands, street_of) for a in answers]
    index = {c: i for i, c in enumerate(cands)}
    ranked = np.array([[index.get(p, len(cands)) if p else len(cands)] for p in preds])
    mids = {c: vocab.midpoint(c) for c in cands}
    metrics = address_metrics(ranked, cands + [_NONE], truth, {**street_of, _NONE: _NONE},
                              {**mids, _NONE: (np.nan, np.nan)}, lat, lon, ks=(1,))
    ok = [i for i, p in enumerate(preds) if p]
    metrics["parsed_rate"] = len(ok) / max(len(preds), 1)
    if ok:
        sub = address_metrics(ranked[ok], cands, [truth[i] for i in ok], street_of, mids,
                              [lat[i] for i in ok], [lon[i] for i in ok], ks=(1,))
        metrics["mean_error_m"], metrics["median_error_m"] = sub["mean_error_m"], sub["median_error_m"]
    else:
        metrics["mean_error_m"] = metrics["median_error_m"] = float("nan")
    return metrics, preds


def evaluate_generative(export_dir: str | Path, data_dir: str | Path, split: str = "test",
                        question: str = DEFAULT_QUESTION, batch_size: int = 16, max_samples: int | None = None,
                        max_new_tokens: int = 48, out_json: str | Path | None = None,
                        device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
                        ) -> dict[str, Any]:
    """Score an exported LLaVA on a dataset split; optionally write metrics + per-image answers."""
    assistant = LlavaAddressAssistant.from_pretrained(export_dir, dtype=dtype, device=device)
    vocab = read_addresses(data_dir)
    df = read_manifest(data_dir, split)
    known = df["sub_street"].isin(set(vocab.sub_street))
    if (~known).any():
        log.warning("%d %s images have a sub-street outside addresses.json: skipped", int((~known).sum()), split)
    df = df[known].reset_index(drop=True)
    if max_samples is not None:
        df = df.head(max_samples)
    if df.empty:
        raise ValueError(f"{data_dir}: no {split} images to evaluate")
    answers: list[str] = []
    for lo in tqdm(range(0, len(df), batch_size), desc=f"LLaVA eval {split}", unit="batch"):
        chunk = df.iloc[lo:lo + batch_size]
        images = [Path(data_dir) / p for p in chunk["image"]]
        answers += assistant.answer_batch(images, [question] * len(chunk), max_new_tokens=max_new_tokens)
    metrics, preds = score_answers(answers, list(df["sub_street"]), list(df["lat"]), list(df["lon"]), vocab)
    result = {"export_dir": str(export_dir), "data_dir": str(data_dir), "split": split, "question": question,
              **metrics}
    if out_json is not None:
        atomic_write_json(out_json, {**result, "answers": [
            {"image": im, "truth": t, "answer": a, "parsed": p}
            for im, t, a, p in zip(df["image"], df["sub_street"], answers, preds)]})
    return result
