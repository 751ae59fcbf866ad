"""python benchmarks/locate_speed.py --model outputs/clip_synthcity_tiny/model --data data/synthcity_helsinki [--n 256]

End-to-end images/s of ``scripts/locate.py``'s work (list → decode → encode → calibrated levels,
coordinates → CSV + GeoJSON) on a tiny checkpoint, PyTorch vs the ONNX image encoder, one run each,
on ``n`` test images of the dataset. The ONNX export is made first if the checkpoint has none.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args(argv)
    import torch

    from data_gen.contract import read_manifest
    from llava_address.clip.batch_locate import locate_images
    from llava_address.clip.locator import AddressLocator
    from llava_address.clip.onnx_export import ONNX_DIR, export_onnx

    torch.set_num_threads(args.threads)
    df = read_manifest(args.data, "test").head(args.n)
    images = [str(Path(args.data) / p) for p in df["image"]]
    if not (Path(args.model) / ONNX_DIR / "onnx.json").is_file():
        export_onnx(args.model)
    rows = []
    for name, make in (("PyTorch", lambda: AddressLocator.from_pretrained(args.model, batch_size=args.batch_size)),
                       ("ONNX Runtime", lambda: AddressLocator.from_onnx(args.model, threads=args.threads,
                                                                         batch_size=args.batch_size))):
        loc = make()
        loc.answer(images[:2])  # warm-up: candidate embeddings, gallery, first batch
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            stats = locate_images(loc, images, Path(tmp) / "out.csv", batch_size=args.batch_size, progress=False)
            sec = time.perf_counter() - t
        rows.append(f"| {name} | {stats['new']} | {sec:.2f} | {stats['new'] / sec:.0f} |")
    print(f"locate end to end, {Path(args.model)}, {args.threads} threads, batch {args.batch_size} "
          "(shared machine: other jobs were running)\n")
    print("| image encoder | images | seconds | images / s |\n|---|---|---|---|\n" + "\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
