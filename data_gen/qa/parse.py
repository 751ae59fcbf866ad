"""Map a generated answer back to one sub-street candidate, so chat output is scored like retrieval.

Order of attempts (first hit wins):
1. exact mention of a sub-street candidate (case-insensitive, on word boundaries); when one
   mention lies inside a longer one ("Main St" inside "Main St between 1st Ave and 2nd Ave")
   the longest wins, and among separate mentions the earliest in the text wins;
2. fuzzy: the candidate most similar (difflib ratio >= ``cutoff``) to some word window of the
   text about as long as the candidate — catches "2nd Av" for "2nd Ave";
3. a street named exactly -> that street's first sub-street in ``candidates`` order (so SA-k
   can credit it even though the block is unknown);
4. otherwise None.

:func:`parse_answer` returns the same choice together with *how* it was reached (``kind``:
"exact", "fuzzy", "street", "none"), so a scorer can credit a street-only answer at street
level without pretending it named the block.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

__all__ = ["ParsedAnswer", "parse_answer", "parse_answer_to_candidate"]

ANSWER_KINDS = ("exact", "fuzzy", "street", "none")


def _norm(s: str) -> str:
    """Lower-case, drop sentence punctuation ("St." == "St"), collapse whitespace."""
    return " ".join(re.sub(r"[.,;:!?]+(?=\s|$)", " ", s.lower()).split())


_ALPHABET = {c: i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz0123456789 ")}


def _char_counts(strings: Sequence[str]) -> np.ndarray:
    """Character histograms (37 letter/digit/space bins + 1 for the rest) for an upper bound on difflib."""
    out = np.zeros((len(strings), len(_ALPHABET) + 1), dtype=np.int32)
    for r, s in enumerate(strings):
        for ch in s:
            out[r, _ALPHABET.get(ch, len(_ALPHABET))] += 1
    return out


@dataclass(frozen=True)
class _Table:
    """Normalised candidates, computed once per candidate list (evals reuse the same list)."""

    names: tuple[str, ...]
    keys: tuple[str, ...]
    by_length: tuple[int, ...]        # indices, longest key first
    counts: np.ndarray


@functools.lru_cache(maxsize=8)
def _table(names: tuple[str, ...]) -> _Table:
    keys = tuple(_norm(n) for n in names)
    order = tuple(sorted(range(len(names)), key=lambda i: (-len(keys[i]), keys[i])))
    return _Table(names, keys, order, _char_counts(keys))


def _mentions(text: str, table: _Table) -> list[tuple[int, int, str]]:
    """(start, end, name) of every word-bounded mention, longer names claiming spans first."""
    claimed: list[tuple[int, int, str]] = []
    for i in table.by_length:
        key = table.keys[i]
        if not key or key not in text:
            continue
        for m in re.finditer(rf"(?<!\w){re.escape(key)}(?!\w)", text):
            if not any(m.start() < e and s < m.end() for s, e, _ in claimed):
                claimed.append((m.start(), m.end(), table.names[i]))
    return sorted(claimed)


def _fuzzy(text: str, table: _Table, cutoff: float) -> str | None:
    """Best difflib ratio between a candidate and a text window of about its word count."""
    words = text.split()
    widths = sorted({len(k.split()) + d for k in table.keys for d in (-1, 0, 1)} - {0})
    windows = sorted({" ".join(words[i:i + w]) for w in widths for i in range(max(1, len(words) - w + 1))})
    if not windows or not table.keys:
        return None
    # 2 * |common chars| / (|a| + |b|) bounds difflib's ratio from above: skip hopeless pairs cheaply.
    wc = _char_counts(windows)
    wlen = wc.sum(1)
    best: tuple[float, int] | None = None       # (score, -candidate index): ties go to the earlier one
    for lo in range(0, len(table.keys), 2048):  # chunks keep the (C, W, bins) array small
        cc = table.counts[lo:lo + 2048]
        common = np.minimum(cc[:, None, :], wc[None, :, :]).sum(-1)
        bound = 2.0 * common / np.maximum(cc.sum(1)[:, None] + wlen[None, :], 1)
        for c, w in zip(*np.nonzero(bound >= cutoff)):
            if best is not None and bound[c, w] < best[0]:
                continue
            score = difflib.SequenceMatcher(None, windows[w], table.keys[lo + c], autojunk=False).ratio()
            if score >= cutoff and (best is None or (score, -(lo + c)) > best):
                best = (score, -(lo + int(c)))
    return None if best is None else table.names[-best[1]]


@dataclass(frozen=True)
class ParsedAnswer:
    """What an answer names: ``sub_street`` for "exact"/"fuzzy", ``street`` for every kind but "none"."""

    kind: str                     # one of ANSWER_KINDS
    sub_street: str | None = None
    street: str | None = None


def parse_answer(text: str, candidates: Sequence[str],
                 street_of: Callable[[str], str] | Mapping[str, str] | None = None,
                 cutoff: float = 0.85) -> ParsedAnswer:
    """Which candidate (or only which street) ``text`` names, and how (see module doc for rules)."""
    if not text or not candidates:
        return ParsedAnswer("none")
    lookup = None if street_of is None else (street_of.get if isinstance(street_of, Mapping) else street_of)

    def street(cand: str) -> str | None:
        try:
            return lookup(cand) if lookup else None
        except KeyError:
            return None

    norm = _norm(text)
    table = _table(tuple(candidates))
    hits = _mentions(norm, table)
    if hits:
        return ParsedAnswer("exact", hits[0][2], street(hits[0][2]))
    fuzzy = _fuzzy(norm, table, cutoff)
    if fuzzy is not None:
        return ParsedAnswer("fuzzy", fuzzy, street(fuzzy))
    if lookup is None:
        return ParsedAnswer("none")
    first_of: dict[str, str] = {}
    for cand in candidates:
        st = street(cand)
        if st:
            first_of.setdefault(st, cand)
    hits = _mentions(norm, _table(tuple(first_of)))
    return ParsedAnswer("street", None, hits[0][2]) if hits else ParsedAnswer("none")


def parse_answer_to_candidate(text: str, candidates: Sequence[str],
                              street_of: Callable[[str], str] | Mapping[str, str] | None = None,
                              cutoff: float = 0.85) -> str | None:
    """The sub-street in ``candidates`` that ``text`` names, or None (see module doc for rules).

    A street-only answer maps to that street's first sub-street (for a map pin); scorers should
    use :func:`parse_answer`, which tells the two apart.
    """
    parsed = parse_answer(text, candidates, street_of, cutoff)
    if parsed.kind != "street":
        return parsed.sub_street
    lookup = street_of.get if isinstance(street_of, Mapping) else street_of
    for cand in candidates:
        try:
            if lookup(cand) == parsed.street:
                return cand
        except KeyError:
            continue
    return None
