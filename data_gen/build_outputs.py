"""Write the non-image parts of a dataset folder: manifest, addresses, network, stats, map.

Only addresses that have images enter addresses.json: a candidate with no image could
never be a correct answer and would silently inflate the retrieval candidate set.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from data_gen.contract import (MANIFEST_COLUMNS, NETWORK_FILE, SPLITS, STATS_FILE, AddressVocabulary,
                               write_addresses, write_manifest)
from data_gen.map_plot import plot_map, write_network_geojson
from data_gen.road_network import RoadNetwork
from llava_address.common.io import atomic_write_json

__all__ = ["write_outputs", "build_stats"]


def _vocab(net: RoadNetwork, pieces: dict, df: pd.DataFrame) -> AddressVocabulary:
    subs = sorted(set(df.sub_street))
    info = {}
    for n in subs:
        p = pieces[n]
        mx, my = p.midpoint_xy
        lat, lon = net.projection.to_latlon(np.array([mx]), np.array([my]))
        info[n] = {"street": p.street, "district": getattr(p, "district", "") or "",
                   "midpoint": [round(float(lat[0]), 7), round(float(lon[0]), 7)],
                   "length_m": round(float(p.length_m), 1), "from": p.from_street, "to": p.to_street}
    return AddressVocabulary(subs, sorted(set(df.street)), sorted({d for d in df.district if d}), info)


def build_stats(cfg, net: RoadNetwork, pieces: dict, df: pd.DataFrame, dropped: Counter, n_sampled: int,
                train_only: int, t0: float, extra: dict | None = None) -> dict:
    per_sub = df.groupby("sub_street").size()
    per_sub_train = df[df.split == "train"].groupby("sub_street").size()
    drops = {k: int(v) for k, v in sorted(dropped.items()) if v and k != "capped_by_max_images"}
    return {
        "name": cfg.name,
        "map": {**net.summary(), "sub_street_pieces": len(pieces)},
        "images": {"sampled": int(n_sampled), "kept": len(df), "dropped": drops,
                   "dropped_total": int(sum(drops.values())),
                   "capped_by_max_images": int(dropped.get("capped_by_max_images", 0))},
        "splits": {s: int((df.split == s).sum()) for s in SPLITS},
        "classes": {lvl: {"all": int(df[lvl][df[lvl] != ""].nunique()),
                          **{s: int(df[lvl][(df.split == s) & (df[lvl] != "")].nunique()) for s in SPLITS}}
                    for lvl in ("sub_street", "street", "district")},
        "images_per_sub_street": {"min": int(per_sub.min()), "median": float(per_sub.median()),
                                  "max": int(per_sub.max()),
                                  "train_min": int(per_sub_train.min()) if len(per_sub_train) else 0},
        "sub_streets_without_train": int(len(set(df.sub_street) - set(per_sub_train.index))),
        "train_only_sub_streets": int(train_only),
        "mean_geocode_confidence": round(float(df.geocode_confidence.mean()), 4),
        "image_size": cfg.render.size if cfg.importer.kind == "synthcity" else None,
        "build_seconds": round(time.time() - t0, 1),
        **(extra or {}),
    }


def write_outputs(cfg, out: Path, net: RoadNetwork, pieces: dict, df: pd.DataFrame, dropped: Counter,
                  n_sampled: int, train_only: int, t0: float, extra: dict | None = None) -> dict:
    write_manifest(out, df[list(MANIFEST_COLUMNS)].copy())
    vocab = _vocab(net, pieces, df)
    write_addresses(out, vocab)
    keep = set(vocab.sub_street)
    write_network_geojson(out / NETWORK_FILE, net, [p for n, p in pieces.items() if n in keep])
    plot_map(out / "map.png", net, [pieces[n] for n in vocab.sub_street], df.x.to_numpy(), df.y.to_numpy(),
             df.split.to_numpy(), title=f"{cfg.name}: {len(df)} images, {len(keep)} sub-streets")
    stats = build_stats(cfg, net, pieces, df, dropped, n_sampled, train_only, t0, extra)
    atomic_write_json(out / STATS_FILE, stats)
    return stats
