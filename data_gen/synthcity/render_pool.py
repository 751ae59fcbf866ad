"""Render many views to JPEG files, optionally across processes (multiprocessing Pool).

Image ``i`` always uses ``np.random.default_rng([seed, i])``, so the output is identical
for any number of workers.
"""

from __future__ import annotations

from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from data_gen.synthcity.city import SynthCity
from data_gen.synthcity.conditions import CaptureConditions
from data_gen.synthcity.draw import render_view

__all__ = ["render_to_files"]

_CITY: SynthCity | None = None
_ARGS: dict = {}


def _init(seed: int, bounds, n_zones: int, wl, size: int, quality: int, img_dir: str, conditions: dict,
          block: tuple[float, float]) -> None:
    global _CITY, _ARGS
    _CITY = SynthCity(seed=seed, bounds=bounds, n_zones=n_zones, field_wavelength_m=tuple(wl),
                      block_m=block[0], block_palette=block[1])
    _ARGS = {"seed": seed, "size": size, "quality": quality, "dir": Path(img_dir),
             "cond": {k: CaptureConditions(**v) for k, v in conditions.items()}}


def _work(rows: list[tuple]) -> list[tuple[int, str]]:
    out = []
    for i, tx, ty, dx, dy, street, highway, district, block, split in rows:
        ctx = _CITY.view(tx, ty, dx, dy, street, highway, district, block)
        img, cap = render_view(ctx, np.random.default_rng([_ARGS["seed"], int(i)]), _ARGS["size"],
                               _ARGS["cond"][split])
        img.save(_ARGS["dir"] / f"{i:07d}.jpg", quality=_ARGS["quality"])
        out.append((i, cap))
    return out


def render_to_files(rcfg, bounds, df: pd.DataFrame, img_dir: Path, chunk: int = 64) -> tuple[list[str], list[str]]:
    """Render one image per row of ``df`` (tx, ty, dx, dy, street_true, highway, district[, split]).

    Each row is drawn under ``rcfg.conditions[split]`` (rows without a split: "train", the
    database conditions). Returns (relative image paths "images/0000000.jpg", scene captions) in row order.
    """
    init = (rcfg.seed, tuple(bounds), rcfg.n_zones, tuple(rcfg.field_wavelength_m), rcfg.size,
            rcfg.jpeg_quality, str(img_dir), {k: c.model_dump() for k, c in rcfg.conditions.items()},
            (rcfg.block_m, rcfg.block_palette))
    split = df["split"] if "split" in df else ["train"] * len(df)
    unknown = sorted(set(split) - set(rcfg.conditions))
    if unknown:
        raise ValueError(f"render.conditions has no entry for split(s) {unknown}")
    block = df["block"] if "block" in df else [""] * len(df)
    rows = list(zip(range(len(df)), df.tx, df.ty, df.dx, df.dy, df.street_true, df.highway, df.district, block, split))
    chunks = [rows[i:i + chunk] for i in range(0, len(rows), chunk)]
    caps = [""] * len(rows)
    bar = tqdm(total=len(rows), desc=f"render {rcfg.size}px", unit="img")
    if rcfg.workers <= 1:
        _init(*init)
        results = map(_work, chunks)
        for res in results:
            for i, c in res:
                caps[i] = c
            bar.update(len(res))
    else:
        with get_context("spawn").Pool(rcfg.workers, initializer=_init, initargs=init) as pool:
            for res in pool.imap_unordered(_work, chunks):
                for i, c in res:
                    caps[i] = c
                bar.update(len(res))
    bar.close()
    return [f"images/{i:07d}.jpg" for i in range(len(rows))], caps
