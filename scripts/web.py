"""python scripts/web.py [--export DIR] [--clip DIR] [--device auto] [--data DIR] [--port 7860] [--host 127.0.0.1]

Serve the llava-address web app locally: upload or pick a street photo, get LLaVA's address
answer, AddressCLIP's candidate addresses with scores, and a map of the dataset's road network
with the predicted sub-street; ask follow-up questions; draw activation maps for an address.
Offline: analytics off, no share link, nothing fetched. Defaults are the demo's outputs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llava_address.app.web_backend import WebBackend  # noqa: E402
from llava_address.common.device import add_device_args, device_and_dtype  # noqa: E402

DEMO = "outputs/demo"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    ap.add_argument("--export", "--model", dest="export",
                    help=f"LLaVA export dir (default: the demo's, {DEMO}/llava/export)")
    ap.add_argument("--clip", help=f"AddressCLIP checkpoint dir (default: the demo's, {DEMO}/clip/model)")
    ap.add_argument("--data", help=f"dataset dir: map, example photos, ground truth (default {DEMO}/data)")
    ap.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 exposes it on the network)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--candidates", type=int, default=5, help="AddressCLIP candidates shown")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--grounded", action="store_true", help="put the AddressCLIP candidates into the first question")
    ap.add_argument("--rerank", action="store_true",
                    help="first answer: AddressCLIP's top-k re-ranked by fusion with LLaVA's answer likelihood "
                         "(lambda from <export>/rerank.json, fitted by eval_llava.py --rerank)")
    ap.add_argument("--rerank-lambda", type=float, default=None, help="fusion weight (implies --rerank)")
    ap.add_argument("--max-upload-mb", type=float, default=10.0, help="larger photos get a message, not a run")
    ap.add_argument("--upload-dir", default=os.path.join(tempfile.gettempdir(), "llava-address-web"),
                    help="Gradio's temp folder for uploads and shown images (GRADIO_TEMP_DIR)")
    ap.add_argument("--upload-dir-mb", type=float, default=200.0,
                    help="oldest files in --upload-dir are deleted beyond this size")
    add_device_args(ap)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.makedirs(args.upload_dir, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = args.upload_dir  # read when gradio is imported (below)
    from llava_address.app.demo_pipeline import demo_artifact
    from llava_address.app.web import launch

    data = args.data or str(demo_artifact("dataset", DEMO))
    if not os.path.isdir(data):
        logging.warning("dataset %s not found: the page will have no map and no examples", data)
        data = None
    model = args.export or demo_artifact("llava_export", DEMO)
    clip = args.clip or demo_artifact("clip_model", DEMO)
    device, dtype = device_and_dtype(args, model)
    lam = args.rerank_lambda
    if args.rerank and lam is None:
        from llava_address.llava.rerank import load_rerank

        try:
            lam = load_rerank(model, args.grounded).lam
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    backend = WebBackend(model, clip, data, k=args.candidates, max_new_tokens=args.max_new_tokens,
                         max_image_bytes=int(args.max_upload_mb * 2**20), device=device, dtype=dtype,
                         clip_dtype=device_and_dtype(args, clip)[1], upload_dir=args.upload_dir,
                         max_upload_dir_bytes=int(args.upload_dir_mb * 2**20), grounded=args.grounded,
                         rerank_lambda=lam)
    for note in backend.notes:
        logging.warning(note)
    launch(backend, host=args.host, port=args.port, block=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
