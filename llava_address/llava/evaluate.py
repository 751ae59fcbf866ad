"""Generative evaluation: ask each test image "Where was this photo taken?", parse the answer back
and score it like AddressCLIP (SSA-1 / SA-1 / distance), in plain or candidate-grounded mode.

Honest scoring (:func:`score_answers`): an answer scores for SSA-1 only when it names the true
sub-street itself (verbatim or a near spelling); an answer that names only a street scores for
SA-1 (its street), never SSA-1. Reported besides: ``valid_address_rate`` (the answer names a
real sub-street verbatim), ``street_only_rate`` and ``unparsed_rate``. Distance errors are over
answers that name a sub-street (``full_address_rate`` of them).

Modes: ``candidates_k > 0`` puts AddressCLIP's top-k (from ``clip_dir``) into the question with
the shared prompt builder (:func:`data_gen.qa.prompt.grounded_question`) and also reports
AddressCLIP's own SSA-1 on the same images; ``constrained`` limits the answer's address to the
listed candidates (plain mode: to every sub-street) via :mod:`llava_address.llava.generate`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from data_gen.contract import AddressVocabulary, read_addresses, read_manifest
from data_gen.qa.parse import ParsedAnswer, parse_answer
from data_gen.qa.prompt import grounded_question
from llava_address.clip.metrics import haversine_m
from llava_address.common.io import atomic_write_json

__all__ = ["DEFAULT_QUESTION", "evaluate_generative", "evaluate_rerank", "score_answers", "seed_table",
           "verify_with_candidates"]

log = logging.getLogger(__name__)
DEFAULT_QUESTION = "Where was this photo taken?"


def score_answers(answers: Sequence[str], truths: Sequence[str], vocab: AddressVocabulary,
                  lat: Sequence[float] | None = None, lon: Sequence[float] | None = None
                  ) -> tuple[dict[str, float], list[ParsedAnswer]]:
    """Parse ``answers`` against the sub-street vocabulary and score them against ``truths``.

    Returns (metrics, parsed answers). SSA-1 needs the sub-street named; SA-1 credits the street
    of a named sub-street or a street-only answer; distances (only with ``lat``/``lon``) are over
    answers that name a sub-street.
    """
    if len(answers) != len(truths):
        raise ValueError(f"{len(answers)} answers for {len(truths)} truths")
    if not truths:
        raise ValueError("no answers to score")
    cands = list(vocab.sub_street)
    street_of = {c: vocab.street_of(c) for c in cands}
    unknown = sorted(set(truths) - set(street_of))
    if unknown:
        raise ValueError(f"{len(unknown)} true addresses are not in the vocabulary, e.g. {unknown[:3]}")
    parsed = [parse_answer(a, cands, street_of) for a in answers]
    n = len(parsed)
    full = [p.kind in ("exact", "fuzzy") for p in parsed]
    metrics: dict[str, float] = {
        "n_images": float(n),
        "SSA-1": sum(f and p.sub_street == t for f, p, t in zip(full, parsed, truths)) / n,
        "SA-1": sum(p.street is not None and p.street == street_of[t] for p, t in zip(parsed, truths)) / n,
        "valid_address_rate": sum(p.kind == "exact" for p in parsed) / n,
        "full_address_rate": sum(full) / n,
        "street_only_rate": sum(p.kind == "street" for p in parsed) / n,
        "unparsed_rate": sum(p.kind == "none" for p in parsed) / n,
    }
    metrics["mean_error_m"] = metrics["median_error_m"] = float("nan")
    ok = [i for i, f in enumerate(full) if f]
    if lat is not None and lon is not None and ok:
        mid = np.array([vocab.midpoint(parsed[i].sub_street) for i in ok], dtype=float)
        err = haversine_m(mid[:, 0], mid[:, 1], np.asarray(lat, float)[ok], np.asarray(lon, float)[ok])
        metrics["mean_error_m"], metrics["median_error_m"] = float(err.mean()), float(np.median(err))
    return metrics, parsed


VERIFY_RATIO = 0.5


def verify_with_candidates(parsed: Sequence[ParsedAnswer], candidates: Sequence[Sequence[tuple[str, float]]],
                           ratio: float = VERIFY_RATIO) -> list[str | None]:
    """Re-score each generated address with AddressCLIP: keep it if it is a listed candidate whose score is at
    least ``ratio`` x the top candidate's, else fall back to AddressCLIP's top-1 (the optional verification step).

    ``ratio`` is fixed a priori (0.5), not tuned on test images.
    """
    out: list[str | None] = []
    for p, cands in zip(parsed, candidates):
        scores = dict(cands)
        top = cands[0] if cands else (None, 0.0)
        ok = p.sub_street is not None and p.sub_street in scores and scores[p.sub_street] >= ratio * top[1]
        out.append(p.sub_street if ok else top[0])
    return out


def _split_images(data_dir: str | Path, split: str, vocab: AddressVocabulary, max_samples: int | None):
    """(manifest rows of ``split`` whose sub-street is a candidate, their image paths)."""
    df = read_manifest(data_dir, split)
    known = df["sub_street"].isin(set(vocab.sub_street))
    if (~known).any():
        log.warning("%d %s images have a sub-street outside addresses.json: skipped", int((~known).sum()), split)
    df = df[known].reset_index(drop=True)
    if max_samples is not None and max_samples < len(df):  # evenly spread: the manifest is ordered by street
        df = df.iloc[np.unique(np.linspace(0, len(df) - 1, max_samples).round().astype(int))].reset_index(drop=True)
    if df.empty:
        raise ValueError(f"{data_dir}: no {split} images to evaluate")
    return df, [Path(data_dir) / p for p in df["image"]]


def _locator(clip_dir: str | Path, device: str | torch.device | None, search: str = "auto"):
    from llava_address.clip.locator import AddressLocator

    return AddressLocator.from_pretrained(clip_dir, device=str(device) if device else "cpu", search=search)


def _clip_candidates(locator: Any, images: Sequence[Path], vocab: AddressVocabulary,
                     k: int) -> list[list[tuple[str, float]]]:
    """AddressCLIP's top-k sub-streets per image with their probabilities over every sub-street."""
    return [[(str(a), float(s)) for a, s in c]
            for c in locator.locate(list(images), candidates=list(vocab.sub_street), k=k)]


