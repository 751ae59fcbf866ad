"""Evaluate an AddressCLIP on one split: SSA-1/5, SA-1/5, mean/median distance error (m).

``evaluate(model_dir, data_dir, split, out_dir)`` writes ``eval_<split>.json`` + ``.md`` and two
pictures (predictions vs truth on the map; most-confused sub-street pairs). The in-memory core
``evaluate_locator`` is also used for periodic evaluation during training and for the table.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from data_gen.contract import read_addresses, read_manifest
from llava_address.clip.locator import AddressLocator
from llava_address.clip.metrics import address_metrics
from llava_address.common.images import load_image
from llava_address.common.io import atomic_write_json, atomic_write_text

__all__ = ["embed_split", "evaluate_locator", "evaluate", "metrics_markdown", "METRIC_KEYS"]

log = logging.getLogger(__name__)
METRIC_KEYS = ("SSA-1", "SSA-5", "SA-1", "SA-5", "mean_error_m", "median_error_m")


def _subset(df: pd.DataFrame, max_images: int | None) -> pd.DataFrame:
    if max_images is None or len(df) <= max_images:
        return df
    return df.iloc[np.linspace(0, len(df) - 1, max_images).astype(int)].reset_index(drop=True)


@torch.inference_mode()
def embed_split(locator: AddressLocator, data_dir: str | Path, split: str, max_images: int | None = None,
                progress: bool = True) -> tuple[pd.DataFrame, torch.Tensor, int]:
    """(manifest rows kept, (N, D) image features, undecodable images skipped) for one split."""
    data_dir = Path(data_dir)
    df = _subset(read_manifest(data_dir, split), max_images)
    if df.empty:
        raise ValueError(f"{data_dir}: split {split!r} has no images")
    feats, keep, skipped = [], [], 0
    bs = locator.batch_size
    for start in tqdm(range(0, len(df), bs), desc=f"embed {split}", disable=not progress, leave=False):
        imgs = []
        for i in range(start, min(start + bs, len(df))):
            try:
                imgs.append(load_image(data_dir / df["image"].iloc[i]))
                keep.append(i)
            except ValueError as exc:
                skipped += 1
                log.warning("eval: skipping (%d so far): %s", skipped, exc)
        if imgs:
            feats.append(locator.encode_images(imgs))
    if not feats:
        raise ValueError(f"{data_dir}: no readable image in split {split!r}")
    return df.iloc[keep].reset_index(drop=True), torch.cat(feats), skipped


@torch.inference_mode()
def evaluate_locator(locator: AddressLocator, data_dir: str | Path, split: str = "test",
                     max_images: int | None = None, progress: bool = True) -> tuple[dict[str, float], pd.DataFrame]:
    """Rank the dataset's sub-street vocabulary for every image of ``split``; undecodable images are skipped."""
    data_dir = Path(data_dir)
    vocab = read_addresses(data_dir)
    cands = list(vocab.sub_street)
    df, feats, skipped = embed_split(locator, data_dir, split, max_images, progress)
    probs = locator.scores(feats, cands)
    ranked = torch.argsort(probs, dim=-1, descending=True).numpy()
    street_of = {s: vocab.street_of(s) for s in cands}
    mid = {s: vocab.midpoint(s) for s in cands}
    metrics = address_metrics(ranked, cands, list(df["sub_street"]), street_of, mid, df["lat"], df["lon"])
    metrics["skipped_images"] = float(skipped)
    pred = [cands[r[0]] for r in ranked]
    out = df.assign(pred=pred, pred_prob=probs.max(dim=-1).values.numpy(),
                    pred_lat=[mid[p][0] for p in pred], pred_lon=[mid[p][1] for p in pred])
    return metrics, out


def metrics_markdown(metrics: dict[str, Any], title: str) -> str:
    rows = [f"| {k} | {metrics[k]:.4f} |" if "error" not in k else f"| {k} | {metrics[k]:.1f} |"
            for k in METRIC_KEYS if k in metrics]
    return f"### {title}\n\n| metric | value |\n|---|---|\n" + "\n".join(rows) + f"\n\nimages: {int(metrics['n_images'])}\n"


def evaluate(model_dir: str | Path, data_dir: str | Path, split: str = "test", out_dir: str | Path | None = None,
             plots: bool = True, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
             max_images: int | None = None) -> dict[str, float]:
    """Evaluate a saved checkpoint; writes JSON + markdown (+ PNGs) into ``out_dir`` (default: model_dir)."""
    locator = AddressLocator.from_pretrained(model_dir, device=device, dtype=dtype)
    metrics, preds = evaluate_locator(locator, data_dir, split, max_images)
    out = Path(out_dir or model_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"eval_{split}.json", metrics)
    atomic_write_text(out / f"eval_{split}.md", metrics_markdown(metrics, f"AddressCLIP on {Path(data_dir).name} / {split}"))
    if plots:
        from llava_address.clip.plots import plot_confusions, plot_predictions_map

        plot_predictions_map(preds, data_dir, out / f"eval_{split}_map.png")
        plot_confusions(preds, out / f"eval_{split}_confusions.png")
    return metrics
