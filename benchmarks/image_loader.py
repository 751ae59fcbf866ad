"""python benchmarks/image_loader.py [--side 12000] [--max-side 2048]

Peak memory and time of ``load_image`` on a large image, each case in a fresh process (so one
case's peak does not hide another's): JPEG (decoded at reduced scale) vs PNG (full decode then
reduce), RGB vs greyscale. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def _one(path: str, max_side: int) -> dict:
    from llava_address.common.images import load_image

    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM): it is inherited across fork
    base = _status_mb("VmRSS")
    t = time.perf_counter()
    im = load_image(path, max_side=max_side)
    dt = time.perf_counter() - t
    peak, held = _status_mb("VmHWM"), _status_mb("VmRSS")
    return {"size": im.size, "s": dt, "peak_added_mb": peak - base, "held_mb": held - base}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="load_image memory/time on large images")
    ap.add_argument("--side", type=int, default=12000)
    ap.add_argument("--max-side", type=int, default=2048)
    ap.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child:
        print(json.dumps(_one(args._child[0], int(args._child[1]))))
        return 0
    Image.MAX_IMAGE_PIXELS = None  # writing the test images only
    rows = ["| file | decoded to | time (s) | peak RSS added while loading (MB) | RSS still held after (MB) |",
            "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as d:
        for mode, fmt in (("L", "PNG"), ("RGB", "PNG"), ("RGB", "JPEG")):
            p = Path(d) / f"big_{mode}.{fmt.lower()}"
            Image.new(mode, (args.side, args.side), 128 if mode == "L" else (90, 120, 150)).save(p, fmt)
            out = subprocess.run([sys.executable, __file__, "--_child", str(p), str(args.max_side)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout)
            rows.append(f"| {args.side}² {mode} {fmt} ({p.stat().st_size / 1e3:.0f} KB) "
                        f"| {r['size'][0]}x{r['size'][1]} | {r['s']:.2f} | {r['peak_added_mb']:.0f} | {r['held_mb']:.0f} |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
