"""Candidate re-ranking by fusion (Img2Loc / G3-style verification): AddressCLIP proposes, LLaVA re-scores.

For one photo AddressCLIP gives its top-k sub-streets with probabilities p_clip(c). LLaVA scores each
of them by the teacher-forced log-likelihood of the answer it was trained to give,

    log p_llava(c) = log p("This photo was taken on {c}.</s>" | image, prompt),

the sum of the log-probabilities of the answer-span tokens under the chat template (the
``{% generation %}`` span, i.e. exactly the tokens the stage-2 loss trains), one batched forward
over the k answers. The prompt is the plain question, or the question with the candidates listed
(``grounded``, :func:`data_gen.qa.prompt.grounded_question`). The pick is

    argmax_c  log p_clip(c) + lambda * log p_llava(c)

with lambda chosen on the val split (:func:`fit_lambda`): by default the lambda that maximises the
likelihood of the true address under softmax(fused) over the top-k (smooth in lambda), or the one
with the best val top-1 accuracy (``criterion="accuracy"``; noisier). lambda = 0 is AddressCLIP
itself (the candidates come best first and ties keep that order); with the accuracy criterion the
fused model is therefore never worse than AddressCLIP on val. The test figure is whatever it is.
The fitted lambda is stored beside the export in ``rerank.json`` (one entry per prompt mode),
where ``chat.py`` / ``web.py --rerank`` find it.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from llava_address.common.io import atomic_write_json, read_json
from llava_address.llava.chat_template import answer_prefix, history_to_messages
from llava_address.llava.generate import CONSTRAINED_ANSWER, as_image

__all__ = ["RERANK_FILE", "LAMBDA_GRID", "CRITERIA", "RerankSettings", "RankedCandidate", "answer_logprobs",
           "fused_scores", "accuracy_curve", "nll_curve", "fit_lambda", "rerank", "save_rerank", "load_rerank"]

RERANK_FILE = "rerank.json"
# lambda = 0 first: the fit keeps AddressCLIP unless a larger lambda is strictly better on val
LAMBDA_GRID = (0.0, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
CRITERIA = ("nll", "accuracy")
Candidate = tuple[str, float]


@dataclass
class RankedCandidate:
    address: str
    fused: float        # log p_clip + lambda * log p_llava
    clip_logp: float
    llava_logp: float


@dataclass
class RerankSettings:
    """What chat / web need to re-rank like the evaluation did (one entry of ``rerank.json``)."""

    lam: float
    k: int = 5
    grounded: bool = False
    fit: dict[str, Any] = field(default_factory=dict)   # split, images, val SSA-1 per lambda, ...


@torch.inference_mode()
def answer_logprobs(assistant: Any, images: Sequence[Any], questions: Sequence[str],
                    answers: Sequence[Sequence[str]], batch_size: int = 32) -> list[list[float]]:
    """log p(answer | image, question) for every answer of every image, teacher-forced.

    ``assistant``: a :class:`~llava_address.llava.generate.LlavaAddressAssistant` (``.model``, ``.processor``).
    Why one prompt pass per image: the k answers of an image share their prompt (system, image tokens,
    question, candidate list: ~250 tokens against ~15 per answer), so the prompt runs once with the KV
    cache kept and only the answers run k times (``batch_size`` answers per forward) — about 4x less
    compute than k full rows with a real LM. Each answer is ``answer_prefix`` + text + EOS, i.e. the
    template's ``{% generation %}`` span (the tokens stage 2 trains); the value is the sum of their
    log-probabilities, the first one read from the prompt's last position.
    """
    if not (len(images) == len(questions) == len(answers)):
        raise ValueError(f"{len(images)} images, {len(questions)} questions, {len(answers)} answer lists")
    model, processor = assistant.model, assistant.processor
    tok = processor.tokenizer
    prefix, eos = answer_prefix(processor), tok.eos_token_id
    out: list[list[float]] = []
    for im, q, ans in zip(images, questions, answers):
        pil = as_image(im)
        enc = processor.apply_chat_template([history_to_messages(pil, q, None)], add_generation_prompt=True,
                                            tokenize=True, return_dict=True, return_tensors="pt")
        enc = {k: v.to(model.device) for k, v in enc.items()}
        enc["pixel_values"] = enc["pixel_values"].to(model.dtype)
        first = model(**enc, use_cache=True)
        first_lp = torch.log_softmax(first.logits[0, -1].float(), dim=-1)
        scores: list[float] = []
        for lo in range(0, len(ans), max(batch_size, 1)):
            ids = [tok(prefix + a, add_special_tokens=False)["input_ids"] + [eos] for a in ans[lo:lo + batch_size]]
            n, width = len(ids), max(len(x) for x in ids)
            cache = copy.deepcopy(first.cache)
            cache.batch_repeat_interleave(n)
            rows = torch.tensor([x + [eos] * (width - len(x)) for x in ids], device=model.device)
            real = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=model.device)
            mask = torch.cat([enc["attention_mask"].expand(n, -1), real], dim=1)
            logits = model(input_ids=rows, attention_mask=mask, cache=cache).logits.float()
            lp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, rows[:, 1:, None]).squeeze(-1)
            for i, x in enumerate(ids):
                scores.append(float(first_lp[x[0]] + lp[i, :len(x) - 1].sum()))
        out.append(scores)
    return out


def fused_scores(clip_probs: np.ndarray, llava_logp: np.ndarray, lam: float) -> np.ndarray:
    """(N, k) log p_clip + lam * log p_llava (lam = inf: LLaVA alone)."""
    clip_lp = np.log(np.clip(np.asarray(clip_probs, dtype=float), 1e-30, None))
    llava_logp = np.asarray(llava_logp, dtype=float)
    if math.isinf(lam):
        return llava_logp
    return clip_lp + lam * llava_logp


def accuracy_curve(clip_probs: np.ndarray, llava_logp: np.ndarray, truth_idx: np.ndarray,
                   grid: Sequence[float] = LAMBDA_GRID) -> dict[float, float]:
    """Top-1 accuracy of the fused pick per lambda (``truth_idx`` -1: the truth is not listed)."""
    truth_idx = np.asarray(truth_idx)
    return {float(lam): float(np.mean(fused_scores(clip_probs, llava_logp, lam).argmax(1) == truth_idx))
            for lam in sorted(grid)}


def nll_curve(clip_probs: np.ndarray, llava_logp: np.ndarray, truth_idx: np.ndarray,
              grid: Sequence[float] = LAMBDA_GRID) -> dict[float, float]:
    """Mean -log q(truth) per lambda, q = softmax of the fused scores over the listed candidates.

    Over the images whose truth is listed (the others carry no information about lambda). The
    fused softmax is a product of experts, p_clip * p_llava^lambda renormalised over the top-k,
    so this is its maximum-likelihood fit: smooth in lambda, unlike top-1 accuracy on a few
    hundred images, whose maximum mostly follows noise.
    """
    truth_idx = np.asarray(truth_idx)
    listed = truth_idx >= 0
    if not listed.any():
        return {float(lam): float("nan") for lam in sorted(grid)}
    out = {}
    for lam in sorted(grid):
        f = fused_scores(clip_probs, llava_logp, lam)[listed]
        log_q = f - np.logaddexp.reduce(f, axis=1, keepdims=True)
        out[float(lam)] = float(-log_q[np.arange(len(f)), truth_idx[listed]].mean())
    return out


def fit_lambda(clip_probs: np.ndarray, llava_logp: np.ndarray, truth_idx: np.ndarray,
               grid: Sequence[float] = LAMBDA_GRID, criterion: str = "nll") -> tuple[float, dict[float, float]]:
    """The lambda of ``grid`` that fits best on these images (smallest on ties), and the criterion per lambda.

    ``criterion``: ``nll`` (default; :func:`nll_curve`, minimised) or ``accuracy`` (top-1, maximised).
    ``truth_idx``: (N,) position of the true address in each candidate list, -1 when it is not listed.
    """
    if not len(grid):
        raise ValueError("empty lambda grid")
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    if criterion == "accuracy":
        curve = accuracy_curve(clip_probs, llava_logp, truth_idx, grid)
        best = max(curve.values())
    else:
        curve = nll_curve(clip_probs, llava_logp, truth_idx, grid)
        if all(np.isnan(v) for v in curve.values()):
            return 0.0, curve  # no listed truth: nothing to fit, AddressCLIP stays
        best = min(v for v in curve.values() if not np.isnan(v))
    return next(lam for lam, v in curve.items() if v == best), curve


def rerank(assistant: Any, images: Sequence[Any], questions: Sequence[str],
           candidates: Sequence[Sequence[Candidate]], lam: float, batch_size: int = 32) -> list[list[RankedCandidate]]:
    """Each image's candidates [(address, p_clip)] re-ranked by the fused score, best first."""
    answers = [[CONSTRAINED_ANSWER.format(address=a) for a, _ in c] for c in candidates]
    llava = answer_logprobs(assistant, images, questions, answers, batch_size)
    out = []
    for cands, lps in zip(candidates, llava):
        if not cands:
            raise ValueError("re-ranking needs at least one AddressCLIP candidate per image")
        fused = fused_scores(np.array([[p for _, p in cands]]), np.array([lps]), lam)[0]
        ranked = [RankedCandidate(a, float(f), float(math.log(max(p, 1e-30))), float(lp))
                  for (a, p), f, lp in zip(cands, fused, lps)]
        order = sorted(range(len(ranked)), key=lambda j: -ranked[j].fused)  # stable: AddressCLIP's order on ties
        out.append([ranked[j] for j in order])
    return out


def _mode(grounded: bool) -> str:
    return "grounded" if grounded else "plain"


def save_rerank(export_dir: str | Path, settings: RerankSettings) -> Path:
    """Store ``settings`` in ``<export_dir>/rerank.json`` under its prompt mode (the other mode is kept)."""
    path = Path(export_dir) / RERANK_FILE
    data = read_json(path) if path.is_file() else {}
    data[_mode(settings.grounded)] = asdict(settings)
    atomic_write_json(path, data)
    return path


def load_rerank(export_dir: str | Path, grounded: bool) -> RerankSettings:
    """The fitted settings for this prompt mode; FileNotFoundError says how to fit them."""
    path = Path(export_dir) / RERANK_FILE
    entry = (read_json(path) if path.is_file() else {}).get(_mode(grounded))
    if entry is None:
        raise FileNotFoundError(f"no fitted {_mode(grounded)} re-ranking in {path}: run scripts/eval_llava.py "
                                f"--export {export_dir} --data DATA --clip CLIP --rerank {_mode(grounded)} "
                                "(fits lambda on val), or give --rerank-lambda")
    return RerankSettings(**entry)
