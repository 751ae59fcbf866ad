"""python scripts/make_qa.py --data DATASET_DIR --out qa.json [--stage1-out align.json] [--split train|val|test|all]
[--seed 0] [--turns-min 2 --turns-max 5] [--config configs/....yaml] [--set key=value ...]

Turns an address-labelled dataset into LLaVA conversation JSON: multi-turn address QA for
stage 2 (qa.json), optional one-turn address descriptions for stage-1 projector alignment,
and qa.stats.json next to the output. Flags override the YAML config (data_gen.qa.QAConfig).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from data_gen.qa import QAConfig, QAError, build_qa
from llava_address.common.config import ConfigError, load_config


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset folder (manifest.parquet + addresses.json)")
    p.add_argument("--out", required=True, help="stage-2 QA JSON to write (stats go to <stem>.stats.json)")
    p.add_argument("--stage1-out", default=None, help="also write stage-1 alignment pairs here")
    p.add_argument("--config", default=None, help="YAML with QAConfig fields")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set type_weights.where=5 (repeatable)")
    p.add_argument("--split", choices=["train", "val", "test", "all"], default=None,
                   help="manifest split to convert (config default: train); records carry 'split'")
    p.add_argument("--seed", type=int, default=None, help="base seed (config default: 0)")
    p.add_argument("--turns-min", type=int, default=None, help="fewest exchanges per dialogue (default 2)")
    p.add_argument("--turns-max", type=int, default=None, help="most exchanges per dialogue (default 5)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    flags = {"split": args.split, "seed": args.seed, "turns_min": args.turns_min, "turns_max": args.turns_max}
    overrides = list(args.overrides) + [f"{k}={v}" for k, v in flags.items() if v is not None]
    try:
        cfg = load_config(args.config, QAConfig, overrides)
        stats = build_qa(args.data, args.out, args.stage1_out, cfg, progress=not args.no_progress)
    except (ConfigError, QAError, OSError) as exc:  # OSError: --out is a folder, unwritable path
        logging.error("%s", exc)
        return 2
    print(json.dumps({k: stats["qa"]["all"][k] for k in ("dialogues", "turns_total", "answer_words")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
