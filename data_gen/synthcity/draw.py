"""Draw one street-view-like image of a `ViewContext` with PIL, plus its scene caption.

A pinhole camera 1.6 m above the road looks along the street (either direction); façades are
vertical planes at the kerb + setback on both sides, cut into lots whose look comes from the
city's smooth fields. Per-image nuisance (heading, yaw/pitch jitter, time of day, cars,
pedestrians, sensor noise) comes only from ``rng`` so every image is reproducible.
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw

from data_gen.synthcity.city import TRAFFIC, ViewContext

__all__ = ["render_view", "colour_name", "TIMES_OF_DAY"]

CAM_H = 1.6
FAR = 90.0
STOREY_M = 3.0
# name, sky top, sky bottom, light multiplier, p(lit window), probability
TIMES_OF_DAY = (
    ("in daylight", (90, 150, 225), (185, 215, 240), 1.0, 0.0, 0.5),
    ("on an overcast day", (150, 155, 165), (200, 202, 205), 0.85, 0.0, 0.2),
    ("at dusk", (70, 60, 120), (240, 150, 90), 0.65, 0.35, 0.2),
    ("at night", (10, 12, 35), (35, 35, 60), 0.35, 0.6, 0.1),
)
_TOD_P = np.array([t[5] for t in TIMES_OF_DAY])


def colour_name(hue: float, light: float, sat: float) -> str:
    """Plain-English colour word for an HLS colour (for captions)."""
    if sat < 0.15:
        return "white" if light > 0.72 else "grey" if light > 0.4 else "dark grey"
    h = hue % 1.0
    if h < 0.04 or h >= 0.93:
        name = "red"
    elif h < 0.11:
        name = "brown" if light < 0.5 else "orange"
    elif h < 0.19:
        name = "yellow" if light >= 0.5 else "olive"
    elif h < 0.45:
        name = "green"
    elif h < 0.53:
        name = "teal"
    elif h < 0.72:
        name = "blue"
    elif h < 0.82:
        name = "purple"
    else:
        name = "pink"
    return ("pale " + name) if light > 0.78 else name


def _rgb(h: float, l: float, s: float, k: float = 1.0) -> tuple[int, int, int]:
    r, g, b = colorsys.hls_to_rgb(h % 1.0, min(max(l, 0.0), 1.0), min(max(s, 0.0), 1.0))
    return int(255 * r * k), int(255 * g * k), int(255 * b * k)


def _scale(c, k: float) -> tuple[int, int, int]:
    return tuple(int(min(255, v * k)) for v in c)


class _Camera:
    def __init__(self, size: int, rng: np.random.Generator):
        self.W = self.H = size
        self.f = size * rng.uniform(0.75, 0.95)
        self.vx = size * (0.5 + rng.uniform(-0.12, 0.12))   # yaw jitter
        self.vy = size * (0.46 + rng.uniform(-0.05, 0.05))  # pitch jitter

    def p(self, X: float, Y: float, Z: float) -> tuple[float, float]:
        return self.vx + self.f * X / Z, self.vy + self.f * (CAM_H - Y) / Z

    def quad(self, X: float, y0: float, y1: float, z0: float, z1: float):
        return [self.p(X, y0, z0), self.p(X, y1, z0), self.p(X, y1, z1), self.p(X, y0, z1)]


def _draw_buildings(d: ImageDraw.ImageDraw, cam: _Camera, ctx: ViewContext, head: int, side: int,
                    kerb: float, k: float, lit_p: float, rng: np.random.Generator, seen: list) -> None:
    city = ctx.city
    tx, ty = head * ctx.dx, head * ctx.dy
    nx, ny = side * ty, -side * tx  # right-hand normal of the view direction for side=+1
    base_w = 8.0 + 14.0 * float(city.f_width(ctx.x, ctx.y))
    spans = []
    z = rng.uniform(0.5, 4.0)
    while z < FAR:
        w = base_w * rng.uniform(0.7, 1.3)
        spans.append((z, z + w))
        z += w + rng.uniform(0.0, 1.5)
    zc = np.array([(a + b) / 2 for a, b in spans])
    blds = city.buildings(ctx.x + tx * zc + nx * kerb, ctx.y + ty * zc + ny * kerb, ctx.district)
    X = side * kerb
    for (z0, z1), b in reversed(list(zip(spans, blds))):  # far to near
        st = b["style"]
        h_m = b["storeys"] * STOREY_M + 1.0
        wall = _rgb(b["hue"], b["light"], b["sat"], k)
        d.polygon(cam.quad(X, 0.0, h_m, z0, z1), fill=wall)
        ncols = max(1, int(round((z1 - z0) / 10.0 * st.window_density)))
        width_px = abs(cam.p(X, 0, z0)[0] - cam.p(X, 0, z1)[0])
        if z0 < 35 or width_px > 4:
            seen.append((b, (z1 - z0) * h_m / max(z0, 2.0)))
        if width_px < 3:
            continue
        glass_c = _rgb(0.58, 0.35 if k > 0.6 else 0.15, 0.3, k)
        for r in range(b["storeys"]):
            y0, y1 = r * STOREY_M + 0.9, r * STOREY_M + 2.3
            if st.glass:
                d.polygon(cam.quad(X, y0, y1, z0 + 0.3, z1 - 0.3), fill=glass_c)
                continue
            for c in range(ncols):
                a = z0 + (c + 0.25) * (z1 - z0) / ncols
                bb = z0 + (c + 0.75) * (z1 - z0) / ncols
                fill = (250, 220, 120) if lit_p and rng.random() < lit_p else glass_c
                d.polygon(cam.quad(X, y0, y1, a, bb), fill=fill)


def _draw_trees(d, cam: _Camera, ctx: ViewContext, head: int, side: int, kerb: float, k: float) -> int:
    city = ctx.city
    dens = float(city.f_tree(ctx.x, ctx.y)) * (0.5 if ctx.highway in ("primary", "trunk") else 1.0)
    tx, ty = head * ctx.dx, head * ctx.dy
    n = 0
    base = int(np.floor((ctx.x * tx + ctx.y * ty) / 9.0))  # trees on a fixed 9 m grid along the street
    for i in range(9, 0, -1):
        z = (base + i) * 9.0 - (ctx.x * tx + ctx.y * ty)
        if z < 1.5:
            continue
        px, py = ctx.x + tx * z, ctx.y + ty * z
        if (hash((round(px), round(py), side)) % 1000) / 1000.0 > dens * 1.3 - 0.25:
            continue
        Xt = side * (kerb - 1.2)
        bx, by = cam.p(Xt, 0.0, z)
        cx, cy = cam.p(Xt, 4.5, z)
        r = cam.f * 1.8 / z
        d.line([(bx, by), (cx, cy)], fill=_scale((90, 60, 40), k), width=max(1, int(cam.f * 0.25 / z)))
        d.ellipse([cx - r, cy - r * 1.1, cx + r, cy + r * 0.9], fill=_rgb(0.3, 0.3, 0.5, k))
        n += 1
    return n


_NOISE: dict[int, np.ndarray] = {}


def _sensor_noise(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Gaussian sensor noise, sigma 2–7, from a cached noise bank at a random offset (fast)."""
    size = img.width
    if size not in _NOISE:
        _NOISE[size] = np.random.default_rng(size).normal(0, 1, (2 * size, 2 * size, 3)).astype(np.float32)
    oy, ox = rng.integers(0, size, 2)
    noise = _NOISE[size][oy:oy + size, ox:ox + size] * rng.uniform(2, 7)
    arr = np.asarray(img, dtype=np.float32) + noise
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def render_view(ctx: ViewContext, rng: np.random.Generator, size: int = 96) -> tuple[Image.Image, str]:
    """Render one view of ``ctx``; returns (RGB image of size×size, scene caption)."""
    if not 16 <= size <= 1024:
        raise ValueError(f"image size must be in [16, 1024], got {size}")
    cam = _Camera(size, rng)
    head = 1 if rng.random() < 0.5 else -1
    tod = TIMES_OF_DAY[int(rng.choice(len(TIMES_OF_DAY), p=_TOD_P))]
    tname, sky0, sky1, k, lit_p = tod[0], tod[1], tod[2], tod[3], tod[4]
    img = Image.new("RGB", (size, size))
    d = ImageDraw.Draw(img)
    hz = int(cam.vy)
    for i, yy in enumerate(range(0, max(hz, 1), max(1, hz // 6))):  # banded sky gradient
        t = yy / max(hz, 1)
        d.rectangle([0, yy, size, hz], fill=tuple(int(a + (b - a) * t) for a, b in zip(sky0, sky1)))
    d.rectangle([0, hz, size, size], fill=_scale((120, 120, 115), k))
    rw = ctx.road_width_m
    kerb = rw / 2 + 2.5 + 1.5 * float(ctx.city.f_width(ctx.x, ctx.y))
    road = _scale((70, 70, 75), k)
    d.polygon([cam.p(-rw / 2, 0, 0.5), cam.p(-rw / 2, 0, FAR), cam.p(rw / 2, 0, FAR), cam.p(rw / 2, 0, 0.5)], fill=road)
    if rw >= 10:
        for z in np.arange(2.0 + rng.uniform(0, 6), FAR, 6.0):
            d.polygon([cam.p(-0.1, 0, z), cam.p(-0.1, 0, z + 3), cam.p(0.1, 0, z + 3), cam.p(0.1, 0, z)],
                      fill=_scale((230, 230, 200), k))
    seen: list = []
    n_trees = 0
    for side in (-1, 1):
        _draw_buildings(d, cam, ctx, head, side, kerb, k, lit_p, rng, seen)
    for side in (-1, 1):
        n_trees += _draw_trees(d, cam, ctx, head, side, kerb, k)
    # shop sign: presence from the shop field, hue = per-street cue + noise
    sign_txt = ""
    if rng.random() < 0.2 + 0.75 * float(ctx.city.f_shop(ctx.x, ctx.y)):
        hue = (ctx.city.street_hue(ctx.street) + rng.normal(0, 0.03)) % 1.0
        side = 1 if rng.random() < 0.5 else -1
        z0 = rng.uniform(5, 12)
        d.polygon(cam.quad(side * (kerb - 0.05), 3.2, 4.2, z0, z0 + 4.0), fill=_rgb(hue, 0.5, 0.85, max(k, 0.7)))
        sign_txt = f"a {colour_name(hue, 0.5, 0.85)} shop sign"
    # occluders: cars on the road, pedestrians on the pavement
    n_cars = int(rng.poisson(TRAFFIC.get(ctx.highway, 1.0)))
    for z in sorted(rng.uniform(4, 40, n_cars), reverse=True):
        X = rng.uniform(-rw / 2 + 1.2, rw / 2 - 1.2)
        x0, y0 = cam.p(X - 0.9, 1.4, z)
        x1, y1 = cam.p(X + 0.9, 0.0, z)
        col = _rgb(rng.random(), rng.uniform(0.2, 0.7), rng.uniform(0, 0.8), k)
        d.rectangle([x0, y0, x1, y1], fill=col)
        d.rectangle([x0 + (x1 - x0) * 0.15, y0, x1 - (x1 - x0) * 0.15, y0 + (y1 - y0) * 0.4], fill=_scale((60, 80, 100), k))
    n_ped = int(rng.poisson(2.0 * float(ctx.city.f_shop(ctx.x, ctx.y))))
    for _ in range(n_ped):
        z = rng.uniform(3, 25)
        X = rng.choice([-1, 1]) * (rw / 2 + rng.uniform(0.5, 2.0))
        hx, hy = cam.p(X, 1.7, z)
        fx, fy = cam.p(X, 0.0, z)
        r = cam.f * 0.25 / z
        d.rectangle([hx - r, hy, hx + r, fy], fill=_rgb(rng.random(), 0.35, 0.5, k))
        d.ellipse([hx - r * 0.8, hy - 1.6 * r, hx + r * 0.8, hy], fill=_scale((220, 180, 150), k))
    img = _sensor_noise(img, rng)
    return img, _caption(ctx, seen, n_trees, sign_txt, n_cars, tname)


_ROAD_PHRASE = {"motorway": "a wide highway", "trunk": "a wide avenue", "primary": "a wide avenue",
                "secondary": "a busy street", "tertiary": "a street", "residential": "a quiet residential street",
                "living_street": "a narrow lane", "pedestrian": "a pedestrian street", "unclassified": "a side street"}


def _caption(ctx: ViewContext, seen: list, n_trees: int, sign: str, n_cars: int, tod: str) -> str:
    """Describe what was drawn: road kind, dominant façades, trees, sign, cars, time of day."""
    road = _ROAD_PHRASE.get(ctx.highway, "a street")
    if seen:
        b = max(seen, key=lambda t: t[1])[0]
        st = sum(s[0]["storeys"] for s in seen) / len(seen)
        height = "low" if st <= 2.5 else "mid-rise" if st <= 5.5 else "tall"
        facade = f"{height} {colour_name(b['hue'], b['light'], b['sat'])} {b['style'].facade}"
    else:
        facade = "buildings"
    extras = []
    if n_trees >= 6:
        extras.append("many trees")
    elif n_trees >= 2:
        extras.append("a few trees")
    if sign:
        extras.append(sign)
    if n_cars >= 3:
        extras.append("heavy traffic")
    elif n_cars >= 1:
        extras.append("a car" if n_cars == 1 else "some cars")
    tail = (", " + " and ".join([", ".join(extras[:-1]), extras[-1]] if len(extras) > 1 else extras)) if extras else ""
    return f"{road} lined with {facade}{tail}, {tod}"