def evaluate_generative(export_dir: str | Path, data_dir: str | Path, split: str = "test",
                        question: str = DEFAULT_QUESTION, batch_size: int = 16, max_samples: int | None = None,
                        max_new_tokens: int = 48, out_json: str | Path | None = None, candidates_k: int = 0,
                        clip_dir: str | Path | None = None, constrained: bool = False,
                        device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
                        clip_search: str = "auto") -> dict[str, Any]:
    """Score an exported LLaVA on a dataset split; optionally write metrics + per-image answers.

    ``clip_search``: the AddressLocator's top-k search ("auto", "exact", "fast"; see ``clip/topk.py``)."""
    from llava_address.llava.generate import LlavaAddressAssistant

    if candidates_k > 0 and clip_dir is None:
        raise ValueError("candidate-grounded evaluation (candidates_k > 0) needs clip_dir (the AddressCLIP model)")
    assistant = LlavaAddressAssistant.from_pretrained(export_dir, dtype=dtype, device=device)
    vocab = read_addresses(data_dir)
    df, images = _split_images(data_dir, split, vocab, max_samples)
    cands: list[list[tuple[str, float]]] = [[] for _ in images]
    if candidates_k > 0:
        cands = _clip_candidates(_locator(clip_dir, device, clip_search), images, vocab, candidates_k)
    answers: list[str] = []
    for lo in tqdm(range(0, len(df), batch_size), desc=f"LLaVA eval {split}", unit="batch"):
        chunk = slice(lo, lo + batch_size)
        qs = [grounded_question(question, c) for c in cands[chunk]]
        allowed = None
        if constrained:
            allowed = [[a for a, _ in c] or list(vocab.sub_street) for c in cands[chunk]]
        answers += assistant.answer_batch(images[chunk], qs, max_new_tokens=max_new_tokens, allowed_addresses=allowed)
    truths = list(df["sub_street"])
    metrics, parsed = score_answers(answers, truths, vocab, list(df["lat"]), list(df["lon"]))
    if candidates_k > 0:  # AddressCLIP on the very same images, for the ratio the goals ask about
        metrics["clip_SSA-1"] = float(np.mean([bool(c) and c[0][0] == t for c, t in zip(cands, truths)]))
        verified = verify_with_candidates(parsed, cands)
        metrics["verified_SSA-1"] = float(np.mean([v == t for v, t in zip(verified, truths)]))
        metrics["verified_SA-1"] = float(np.mean([v is not None and vocab.street_of(v) == vocab.street_of(t)
                                                  for v, t in zip(verified, truths)]))
        metrics[f"clip_SSA-{candidates_k}"] = float(np.mean([t in {a for a, _ in c} for c, t in zip(cands, truths)]))
    result = {"export_dir": str(export_dir), "data_dir": str(data_dir), "split": split, "question": question,
              "candidates_k": candidates_k, "constrained": constrained, **metrics}
    if out_json is not None:
        atomic_write_json(out_json, {**result, "answers": [
            {"image": im, "truth": t, "answer": a, "parsed": p.sub_street, "parsed_street": p.street, "kind": p.kind,
             **({"candidates": c} if c else {})}
            for im, t, a, p, c in zip(df["image"], truths, answers, parsed, cands)]})
    return result


