"""python scripts/synthcity_pairs.py --data data/synthcity_helsinki --out docs/synthcity_v2_pairs.png [--n 6]

Write example database (train) vs query (test) image pairs of the same sub-street as one PNG.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="dataset folder")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--n", type=int, default=6, help="number of pairs")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from data_gen.synthcity.pairs import example_pairs

    try:
        rows = example_pairs(args.data, args.out, args.n, args.seed)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for train, query, m in rows:
        print(f"{train}  {query}  {m:.0f} m")
    return 0


if __name__ == "__main__":
    sys.exit(main())
