"""python scripts/demo.py [--config configs/demo.yaml] [--out outputs/demo] [--fresh] [--set key=value ...]

The whole offline pipeline on this machine, nothing downloaded: build the SynthCity dataset
(real Helsinki OSM map), train + evaluate AddressCLIP, make address QA, train the tiny LLaVA
(stage 1 projector alignment, stage 2 instruction tuning), export it, evaluate its generated
answers (SSA-1/SA-1) and chat about a held-out test image. Finished stages are reused on the
next run (markers in <out>/stages/); every number and artefact path ends in <out>/summary.json.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

for _k, _v in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
               ("DS_ACCELERATOR", "cpu"), ("TOKENIZERS_PARALLELISM", "false")):
    os.environ.setdefault(_k, _v)

from llava_address.common.config import ConfigError  # noqa: E402

STAGES = ("data", "clip", "clip_eval", "qa", "llava_stage1", "llava_stage2", "llava_eval", "chat")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    ap.add_argument("--config", default="configs/demo.yaml", help="demo config (configs/demo_ci.yaml: tiny)")
    ap.add_argument("--out", default="outputs/demo", help="output folder (stages, models, summary.json)")
    ap.add_argument("--fresh", action="store_true", help="rerun every stage even if finished before")
    ap.add_argument("--only", nargs="+", choices=STAGES, default=(), help="run only these stages")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="demo config override, e.g. --set torch_threads=2 (repeatable)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    from llava_address.app.demo_config import load_demo_config
    from llava_address.app.demo_pipeline import format_summary, run_demo

    try:
        cfg = load_demo_config(args.config, args.overrides)
    except ConfigError as exc:
        logging.error("%s", exc)
        return 2
    try:
        summary = run_demo(cfg, args.out, fresh=args.fresh, only=tuple(args.only))
    except (FileNotFoundError, FileExistsError, ValueError, ConfigError) as exc:
        logging.error("demo stopped: %s", exc)
        return 1
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
