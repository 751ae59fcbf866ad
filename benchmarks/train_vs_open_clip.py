"""python benchmarks/train_vs_open_clip.py [--data data/synthcity_helsinki] [--steps 12] [--rounds 3] [--threads 2]

Training images/s of AddressCLIP's trainer (llava_address.clip.train, accelerate, real images
decoded from the dataset) against open_clip's own trainer (``open_clip_train.main``,
``--dataset-type synthetic --precision fp32``) on the same architecture and batch, one process,
same torch threads, one run each. The architecture is STACK.md's reference tiny CLIP: 96 px,
ViT 4 layers × 192 (patch 16, 4 heads), text 4 × 128 (4 heads), 48 positions, embed 128,
quick-GELU, batch 64. Differences that remain and are reported: open_clip's tokenizer has a
49,408-token vocabulary (ours is trained on the dataset's texts) and its synthetic data is one
image re-augmented, while ours decodes real files. AddressCLIP is timed with its address loss
only (in-batch negatives, ``loss.address_negatives=batch``: the same work as CLIP's loss) and with
all three losses (semantic text is a second text batch), and, for the record of what
``AddressCLIP.encode_texts_together`` gained, with all three losses on the previous text path.
The machine is shared, so the trainers are interleaved: ``--rounds`` rounds, each running
every trainer for ``--steps`` steps, in a rotated order. Throughput = median over every logged
window (after each run's first, warm-up window) of images / wall second; the ratio range is over
rounds (each round's ratio of medians).
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


def run_open_clip(work: Path, steps: int, threads: int) -> list[float]:
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
    return rates[1:]


def run_addressclip(work: Path, data: Path, steps: int, threads: int, all_losses: bool,
                    separate_texts: bool = False) -> list[float]:
    """``separate_texts``: the text path before ``encode_texts_together`` (one text-tower call per text
    batch, every row encoded), patched in for this run only, to measure what the change gained."""
    from unittest import mock

    from llava_address.clip.config import load_clip_config
    from llava_address.clip.model import AddressCLIP
    from llava_address.clip.train import train

    over = [f"model.tiny.{k}={v}" for k, v in ARCH.items()]
    over += [f"train.batch_size={BATCH}", f"train.max_steps={steps}", "train.eval_every=0", "train.log_every=1",
             "train.save_every=100000", f"train.torch_threads={threads}", "train.warmup_steps=2",
             "loss.address_negatives=batch",   # CLIP's in-batch loss: the same work as open_clip's
             f"data.dataset_dir={data}"]
    if not all_losses:
        over += ["loss.use_semantic=false", "loss.use_geo=false"]
    cfg = load_clip_config(ROOT / "configs/clip/synthcity_tiny.yaml", over)
    out = work / ("ours_full" if all_losses else "ours_address")
    old = (lambda self, batches: [self.encode_text(ids, mask) for ids, mask in batches])
    with mock.patch.object(AddressCLIP, "encode_texts_together", old) if separate_texts else mock.MagicMock():
        train(cfg, data, out)
    with (out / "log.csv").open() as fh:
        rates = [float(r["images_per_s"]) for r in csv.DictReader(fh)]
    return rates[1:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / "data/synthcity_helsinki"), help="dataset for AddressCLIP")
    ap.add_argument("--steps", type=int, default=12, help="steps per trainer per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import shutil

    names = ("open_clip_train.main (synthetic data)", "AddressCLIP, address loss only (real images)",
             "AddressCLIP, all three losses (real images)",
             "AddressCLIP, all three losses, previous text path (one call per text batch)")
    runs = (lambda w: run_open_clip(w, args.steps, args.threads),
            lambda w: run_addressclip(w, Path(args.data), args.steps, args.threads, all_losses=False),
            lambda w: run_addressclip(w, Path(args.data), args.steps, args.threads, all_losses=True),
            lambda w: run_addressclip(w, Path(args.data), args.steps, args.threads, all_losses=True,
                                      separate_texts=True))
    rates: list[list[list[float]]] = [[] for _ in names]   # trainer -> round -> window rates
    load = []
    for r in range(args.rounds):
        for i in [(j + r) % len(names) for j in range(len(names))]:   # rotate the order every round
            with tempfile.TemporaryDirectory() as tmp:
                load.append(os.getloadavg()[0])
                rates[i].append(runs[i](Path(tmp)))
                shutil.rmtree(Path(tmp), ignore_errors=True)
    med = [statistics.median([x for rnd in tr for x in rnd]) for tr in rates]
    per_round = [[statistics.median(tr[r]) / statistics.median(rates[0][r]) for r in range(args.rounds)]
                 for tr in rates]
    print(f"\ntraining throughput, batch {BATCH}, fp32, {args.threads} torch threads, {args.rounds} interleaved rounds "
          f"of {args.steps} steps per trainer (load average during the runs {min(load):.1f}-{max(load):.1f}: "
          "the machine is shared)\n")
    print("| trainer | images / s | vs open_clip | range over rounds |\n|---|---|---|---|")
    for name, v, pr in zip(names, med, per_round):
        print(f"| {name} | {v:.0f} | {v / med[0]:.2f}× | {min(pr):.2f}-{max(pr):.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
