"""python benchmarks/retrieval.py [--threads 2] [--steps 5]

Speed of AddressCLIP inference and training on this machine:
1. exact top-5 retrieval (AddressLocator.top_k, search="exact": matmul + topk + logsumexp) over 1k / 10k / 100k random
   normalised candidate embeddings, at the tiny model's width and at 512-d, batch 1 and 64: ms/image;
2. training images/s of the tiny configs (forward + 3 losses + backward + AdamW, synthetic batch).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _time(fn, reps: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def retrieval_table(dims: list[int], reps: int) -> list[str]:
    import torch
    import torch.nn.functional as F

    from benchmarks.topk_fast import scale_only_locator

    loc = scale_only_locator(search="exact")  # this table is the exact fp32 path; topk_fast.py compares both
    rows = ["| dim | candidates | batch | ms / image |", "|---|---|---|---|"]
    for d in dims:
        for n in (1_000, 10_000, 100_000):
            cands = F.normalize(torch.randn(n, d), dim=-1)
            for b in (1, 64):
                q = F.normalize(torch.randn(b, d), dim=-1)
                sec = _time(lambda: loc.top_k(q, cands, 5), reps)
                rows.append(f"| {d} | {n:,} | {b} | {1000 * sec / b:.3f} |")
    return rows


def training_table(configs: list[str], steps: int) -> list[str]:
    import torch

    from llava_address.clip.config import load_clip_config
    from llava_address.clip.losses import AddressCLIPLoss
    from llava_address.clip.model import build_model

    corpus = [f"street {i} between a{i} and b{i}, a red house with trees" for i in range(200)]
    rows = ["| config | image px | batch | images / s (train step) |", "|---|---|---|---|"]
    for c in configs:
        cfg = load_clip_config(ROOT / c)
        model = build_model(cfg.model, corpus)
        loss_fn, opt = AddressCLIPLoss(cfg.loss), torch.optim.AdamW(model.parameters(), lr=1e-4)
        b, s = cfg.train.batch_size, cfg.model.tiny.image_size
        addr = model.tokenize([f"street {i % 20} between a and b" for i in range(b)])
        sem = model.tokenize([f"a red house with trees and shops, at street {i % 20} between a and b" for i in range(b)])
        batch = {"address_ids": torch.arange(b) % 20, "semantic_ids": torch.arange(b),
                 "lat": 60 + torch.rand(b).double() * 0.01, "lon": 24 + torch.rand(b).double() * 0.01}
        px = torch.randn(b, 3, s, s)

        def step():
            out = model(px, addr["input_ids"], addr["attention_mask"], sem["input_ids"], sem["attention_mask"])
            loss_fn(out, batch)["loss"].backward()
            opt.step()
            opt.zero_grad()

        sec = _time(step, steps)
        rows.append(f"| {c} | {s} | {b} | {b / sec:.0f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from llava_address.clip.config import load_clip_config

    tiny_dim = load_clip_config(ROOT / "configs/clip/synthcity_tiny.yaml").model.tiny.projection_dim
    print(f"torch threads: {args.threads}\n\n## top-5 retrieval")
    print("\n".join(retrieval_table([tiny_dim, 512], args.reps)))
    print("\n## training throughput (synthetic batch, fp32 CPU)")
    print("\n".join(training_table(["configs/clip/tiny.yaml", "configs/clip/synthcity_tiny.yaml"], args.steps)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
