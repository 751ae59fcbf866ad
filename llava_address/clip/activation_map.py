"""Activation maps: how similar every image of a split is to one free-text address query.

A district / street / sub-street query should light up where that place really is: it is a
direct picture of what the image–address alignment has learnt about geography.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from data_gen.contract import read_manifest
from llava_address.clip.locator import AddressLocator
from llava_address.common.images import load_image

__all__ = ["query_similarity", "activation_map"]


@torch.inference_mode()
def query_similarity(locator: AddressLocator, data_dir: str | Path, query: str, split: str = "test") -> pd.DataFrame:
    """The split's manifest with a ``similarity`` column = cos(image, query text)."""
    if not query.strip():
        raise ValueError("query address text is empty")
    data_dir = Path(data_dir)
    df = read_manifest(data_dir, split)
    if df.empty:
        raise ValueError(f"{data_dir}: split {split!r} has no images")
    keep, feats = [], []
    for start in range(0, len(df), locator.batch_size):
        imgs = []
        for i in range(start, min(start + locator.batch_size, len(df))):
            try:
                imgs.append(load_image(data_dir / df["image"].iloc[i]))
                keep.append(i)
            except ValueError:
                continue
        if imgs:
            feats.append(locator.encode_images(imgs))
    q = locator.encode_texts([query])[0]
    return df.iloc[keep].reset_index(drop=True).assign(similarity=(torch.cat(feats) @ q).numpy())


def activation_map(model_dir: str | Path, data_dir: str | Path, query: str, out: str | Path,
                   split: str = "test", device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32) -> pd.DataFrame:
    """Draw the similarity of each ``split`` image to ``query`` on the street map; returns the values."""
    from llava_address.clip.plots import plot_activation

    df = query_similarity(AddressLocator.from_pretrained(model_dir, device=device, dtype=dtype), data_dir, query, split)
    plot_activation(df["lat"], df["lon"], df["similarity"], data_dir, query, out)
    return df
