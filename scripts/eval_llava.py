"""python scripts/eval_llava.py --export outputs/llava_tiny/export --data data/synthcity_helsinki [--split test] [--device auto]

Generative evaluation of an exported LLaVA: ask where each photo was taken, parse the answer to a
sub-street candidate, print SSA-1 / SA-1 / distance error as JSON (and write them with --out).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from llava_address.common.device import add_device_args, device_and_dtype


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export", "--model", dest="export", required=True,
                   help="exported LLaVA dir (plain transformers layout)")
    p.add_argument("--data", required=True, help="dataset dir (manifest + addresses.json + images/)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--question", default=None, help="prompt (default: 'Where was this photo taken?')")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--out", default=None, help="write metrics + per-image answers to this JSON")
    add_device_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from llava_address.llava.evaluate import DEFAULT_QUESTION, evaluate_generative

    try:
        device, dtype = device_and_dtype(args, args.export)
        metrics = evaluate_generative(args.export, args.data, args.split, args.question or DEFAULT_QUESTION,
                                      args.batch_size, args.max_samples, args.max_new_tokens, args.out,
                                      device=device, dtype=dtype)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
