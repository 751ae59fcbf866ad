"""Checks that records are LLaVA conversation JSON the trainer can consume without surprises."""

from __future__ import annotations

from typing import Any, Iterable

from data_gen.contract import SPLITS
from data_gen.qa.templates import IMAGE_TOKEN

__all__ = ["validate_llava_records"]


def _check_record(i: int, rec: Any, seen: set[str]) -> list[str]:
    if not isinstance(rec, dict):
        return [f"record {i}: not an object"]
    rid = rec.get("id")
    where = f"record {i} ({rid!r})"
    errs: list[str] = []
    if not isinstance(rid, str) or not rid:
        errs.append(f"{where}: 'id' must be a non-empty string")
    elif rid in seen:
        errs.append(f"{where}: duplicate id")
    else:
        seen.add(rid)
    if not isinstance(rec.get("image"), str) or not rec["image"].strip():
        errs.append(f"{where}: 'image' must be a non-empty relative path")
    if "split" in rec and rec["split"] not in SPLITS:
        errs.append(f"{where}: split {rec['split']!r} not in {SPLITS}")
    conv = rec.get("conversations")
    if not isinstance(conv, list) or not conv:
        return errs + [f"{where}: 'conversations' must be a non-empty list"]
    if len(conv) % 2:
        errs.append(f"{where}: odd number of turns ({len(conv)}); every human turn needs a gpt reply")
    n_image = 0
    for t, turn in enumerate(conv):
        want = "human" if t % 2 == 0 else "gpt"
        if not isinstance(turn, dict):
            errs.append(f"{where} turn {t}: not an object")
            continue
        if turn.get("from") != want:
            errs.append(f"{where} turn {t}: from={turn.get('from')!r}, expected {want!r}")
        val = turn.get("value")
        if not isinstance(val, str) or not val.strip():
            errs.append(f"{where} turn {t}: 'value' must be a non-empty string")
            continue
        n_image += val.count(IMAGE_TOKEN)
    first = conv[0].get("value") if isinstance(conv[0], dict) else None
    if not (isinstance(first, str) and first.startswith(IMAGE_TOKEN + "\n")):
        errs.append(f"{where}: first human turn must start with {IMAGE_TOKEN!r} + newline")
    if n_image != 1:
        errs.append(f"{where}: {n_image} {IMAGE_TOKEN} tokens, expected exactly 1")
    types = rec.get("turn_types")
    if types is not None and len(types) != len(conv) // 2:
        errs.append(f"{where}: {len(types)} turn_types for {len(conv) // 2} exchanges")
    return errs


def validate_llava_records(records: Iterable[Any]) -> list[str]:
    """Every problem found, one message each naming the record and turn; [] means valid."""
    errs: list[str] = []
    seen: set[str] = set()
    n = -1
    for n, rec in enumerate(records):
        errs += _check_record(n, rec, seen)
    if n < 0:
        errs.append("no records")
    return errs
