"""accelerate launch scripts/train_clip.py --config configs/clip/tiny.yaml --data DIR --out DIR [--resume]

Train AddressCLIP (image–address + image–semantic + geo losses). Also runs as plain
``python scripts/train_clip.py ...`` (one process). ``--set key.sub=value`` overrides config fields.
"""

from __future__ import annotations

import argparse
import logging
import sys

from llava_address.clip.config import load_clip_config


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="YAML config (configs/clip/*.yaml)")
    ap.add_argument("--data", help="dataset folder (overrides data.dataset_dir)")
    ap.add_argument("--out", "--output", dest="out", help="output folder (overrides train.output_dir)")
    ap.add_argument("--resume", action="store_true", help="continue from OUTPUT/state")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, e.g. --set train.max_steps=50 (repeatable)")
    ap.add_argument("--stop-after", type=int, help=argparse.SUPPRESS)  # simulate a kill (tests)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from llava_address.clip.train import train
    from llava_address.common.config import ConfigError

    try:
        cfg = load_clip_config(args.config, args.overrides)
        info = train(cfg, args.data, args.out, resume=args.resume, stop_after=args.stop_after)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.getLogger("train_clip").info("done: step %s, metrics %s", info["step"], info.get("final_metrics"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
