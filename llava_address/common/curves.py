"""Training curves as PNG: people look at a loss curve before they read a log.

Works from plain rows (dicts with a step column), so the AddressCLIP CSV logs and the HF
Trainer's ``log_history`` are drawn by the same function.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from llava_address.common.io import atomic_write_bytes

__all__ = ["read_csv_rows", "plot_curves"]


def read_csv_rows(path: str | Path) -> list[dict[str, float]]:
    """Numeric rows of a CSV log; non-numeric cells are left out, a missing file gives []."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="", encoding="utf-8") as fh:
        for raw in csv.DictReader(fh):
            row = {}
            for k, v in raw.items():
                try:
                    row[k] = float(v)
                except (TypeError, ValueError):
                    continue
            rows.append(row)
    return rows


def plot_curves(panels: Mapping[str, tuple[Sequence[Mapping[str, float]], Iterable[str]]],
                out_png: str | Path, step_key: str = "step", title: str = "") -> Path | None:
    """One subplot per panel: ``{panel title: (rows, keys to draw)}``; None if nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawable = {name: (rows, [k for k in keys if any(k in r for r in rows)])
                for name, (rows, keys) in panels.items()}
    drawable = {n: (r, k) for n, (r, k) in drawable.items() if r and k}
    if not drawable:
        return None
    fig, axes = plt.subplots(1, len(drawable), figsize=(5 * len(drawable), 3.6), squeeze=False)
    for ax, (name, (rows, keys)) in zip(axes[0], drawable.items()):
        for key in keys:
            pts = [(r[step_key], r[key]) for r in rows if step_key in r and key in r]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, label=key, marker="o" if len(pts) < 20 else None, ms=3)
        ax.set_title(name)
        ax.set_xlabel(step_key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    out_png = Path(out_png)
    atomic_write_bytes(out_png, buf.getvalue())
    return out_png
