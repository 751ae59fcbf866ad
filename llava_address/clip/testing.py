"""A tiny synthetic dataset in the data_gen contract, for AddressCLIP tests and smoke runs.

8 sub-streets on 3 streets (two east-west streets cut in three, one north-south street cut in
two). Each image's colours depend on its position (a smooth field) plus a per-street stripe
pattern, so location is learnable in a few dozen steps. Written through ``write_manifest`` /
``write_addresses`` / ``RoadNetwork.save`` so the real contract is exercised.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["make_fixture_dataset"]

LAT0, LON0 = 60.17, 24.94
# street -> (start xy, end xy, cut points as fractions, cross-street names at the cuts/ends)
STREETS = {
    "Aleksanterinkatu": ((0, 0), (900, 0), ["Bulevardi", "Cross A", "Cross B", "Kaivokatu"]),
    "Bulevardi Länsi": ((0, 400), (900, 400), ["Hämeentie", "Cross A", "Cross B", "Kaivokatu"]),
    "Hämeentie": ((0, 0), (0, 400), ["Aleksanterinkatu", "Middle", "Bulevardi Länsi"]),
}
COLOURS = {"Aleksanterinkatu": (200, 60, 60), "Bulevardi Länsi": (60, 160, 60), "Hämeentie": (60, 80, 200)}


def _image(x: float, y: float, street: str, piece: int, rng: np.random.Generator, size: int):
    from PIL import Image

    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.array(COLOURS[street], dtype=float)
    field = np.stack([np.sin(x / 150 + 3 * xx), np.cos(y / 150 + 3 * yy), np.sin((x + y) / 200 + 2 * xx * yy)], -1)
    stripes = (np.sin((piece + 1) * 6.28 * xx) > 0)[..., None] * 40.0
    img = 0.5 * base + 60 * field + stripes + rng.normal(0, 12, (size, size, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def make_fixture_dataset(out_dir: str | Path, per_sub_street: int = 16, image_size: int = 48, seed: int = 0,
                         corrupt: int = 0) -> Path:
    """Write the fixture to ``out_dir``; ``corrupt`` adds that many undecodable train images."""
    import pandas as pd
    from shapely.geometry import LineString

    from data_gen.contract import NETWORK_FILE, STATS_FILE, AddressVocabulary, write_addresses, write_manifest
    from data_gen.road_network import LocalProjection, RoadNetwork, Way
    from llava_address.common.io import atomic_write_json

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    proj = LocalProjection(LAT0, LON0)
    rows, info, ways = [], {}, []
    for wi, (street, (a, b, cross)) in enumerate(STREETS.items()):
        ways.append(Way(wi + 1, street, "residential", LineString([a, b])))
        a, b = np.array(a, float), np.array(b, float)
        n_pieces = len(cross) - 1
        for p in range(n_pieces):
            sub = f"{street} between {cross[p]} and {cross[p + 1]}"
            t0, t1 = p / n_pieces, (p + 1) / n_pieces
            mid = a + (b - a) * (t0 + t1) / 2
            mlat, mlon = proj.to_latlon(mid[0], mid[1])
            info[sub] = {"street": street, "district": "Keskusta" if mid[0] < 450 else "Kallio",
                         "midpoint": [float(mlat), float(mlon)], "length_m": float(np.linalg.norm(b - a) * (t1 - t0)),
                         "from": cross[p], "to": cross[p + 1]}
            for j in range(per_sub_street):
                frac = (j + 0.5) / per_sub_street
                split = "train" if frac < 0.7 else ("val" if frac < 0.85 else "test")  # held-out stretches
                xy = a + (b - a) * (t0 + (t1 - t0) * frac)
                lat, lon = proj.to_latlon(xy[0], xy[1])
                rel = f"images/{len(rows):05d}.png"
                _image(xy[0], xy[1], street, p, rng, image_size).save(out / rel)
                caption = f"a street with {['red', 'green', 'blue'][wi]} houses and {['trees', 'shops'][p % 2]}"
                rows.append({"image": rel, "lat": float(lat), "lon": float(lon), "street": street, "sub_street": sub,
                             "district": info[sub]["district"], "caption": caption, "split": split,
                             "geocode_confidence": 1.0})
    for c in range(corrupt):
        rel = f"images/broken_{c}.png"
        (out / rel).write_bytes(b"not an image")
        rows.append({**rows[0], "image": rel})
    write_manifest(out, pd.DataFrame(rows))
    subs = list(info)
    write_addresses(out, AddressVocabulary(subs, list(STREETS), sorted({i["district"] for i in info.values()}), info))
    RoadNetwork("fixture", proj, ways).save(out / NETWORK_FILE)
    atomic_write_json(out / STATS_FILE, {"images": len(rows), "fixture": True})
    return out


def distributed_loss_worker(rank: int, world: int, out_dir: str) -> None:
    """torch.multiprocessing target for the 2-rank loss test: the same batch as the test's ``_batch``,
    rank r holding rows [3r, 3r+3); saves its loss and local feature gradients."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from llava_address.clip.config import LossConfig
    from llava_address.clip.losses import AddressCLIPLoss

    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=world)
    try:
        g = torch.Generator().manual_seed(0)
        n, d = 6, 8
        feats = {k: F.normalize(torch.randn(n, d, generator=g), dim=-1)
                 for k in ("image_embeds", "address_embeds", "semantic_embeds")}
        lat = 60 + torch.rand(n, generator=g).double() * 1e-3
        lon = 24 + torch.rand(n, generator=g).double() * 1e-3
        sl = slice(3 * rank, 3 * rank + 3)
        out = {k: v[sl].clone().requires_grad_(True) for k, v in feats.items()}
        out["logit_scale"] = torch.tensor(10.0)
        batch = {"address_ids": torch.tensor([0, 0, 1, 2, 2, 2])[sl], "semantic_ids": torch.arange(n)[sl],
                 "lat": lat[sl], "lon": lon[sl]}
        parts = AddressCLIPLoss(LossConfig())(out, batch)
        parts["loss"].backward()
        torch.save({"loss": parts["loss"].item(), **{"grad_" + k: out[k].grad for k in feats}},
                   f"{out_dir}/rank{rank}.pt")
        dist.barrier()  # no rank tears gloo down while the other still has work in flight (SIGABRT seen in CI)
    finally:
        dist.destroy_process_group()
    # gloo's C++ teardown at interpreter exit can still abort ("terminate called without an active
    # exception", seen twice in CI after the results were saved): leave without running destructors
    os._exit(0)
