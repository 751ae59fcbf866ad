"""Smooth spatial fields and district styles: WHY appearance varies smoothly with location.

Every appearance parameter of a SynthCity view (façade hue, building height, tree density,
shop density) is read from a low-frequency random field over map metres, so two photos 30 m
apart look alike and two photos 1 km apart do not. Districts add a discrete style on top.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

__all__ = ["SmoothField", "DistrictStyle", "STYLES", "stable_hash", "hash_unit"]


def stable_hash(*parts: object) -> int:
    """Process-independent hash (Python's ``hash`` is salted per process)."""
    h = hashlib.blake2b("|".join(str(p) for p in parts).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little")


def hash_unit(*parts: object) -> float:
    """Deterministic pseudo-random number in [0, 1) from any key."""
    return (stable_hash(*parts) % 1_000_003) / 1_000_003


class SmoothField:
    """Sum of random plane waves over (x, y) metres, squashed to [0, 1].

    Wavelengths in ``[min_wavelength_m, max_wavelength_m]`` give correlation lengths of
    roughly a quarter wavelength (~100–400 m for the defaults).
    """

    def __init__(self, seed: int, n_waves: int = 8, min_wavelength_m: float = 400.0,
                 max_wavelength_m: float = 1600.0):
        rng = np.random.default_rng(seed)
        theta = rng.uniform(0, 2 * np.pi, n_waves)
        lam = rng.uniform(min_wavelength_m, max_wavelength_m, n_waves)
        k = 2 * np.pi / lam
        self.kx, self.ky = k * np.cos(theta), k * np.sin(theta)
        self.phase = rng.uniform(0, 2 * np.pi, n_waves)
        self.norm = np.sqrt(n_waves / 2.0)  # std of a sum of n unit sinusoids

    def __call__(self, x, y):
        x = np.asarray(x, dtype=float)[..., None]
        y = np.asarray(y, dtype=float)[..., None]
        s = np.sin(x * self.kx + y * self.ky + self.phase).sum(-1) / self.norm
        return 0.5 + 0.5 * np.tanh(s)  # ~N(0,1) -> (0, 1), smooth


@dataclass(frozen=True)
class DistrictStyle:
    """Discrete look of a district: façade kind, hue range, height range."""

    facade: str          # caption noun, e.g. "apartment blocks"
    hue: float           # base hue in [0, 1)
    hue_spread: float    # how far smooth fields move the hue
    sat: float
    light: float
    storeys: tuple[int, int]
    window_density: float  # windows per storey per 10 m
    glass: bool = False


STYLES: tuple[DistrictStyle, ...] = (
    DistrictStyle("apartment blocks", 0.08, 0.10, 0.25, 0.62, (4, 8), 3.0),
    DistrictStyle("brick houses", 0.02, 0.04, 0.55, 0.40, (2, 4), 2.0),
    DistrictStyle("glass office towers", 0.58, 0.06, 0.35, 0.55, (8, 16), 5.0, glass=True),
    DistrictStyle("wooden houses", 0.15, 0.45, 0.45, 0.65, (1, 2), 1.5),
    DistrictStyle("shopfronts and flats", 0.95, 0.20, 0.35, 0.55, (3, 5), 2.5),
    DistrictStyle("stone buildings", 0.11, 0.05, 0.15, 0.72, (4, 6), 2.5),
    DistrictStyle("concrete housing blocks", 0.0, 0.0, 0.0, 0.55, (6, 12), 3.5),
)
