"""python scripts/eval_clip.py --clip outputs/clip_tiny/model --data DIR [--split test] [--out DIR] [--device auto]

Evaluate an AddressCLIP checkpoint: SSA-1/5, SA-1/5, mean/median distance error; writes
eval_<split>.json / .md and two PNGs (predictions on the map, most-confused sub-streets).
With --calibrate it first fits on the val split and stores beside the checkpoint: temperature, level
threshold, training-image gallery and coordinate rule (calibration.json); then reports ECE
before/after, reliability + coverage PNGs, level-aware accuracy and coordinate errors
(calibration_<split>.json / .md).
"""

from __future__ import annotations

import argparse
import logging
import sys

from llava_address.common.device import add_device_args, device_and_dtype


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", "--model", dest="clip", required=True, help="AddressCLIP checkpoint folder")
    ap.add_argument("--data", required=True, help="dataset folder")
    ap.add_argument("--split", default="test", choices=["train", "val", "test"])
    ap.add_argument("--out", help="where to write results (default: the model folder)")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--max-images", type=int, default=None, help="evaluate an evenly spaced subset of N images")
    ap.add_argument("--calibrate", action="store_true",
                    help="fit temperature / level threshold / coordinates on val first (writes calibration.json)")
    ap.add_argument("--target", type=float, default=0.9,
                    help="with --calibrate: level-aware accuracy the val-chosen threshold must keep (default 0.9)")
    add_device_args(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from llava_address.clip.evaluate import evaluate, metrics_markdown

    try:
        device, dtype = device_and_dtype(args, args.clip)
        if args.calibrate:
            from llava_address.clip.answers import calibrate_checkpoint, calibration_markdown
            from llava_address.clip.calibration import load_calibration

            cal = calibrate_checkpoint(args.clip, args.data, args.out, args.split, args.target,
                                       plots=not args.no_plots)
            print(calibration_markdown(cal, load_calibration(args.clip), args.split))
        metrics = evaluate(args.clip, args.data, args.split, args.out, plots=not args.no_plots, device=device,
                           dtype=dtype, max_images=args.max_images)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(metrics_markdown(metrics, f"{args.clip} on {args.data} / {args.split}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
