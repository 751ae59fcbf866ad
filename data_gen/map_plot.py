"""Dataset maps: network.geojson (ways + sub-street pieces, lon/lat) and a map.png overview.

WHY: a glance at the map shows whether splits are spatially disjoint and whether the
sub-street partition looks sane — cheaper than any statistic for catching a broken build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import shapely
from shapely.geometry import mapping

from data_gen.road_network import RoadNetwork
from llava_address.common.io import atomic_write_json

__all__ = ["network_geojson", "write_network_geojson", "plot_map"]

SPLIT_COLOURS = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#d62728"}


def _lonlat(network: RoadNetwork, geom):
    def fn(xy: np.ndarray) -> np.ndarray:
        lat, lon = network.projection.to_latlon(xy[:, 0], xy[:, 1])
        return np.c_[lon, lat]
    return shapely.transform(geom, fn)


def network_geojson(network: RoadNetwork, pieces: Sequence = (), keep: set[str] | None = None) -> dict:
    """The network's own GeoJSON plus one feature per sub-street piece (kind="sub_street")."""
    data = network.to_geojson()
    for p in pieces:
        if keep is not None and p.name not in keep:
            continue
        data["features"].append({
            "type": "Feature", "geometry": mapping(_lonlat(network, p.geometry)),
            "properties": {"kind": "sub_street", "name": p.name, "street": p.street,
                           "district": getattr(p, "district", "") or "",
                           "from": p.from_street, "to": p.to_street}})
    return data


def write_network_geojson(path: str | Path, network: RoadNetwork, pieces: Sequence = (),
                          keep: set[str] | None = None) -> None:
    atomic_write_json(path, network_geojson(network, pieces, keep), indent=0)


def plot_map(path: str | Path, network: RoadNetwork, pieces: Sequence, x: np.ndarray, y: np.ndarray,
             split: np.ndarray, title: str = "") -> None:
    """Streets grey, sub-street pieces in cycling colours, image points coloured by split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    fig, ax = plt.subplots(figsize=(9, 9), dpi=110)
    segs = [np.asarray(w.geometry.coords) for w in network.ways]
    ax.add_collection(LineCollection(segs, colors="#bbbbbb", linewidths=0.6))
    cmap = plt.get_cmap("tab20")
    psegs, pcols = [], []
    for i, p in enumerate(pieces):
        for g in getattr(p.geometry, "geoms", [p.geometry]):
            psegs.append(np.asarray(g.coords))
            pcols.append(cmap(i % 20))
    if psegs:
        ax.add_collection(LineCollection(psegs, colors=pcols, linewidths=1.6))
    for s, c in SPLIT_COLOURS.items():
        m = split == s
        ax.scatter(x[m], y[m], s=2, c=c, label=f"{s} ({int(m.sum())})", zorder=3)
    ax.set_aspect("equal")
    ax.autoscale()
    ax.legend(loc="upper right", markerscale=4)
    ax.set_title(title or network.name)
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    fig.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
