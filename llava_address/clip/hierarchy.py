"""Coarse-to-fine answers: sub-street → street → district.

Why: a wrong fine answer is worse for a user than a right coarse one. The probability of a street
is the sum of its sub-streets' probabilities (they partition it), likewise for a district. The
answer is given at the finest level whose (calibrated) probability clears one threshold, chosen
on the validation split so that the answered images are right at their stated level often
enough. Below the threshold at every level the answer is ``level = "none"`` (the district guess
is still reported, flagged as unsure).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

__all__ = ["LEVELS", "Hierarchy", "LevelAnswers", "answer_levels", "level_metrics", "wilson_lower_bound",
           "choose_threshold", "coverage_ceiling"]

LEVELS = ("sub_street", "street", "district")


@dataclass
class Hierarchy:
    """Index maps from the sub-street candidates to their streets and districts ("" = no district)."""

    sub_street: list[str]
    street: list[str]
    district: list[str]
    street_idx: np.ndarray     # (C,) index into ``street`` per sub-street
    district_idx: np.ndarray   # (C,) index into ``district``; -1 where the sub-street has no district

    @classmethod
    def from_maps(cls, sub_streets: Sequence[str], street_of: Mapping[str, str],
                  district_of: Mapping[str, str]) -> "Hierarchy":
        missing = [s for s in sub_streets if s not in street_of]
        if missing:
            raise ValueError(f"no street known for {len(missing)} sub-streets, e.g. {missing[:3]}")
        subs = list(sub_streets)
        streets = list(dict.fromkeys(street_of[s] for s in subs))
        districts = list(dict.fromkeys(d for s in subs if (d := district_of.get(s, ""))))
        st = {s: i for i, s in enumerate(streets)}
        di = {d: i for i, d in enumerate(districts)}
        return cls(subs, streets, districts, np.array([st[street_of[s]] for s in subs]),
                   np.array([di.get(district_of.get(s, ""), -1) for s in subs]))

    @classmethod
    def from_candidates(cls, info: Mapping) -> "Hierarchy":
        """From a checkpoint's ``candidates.json`` payload."""
        return cls.from_maps(info["sub_street"], info["street"], info.get("district") or {})

    def aggregate(self, probs: np.ndarray) -> dict[str, np.ndarray]:
        """(N, C) sub-street probabilities → per level (N, C_level) probabilities (sums over children)."""
        probs = np.asarray(probs, dtype=np.float64)
        if probs.ndim != 2 or probs.shape[1] != len(self.sub_street):
            raise ValueError(f"probabilities must be (N, {len(self.sub_street)}), got {probs.shape}")
        return {"sub_street": probs, "street": probs @ _onehot(self.street_idx, len(self.street)),
                "district": probs @ _onehot(self.district_idx, len(self.district))}

    def names(self, level: str) -> list[str]:
        return {"sub_street": self.sub_street, "street": self.street, "district": self.district}[level]


def _onehot(idx: np.ndarray, n: int) -> np.ndarray:
    """(C, n) child → parent membership; rows with idx -1 (no parent) stay zero."""
    m = np.zeros((len(idx), n))
    has = idx >= 0
    m[np.flatnonzero(has), idx[has]] = 1.0
    return m


@dataclass
class LevelAnswers:
    """Per image: the best guess and its probability at every level, and the level answered at."""

    best: dict[str, list[str]]          # level -> best name per image ("" when the level is empty)
    confidence: dict[str, np.ndarray]   # level -> its probability
    level: np.ndarray                   # (N,) object: "sub_street" | "street" | "district" | "none"

    def answer(self, i: int) -> tuple[str, str, float]:
        """(level, address, confidence) stated for image i; level "none" reports the coarsest guess."""
        lv = self.level[i]
        shown = lv if lv != "none" else next((x for x in reversed(LEVELS) if self.best[x][i]), "sub_street")
        return lv, self.best[shown][i], float(self.confidence[shown][i])


def answer_levels(hier: Hierarchy, probs: np.ndarray, threshold: float) -> LevelAnswers:
    """Answer at the finest level whose probability is ≥ ``threshold``."""
    agg = hier.aggregate(probs)
    n = len(probs)
    best, conf = {}, {}
    for lv in LEVELS:
        p = agg[lv]
        if p.shape[1] == 0:
            best[lv], conf[lv] = [""] * n, np.zeros(n)
            continue
        j = p.argmax(axis=1)
        names = hier.names(lv)
        best[lv], conf[lv] = [names[k] for k in j], p[np.arange(n), j]
    level = np.full(n, "none", dtype=object)
    for lv in reversed(LEVELS):  # finer levels overwrite coarser ones
        level[(conf[lv] >= threshold) & np.array([bool(b) for b in best[lv]])] = lv
    return LevelAnswers(best, conf, level)


