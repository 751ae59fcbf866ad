"""python scripts/import_ial.py --config configs/data/pitts_ial.yaml [--out DIR] [--set root=/data/pitts-IAL] [--overwrite]

Turn the AddressCLIP authors' annotation files (Pitts-IAL / SF-IAL: image → caption, address,
canonical address) into a dataset folder (data contract), keeping their labels and captions and
taking GPS from the source dataset (Pittsburgh-250k .mat files or SF-XL file names).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from data_gen.ial_annotations import IALConfig, import_ial
from llava_address.common.config import ConfigError, load_config
from llava_address.common.io import read_json


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    ap.add_argument("--config", required=True, help="YAML file (configs/data/*_ial*.yaml)")
    ap.add_argument("--out", default=None, help="output folder (default: out_dir from config, else data/<name>)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field, e.g. --set root=/data/pitts-IAL (repeatable)")
    ap.add_argument("--overwrite", action="store_true", help="rebuild even if the dataset exists")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, IALConfig, args.overrides)
        out = import_ial(cfg, args.out, overwrite=args.overwrite)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stats = read_json(out / "stats.json")
    print(json.dumps({"out": str(out), "images": stats["images"], "splits": stats["splits"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
