"""python scripts/eval_llava.py --export outputs/llava_tiny/export --data data/synthcity_helsinki [--split test] [--device auto]
       [--candidates 5 --clip outputs/clip_synthcity_tiny/model] [--constrained]
python scripts/eval_llava.py --export outputs/llava_tiny/export --data data/synthcity_helsinki \
       --clip outputs/clip_synthcity_tiny/model --candidates 5 --rerank grounded [--rerank-lambda 0.5]
python scripts/eval_llava.py --seed-table outputs/seeds/s0 outputs/seeds/s1 outputs/seeds/s2

Generative evaluation of an exported LLaVA: ask where each photo was taken, parse the answer to a
sub-street candidate, print SSA-1 / SA-1 / distance error and the valid-address / street-only /
unparsed rates as JSON (and write them with --out). --candidates K puts AddressCLIP's top-K into
the question (candidate-grounded mode); --constrained limits the answer to real addresses.
--rerank MODE re-ranks AddressCLIP's top-K by log p_clip + lambda * log p_llava(answer), the
LLaVA answer likelihood with the plain question (MODE plain) or with the candidates listed
(grounded); lambda is fitted on --fit-split (val; --fit-criterion) and saved to <export>/rerank.json for chat.py /
web.py --rerank, unless --rerank-lambda fixes it.
--seed-table prints mean ± std over finished demo runs (one per seed) instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from llava_address.common.device import add_device_args, device_and_dtype


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed-table", nargs="+", metavar="DEMO_OUT", default=None,
                   help="print the mean ± std table of these demo output dirs (one per seed) and exit")
    p.add_argument("--export", "--model", dest="export", default=None,
                   help="exported LLaVA dir (plain transformers layout)")
    p.add_argument("--data", default=None, help="dataset dir (manifest + addresses.json + images/)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--question", default=None, help="prompt (default: 'Where was this photo taken?')")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--candidates", type=int, default=0, help="AddressCLIP top-K in the question (0: plain mode)")
    p.add_argument("--clip", default=None, help="AddressCLIP model dir (needed with --candidates)")
    p.add_argument("--clip-search", default="auto", choices=("auto", "exact", "fast"),
                   help="AddressCLIP top-K search: auto (int8 shortlist + exact fp32 re-rank from 10M "
                        "candidate-matrix elements on, e.g. 20k at 512-d; else exact), exact (always fp32), fast")
    p.add_argument("--constrained", action="store_true",
                   help="constrain the answer to the listed candidates (plain mode: to every sub-street)")
    p.add_argument("--rerank", choices=("plain", "grounded"), default=None,
                   help="re-rank AddressCLIP's top-K (--candidates, default 5) by fusion with LLaVA's answer "
                        "likelihood; the prompt is the plain question or lists the candidates")
    p.add_argument("--rerank-lambda", type=float, default=None,
                   help="fixed fusion weight (default: fitted on --fit-split and saved to <export>/rerank.json)")
    p.add_argument("--fit-criterion", default="nll", choices=("nll", "accuracy"),
                   help="lambda that maximises the likelihood of the true address among the top-K (nll, smooth) "
                        "or the val top-1 accuracy (noisier)")
    p.add_argument("--fit-split", default="val", choices=("train", "val", "test"),
                   help="split lambda is fitted on (never the evaluated one unless you ask)")
    p.add_argument("--out", default=None, help="write metrics + per-image answers to this JSON")
    add_device_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.seed_table and not (args.export and args.data):
        parser.error("--export and --data are required (unless --seed-table)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from llava_address.llava.evaluate import DEFAULT_QUESTION, evaluate_generative, evaluate_rerank, seed_table

    if args.seed_table:
        print(seed_table(args.seed_table))
        return 0
    try:
        device, dtype = device_and_dtype(args, args.export)
        if args.rerank:
            if not args.clip:
                raise ValueError("--rerank needs --clip (the AddressCLIP model that proposes the candidates)")
            metrics = evaluate_rerank(args.export, args.data, args.clip, grounded=args.rerank == "grounded",
                                      candidates_k=args.candidates or 5, split=args.split, fit_split=args.fit_split,
                                      lam=args.rerank_lambda, question=args.question or DEFAULT_QUESTION,
                                      batch_size=args.batch_size, max_samples=args.max_samples, out_json=args.out,
                                      criterion=args.fit_criterion, device=device, dtype=dtype)
            print(json.dumps(metrics, indent=2))
            return 0
        metrics = evaluate_generative(args.export, args.data, args.split, args.question or DEFAULT_QUESTION,
                                      args.batch_size, args.max_samples, args.max_new_tokens, args.out,
                                      candidates_k=args.candidates, clip_dir=args.clip, constrained=args.constrained,
                                      device=device, dtype=dtype, clip_search=args.clip_search)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
