"""Map pictures for evaluation and activation maps (matplotlib, Agg backend, no display)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from data_gen.contract import NETWORK_FILE  # noqa: E402

__all__ = ["draw_network", "plot_predictions_map", "plot_confusions", "plot_activation"]


def _lines(geom: dict) -> list[np.ndarray]:
    t, c = geom.get("type"), geom.get("coordinates", [])
    if t == "LineString":
        return [np.asarray(c, float)]
    if t == "MultiLineString":
        return [np.asarray(x, float) for x in c]
    return []


def draw_network(ax, data_dir: str | Path) -> None:
    """Grey street lines from ``network.geojson`` (lon/lat); silently nothing when the file is absent."""
    path = Path(data_dir) / NETWORK_FILE
    if not path.is_file():
        return
    for f in json.loads(path.read_text(encoding="utf-8")).get("features", []):
        for line in _lines(f.get("geometry") or {}):
            if line.ndim == 2 and len(line) > 1:
                ax.plot(line[:, 0], line[:, 1], color="0.75", lw=0.6, zorder=1)


def _save(fig, out: str | Path) -> None:
    from llava_address.common.io import atomic_write_bytes
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())


def plot_predictions_map(preds: pd.DataFrame, data_dir: str | Path, out: str | Path, max_arrows: int = 400) -> None:
    """Truth GPS (dots: green = correct sub-street, red = wrong) with a line to the predicted midpoint."""
    fig, ax = plt.subplots(figsize=(8, 8))
    draw_network(ax, data_dir)
    ok = (preds["pred"] == preds["sub_street"]).to_numpy()
    wrong = preds[~ok].head(max_arrows)
    for _, r in wrong.iterrows():
        ax.plot([r["lon"], r["pred_lon"]], [r["lat"], r["pred_lat"]], color="tab:red", lw=0.5, alpha=0.5, zorder=2)
    ax.scatter(preds["lon"][ok], preds["lat"][ok], s=8, c="tab:green", label=f"correct ({ok.sum()})", zorder=3)
    ax.scatter(preds["lon"][~ok], preds["lat"][~ok], s=8, c="tab:red", label=f"wrong ({(~ok).sum()})", zorder=3)
    ax.set_aspect(1 / np.cos(np.radians(preds["lat"].mean())))
    ax.set_title("AddressCLIP top-1: truth GPS, lines to predicted sub-street midpoint")
    ax.legend(loc="upper right")
    _save(fig, out)


def plot_confusions(preds: pd.DataFrame, out: str | Path, top: int = 15) -> None:
    """Horizontal bars: the most frequent (true -> predicted) sub-street confusions."""
    wrong = preds[preds["pred"] != preds["sub_street"]]
    counts = wrong.groupby(["sub_street", "pred"]).size().sort_values(ascending=False).head(top)
    fig, ax = plt.subplots(figsize=(10, 0.4 * max(len(counts), 2) + 1))
    labels = [f"{t[:45]}  →  {p[:45]}" for t, p in counts.index]
    ax.barh(range(len(counts)), counts.to_numpy(), color="tab:orange")
    ax.set_yticks(range(len(counts)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("images")
    ax.set_title(f"most-confused sub-street pairs ({len(wrong)} errors of {len(preds)})")
    _save(fig, out)


def plot_activation(lat: Sequence[float], lon: Sequence[float], sim: Sequence[float], data_dir: str | Path,
                    query: str, out: str | Path) -> None:
    """Scatter of image locations coloured by similarity to ``query`` over the street network."""
    fig, ax = plt.subplots(figsize=(8, 8))
    draw_network(ax, data_dir)
    order = np.argsort(sim)  # brightest on top
    sc = ax.scatter(np.asarray(lon)[order], np.asarray(lat)[order], c=np.asarray(sim)[order], s=10, cmap="inferno",
                    zorder=3)
    fig.colorbar(sc, ax=ax, shrink=0.7, label="cosine similarity to query")
    ax.set_aspect(1 / np.cos(np.radians(np.mean(lat))))
    ax.set_title(f"activation map: {query!r}")
    _save(fig, out)
