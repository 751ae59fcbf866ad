"""Draw a dataset's own road network (network.geojson) with matplotlib, offline.

Why matplotlib and not a tile map: the app must work with nothing fetched, and the dataset
already carries its streets, sub-street pieces and districts in lon/lat. The map highlights a
predicted sub-street, marks a true location, or colours points by a score (activation view).
Everything is drawn in an equirectangular frame with the x axis scaled by cos(latitude), which
is exact enough at city scale.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: the web server and tests have no display
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

from data_gen.contract import NETWORK_FILE  # noqa: E402
from llava_address.common.io import read_json  # noqa: E402

__all__ = ["NetworkMap", "load_network_map"]

Line = list[tuple[float, float]]  # [(lon, lat), ...]


def _lines(geometry: dict[str, Any]) -> list[Line]:
    """All polylines / rings of a GeoJSON geometry as lists of (lon, lat)."""
    kind, coords = geometry.get("type"), geometry.get("coordinates", [])
    if kind == "LineString":
        return [[(float(x), float(y)) for x, y, *_ in coords]]
    if kind in ("MultiLineString", "Polygon"):
        return [[(float(x), float(y)) for x, y, *_ in part] for part in coords]
    if kind == "MultiPolygon":
        return [[(float(x), float(y)) for x, y, *_ in ring] for poly in coords for ring in poly]
    if kind == "GeometryCollection":
        return [line for g in geometry.get("geometries", []) for line in _lines(g)]
    return []


@dataclass
class NetworkMap:
    """Ways, sub-street pieces (by name) and districts of one dataset, ready to draw."""

    ways: list[tuple[str, Line]] = field(default_factory=list)            # (highway, line)
    sub_streets: dict[str, list[Line]] = field(default_factory=dict)      # name -> lines
    districts: list[tuple[str, Line]] = field(default_factory=list)       # (name, ring)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(min_lon, min_lat, max_lon, max_lat) over all ways and pieces."""
        pts = [p for _, line in self.ways for p in line] + \
              [p for lines in self.sub_streets.values() for line in lines for p in line]
        if not pts:
            raise ValueError("the road network is empty: nothing to draw")
        lons, lats = zip(*pts)
        return min(lons), min(lats), max(lons), max(lats)

    def render(self, highlight: str | None = None, true_point: tuple[float, float] | None = None,
               points: Sequence[tuple[float, float, float]] | None = None, title: str = "",
               size_px: int = 640, points_label: str = "similarity") -> Image.Image:
        """Draw the map; return a PIL image.

        highlight: sub-street name drawn thick red (unknown names are noted in the title);
        true_point: (lat, lon) marked with a star; points: (lat, lon, value) scatter coloured by value.
        """
        min_lon, min_lat, max_lon, max_lat = self.bounds
        aspect = 1.0 / max(math.cos(math.radians((min_lat + max_lat) / 2)), 1e-3)
        fig, ax = plt.subplots(figsize=(size_px / 100, size_px / 100), dpi=100)
        try:
            for name, ring in self.districts:
                xs, ys = zip(*ring)
                ax.fill(xs, ys, alpha=0.06, lw=0.5, ec="tab:blue")
            for highway, line in self.ways:
                xs, ys = zip(*line)
                major = highway in ("primary", "secondary", "trunk", "tertiary")
                ax.plot(xs, ys, color="0.45" if major else "0.7", lw=1.2 if major else 0.7, zorder=1)
            if points:
                lats, lons, vals = zip(*points)
                sc = ax.scatter(lons, lats, c=vals, cmap="viridis", s=14, zorder=3, edgecolors="none")
                fig.colorbar(sc, ax=ax, shrink=0.7, label=points_label)
            note = ""
            if highlight:
                lines = self.sub_streets.get(highlight)
                if lines:
                    for i, line in enumerate(lines):
                        xs, ys = zip(*line)
                        ax.plot(xs, ys, color="red", lw=4, alpha=0.85, zorder=4,
                                label="predicted" if i == 0 else None)
                else:
                    note = " (predicted address not on this map)"
            if true_point is not None:
                ax.scatter([true_point[1]], [true_point[0]], marker="*", s=260, color="gold",
                           edgecolors="black", zorder=5, label="true location")
            if highlight and self.sub_streets.get(highlight) or true_point is not None:
                ax.legend(loc="lower right", fontsize=8)
            pad_x, pad_y = 0.04 * (max_lon - min_lon) + 1e-5, 0.04 * (max_lat - min_lat) + 1e-5
            ax.set_xlim(min_lon - pad_x, max_lon + pad_x)
            ax.set_ylim(min_lat - pad_y, max_lat + pad_y)
            ax.set_aspect(aspect)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title((title + note)[:90], fontsize=9)
            fig.tight_layout()
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
        finally:
            plt.close(fig)
        buf.seek(0)
        return Image.open(buf).convert("RGB")


def load_network_map(dataset_dir: str | Path) -> NetworkMap:
    """Read ``network.geojson`` of a dataset (data_gen contract) into a :class:`NetworkMap`."""
    path = Path(dataset_dir) / NETWORK_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no road network to draw: {path} is missing")
    data = read_json(path)
    net = NetworkMap()
    for feat in data.get("features", []):
        props = feat.get("properties") or {}
        lines = [line for line in _lines(feat.get("geometry") or {}) if len(line) >= 2]
        kind = props.get("kind", "way")
        if kind == "sub_street" and props.get("name"):
            net.sub_streets.setdefault(str(props["name"]), []).extend(lines)
        elif kind == "district":
            net.districts.extend((str(props.get("name", "")), ring) for ring in lines)
        elif kind == "way":
            net.ways.extend((str(props.get("highway", "")), line) for line in lines)
    return net
