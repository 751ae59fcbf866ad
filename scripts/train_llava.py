"""deepspeed scripts/train_llava.py --config configs/llava/llava_tiny.yaml --stage 1|2|"1 2" [--deepspeed configs/deepspeed/zero2.json]

Train LLaVA stage 1 (projector alignment) or stage 2 (LoRA / full LM + projector on address QA).
Also runs without a launcher: ``python scripts/train_llava.py --config ... --stage 2``.
Stage 2 ends by writing the merged export to ``<output_dir>/export``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from llava_address.common.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML run config (configs/llava/*.yaml)")
    p.add_argument("--stage", type=int, choices=(1, 2), nargs="+", required=True,
                   help="1 = projector, 2 = LoRA/full LM; '--stage 1 2' runs both in one launch")
    p.add_argument("--deepspeed", default=None, help="DeepSpeed JSON (configs/deepspeed/zero2.json|zero3.json)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set stage2.lr=1e-4 (repeatable)")
    p.add_argument("--no-resume", action="store_true", help="start fresh: drop this stage's checkpoints and retrain even if it finished")
    p.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)  # simulate a kill (tests)
    p.add_argument("--local_rank", "--local-rank", type=int, default=-1, help="set by the deepspeed launcher")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from llava_address.llava.config import load_llava_config
    from llava_address.llava.train import train_stage

    try:
        cfg = load_llava_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        stages = sorted(set(args.stage))  # --stop-after applies to the last one
        records = [train_stage(cfg, stage, deepspeed=args.deepspeed, resume=not args.no_resume,
                               stop_after=args.stop_after if stage == stages[-1] else None)
                   for stage in stages]
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
    for record in records:
        print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
