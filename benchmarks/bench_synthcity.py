"""python benchmarks/bench_synthcity.py [--n 400]

SynthCity render throughput on one core (images/s by CPU time and wall time, incl. JPEG encode),
under the database (train) and the query (val/test) capture conditions.
"""

from __future__ import annotations

import argparse
import io
import sys
import time

import numpy as np

from data_gen.synthcity import SynthCity, render_view
from data_gen.synthcity.conditions import DATABASE, QUERY


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="SynthCity render speed")
    ap.add_argument("--n", type=int, default=400)
    args = ap.parse_args(argv)
    city = SynthCity(seed=0, bounds=(0, 0, 1500, 1500))
    hws = ["primary", "secondary", "tertiary", "residential"]
    print(f"{'size':>5} {'conditions':>10} {'img/s (cpu)':>12} {'img/s (wall)':>13}")
    for size in (64, 96, 128, 224, 336):
        for cname, cond in (("database", DATABASE), ("query", QUERY)):
            c0, w0 = time.process_time(), time.perf_counter()
            for i in range(args.n):
                ctx = city.view(i * 3.7, i * 1.3, 1.0, 0.2, f"S{i % 7}", hws[i % 4], "")
                img, _ = render_view(ctx, np.random.default_rng([0, i]), size, cond)
                img.save(io.BytesIO(), format="JPEG", quality=92)
            c, w = time.process_time() - c0, time.perf_counter() - w0
            print(f"{size:>5} {cname:>10} {args.n / c:>12.0f} {args.n / w:>13.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
