"""Diagnostics for the ablation table: does the embedding carry geography, do captions carry address?

- ``geo_alignment``: Spearman correlation, over all image pairs of a split, between image-feature
  distance (1 − cos) and geographic distance — what L_geo is meant to raise.
- ``caption_information``: how much the captions alone say about the sub-street / street /
  district of held-out images — what L_semantic can add beyond the address text.
- ``accuracy_by_condition``: SSA-1 per SynthCity capture condition (time of day, weather, view),
  read back from the scene caption: does a model fail on the shifted conditions or everywhere?
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from data_gen.contract import read_manifest
from llava_address.clip.locator import AddressLocator
from llava_address.clip.losses import pairwise_haversine_m
from llava_address.common.images import load_image

__all__ = ["geo_alignment", "caption_information", "accuracy_by_condition"]


@torch.inference_mode()
def geo_alignment(locator: AddressLocator, data_dir: str | Path, split: str = "test") -> dict[str, float]:
    from scipy.stats import spearmanr

    data_dir = Path(data_dir)
    df = read_manifest(data_dir, split)
    feats = locator.encode_images([load_image(data_dir / p) for p in df["image"]])
    iu = np.triu_indices(len(df), 1)
    fdist = (1 - feats @ feats.t()).numpy()[iu]
    gdist = pairwise_haversine_m(torch.tensor(df["lat"].to_numpy()), torch.tensor(df["lon"].to_numpy())).numpy()[iu]
    near = gdist < np.quantile(gdist, 0.1)
    return {"spearman_feat_vs_geo": float(spearmanr(fdist, gdist).statistic),
            "feat_dist_near_pairs": float(fdist[near].mean()), "feat_dist_all_pairs": float(fdist.mean())}


def caption_information(data_dir: str | Path, split: str = "test") -> dict[str, float]:
    """Caption-only location guess: a ``split`` image takes the majority label of train images with the
    identical caption (no match = wrong). Accuracy per level vs the majority-class baseline."""
    train, held = read_manifest(data_dir, "train"), read_manifest(data_dir, split)
    out = {"unique_captions_train": float(train["caption"].nunique()), "train_images": float(len(train)),
           "caption_seen_in_train": float(held["caption"].isin(set(train["caption"])).mean())}
    for lvl in ("sub_street", "street", "district"):
        majority = train.groupby("caption")[lvl].agg(lambda s: s.value_counts().index[0])
        guess = held["caption"].map(majority)
        hit = (guess == held[lvl]).fillna(False).astype(bool)  # unseen caption -> NA -> wrong
        out[f"caption_acc_{lvl}"] = float(hit.mean())
        out[f"caption_acc_{lvl}_when_seen"] = float(hit[guess.notna()].mean())
        out[f"majority_baseline_{lvl}"] = float((held[lvl] == train[lvl].value_counts().index[0]).mean())
    return out


def accuracy_by_condition(preds: pd.DataFrame) -> dict[str, dict[str, float]]:
    """SSA-1 and image count per capture condition of SynthCity images.

    ``preds``: ``evaluate_locator``'s per-image frame (``caption``, ``sub_street``, ``pred``). The
    condition is read from the caption phrases the renderer writes (``draw.TIMES_OF_DAY``,
    ``draw.WEATHER_PHRASE``, "looking across"); "database-like" = daylight, clear, along the street,
    the training split's most common capture.
    """
    from data_gen.synthcity.draw import TIMES_OF_DAY, WEATHER_PHRASE

    cap, hit = preds["caption"], preds["pred"] == preds["sub_street"]
    tod = {t: cap.str.contains(TIMES_OF_DAY[t][0], regex=False) for t in TIMES_OF_DAY}
    weather = {w: cap.str.contains(ph, regex=False) for w, ph in WEATHER_PHRASE.items() if ph}
    weather["clear"] = ~np.logical_or.reduce(list(weather.values()))
    across = cap.str.contains("looking across", regex=False)
    groups = {"all": cap == cap, **{f"time: {k}": m for k, m in tod.items()},
              **{f"weather: {k}": m for k, m in weather.items()}, "view: across": across, "view: along": ~across,
              "database-like (day, clear, along)": tod["day"] & weather["clear"] & ~across}
    return {k: {"n": float(m.sum()), "SSA-1": float(hit[m].mean()) if m.any() else float("nan")}
            for k, m in groups.items()}
