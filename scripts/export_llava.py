"""python scripts/export_llava.py --config configs/llava/llava_tiny.yaml [--out DIR] [--dtype float32|bfloat16|float16]

Merge stage 2's LoRA adapter into the base model (or take the fully fine-tuned model) and write a
plain LlavaForConditionalGeneration + processor directory (training already does this once;
this re-exports, e.g. after copying an adapter from another machine).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from llava_address.common.config import ConfigError
from llava_address.common.device import DTYPES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the run's YAML config (configs/llava/*.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--trained", default=None, help="adapter or model dir (default: <output_dir>/stage2/...)")
    p.add_argument("--out", default=None, help="export dir (default: <output_dir>/export)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="weights dtype of the export (default: the config's model.dtype; bf16 = half of fp32)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from llava_address.llava.config import load_llava_config
    from llava_address.llava.export import export_llava

    try:
        cfg = load_llava_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(cfg.output_dir)
    trained = args.trained or out / "stage2" / ("adapter" if cfg.stage2.lora else "model")
    try:
        path = export_llava(trained, args.out or out / "export", base_dir=out / "base", processor_dir=out / "base",
                            dtype=DTYPES[args.dtype or cfg.model.dtype])
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
