"""SF-XL-scale import throughput: 100k SF-XL-named JPEGs through the parallel importer.

    python benchmarks/bench_sfxl_import.py [--n 100000] [--workers 2] [--workdir /tmp/bench_sfxl] [--subset 5000]

Files: 32 distinct small JPEGs (640 × 480, as SF-XL crops are 512 × 512 or larger) hard-linked to
--n names ``@utm_e@utm_n@10@S@lat@lon@pano@...@.jpg`` spread over 100 folders, generated once in
--workdir. Rows: the parallel importer with header-only checks (default) and with full decode, and
the single-process ``sfxl`` importer (full decode) for reference; the slow rows run on --subset
files and report images/s. Goal (issue 13): ≥ 2,000 images/s on 2 cores without full decode.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_gen.importers import import_sfxl  # noqa: E402
from data_gen.importers_paper import import_sfxl_parallel  # noqa: E402


def make_files(workdir: Path, n: int) -> Path:
    """n SF-XL-named hard links to 32 distinct JPEGs (reused when already there)."""
    root = workdir / f"sfxl_{n}"
    if (root / "DONE").is_file():
        return root
    src = workdir / "src"
    src.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    protos = []
    for k in range(32):
        p = src / f"{k}.jpg"
        small = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
        Image.fromarray(small).resize((640, 480)).save(p, quality=85)
        protos.append(p)
    for i in range(n):
        lat, lon = 37.70 + rng.uniform(0, 0.1), -122.50 + rng.uniform(0, 0.12)
        d = root / f"{i % 100:02d}"
        d.mkdir(parents=True, exist_ok=True)
        name = f"@{550000 + i * 0.01:.2f}@{4180000 + i * 0.01:.2f}@10@S@{lat:.5f}@{lon:.5f}@{i:022d}@@@@@201311@@.jpg"
        os.link(protos[i % 32], d / name)
    (root / "DONE").write_text("ok")
    return root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--workdir", default="/tmp/bench_sfxl")
    ap.add_argument("--subset", type=int, default=5000, help="files for the full-decode rows")
    args = ap.parse_args(argv)
    wd = Path(args.workdir)
    t = time.perf_counter()
    root = make_files(wd, args.n)
    print(f"files ready in {time.perf_counter() - t:.1f}s: {root}")
    sub = make_files(wd, args.subset)
    rows = []
    for label, folder, fn in [
        (f"sfxl_parallel, header check, {args.workers} proc", root,
         lambda f: import_sfxl_parallel(f, workers=args.workers, check="header", progress=False)),
        (f"sfxl_parallel, header check, resumable, {args.workers} proc", root,
         lambda f: import_sfxl_parallel(f, workers=args.workers, check="header", progress=False,
                                        progress_file=wd / f"progress_{time.time_ns()}.jsonl")),
        (f"sfxl_parallel, full decode, {args.workers} proc", sub,
         lambda f: import_sfxl_parallel(f, workers=args.workers, check="full", progress=False)),
        ("sfxl (old), full decode, 1 proc", sub, lambda f: import_sfxl(f, verify=True)),
    ]:
        t = time.perf_counter()
        res = fn(folder)
        dt = time.perf_counter() - t
        rows.append((label, len(res.records), dt, len(res.records) / dt))
    print(f"\n| importer | images | seconds | images/s |\n|---|---|---|---|")
    for label, n, dt, ips in rows:
        print(f"| {label} | {n:,} | {dt:.1f} | {ips:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
