"""python scripts/run_table.py --config configs/clip/table.yaml [--seeds 0 1 2] [--set jobs=1] [--finished-only]

Train and evaluate every table variant (zero-shot, address only, AddressCLIP full and ablations)
over several seeds; writes OUTPUT/table.md and table.json (mean ± std). Finished runs are reused.
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="table YAML (configs/clip/table.yaml)")
    ap.add_argument("--seeds", type=int, nargs="+", help="override the config's seeds")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--finished-only", action="store_true",
                    help="train nothing: tabulate the runs that already finished (e.g. after an interrupted table)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from llava_address.clip.table import run_table
    from llava_address.common.config import ConfigError

    try:
        res = run_table(args.config, args.overrides, args.seeds, finished_only=args.finished_only)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(res["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