def level_metrics(ans: LevelAnswers, truth: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Accuracy per level (top-1 after aggregation), coverage per answered level, level-aware accuracy.

    ``truth``: level -> true name per image. The level-aware accuracy counts an answered image as
    right when its stated address is right at its stated level; unanswered images are left out.
    """
    n = len(ans.level)
    out: dict[str, float] = {"n_images": float(n)}
    right = {lv: np.array([b == t for b, t in zip(ans.best[lv], truth[lv])]) for lv in LEVELS}
    for lv in LEVELS:
        if any(ans.best[lv]):
            out[f"{lv}_accuracy"] = float(right[lv].mean())
        out[f"coverage_{lv}"] = float(np.mean(ans.level == lv))
    out["coverage_none"] = float(np.mean(ans.level == "none"))
    answered = ans.level != "none"
    ok = np.array([right[lv][i] for i, lv in enumerate(ans.level) if lv != "none"], dtype=bool)
    out["answered"] = float(answered.mean())
    out["level_aware_accuracy"] = float(ok.mean()) if len(ok) else float("nan")
    return out


def wilson_lower_bound(accuracy: float, n: int, z: float) -> float:
    """Lower end of the Wilson score interval for a proportion: how low the accuracy may really be."""
    if n == 0:
        return 0.0
    centre = accuracy + z * z / (2 * n)
    spread = z * np.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n))
    return float((centre - spread) / (1 + z * z / n))


def choose_threshold(hier: Hierarchy, probs: np.ndarray, truth: Mapping[str, Sequence[str]],
                     target: float = 0.9, z: float = 1.645,
                     grid: Sequence[float] | None = None) -> tuple[float, dict[str, float]]:
    """The smallest threshold whose level-aware accuracy on these (val) images is ≥ ``target`` with
    one-sided 95 % confidence (Wilson lower bound, ``z``; 0 uses the point estimate).

    Why a lower bound: val holds a few hundred images, and the accuracy of the few answered at a
    high threshold is noisy; the point estimate picks thresholds that miss the target on new
    images about half the time. Falls back to the best lower bound when none reaches the target.
    Returns (t, metrics at t, with ``level_aware_accuracy_lower_bound``).
    """
    grid = np.round(np.arange(0.05, 0.995, 0.01), 2) if grid is None else np.asarray(grid, dtype=float)
    rows = []
    for t in grid:
        m = level_metrics(answer_levels(hier, probs, t), truth)
        n = int(round(m["answered"] * len(probs)))
        m["level_aware_accuracy_lower_bound"] = wilson_lower_bound(m["level_aware_accuracy"], n, z) if n else 0.0
        rows.append((float(t), m))
    lb = np.array([m["level_aware_accuracy_lower_bound"] for _, m in rows])
    i = int(np.argmax(lb >= target)) if (lb >= target).any() else int(np.argmax(lb))
    return rows[i]


def coverage_ceiling(hier: Hierarchy, probs: np.ndarray, truth: Mapping[str, Sequence[str]],
                     target: float = 0.9) -> dict[str, float]:
    """Per level: the largest share of these images that could be answered at that level alone with
    ≥ ``target`` right, answering the most confident first (an oracle cut chosen on these very images).

    Why: it tells a weak model from a defect in the threshold rule. When even this ceiling is a few
    percent, no threshold can answer more photos at the target accuracy; the model must improve.
    """
    agg = hier.aggregate(probs)
    out = {}
    for lv in LEVELS:
        p = agg[lv]
        if p.shape[1] == 0:
            out[f"coverage_ceiling_{lv}"] = 0.0
            continue
        j = p.argmax(axis=1)
        names = hier.names(lv)
        right = np.array([names[k] == t for k, t in zip(j, truth[lv])])
        order = np.argsort(-p[np.arange(len(p)), j], kind="stable")
        precision = np.cumsum(right[order]) / np.arange(1, len(order) + 1)
        ok = np.flatnonzero(precision >= target)
        out[f"coverage_ceiling_{lv}"] = float((ok.max() + 1) / len(p)) if len(ok) else 0.0
    return out
