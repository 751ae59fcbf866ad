"""The one candidate-grounded prompt (retrieval-augmented, as Img2Loc / G3): question + AddressCLIP's top-k.

Training data (:mod:`data_gen.qa.generator`), ``chat.py``, ``web.py`` and ``eval_llava.py`` all
build the user turn with :func:`grounded_question`, so the model sees at inference exactly the
layout it was trained on::

    Where was this photo taken?
    AddressCLIP candidates (most likely first):
    1. Main St between 1st Ave and 2nd Ave (0.41)
    2. ...

Candidates are listed best first (a tiny LM can learn "position 1" far more easily than to
compare printed numbers); the score is the AddressCLIP probability over all candidates.

Training candidate lists (:class:`CandidateSimulator`): AddressCLIP's own top-k on its *training*
images would be over-confident (the true address ranks first almost always), so a model
trained on them learns "copy line 1" and can never beat AddressCLIP. The simulator instead
draws lists whose statistics match AddressCLIP on *held-out* images: the confusable
alternatives are the geographic neighbours (AddressCLIP's errors are mostly nearby blocks),
scores come from noisy logits, and the true address ranks first / appears at all about as
often as AddressCLIP gets SSA-1 / SSA-k right on unseen images (rates reported in
qa.stats.json). When the true address is not in the list the answer says so and still names
the place, so the model learns both to pick and to say that none fits.
"""

from __future__ import annotations

import math
import random
from typing import Sequence

__all__ = ["CANDIDATE_HEADER", "NONE_FITS", "grounded_question", "CandidateSimulator", "Candidate"]

Candidate = tuple[str, float]
CANDIDATE_HEADER = "AddressCLIP candidates (most likely first):"
NONE_FITS = "None of the candidates fits."


def grounded_question(question: str, candidates: Sequence[Candidate]) -> str:
    """The user turn with the candidate block appended (no candidates: the question unchanged)."""
    question = question.strip()
    if not candidates:
        return question
    lines = [f"{i}. {addr} ({score:.2f})" for i, (addr, score) in enumerate(candidates, 1)]
    return "\n".join([question, CANDIDATE_HEADER, *lines])


class CandidateSimulator:
    """Top-k lists that look like AddressCLIP's on unseen images: true address + noisy geographic neighbours.

    Logits: true address ``true_logit + noise * N(0, 1)``; the i-th nearest neighbour at d metres
    ``noise * N(0, 1) - d / distance_scale_m``. The top ``k`` of the pool by logit are listed, with
    softmax(logits) over the pool as scores (rounded as printed).
    """

    def __init__(self, k: int = 5, pool: int = 12, true_logit: float = 0.5, noise: float = 1.0,
                 distance_scale_m: float = 1000.0) -> None:
        if k < 1 or pool < k:
            raise ValueError(f"need 1 <= k <= pool, got k={k}, pool={pool}")
        self.k, self.pool, self.true_logit, self.noise = k, pool, true_logit, noise
        self.distance_scale_m = distance_scale_m

    def draw(self, truth: str, neighbours: Sequence[tuple[str, float]], rng: random.Random) -> list[Candidate]:
        """``neighbours``: [(address, metres)] nearest first (truth excluded); returns [(address, score)] best first."""
        pool = [(truth, self.true_logit + self.noise * rng.gauss(0.0, 1.0))]
        pool += [(n, self.noise * rng.gauss(0.0, 1.0) - d / self.distance_scale_m)
                 for n, d in list(neighbours)[:self.pool - 1]]
        top = max(v for _, v in pool)
        z = sum(math.exp(v - top) for _, v in pool)
        ranked = sorted(pool, key=lambda t: -t[1])[:self.k]
        return [(a, round(math.exp(v - top) / z, 2)) for a, v in ranked]
