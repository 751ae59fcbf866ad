"""Example database/query pairs of the same place: the "how hard is it" picture for the README.

For seeded random test images, the nearest *training* image of the same sub-street (by GPS) is
shown beside it, so a reader sees what a model must match: same place, other capture conditions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from data_gen.contract import read_manifest
from data_gen.nominatim import haversine_m

__all__ = ["example_pairs"]


def example_pairs(data_dir: str | Path, out_png: str | Path, n: int = 6, seed: int = 0,
                  split: str = "test") -> list[tuple[str, str, float]]:
    """Write a PNG with ``n`` rows (database image | query image); returns (train, query, metres)."""
    data_dir = Path(data_dir)
    train, query = read_manifest(data_dir, "train"), read_manifest(data_dir, split)
    if query.empty or train.empty:
        raise ValueError(f"{data_dir}: need train and {split} images")
    rng = np.random.default_rng(seed)
    rows = []
    for i in rng.choice(len(query), size=min(n, len(query)), replace=False):
        q = query.iloc[int(i)]
        same = train[train.sub_street == q.sub_street]
        d = haversine_m(same.lat.to_numpy(), same.lon.to_numpy(), q.lat, q.lon)
        rows.append((same.iloc[int(np.argmin(d))].image, q.image, float(d.min())))
    tiles = [Image.open(data_dir / r).convert("RGB") for pair in rows for r in pair[:2]]
    w, h = tiles[0].size
    label = 12
    sheet = Image.new("RGB", (2 * w + 4, len(rows) * (h + label) + label), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((2, 0), "database (train)", fill="black")
    draw.text((w + 6, 0), f"query ({split})", fill="black")
    for r, (_, _, m) in enumerate(rows):
        y = label + r * (h + label)
        sheet.paste(tiles[2 * r], (0, y))
        sheet.paste(tiles[2 * r + 1], (w + 4, y))
        draw.text((2, y + h), f"same sub-street, {m:.0f} m apart", fill="black")
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png, optimize=True)
    return rows
