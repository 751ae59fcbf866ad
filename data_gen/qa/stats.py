"""Summary numbers for a QA / alignment file, overall and per split (written as qa.stats.json)."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from typing import Any, Iterable

from data_gen.qa.prompt import NONE_FITS

__all__ = ["compute_qa_stats"]


def _summary(records: list[dict]) -> dict[str, Any]:
    turns = Counter(len(r["conversations"]) // 2 for r in records)
    types: Counter[str] = Counter()
    yes_no: Counter[str] = Counter()
    words: list[int] = []
    grounded: Counter[str] = Counter()
    for r in records:
        kinds = r.get("turn_types") or ["unknown"] * (len(r["conversations"]) // 2)
        types.update(kinds)
        answers = [t["value"] for t in r["conversations"] if t["from"] == "gpt"]
        words += [len(a.split()) for a in answers]
        questions = [t["value"] for t in r["conversations"] if t["from"] == "human"]
        for kind, q, ans in zip(kinds, questions, answers):
            if kind == "yes_no":
                yes_no["yes" if ans.lower().startswith("yes") else "no"] += 1
            elif kind == "grounded":
                grounded["turns"] += 1
                grounded["listed"] += not ans.startswith(NONE_FITS)
                first = re.search(r"^1\. (.*) \([0-9.]+\)$", q, flags=re.M)
                grounded["first"] += bool(first) and first.group(1) in ans and not ans.startswith(NONE_FITS)
    return {
        "dialogues": len(records),
        "turns_total": sum(k * v for k, v in turns.items()),
        "turns_per_dialogue": {str(k): turns[k] for k in sorted(turns)},
        "turn_types": dict(sorted(types.items())),
        "yes_no": {"yes": yes_no["yes"], "no": yes_no["no"]},
        # how often the simulated candidate list holds the truth / ranks it first (compare AddressCLIP SSA-k / SSA-1)
        "grounded": {"turns": grounded["turns"],
                     "truth_listed_rate": round(grounded["listed"] / grounded["turns"], 4) if grounded["turns"] else None,
                     "truth_first_rate": round(grounded["first"] / grounded["turns"], 4) if grounded["turns"] else None},
        "answer_words": {"mean": round(statistics.fmean(words), 2) if words else 0.0,
                         "median": float(statistics.median(words)) if words else 0.0,
                         "max": max(words, default=0)},
    }


def compute_qa_stats(records: Iterable[dict]) -> dict[str, dict[str, Any]]:
    """{"all": summary, "<split>": summary, ...}; turn types come from each record's 'turn_types'."""
    records = list(records)
    out = {"all": _summary(records)}
    for split in sorted({r.get("split", "") for r in records} - {""}):
        out[split] = _summary([r for r in records if r.get("split") == split])
    return out
