"""A seeded procedural city: the same `RoadNetwork` type as a real OSM extract, no download.

Layout: a jittered grid of east-west streets ("Maple St", "Harbor Rd", ...) and north-south
numbered avenues ("1st Ave", ...), some streets gently curved, one or two diagonal
boulevards, a few unnamed service alleys inside blocks, and districts = Voronoi cells of
random seeds. Streets are cut into per-block ways like OSM. Same seed -> identical network.
"""

from __future__ import annotations

import numpy as np
import shapely
from shapely.geometry import LineString, MultiPoint, box

from data_gen.road_network import LocalProjection, RoadNetwork, Way

__all__ = ["make_procedural_city", "STREET_WORDS", "DISTRICT_WORDS"]

STREET_WORDS = (
    "Oak", "Maple", "Harbor", "Pine", "Cedar", "Elm", "Willow", "Birch", "Lake", "Hill", "River",
    "Park", "Spring", "Mill", "Church", "Market", "Union", "Bridge", "Orchard", "Sunset", "Forest",
    "Meadow", "Garden", "Chestnut", "Walnut", "Cherry", "Highland", "Valley", "Ridge", "Bay",
    "Franklin", "Lincoln", "Jefferson", "Madison", "Grant", "Clay", "Mason", "Fulton", "Howard",
    "Bush", "Pearl", "Castle", "Station", "Canal", "Quarry", "Beacon", "Summit", "Aspen",
)
STREET_SUFFIXES = ("St", "Rd", "Ln", "Way", "Dr", "Pl")
DISTRICT_WORDS = (
    "Northgate", "Riverside", "Old Town", "Harbor District", "Hillcrest", "Eastwood", "Westfield",
    "Southbank", "Midtown", "Parkside", "Lakeview", "Mill Quarter", "Cedar Heights", "Bayview",
)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _curve(p: np.ndarray, q: np.ndarray, bend: float, n: int = 6) -> np.ndarray:
    """Points from p to q bowed sideways by ``bend`` metres (a gentle sine arc)."""
    t = np.linspace(0, 1, n)[:, None]
    d = q - p
    normal = np.array([-d[1], d[0]]) / max(np.hypot(*d), 1e-9)
    return p + t * d + np.sin(np.pi * t) * bend * normal


def make_procedural_city(seed: int = 0, size_m: float = 1500.0, block_m: float = 120.0, n_districts: int = 5,
                         jitter_m: float = 12.0, curve_share: float = 0.3, n_diagonals: int = 2,
                         n_alleys: int = 6, lat0: float = 37.76, lon0: float = -122.42,
                         name: str | None = None) -> RoadNetwork:
    """Build the city; ``size_m`` is the side of the square map, ``block_m`` the grid pitch."""
    if size_m < 2 * block_m or block_m <= 0:
        raise ValueError(f"size_m ({size_m}) must be at least two blocks of block_m ({block_m})")
    if n_districts < 1 or n_districts > len(DISTRICT_WORDS):
        raise ValueError(f"n_districts must be in 1..{len(DISTRICT_WORDS)}, got {n_districts}")
    rng = np.random.default_rng(seed)
    n = int(size_m // block_m) + 1
    coords = np.arange(n) * block_m - (n - 1) * block_m / 2
    gx, gy = np.meshgrid(coords, coords, indexing="ij")  # node (i, j): avenue i, street j
    nodes = np.stack([gx, gy], -1) + rng.uniform(-jitter_m, jitter_m, (n, n, 2))

    words = rng.permutation(len(STREET_WORDS))
    if n > len(words):
        raise ValueError(f"size_m/block_m gives {n} streets; at most {len(STREET_WORDS)} names available")
    ways: list[Way] = []

    def add(name_: str, highway: str, pts: np.ndarray) -> None:
        ways.append(Way(len(ways) + 1, name_, highway, LineString(pts)))

    for j in range(n):  # east-west streets, one way per block
        sname = f"{STREET_WORDS[words[j]]} {STREET_SUFFIXES[rng.integers(len(STREET_SUFFIXES))]}"
        bend = rng.uniform(-0.15, 0.15) * block_m if rng.random() < curve_share else 0.0
        hw = "secondary" if j == n // 2 else "residential"
        for i in range(n - 1):
            add(sname, hw, _curve(nodes[i, j], nodes[i + 1, j], bend * (-1) ** i) if bend else nodes[[i, i + 1], j])
    for i in range(n):  # north-south numbered avenues
        aname = f"{_ordinal(i + 1)} Ave"
        for j in range(n - 1):
            add(aname, "tertiary", nodes[i, [j, j + 1]])
    half = (n - 1) * block_m / 2
    for d in range(n_diagonals):  # boulevards across the grid
        a = rng.uniform(-half, half * 0.2, 2) * np.array([1, 1 if d % 2 == 0 else -1])
        b = -a * rng.uniform(0.6, 1.0)
        pts = _curve(a, b, rng.uniform(-0.05, 0.05) * np.hypot(*(b - a)), n=12)
        word = STREET_WORDS[words[(n + d) % len(words)]]
        add(f"{word} Blvd", "primary", pts)
    for _ in range(n_alleys):  # unnamed service alleys inside blocks (half-block stubs)
        i, j = rng.integers(0, n - 1, 2)
        p = (nodes[i, j] + nodes[i + 1, j]) / 2
        q = (nodes[i, j + 1] + nodes[i + 1, j + 1]) / 2
        add("", "service", np.array([p, p + 0.45 * (q - p)]))

    hull = box(*LineString(nodes.reshape(-1, 2)).bounds).buffer(block_m / 4, join_style="mitre")
    seeds = rng.uniform(-half, half, (n_districts, 2))
    dnames = [DISTRICT_WORDS[k] for k in rng.permutation(len(DISTRICT_WORDS))[:n_districts]]
    districts = {}
    if n_districts == 1:
        districts[dnames[0]] = hull
    else:
        cells = shapely.voronoi_polygons(MultiPoint(seeds), extend_to=hull)
        for cell in cells.geoms:
            k = next(k for k, s in enumerate(seeds) if cell.contains(shapely.Point(s)))
            districts[dnames[k]] = cell.intersection(hull)
    net = RoadNetwork(name or f"procedural-{seed}", LocalProjection(lat0, lon0), ways, dict(sorted(districts.items())))
    net.meta.update(source="procedural", seed=seed, size_m=size_m, block_m=block_m)
    return net
