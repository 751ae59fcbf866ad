"""python scripts/build_dataset.py --config configs/data/synthcity_helsinki.yaml [--out DIR] [--set a.b=v] [--overwrite]

Build an address-labelled dataset (images/, manifest.parquet, addresses.json, network.geojson,
stats.json, map.png) from a road network + SynthCity renders or imported geotagged photos.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from data_gen.build_config import BuildConfig
from llava_address.common.config import ConfigError, load_config
from llava_address.common.io import read_json


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    ap.add_argument("--config", required=True, help="YAML file (configs/data/*.yaml)")
    ap.add_argument("--out", default=None, help="output folder (default: out_dir from config, else data/<name>)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field, e.g. --set sampling.max_images=500 (repeatable)")
    ap.add_argument("--overwrite", action="store_true",
                    help="rebuild a dataset this builder wrote earlier (folders it did not write are never replaced)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, BuildConfig, args.overrides)
        from data_gen.builder import build_dataset  # heavy (pandas, scipy): config errors answer first

        out = build_dataset(cfg, args.out, overwrite=args.overwrite)
    except (ConfigError, OSError, ValueError) as exc:  # OSError covers missing/foreign/unwritable paths
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)  # one line, whatever the message
        return 2
    stats = read_json(out / "stats.json")
    print(json.dumps({"out": str(out), "images": stats["images"], "splits": stats["splits"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
