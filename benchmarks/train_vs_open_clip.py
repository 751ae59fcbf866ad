"""python benchmarks/train_vs_open_clip.py [--data data/synthcity_helsinki] [--steps 30] [--threads 2]

Training images/s of AddressCLIP's trainer (llava_address.clip.train, accelerate, real images
decoded from the dataset) against open_clip's own trainer (``open_clip_train.main``,
``--dataset-type synthetic --precision fp32``) on the same architecture and batch, one process,
same torch threads, one run each. The architecture is STACK.md's reference tiny CLIP: 96 px,
ViT 4 layers × 192 (patch 16, 4 heads), text 4 × 128 (4 heads), 48 positions, embed 128,
quick-GELU, batch 64. Differences that remain and are reported: open_clip's tokenizer has a
49,408-token vocabulary (ours is trained on the dataset's texts) and its synthetic data is one
image re-augmented, while ours decodes real files. AddressCLIP is timed with its address loss
only (the same work as CLIP's loss) and with all three losses (semantic text is a second text batch).
Throughput = median over logged windows after the first (warm-up) of images / wall second.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ARCH = {"image_size": 96, "patch_size": 16, "vision_layers": 4, "vision_width": 192, "vision_heads": 4,
        "text_layers": 4, "text_width": 128, "text_heads": 4, "projection_dim": 128, "max_text_len": 48}
BATCH = 64


def open_clip_config() -> dict:
    return {"embed_dim": ARCH["projection_dim"], "quick_gelu": True,
            "vision_cfg": {"image_size": ARCH["image_size"], "layers": ARCH["vision_layers"],
                           "width": ARCH["vision_width"], "patch_size": ARCH["patch_size"],
                           "head_width": ARCH["vision_width"] // ARCH["vision_heads"]},
            "text_cfg": {"context_length": ARCH["max_text_len"], "vocab_size": 49408, "width": ARCH["text_width"],
                         "heads": ARCH["text_heads"], "layers": ARCH["text_layers"]}}


def run_open_clip(work: Path, steps: int, threads: int) -> float:
    import open_clip
    import torch
    from open_clip_train.main import main as oc_main

    torch.set_num_threads(threads)
    cfg_dir = work / "oc_cfg"
    cfg_dir.mkdir()
    (cfg_dir / "addr-tiny.json").write_text(json.dumps(open_clip_config()))
    open_clip.add_model_config(cfg_dir)
    oc_main(["--dataset-type", "synthetic", "--train-num-samples", str(BATCH * steps), "--batch-size", str(BATCH),
             "--epochs", "1", "--workers", "0", "--precision", "fp32", "--model", "addr-tiny", "--lr", "1e-3",
             "--warmup", "2", "--log-every-n-steps", "1", "--save-frequency", "0", "--logs", str(work / "oc_logs"),
             "--name", "bench", "--report-to", ""])
    log = (work / "oc_logs" / "bench" / "out.log").read_text()
    rates = [float(x) for x in re.findall(r"([0-9.]+)/s/gpu", log)]
    if len(rates) < 3:
        raise RuntimeError(f"open_clip logged {len(rates)} throughput lines; see {work}/oc_logs/bench/out.log")
    return statistics.median(rates[1:])


def run_addressclip(work: Path, data: Path, steps: int, threads: int, all_losses: bool) -> float:
    from llava_address.clip.config import load_clip_config
    from llava_address.clip.train import train

    over = [f"model.tiny.{k}={v}" for k, v in ARCH.items()]
    over += [f"train.batch_size={BATCH}", f"train.max_steps={steps}", "train.eval_every=0", "train.log_every=2",
             "train.save_every=100000", f"train.torch_threads={threads}", "train.warmup_steps=2",
             f"data.dataset_dir={data}"]
    if not all_losses:
        over += ["loss.use_semantic=false", "loss.use_geo=false"]
    cfg = load_clip_config(ROOT / "configs/clip/synthcity_tiny.yaml", over)
    out = work / ("ours_full" if all_losses else "ours_address")
    train(cfg, data, out)
    with (out / "log.csv").open() as fh:
        rates = [float(r["images_per_s"]) for r in csv.DictReader(fh)]
    return statistics.median(rates[1:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / "data/synthcity_helsinki"), help="dataset for AddressCLIP")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        oc = run_open_clip(work, args.steps, args.threads)
        ours_addr = run_addressclip(work, Path(args.data), args.steps, args.threads, all_losses=False)
        ours_full = run_addressclip(work, Path(args.data), args.steps, args.threads, all_losses=True)
    print(f"\ntraining throughput, batch {BATCH}, fp32, {args.threads} torch threads, {args.steps} steps each "
          "(shared machine: other jobs were running)\n")
    print("| trainer | images / s | vs open_clip |\n|---|---|---|")
    for name, v in (("open_clip_train.main (synthetic data)", oc),
                    ("AddressCLIP, address loss only (real images)", ours_addr),
                    ("AddressCLIP, all three losses (real images)", ours_full)):
        print(f"| {name} | {v:.0f} | {v / oc:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
