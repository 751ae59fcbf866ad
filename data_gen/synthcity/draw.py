"""Draw one street-view-like image of a `ViewContext` with PIL, plus its scene caption.

A pinhole camera in the road looks along the street (either direction) or across it at one
façade; façades are vertical planes at the kerb + setback, cut into lots whose look comes from
the city's smooth fields (plus per-street lamp posts and sign hue, and distant landmark towers
at fixed map positions). Every nuisance (heading, yaw/pitch, FOV, camera height, time of day,
weather/season, cars, pedestrians, occluders, sensor noise) is drawn from ``rng`` under the
split's `CaptureConditions`, so every image is reproducible and queries differ from the database.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from data_gen.synthcity.city import TRAFFIC, ViewContext
from data_gen.synthcity.conditions import DATABASE, TIMES, WEATHERS, CaptureConditions
from data_gen.synthcity.fields import hash_unit

__all__ = ["render_view", "colour_name", "TIMES_OF_DAY"]

FAR = 90.0
STOREY_M = 3.0
PLINTH_M = 0.8  # ground-floor band of a block palette (below the first window row at 0.9 m)
# name, caption phrase, sky top, sky bottom, light multiplier, p(lit window)
TIMES_OF_DAY = {
    "day": ("in daylight", (90, 150, 225), (185, 215, 240), 1.0, 0.0),
    "overcast": ("on an overcast day", (150, 155, 165), (200, 202, 205), 0.85, 0.0),
    "dusk": ("at dusk", (70, 60, 120), (240, 150, 90), 0.6, 0.35),
    "night": ("at night", (10, 12, 35), (35, 35, 60), 0.45, 0.6),
}
WEATHER_PHRASE = {"clear": "", "rain": "in the rain", "fog": "in fog", "snow": "in snow"}


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
    """Pinhole camera at the road centre: X right, Y up (m above the road), Z forward."""

    def __init__(self, size: int, rng: np.random.Generator, cond: CaptureConditions):
        self.W = self.H = size
        self.f = size * rng.uniform(*cond.focal)
        self.vx = size * (0.5 + rng.uniform(-cond.yaw, cond.yaw))
        self.vy = size * (0.46 + rng.uniform(-cond.pitch, cond.pitch))
        self.h = rng.uniform(*cond.camera_height_m)

    def p(self, X: float, Y: float, Z: float) -> tuple[float, float]:
        return self.vx + self.f * X / Z, self.vy + self.f * (self.h - Y) / Z

    def quad(self, X: float, y0: float, y1: float, z0: float, z1: float):
        """A vertical wall patch parallel to the view axis (a façade seen along the street)."""
        return [self.p(X, y0, z0), self.p(X, y1, z0), self.p(X, y1, z1), self.p(X, y0, z1)]

    def front(self, x0: float, x1: float, y0: float, y1: float, Z: float):
        """A vertical patch facing the camera at depth Z (a façade seen across the street)."""
        (a, b), (c, e) = self.p(x0, y1, Z), self.p(x1, y0, Z)
        return [(a, b), (c, b), (c, e), (a, e)]


@dataclass
class _Scene:
    """Per-image draws shared by the drawing steps."""

    cam: _Camera
    ctx: ViewContext
    k: float          # light multiplier (time of day x weather)
    lit_p: float      # share of lit windows
    season: str       # summer / autumn / winter
    fwd: tuple[float, float]    # view direction (unit, map metres)
    right: tuple[float, float]  # camera right (unit, map metres)
    traffic: float = 1.0        # multipliers from the capture conditions
    peds: float = 1.0


def _lots(rng: np.random.Generator, lo: float, hi: float, base_w: float) -> list[tuple[float, float]]:
    """Random lot spans covering [lo, hi] (geometry is per image; appearance is per place)."""
    spans, z = [], lo + rng.uniform(0.0, 3.5)
    while z < hi:
        w = base_w * rng.uniform(0.7, 1.3)
        spans.append((z, z + w))
        z += w + rng.uniform(0.0, 1.5)
    return spans


def _windows(d: ImageDraw.ImageDraw, b: dict, sc: _Scene, rng, patch) -> None:
    """Window grid of one building; ``patch(a, b, y0, y1)`` maps lot coords to a polygon."""
    st = b["style"]
    glass_c = _rgb(0.58, 0.35 if sc.k > 0.6 else 0.15, 0.3, sc.k)
    ncols = b["ncols"]
    for r in range(b["storeys"]):
        y0, y1 = r * STOREY_M + 0.9, r * STOREY_M + 2.3
        if st.glass:
            d.polygon(patch(0.03, 0.97, y0, y1), fill=glass_c)
            continue
        for c in range(ncols):
            fill = (250, 220, 120) if sc.lit_p and rng.random() < sc.lit_p else glass_c
            d.polygon(patch((c + 0.25) / ncols, (c + 0.75) / ncols, y0, y1), fill=fill)


def _draw_buildings_along(d, sc: _Scene, side: int, kerb: float, rng, seen: list) -> None:
    ctx, cam = sc.ctx, sc.cam
    rx, ry = sc.right
    fx, fy = sc.fwd
    spans = _lots(rng, 0.5, FAR, 8.0 + 14.0 * float(ctx.city.f_width(ctx.x, ctx.y)))
    zc = np.array([(a + b) / 2 for a, b in spans])
    bx, by = ctx.x + fx * zc + side * rx * kerb, ctx.y + fy * zc + side * ry * kerb
    blds = ctx.buildings(bx, by)
    X = side * kerb
    for (z0, z1), b in reversed(list(zip(spans, blds))):  # far to near
        h_m = b["storeys"] * STOREY_M + 1.0
        d.polygon(cam.quad(X, 0.0, h_m, z0, z1), fill=_rgb(b["hue"], b["light"], b["sat"], sc.k))
        if "accent" in b:  # the block's ground-floor plinth / shopfront band
            d.polygon(cam.quad(X, 0.0, PLINTH_M, z0, z1), fill=_rgb(*b["accent"], sc.k))
        width_px = abs(cam.p(X, 0, z0)[0] - cam.p(X, 0, z1)[0])
        if z0 < 35 or width_px > 4:
            seen.append((b, (z1 - z0) * h_m / max(z0, 2.0)))
        if width_px < 3:
            continue
        b["ncols"] = max(1, int(round((z1 - z0) / 10.0 * b["style"].window_density)))
        _windows(d, b, sc, rng, lambda a, bb, y0, y1: cam.quad(X, y0, y1, z0 + a * (z1 - z0), z0 + bb * (z1 - z0)))


def _draw_buildings_across(d, sc: _Scene, kerb: float, rng, seen: list) -> None:
    ctx, cam = sc.ctx, sc.cam
    half = kerb * max(cam.vx, cam.W - cam.vx) / cam.f + 2.0
    spans = _lots(rng, -half - 6.0, half, 8.0 + 14.0 * float(ctx.city.f_width(ctx.x, ctx.y)))
    sc_ = np.array([(a + b) / 2 for a, b in spans])
    (fx, fy), (rx, ry) = sc.fwd, sc.right
    bx, by = ctx.x + fx * kerb + rx * sc_, ctx.y + fy * kerb + ry * sc_
    blds = ctx.buildings(bx, by)
    for (s0, s1), b in zip(spans, blds):
        h_m = b["storeys"] * STOREY_M + 1.0
        d.polygon(cam.front(s0, s1, 0.0, h_m, kerb), fill=_rgb(b["hue"], b["light"], b["sat"], sc.k))
        if "accent" in b:
            d.polygon(cam.front(s0, s1, 0.0, PLINTH_M, kerb), fill=_rgb(*b["accent"], sc.k))
        seen.append((b, (s1 - s0) * h_m))
        b["ncols"] = max(1, int(round((s1 - s0) / 10.0 * b["style"].window_density)))
        _windows(d, b, sc, rng, lambda a, bb, y0, y1: cam.front(s0 + a * (s1 - s0), s0 + bb * (s1 - s0), y0, y1, kerb))


def _tree_colour(season: str) -> tuple[float, float, float] | None:
    return {"summer": (0.3, 0.3, 0.5), "autumn": (0.08, 0.42, 0.7)}.get(season)


def _draw_tree(d, sc: _Scene, X: float, Z: float) -> None:
    cam = sc.cam
    bx, by = cam.p(X, 0.0, Z)
    cx, cy = cam.p(X, 4.5, Z)
    r = cam.f * 1.8 / Z
    d.line([(bx, by), (cx, cy)], fill=_scale((90, 60, 40), sc.k), width=max(1, int(cam.f * 0.25 / Z)))
    leaf = _tree_colour(sc.season)
    if leaf is None:  # winter: bare crown
        d.ellipse([cx - r, cy - r * 1.1, cx + r, cy + r * 0.9], outline=_scale((80, 60, 50), sc.k))
    else:
        d.ellipse([cx - r, cy - r * 1.1, cx + r, cy + r * 0.9], fill=_rgb(*leaf, sc.k))


def _street_points(ctx: ViewContext, step: float, lo: float, hi: float, fwd_sign: int) -> list[tuple[float, float]]:
    """(along offset from the camera, world along coordinate) of a fixed ``step`` grid on the street."""
    a_cam = ctx.x * ctx.dx + ctx.y * ctx.dy
    out = []
    for i in range(int(np.floor((a_cam + min(fwd_sign * lo, fwd_sign * hi)) / step)),
                   int(np.ceil((a_cam + max(fwd_sign * lo, fwd_sign * hi)) / step)) + 1):
        off = fwd_sign * (i * step - a_cam)
        if lo <= off <= hi:
            out.append((off, i * step))
    return out


def _tree_here(ctx: ViewContext, a: float, wside: int, dens: float) -> bool:
    """Trees stand on a fixed 9 m grid along each street side: same trees from every heading."""
    n = ctx.dy * wside, -ctx.dx * wside
    px, py = ctx.x + ctx.dx * (a - ctx.x * ctx.dx - ctx.y * ctx.dy) + n[0], ctx.y + ctx.dy * (a - ctx.x * ctx.dx - ctx.y * ctx.dy) + n[1]
    return hash_unit(ctx.city.seed, "tree", round(px), round(py), wside) <= dens * 1.3 - 0.25


def _tree_density(ctx: ViewContext) -> float:
    return float(ctx.city.f_tree(ctx.x, ctx.y)) * (0.5 if ctx.highway in ("primary", "trunk") else 1.0)


def _lamp(d, sc: _Scene, X: float, Z: float, colour) -> None:
    cam = sc.cam
    bx, by = cam.p(X, 0.0, Z)
    tx, ty = cam.p(X, 5.0, Z)
    w = max(1, int(cam.f * 0.15 / Z))
    d.line([(bx, by), (tx, ty)], fill=colour, width=w)
    r = max(1.0, cam.f * 0.35 / Z)
    head = (255, 235, 150) if sc.k < 0.7 else colour
    d.ellipse([tx - r, ty - r * 0.6, tx + r, ty + r * 0.6], fill=head)


def _furniture(ctx: ViewContext) -> tuple[int, tuple[int, int, int], float]:
    """Per-street lamp posts: world side, colour and spacing are a stable street cue."""
    u = hash_unit(ctx.city.seed, "lamp", ctx.street)
    side = 1 if u < 0.5 else -1
    col = _rgb(hash_unit(ctx.city.seed, "lampcol", ctx.street), 0.3 + 0.3 * u, 0.7)
    return side, col, 18.0 + 14.0 * hash_unit(ctx.city.seed, "lampstep", ctx.street)


def _draw_landmarks(d, sc: _Scene, horizon: float) -> int:
    """Distant landmark towers at fixed map positions: seen from any heading, at their true bearing."""
    ctx, cam = sc.ctx, sc.cam
    (fx, fy), (rx, ry) = sc.fwd, sc.right
    n = 0
    for lx, ly, h, w, hue, kind in ctx.city.landmarks_near(ctx.x, ctx.y):
        ex, ey = lx - ctx.x, ly - ctx.y
        Z, X = ex * fx + ey * fy, ex * rx + ey * ry
        if Z < 40:
            continue
        x0, y0 = cam.p(X - w / 2, h, Z)
        x1, y1 = cam.p(X + w / 2, 0.0, Z)
        if x1 < 0 or x0 > cam.W:
            continue
        col = _rgb(hue, 0.45, 0.6, max(sc.k, 0.5))
        d.rectangle([x0, y0, x1, y1], fill=col)
        if kind == 0:  # spire
            d.polygon([(x0, y0), (x1, y0), ((x0 + x1) / 2, y0 - 2.5 * (x1 - x0))], fill=col)
        elif kind == 1:  # dome
            d.ellipse([x0, y0 - (x1 - x0) / 2, x1, y0 + (x1 - x0) / 2], fill=_rgb(hue + 0.5, 0.5, 0.5, max(sc.k, 0.5)))
        n += 1
    return n


def _vehicle(d, sc: _Scene, rng, X: float, Z: float, w: float = 1.8, h: float = 1.4) -> None:
    x0, y0 = sc.cam.p(X - w / 2, h, Z)
    x1, y1 = sc.cam.p(X + w / 2, 0.0, Z)
    d.rectangle([x0, y0, x1, y1], fill=_rgb(rng.random(), rng.uniform(0.2, 0.7), rng.uniform(0, 0.8), sc.k))
    d.rectangle([x0 + (x1 - x0) * 0.15, y0, x1 - (x1 - x0) * 0.15, y0 + (y1 - y0) * 0.4], fill=_scale((60, 80, 100), sc.k))


def _person(d, sc: _Scene, rng, X: float, Z: float) -> None:
    hx, hy = sc.cam.p(X, 1.7, Z)
    fx, fy = sc.cam.p(X, 0.0, Z)
    r = sc.cam.f * 0.25 / Z
    d.rectangle([hx - r, hy, hx + r, fy], fill=_rgb(rng.random(), 0.35, 0.5, sc.k))
    d.ellipse([hx - r * 0.8, hy - 1.6 * r, hx + r * 0.8, hy], fill=_scale((220, 180, 150), sc.k))


def _draw_along(d, sc: _Scene, head: int, kerb: float, rng, seen: list) -> tuple[int, int, int]:
    ctx, cam = sc.ctx, sc.cam
    rw = ctx.road_width_m
    d.polygon([cam.p(-rw / 2, 0, 0.5), cam.p(-rw / 2, 0, FAR), cam.p(rw / 2, 0, FAR), cam.p(rw / 2, 0, 0.5)],
              fill=_scale((200, 200, 205) if sc.season == "winter" else (70, 70, 75), sc.k))
    if rw >= 10:
        for z in np.arange(2.0 + rng.uniform(0, 6), FAR, 6.0):
            d.polygon([cam.p(-0.1, 0, z), cam.p(-0.1, 0, z + 3), cam.p(0.1, 0, z + 3), cam.p(0.1, 0, z)],
                      fill=_scale((230, 230, 200), sc.k))
    for side in (-1, 1):
        _draw_buildings_along(d, sc, side, kerb, rng, seen)
    n_trees, dens = 0, _tree_density(ctx)
    lamp_side, lamp_col, lamp_step = _furniture(ctx)
    for off, a in reversed(_street_points(ctx, 9.0, 1.5, 80.0, head)):
        for side in (-1, 1):
            if _tree_here(ctx, a, side * head, dens):
                _draw_tree(d, sc, side * (kerb - 1.2), off)
                n_trees += 1
    for off, _ in reversed(_street_points(ctx, lamp_step, 2.0, 70.0, head)):
        _lamp(d, sc, lamp_side * head * (rw / 2 + 0.6), off, _scale(lamp_col, sc.k))
    n_cars = int(rng.poisson(TRAFFIC.get(ctx.highway, 1.0) * sc.traffic))
    for z in sorted(rng.uniform(4, 40, n_cars), reverse=True):
        _vehicle(d, sc, rng, rng.uniform(-rw / 2 + 1.2, rw / 2 - 1.2), z)
    n_ped = int(rng.poisson(2.0 * float(ctx.city.f_shop(ctx.x, ctx.y)) * sc.peds))
    for z in sorted(rng.uniform(3, 25, n_ped), reverse=True):
        _person(d, sc, rng, rng.choice([-1, 1]) * (rw / 2 + rng.uniform(0.5, 2.0)), z)
    return n_trees, n_cars, n_ped


def _draw_across(d, sc: _Scene, side: int, kerb: float, rng, seen: list) -> tuple[int, int, int]:
    ctx, cam = sc.ctx, sc.cam
    rw = ctx.road_width_m
    snow = sc.season == "winter"
    y_kerb = min(cam.p(0, 0, kerb)[1], cam.H)
    y_road = min(cam.p(0, 0, rw / 2)[1], cam.H)
    d.rectangle([0, y_kerb, cam.W, cam.H], fill=_scale((215, 215, 220) if snow else (120, 120, 115), sc.k))
    d.rectangle([0, y_road, cam.W, cam.H], fill=_scale((200, 200, 205) if snow else (70, 70, 75), sc.k))
    _draw_buildings_across(d, sc, kerb, rng, seen)
    half = kerb * cam.W / cam.f + 4.0
    # along coordinate grows to the camera's right when looking at the right-hand side (side=+1)
    n_trees, dens = 0, _tree_density(ctx)
    for off, a in _street_points(ctx, 9.0, -half, half, -side):
        if _tree_here(ctx, a, side, dens):
            _draw_tree(d, sc, off, kerb - 1.2)
            n_trees += 1
    lamp_side, lamp_col, lamp_step = _furniture(ctx)
    if lamp_side == side:
        for off, _ in _street_points(ctx, lamp_step, -half, half, -side):
            _lamp(d, sc, off, rw / 2 + 0.6, _scale(lamp_col, sc.k))
    n_ped = int(rng.poisson(1.0 * float(ctx.city.f_shop(ctx.x, ctx.y)) * sc.peds))
    for _ in range(n_ped):
        _person(d, sc, rng, rng.uniform(-half / 2, half / 2), rng.uniform(rw / 2 + 0.5, kerb - 0.5))
    n_cars = int(rng.poisson(0.5 * TRAFFIC.get(ctx.highway, 1.0) * sc.traffic))
    for _ in range(n_cars):  # parked / passing cars between camera and façade
        _vehicle(d, sc, rng, rng.uniform(-half / 2, half / 2), rng.uniform(max(1.5, rw / 2 - 1.5), rw / 2 + 0.01) + 0.5,
                 w=4.2)
    return n_trees, n_cars, n_ped


def _shop_sign(d, sc: _Scene, rng, kerb: float, across_side: int | None) -> str:
    """Shop sign: presence from the shop field, hue = per-street cue + noise."""
    ctx, cam = sc.ctx, sc.cam
    if rng.random() >= 0.2 + 0.75 * float(ctx.city.f_shop(ctx.x, ctx.y)):
        return ""
    hue = (ctx.city.street_hue(ctx.street) + rng.normal(0, 0.03)) % 1.0
    col = _rgb(hue, 0.5, 0.85, max(sc.k, 0.7))
    if across_side is None:
        side = 1 if rng.random() < 0.5 else -1
        z0 = rng.uniform(5, 12)
        d.polygon(cam.quad(side * (kerb - 0.05), 3.2, 4.2, z0, z0 + 4.0), fill=col)
    else:
        s0 = rng.uniform(-4, 1)
        d.polygon(cam.front(s0, s0 + 4.0, 3.2, 4.2, kerb - 0.05), fill=col)
    return f"a {colour_name(hue, 0.5, 0.85)} shop sign"


def _weather(img: Image.Image, d, weather: str, rng) -> Image.Image:
    size = img.width
    if weather == "rain":
        for _ in range(int(size * 0.4)):
            x, y = rng.uniform(0, size, 2)
            d.line([(x, y), (x - 1.5, y + size * 0.06)], fill=(170, 175, 185))
    elif weather == "snow":
        for _ in range(int(size * 0.6)):
            x, y = rng.uniform(0, size, 2)
            d.point((x, y), fill=(245, 245, 250))
    elif weather == "fog":
        arr = np.asarray(img, dtype=np.float32)
        a = rng.uniform(0.25, 0.45)
        img = Image.fromarray((arr * (1 - a) + 200.0 * a).astype(np.uint8))
    return img


def render_view(ctx: ViewContext, rng: np.random.Generator, size: int = 96,
                conditions: CaptureConditions | None = None) -> tuple[Image.Image, str]:
    """Render one view of ``ctx`` under capture ``conditions`` (default: database conditions);
    returns (RGB image of size×size, scene caption)."""
    if not 16 <= size <= 1024:
        raise ValueError(f"image size must be in [16, 1024], got {size}")
    cond = conditions or DATABASE
    cam = _Camera(size, rng, cond)
    tod = TIMES[rng.choice(len(TIMES), p=_norm(cond.time_of_day, TIMES))]
    weather = WEATHERS[rng.choice(len(WEATHERS), p=_norm(cond.weather, WEATHERS))]
    season = "winter" if weather == "snow" else "autumn" if rng.random() < cond.autumn_p else "summer"
    tname, sky0, sky1, k, lit_p = TIMES_OF_DAY[tod]
    if weather in ("rain", "fog"):
        sky0, sky1, k = _scale(sky0, 0.7) if tod != "day" else (130, 135, 145), (175, 178, 185), k * 0.8
    across = rng.random() < cond.across_p
    head = 1 if rng.random() < 0.5 else -1
    side = 1 if rng.random() < 0.5 else -1
    t = (head * ctx.dx, head * ctx.dy)
    fwd = (side * ctx.dy, -side * ctx.dx) if across else t
    sc = _Scene(cam, ctx, k, lit_p, season, fwd, (fwd[1], -fwd[0]), cond.traffic, cond.pedestrians)
    img = Image.new("RGB", (size, size))
    d = ImageDraw.Draw(img)
    hz = int(min(max(cam.vy, 1), size))
    for yy in range(0, max(hz, 1), max(1, hz // 6)):  # banded sky gradient
        tt = yy / max(hz, 1)
        d.rectangle([0, yy, size, hz], fill=tuple(int(a + (b - a) * tt) for a, b in zip(sky0, sky1)))
    d.rectangle([0, hz, size, size], fill=_scale((215, 215, 220) if season == "winter" else (120, 120, 115), k))
    n_land = _draw_landmarks(d, sc, hz)
    kerb = ctx.road_width_m / 2 + 2.5 + 1.5 * float(ctx.city.f_width(ctx.x, ctx.y))
    seen: list = []
    if across:
        n_trees, n_cars, n_ped = _draw_across(d, sc, side, kerb, rng, seen)
    else:
        n_trees, n_cars, n_ped = _draw_along(d, sc, head, kerb, rng, seen)
    sign_txt = _shop_sign(d, sc, rng, kerb, side if across else None)
    if rng.random() < cond.occluder_p:  # a van or bus right in front of the lens
        z = rng.uniform(2.0, 4.0)
        _vehicle(d, sc, rng, rng.uniform(-2.5, 2.5), z, w=rng.uniform(2.0, 5.0), h=rng.uniform(1.8, 3.2))
    img = _weather(img, d, weather, rng)
    img = _sensor_noise(img, rng)
    return img, _caption(ctx, seen, n_trees, sign_txt, n_cars, tname, WEATHER_PHRASE[weather], across, n_land)


def _norm(p: dict[str, float], keys: tuple[str, ...]) -> np.ndarray:
    v = np.array([p.get(k, 0.0) for k in keys], float)
    return v / v.sum()


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


_ROAD_PHRASE = {"motorway": "a wide highway", "trunk": "a wide avenue", "primary": "a wide avenue",
                "secondary": "a busy street", "tertiary": "a street", "residential": "a quiet residential street",
                "living_street": "a narrow lane", "pedestrian": "a pedestrian street", "unclassified": "a side street"}


def _caption(ctx: ViewContext, seen: list, n_trees: int, sign: str, n_cars: int, tod: str, weather: str,
             across: bool, n_land: int) -> str:
    """Describe what was drawn: road kind, dominant façades, trees, sign, cars, landmark, time, weather."""
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
    if n_land:
        extras.append("a tower in the distance")
    tail = (", " + " and ".join([", ".join(extras[:-1]), extras[-1]] if len(extras) > 1 else extras)) if extras else ""
    when = f"{tod} {weather}".strip()
    body = f"looking across {road} at {facade}" if across else f"{road} lined with {facade}"
    return f"{body}{tail}, {when}"
