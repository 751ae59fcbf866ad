"""SynthCity: the location -> appearance model laid over any RoadNetwork.

`SynthCity` holds the seeded smooth fields and style zones; `SynthCity.view(...)` returns a
`ViewContext` (pure data + a reference to the city) that `render_view` draws. Nothing here
depends on the image size, so the same city renders at 64–336 px.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_gen.synthcity.fields import STYLES, DistrictStyle, SmoothField, hash_unit, stable_hash

__all__ = ["SynthCity", "ViewContext", "ROAD_WIDTH_M", "LANDMARK_RANGE_M"]

LANDMARK_RANGE_M = 600.0

# Carriageway width (m) per highway class; unknown classes fall back to "residential".
ROAD_WIDTH_M = {
    "motorway": 22.0, "trunk": 18.0, "primary": 16.0, "secondary": 12.0, "tertiary": 10.0,
    "unclassified": 7.5, "residential": 7.0, "living_street": 5.0, "pedestrian": 6.0, "road": 7.0,
}
TRAFFIC = {"trunk": 3.0, "primary": 2.5, "secondary": 2.0, "tertiary": 1.5, "residential": 0.8,
           "living_street": 0.3, "pedestrian": 0.0}


@dataclass
class ViewContext:
    """Everything location-dependent about one view; per-image nuisance comes from the rng."""

    city: "SynthCity"
    x: float
    y: float
    dx: float        # unit street tangent (metres frame)
    dy: float
    street: str
    highway: str
    district: str
    block: str = ""  # the physical block (street piece between intersections) the camera stands on

    def facade_key(self, px: float, py: float) -> str:
        """Which block façade a building point belongs to: the camera's block and the side of the
        street. The side is taken against a canonical tangent (pointing east, or north), because
        one block is often several OSM ways drawn in opposite directions. Without a block
        (photos, tests), a map cell of ``city.block_m`` stands in."""
        tx, ty = (self.dx, self.dy) if self.dx > 1e-9 or (abs(self.dx) <= 1e-9 and self.dy > 0) else (-self.dx, -self.dy)
        side = 1 if (px - self.x) * ty - (py - self.y) * tx >= 0 else -1
        if self.block:
            return f"{self.block}|{side}"
        return f"cell|{round(px / self.city.block_m)}|{round(py / self.city.block_m)}"

    def buildings(self, px: np.ndarray, py: np.ndarray) -> list[dict]:
        """``city.buildings`` at metric points of this view, with their block façades (keys are
        only worked out when the city paints block palettes)."""
        facades = [self.facade_key(a, b) for a, b in zip(px, py)] if self.city.block_palette > 0 else None
        return self.city.buildings(px, py, self.district, facades)

    @property
    def road_width_m(self) -> float:
        return ROAD_WIDTH_M.get(self.highway, 7.0)


class SynthCity:
    """Seeded appearance fields over a metric map extent.

    ``bounds`` (minx, miny, maxx, maxy) places ``n_zones`` style-zone centres when the map
    has no districts; named districts map to a style by a stable hash of their name.
    """

    def __init__(self, seed: int = 0, bounds: tuple[float, float, float, float] = (0, 0, 1500, 1500),
                 n_zones: int = 12, field_wavelength_m: tuple[float, float] = (250.0, 1000.0),
                 block_m: float = 60.0, block_palette: float = 0.0):
        self.seed = int(seed)
        self.block_m, self.block_palette = float(block_m), float(block_palette)
        lo, hi = field_wavelength_m
        mk = lambda k: SmoothField(stable_hash(seed, k) % 2**32, 8, lo, hi)  # noqa: E731
        self.f_hue, self.f_light, self.f_height = mk("hue"), mk("light"), mk("height")
        self.f_tree, self.f_shop, self.f_width = mk("tree"), mk("shop"), mk("width")
        self.f_sat, self.f_mix = mk("sat"), mk("mix")
        rng = np.random.default_rng(stable_hash(seed, "zones") % 2**32)
        minx, miny, maxx, maxy = bounds
        self.zone_xy = np.c_[rng.uniform(minx, maxx, n_zones), rng.uniform(miny, maxy, n_zones)]
        self.zone_style = rng.permutation(np.arange(n_zones) % len(STYLES))
        self._district_style: dict[str, DistrictStyle] = {}
        # landmark towers: ~one per 400 m x 400 m, visible from up to LANDMARK_RANGE_M away
        n_land = int(np.clip((maxx - minx) * (maxy - miny) / 400.0**2, 3, 200))
        lr = np.random.default_rng(stable_hash(seed, "landmarks") % 2**32)
        self.landmarks = np.c_[lr.uniform(minx, maxx, n_land), lr.uniform(miny, maxy, n_land),
                               lr.uniform(35, 80, n_land), lr.uniform(8, 18, n_land), lr.random(n_land),
                               lr.integers(0, 3, n_land)]

    def landmarks_near(self, x: float, y: float) -> np.ndarray:
        """Rows (x, y, height, width, hue, kind) of the landmarks within LANDMARK_RANGE_M, farthest first."""
        d2 = (self.landmarks[:, 0] - x) ** 2 + (self.landmarks[:, 1] - y) ** 2
        idx = np.flatnonzero(d2 < LANDMARK_RANGE_M**2)
        return self.landmarks[idx[np.argsort(-d2[idx])]]

    def view(self, x: float, y: float, dx: float, dy: float, street: str, highway: str,
             district: str = "", block: str = "") -> ViewContext:
        n = float(np.hypot(dx, dy)) or 1.0
        return ViewContext(self, float(x), float(y), dx / n, dy / n, street, highway, district, block)

    def style_at(self, x: float, y: float, district: str = "") -> DistrictStyle:
        """Nearest style-zone centre (Voronoi); a named district's hashed style where the smooth
        ``f_mix`` field is high, so districts differ but are not uniform inside."""
        if district and self.f_mix(x, y) > 0.4:  # districts dominate but mix with zone styles
            if district not in self._district_style:
                self._district_style[district] = STYLES[stable_hash(self.seed, "district", district) % len(STYLES)]
            return self._district_style[district]
        d2 = (self.zone_xy[:, 0] - x) ** 2 + (self.zone_xy[:, 1] - y) ** 2
        return STYLES[int(self.zone_style[int(np.argmin(d2))])]

    def street_hue(self, street: str) -> float:
        """The per-street signage cue (a hue), stable across processes."""
        return hash_unit(self.seed, "sign", street)

    def palette(self, facade: str) -> dict:
        """A block façade's own colour scheme: a body colour (12 hues x 3 lightness levels) and a
        ground-floor plinth colour (8 hues). Discrete, so two blocks differ visibly or not at all,
        and under every light and weather, the way a row of buildings built together does."""
        u = lambda k: hash_unit(self.seed, k, facade)  # noqa: E731
        return {"hue": (int(u("pal_h") * 12) / 12.0 + 0.02 * (u("pal_j") - 0.5)) % 1.0,
                "light": (0.32, 0.5, 0.7)[int(u("pal_l") * 3)], "sat": 0.6,
                "accent": ((int(u("pal_a") * 8) + 0.5) / 8.0, 0.45, 0.85)}

    def buildings(self, px: np.ndarray, py: np.ndarray, district: str, facades: list[str] | None = None) -> list[dict]:
        """Appearance of the buildings at metric points: smooth fields + per-lot jitter + the
        palette of their block façade (``facades``: one ``ViewContext.facade_key`` per point)."""
        px, py = np.asarray(px, float), np.asarray(py, float)
        j = np.array([hash_unit(self.seed, "lot", round(a / 12.0), round(b / 12.0)) for a, b in zip(px, py)])
        fh, fl, fs, fz = (f(px, py) for f in (self.f_hue, self.f_light, self.f_sat, self.f_height))
        keys = facades if facades is not None and self.block_palette > 0 else [None] * len(px)
        out = []
        for i in range(len(px)):
            style = self.style_at(px[i], py[i], district)
            hue = (style.hue + style.hue_spread * 2 * (fh[i] - 0.5) + 0.08 * (j[i] - 0.5)) % 1.0
            light = float(np.clip(style.light + 0.3 * (fl[i] - 0.5) + 0.12 * (j[i] - 0.5), 0.15, 0.9))
            sat = float(np.clip(style.sat * (0.6 + 0.8 * fs[i]), 0.0, 1.0))
            lo, hi = style.storeys
            storeys = int(round(lo + (hi - lo) * (0.7 * fz[i] + 0.3 * j[i])))
            b = {"style": style, "hue": float(hue), "light": light, "sat": sat, "storeys": max(1, storeys)}
            if keys[i] is not None and hash_unit(self.seed, "lotpal", round(px[i] / 12.0), round(py[i] / 12.0)) \
                    < self.block_palette:
                b.update(self.palette(keys[i]))
            out.append(b)
        return out