def evaluate_rerank(export_dir: str | Path, data_dir: str | Path, clip_dir: str | Path, grounded: bool = False,
                    candidates_k: int = 5, split: str = "test", fit_split: str = "val", lam: float | None = None,
                    question: str = DEFAULT_QUESTION, batch_size: int = 16, max_samples: int | None = None,
                    out_json: str | Path | None = None, save: bool = True, criterion: str = "nll",
                    device: str | torch.device | None = None, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """Fusion re-ranking of AddressCLIP's top-k (:mod:`llava_address.llava.rerank`), scored like the other modes.

    lambda is fitted on ``fit_split`` by ``criterion`` (:func:`~llava_address.llava.rerank.fit_lambda`;
    unless ``lam`` is given) and stored in the export's
    ``rerank.json`` (``save``); the answer is the constrained sentence naming the fused top-1.
    Also reported: AddressCLIP's own SSA-1 and SSA-k on the same images and LLaVA's likelihood
    alone (lambda = inf); the out JSON holds the accuracy per lambda on both splits (the test curve
    is for reading only: lambda comes from ``fit_split``).
    """
    from llava_address.llava import rerank as rr
    from llava_address.llava.generate import CONSTRAINED_ANSWER, LlavaAddressAssistant

    if candidates_k < 1:
        raise ValueError(f"re-ranking needs AddressCLIP candidates: candidates_k must be >= 1, got {candidates_k}")
    assistant = LlavaAddressAssistant.from_pretrained(export_dir, dtype=dtype, device=device)
    locator, vocab = _locator(clip_dir, device), read_addresses(data_dir)

    def scored(sp: str):
        df, images = _split_images(data_dir, sp, vocab, max_samples)
        cands = _clip_candidates(locator, images, vocab, candidates_k)
        qs = [grounded_question(question, c) if grounded else question for c in cands]
        llava: list[list[float]] = []
        for lo in tqdm(range(0, len(images), batch_size), desc=f"LLaVA re-rank {sp}", unit="batch"):
            part = slice(lo, lo + batch_size)
            answers = [[CONSTRAINED_ANSWER.format(address=a) for a, _ in c] for c in cands[part]]
            llava += rr.answer_logprobs(assistant, images[part], qs[part], answers,
                                        batch_size=batch_size * candidates_k)
        truth = np.array([next((j for j, (a, _) in enumerate(c) if a == t), -1)
                          for c, t in zip(cands, df["sub_street"])])
        return df, cands, np.array([[p for _, p in c] for c in cands]), np.array(llava), truth

    fit: dict[str, Any] = {"split": None}
    fit_rows: list[dict[str, Any]] = []
    if lam is None:
        fdf, fcands, probs, llava, truth = scored(fit_split)
        lam, curve = rr.fit_lambda(probs, llava, truth, criterion=criterion)
        fit_rows = _candidate_rows(fdf, fcands, llava)
        acc = rr.accuracy_curve(probs, llava, truth)
        fit = {"split": fit_split, "n_images": int(len(truth)), "criterion": criterion, "SSA-1": acc[lam],
               "clip_SSA-1": acc[0.0], "llava_only_SSA-1": float(np.mean(llava.argmax(1) == truth)),
               "lambda_curve": acc,   # NaN (no listed truth) -> None: strict JSON
               "nll_curve": {k: None if np.isnan(v) else v for k, v in rr.nll_curve(probs, llava, truth).items()}}
        if save:
            rr.save_rerank(export_dir, rr.RerankSettings(lam, candidates_k, grounded, fit))
    df, cands, probs, llava, truth = scored(split)
    pick = rr.fused_scores(probs, llava, lam).argmax(1)
    answers = [CONSTRAINED_ANSWER.format(address=c[j][0]) for c, j in zip(cands, pick)]
    truths = list(df["sub_street"])
    metrics, parsed = score_answers(answers, truths, vocab, list(df["lat"]), list(df["lon"]))
    metrics.update({"lambda": float(lam), "clip_SSA-1": float(np.mean(truth == 0)),
                    f"clip_SSA-{candidates_k}": float(np.mean(truth >= 0)),
                    "llava_only_SSA-1": float(np.mean(llava.argmax(1) == truth))})
    if fit["split"]:
        metrics.update({"fit_SSA-1": fit["SSA-1"], "fit_clip_SSA-1": fit["clip_SSA-1"]})
    result = {"export_dir": str(export_dir), "data_dir": str(data_dir), "split": split, "question": question,
              "candidates_k": candidates_k, "grounded": grounded, "rerank": True, **metrics}
    if out_json is not None:
        test_curve = rr.accuracy_curve(probs, llava, truth)
        rows = _candidate_rows(df, cands, llava)
        for row, a, p in zip(rows, answers, parsed):
            row.update({"answer": a, "parsed": p.sub_street, "kind": p.kind})
        atomic_write_json(out_json, {**result, "fit": fit, "test_lambda_curve": test_curve, "answers": rows,
                                     "fit_answers": fit_rows})
    return result


def _candidate_rows(df: Any, cands: Sequence[Sequence[tuple[str, float]]], llava: np.ndarray) -> list[dict[str, Any]]:
    """Per image: truth and [address, p_clip, log p_llava] per candidate (re-fits need nothing else)."""
    return [{"image": im, "truth": t, "candidates": [[a, p, lp] for (a, p), lp in zip(c, lps)]}
            for im, t, c, lps in zip(df["image"], df["sub_street"], cands, llava.tolist())]


SEED_ROWS = (("AddressCLIP (all test images)", "clip_eval", "SSA-1"),
             ("AddressCLIP (the LLaVA-evaluated images)", "llava_eval", "grounded_clip_SSA-1"),
             ("LLaVA plain", "llava_eval", "SSA-1"),
             ("LLaVA plain, constrained", "llava_eval", "plain_constrained_SSA-1"),
             ("LLaVA grounded (top-5 in prompt)", "llava_eval", "grounded_SSA-1"),
             ("LLaVA grounded, constrained", "llava_eval", "grounded_constrained_SSA-1"),
             ("LLaVA grounded + AddressCLIP verification", "llava_eval", "grounded_verified_SSA-1"),
             ("AddressCLIP top-5 re-ranked by fusion, plain prompt", "llava_eval", "rerank_SSA-1"),
             ("AddressCLIP top-5 re-ranked by fusion, candidates in prompt", "llava_eval", "grounded_rerank_SSA-1"))
GOAL_RATIOS = (1.0, 1.05)  # grounded LLaVA SSA-1 vs AddressCLIP's on the same images, on every seed (must, stretch)
# (row name, metric, its baseline metric) of the conversation evaluation (llava_address.llava.eval_conversation)
CONVERSATION_ROWS = (("time of day right vs caption", "conv_time_of_day_accuracy", "conv_time_of_day_majority_rate"),
                     ("weather right vs caption", "conv_weather_accuracy", "conv_weather_majority_rate"),
                     ("general questions: tuned right among base right", "general_retention", None))


def _llava_eval_metrics(demo_out: Path) -> dict[str, float]:
    """The demo's llava_eval marker, else its per-mode files (<out>/llava_eval/eval_test_<mode>.json)."""
    from llava_address.common.io import read_json

    marker = demo_out / "stages" / "llava_eval.json"
    if marker.is_file():
        return read_json(marker)["metrics"]
    out: dict[str, float] = {}
    for mode in ("plain", "plain_constrained", "grounded", "grounded_constrained", "rerank", "grounded_rerank"):
        path = demo_out / "llava_eval" / f"eval_test_{mode}.json"
        if path.is_file():
            pre = "" if mode == "plain" else f"{mode}_"
            out.update({pre + k: v for k, v in read_json(path).items() if isinstance(v, (int, float))})
    if not out:
        raise FileNotFoundError(f"{demo_out}: no LLaVA eval results (stages/llava_eval.json or llava_eval/*.json)")
    return out


def seed_table(demo_outs: Sequence[str | Path]) -> str:
    """Markdown table (mean ± std over demo runs, one per seed) of SSA-1 / SA-1 / valid-address rate per mode."""
    from llava_address.common.io import read_json

    runs = [{"clip_eval": read_json(Path(d) / "stages" / "clip_eval.json")["metrics"],
             "llava_eval": _llava_eval_metrics(Path(d))} for d in demo_outs]

    def cell(stage: str, key: str) -> str:
        vals = np.array([r[stage].get(key, np.nan) for r in runs], dtype=float) * 100
        if np.isnan(vals).all():
            return "–"
        return f"{np.nanmean(vals):.1f} ± {np.nanstd(vals, ddof=1) if len(vals) > 1 else 0.0:.1f}"

    lines = [f"| model ({len(runs)} seeds, mean ± std, %) | SSA-1 | SA-1 | valid address | street only | unparsed |",
             "|---|---|---|---|---|---|"]
    for name, stage, key in SEED_ROWS:
        pre = key[: -len("SSA-1")]
        extra = ["–"] * 3 if stage == "clip_eval" else [cell(stage, pre + k) for k in
                                                         ("valid_address_rate", "street_only_rate", "unparsed_rate")]
        lines.append(f"| {name} | {cell(stage, key)} | {cell(stage, pre + 'SA-1')} | " + " | ".join(extra) + " |")
    lines += ["", _per_seed_table(runs, [Path(d).name for d in demo_outs])]
    if any("general_retention" in r["llava_eval"] or "conv_time_of_day_accuracy" in r["llava_eval"] for r in runs):
        lines += ["", "| conversation (%, mean ± std) | LLaVA | baseline |", "|---|---|---|"]
        for name, key, base in CONVERSATION_ROWS:
            lines.append(f"| {name} | {cell('llava_eval', key)} | "
                         + (f"majority class {cell('llava_eval', base)}" if base else "base LM = 100") + " |")
        br = [r["llava_eval"].get("general_base_right", np.nan) for r in runs]
        tr = [r["llava_eval"].get("general_tuned_right", np.nan) for r in runs]
        aps = [r["llava_eval"].get("conv_time_of_day_answers_per_s", np.nan) for r in runs]
        lines.append("\ngeneral questions right, base -> tuned per seed: "
                     + ", ".join(f"{b:.0f} -> {t:.0f}" for b, t in zip(br, tr))
                     + f" (of {runs[0]['llava_eval'].get('general_questions', float('nan')):.0f}); "
                     + "answers/s (time-of-day questions, batch 16): " + ", ".join(f"{a:.2f}" for a in aps))
    return "\n".join(lines)


def _per_seed_table(runs: Sequence[dict[str, dict[str, float]]], names: Sequence[str]) -> str:
    """SSA-1 (%) per run and mode (lambda beside re-ranked rows; ratio to AddressCLIP on the same images), and
    whether a mode reaches each goal ratio on every run."""
    goals = " | ".join(f">= {g:g} x on every run" for g in GOAL_RATIOS)
    header = "| model (SSA-1, %; x AddressCLIP on the same images) | " + " | ".join(names) + f" | {goals} |"
    lines = [header, "|---|" + "---|" * (len(names) + len(GOAL_RATIOS))]
    clip = [r["llava_eval"].get("grounded_clip_SSA-1", r["clip_eval"]["SSA-1"]) for r in runs]
    for name, stage, key in SEED_ROWS:
        vals = [r[stage].get(key, np.nan) for r in runs]
        cells = []
        for r, v, c in zip(runs, vals, clip):
            lam = r[stage].get(key[: -len("SSA-1")] + "lambda") if key.endswith("rerank_SSA-1") else None
            ratio = f", {v / c:.2f}x" if stage == "llava_eval" and "clip" not in key and c > 0 else ""
            cells.append("–" if np.isnan(v) else f"{v * 100:.1f}" + (f" (λ {lam:g}" + ratio + ")" if lam is not None
                                                                     else (f" ({ratio[2:]})" if ratio else "")))
        done = []
        for g in GOAL_RATIOS:
            done.append("–" if stage == "clip_eval" or "clip" in key or np.isnan(vals).any() else (
                "yes" if all(v >= g * c for v, c in zip(vals, clip)) else "no"))
        lines.append(f"| {name} | " + " | ".join(cells) + " | " + " | ".join(done) + " |")
    return "\n".join(lines)
