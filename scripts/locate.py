"""python scripts/locate.py --clip outputs/demo/clip/model PHOTOS_DIR [LIST.txt ...] --out located.csv [--onnx]

Locate a folder (recursive) or list of photos with an AddressCLIP checkpoint. Writes a CSV and a
GeoJSON (points) with, per photo: the address at each level (sub-street, street, district) and its
confidence, the level answered at (the finest whose calibrated confidence clears the threshold
chosen on val; "none" when no level does), lat/lon with an uncertainty radius, and the top-k
sub-streets. Re-running the same command skips photos already done; unreadable photos are counted,
listed in <out>.skipped.json and skipped. Calibrate the checkpoint first for calibrated answers:
`python scripts/eval_clip.py --clip CLIP_DIR --data DATA_DIR --calibrate`. --onnx runs the image encoder on
onnxruntime with the saved candidate embeddings (exported to <model>/onnx on first use).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from llava_address.common.device import add_device_args


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", help="image folders, .txt lists of paths, or image files")
    ap.add_argument("--clip", "--model", dest="model", required=True,
                    help="AddressCLIP checkpoint folder (--model: the old spelling)")
    ap.add_argument("--out", required=True, help="CSV to write (GeoJSON beside it unless --geojson)")
    ap.add_argument("--geojson", help="GeoJSON path (default: the CSV's name with .geojson)")
    ap.add_argument("-k", type=int, default=5, help="top-k sub-streets to list per photo (default 5)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--onnx", action="store_true", help="use the ONNX image encoder + saved candidate embeddings")
    ap.add_argument("--no-progress", action="store_true")
    add_device_args(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from pathlib import Path

    from llava_address.clip.batch_locate import list_images, locate_images
    from llava_address.clip.locator import AddressLocator
    from llava_address.clip.onnx_export import ONNX_DIR, export_onnx
    from llava_address.common.device import device_and_dtype

    if args.k < 1:
        ap.error("-k must be >= 1")
    try:
        images = list_images(args.inputs)
        if args.onnx:
            if not (Path(args.model) / ONNX_DIR / "onnx.json").is_file():
                export_onnx(args.model)
            locator = AddressLocator.from_onnx(args.model, batch_size=args.batch_size)
        else:
            device, dtype = device_and_dtype(args, args.model)
            locator = AddressLocator.from_pretrained(args.model, batch_size=args.batch_size, device=device,
                                                     dtype=dtype)
        if not locator.calibration:
            logging.warning("%s has no calibration.json: confidences are raw scores, every photo answered at "
                            "sub-street level (run eval_clip.py --calibrate)", args.model)
        stats = locate_images(locator, images, args.out, args.geojson, k=args.k, batch_size=args.batch_size,
                              progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
