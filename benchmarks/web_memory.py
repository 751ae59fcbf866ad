"""python benchmarks/web_memory.py --model DIR --clip DIR [--data DIR] [--uploads 20] [--side 12000]

Resident memory of the web server (``scripts/web.py`` in a subprocess) over repeated uploads of a
huge, well-compressed PNG (default 12000×12000 pixels, under the 10 MB upload limit) through
Gradio's own client, as a browser would send them. Prints one table row per upload and a summary:
RSS at start, after a warm-up upload of a small photo (models loaded: the idle figure), after
each big upload, and the growth over the idle figure; plus the files left in the upload folder.
Goal (issue 14): growth ≤ 300 MB after 20 uploads. ``--repo`` runs another checkout's server
(e.g. the code before a fix) for comparison. Defaults are the demo's outputs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEMO = "outputs/demo"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    ap.add_argument("--model", default=f"{DEMO}/llava/export", help="LLaVA export dir")
    ap.add_argument("--clip", default=f"{DEMO}/clip/model", help="AddressCLIP checkpoint dir")
    ap.add_argument("--data", default=None, help="dataset dir (map, examples); optional")
    ap.add_argument("--uploads", type=int, default=20)
    ap.add_argument("--side", type=int, default=12000, help="the big PNG is side×side pixels")
    ap.add_argument("--repo", default=str(REPO), help="checkout whose scripts/web.py is served")
    ap.add_argument("--budget-mb", type=float, default=300.0, help="allowed growth over the idle figure")
    ap.add_argument("--startup-timeout", type=float, default=180.0)
    return ap.parse_args(argv)


def big_png(path: Path, side: int) -> Path:
    """A side×side PNG of coarse blocks: decodes to side²×3 bytes, compresses to well under 10 MB."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
    img = Image.fromarray(blocks).resize((side, side), Image.Resampling.NEAREST)
    img.save(path, optimize=False, compress_level=9)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_up(port: int, proc: subprocess.Popen, timeout: float) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before serving")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"server not up on port {port} after {timeout:.0f} s")


def _mb(pid: int) -> float:
    """Resident memory of ``pid`` in MB (psutil, which accelerate installs; else /proc)."""
    try:
        import psutil
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmRSS for process {pid}") from None
    return psutil.Process(pid).memory_info().rss / 2**20


def _files(root: Path) -> tuple[int, float]:
    files = [f for f in root.rglob("*") if f.is_file()]
    return len(files), sum(f.stat().st_size for f in files) / 2**20


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from gradio_client import Client, handle_file

    work = Path(tempfile.mkdtemp(prefix="web_memory_"))
    uploads = work / "gradio_tmp"
    big = big_png(work / "big.png", args.side)
    small = work / "small.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(small)
    port = _free_port()
    repo = Path(args.repo).resolve()
    env = dict(os.environ, PYTHONPATH=str(repo), GRADIO_TEMP_DIR=str(uploads), HF_HUB_OFFLINE="1",
               GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    cmd = [sys.executable, str(repo / "scripts/web.py"), "--port", str(port), "--model", args.model,
           "--clip", args.clip]
    if args.data:
        cmd += ["--data", args.data]
    if "--upload-dir" in (repo / "scripts/web.py").read_text():
        cmd += ["--upload-dir", str(uploads)]
    print(f"serving {repo} on port {port}; big PNG {args.side}x{args.side}: {big.stat().st_size / 2**10:.0f} KB "
          f"on disk, {args.side ** 2 * 3 / 2**20:.0f} MB as RGB")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(work / "server.log", "w"))
    try:
        _wait_up(port, proc, args.startup_timeout)
        server = proc.pid
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        start = _mb(server)
        t0 = time.time()
        client.predict(handle_file(str(small)), "Where was this photo taken?", api_name="/analyse")
        idle = _mb(server)
        print(f"RSS at start {start:.0f} MB; after a warm-up upload (models loaded, the idle figure) {idle:.0f} MB "
              f"({time.time() - t0:.1f} s)")
        print("| upload | seconds | RSS MB | growth over idle MB | files in upload dir | upload dir MB |")
        print("|---:|---:|---:|---:|---:|---:|")
        peak = idle
        for i in range(1, args.uploads + 1):
            t0 = time.time()
            status = client.predict(handle_file(str(big)), "Where was this photo taken?", api_name="/analyse")[0]
            rss = _mb(server)
            peak = max(peak, rss)
            n, size = _files(uploads)
            print(f"| {i} | {time.time() - t0:.1f} | {rss:.0f} | {rss - idle:+.0f} | {n} | {size:.1f} |", flush=True)
            if i == 1 and "Done" not in str(status):
                print(f"warning: the page answered {str(status)[:200]!r}")
        final = _mb(server)
        ok = final - idle <= args.budget_mb
        print(f"after {args.uploads} uploads: RSS {final:.0f} MB, growth {final - idle:+.0f} MB over idle "
              f"(peak {peak:.0f} MB); budget {args.budget_mb:.0f} MB: {'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)  # the big PNG and the server's upload folder


if __name__ == "__main__":
    sys.exit(main())
