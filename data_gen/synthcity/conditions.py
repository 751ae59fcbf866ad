"""Capture conditions: WHY database (train) and query (val/test) photos of one place differ.

Real place-recognition queries (Pitts-250k, SF-XL) are taken years after the database, by other
cameras, at other times, in other weather, looking in other directions. SynthCity v2 draws
every nuisance of a view from a per-split ``CaptureConditions``: heading (along the street or
across it at one façade), yaw/pitch, focal length (field of view), camera height, time of day,
weather/season, traffic, pedestrians and close occluders. The location itself (façades, trees,
signs, street furniture, landmarks) comes only from the city, so a model must see through the
conditions to the place, while copying the nearest training image's pixels does not work.

The defaults are the database conditions: every nuisance occurs (a model can only learn to see
through what it was shown), but mostly daylight, clear weather and views along the street.
``QUERY`` is the wider, shifted distribution used for val/test by default: more night, dusk,
fog and snow, more views across the street, wider FOV and height ranges, busier streets.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from llava_address.common.config import StrictModel

__all__ = ["CaptureConditions", "DATABASE", "QUERY", "TIMES", "WEATHERS", "default_split_conditions"]

TIMES = ("day", "overcast", "dusk", "night")
WEATHERS = ("clear", "rain", "fog", "snow")


def _probs(v: dict[str, float], keys: tuple[str, ...], field: str) -> dict[str, float]:
    bad = sorted(set(v) - set(keys))
    if bad:
        raise ValueError(f"{field}: unknown keys {bad}; allowed {list(keys)}")
    if any(p < 0 for p in v.values()) or sum(v.values()) <= 0:
        raise ValueError(f"{field}: probabilities must be >= 0 with a positive sum, got {v}")
    return v


class CaptureConditions(StrictModel):
    """Distribution of one split's capture nuisances (each image draws its own from it)."""

    across_p: float = Field(0.35, ge=0, le=1, description="share of views looking across the street at one façade")
    yaw: float = Field(0.15, ge=0, le=0.4, description="max horizontal principal-point shift (fraction of width)")
    pitch: float = Field(0.08, ge=0, le=0.3, description="max vertical principal-point shift (fraction of height)")
    focal: tuple[float, float] = Field((0.65, 1.05), description="focal length range (fraction of width); small = wide FOV")
    camera_height_m: tuple[float, float] = Field((1.4, 2.6), description="camera height range (m)")
    time_of_day: dict[str, float] = Field(
        default_factory=lambda: {"day": 0.4, "overcast": 0.25, "dusk": 0.2, "night": 0.15})
    weather: dict[str, float] = Field(
        default_factory=lambda: {"clear": 0.55, "rain": 0.15, "fog": 0.15, "snow": 0.15})
    autumn_p: float = Field(0.3, ge=0, le=1, description="share of views with autumn foliage (snow: bare trees)")
    traffic: float = Field(1.0, ge=0, description="multiplier on cars per view")
    pedestrians: float = Field(1.0, ge=0, description="multiplier on pedestrians per view")
    occluder_p: float = Field(0.1, ge=0, le=1, description="chance of a large vehicle close to the camera")

    @field_validator("time_of_day")
    @classmethod
    def _tod(cls, v):
        return _probs(v, TIMES, "time_of_day")

    @field_validator("weather")
    @classmethod
    def _weather(cls, v):
        return _probs(v, WEATHERS, "weather")

    @field_validator("focal", "camera_height_m")
    @classmethod
    def _range(cls, v):
        if not 0 < v[0] <= v[1]:
            raise ValueError(f"range must be 0 < low <= high, got {v}")
        return v


DATABASE = CaptureConditions()
QUERY = CaptureConditions(
    across_p=0.5, yaw=0.2, pitch=0.12, focal=(0.5, 1.2), camera_height_m=(1.2, 2.8),
    time_of_day={"day": 0.25, "overcast": 0.2, "dusk": 0.25, "night": 0.3},
    weather={"clear": 0.3, "rain": 0.2, "fog": 0.25, "snow": 0.25}, autumn_p=0.4,
    traffic=2.0, pedestrians=2.0, occluder_p=0.25)


def default_split_conditions() -> dict[str, CaptureConditions]:
    """train = database conditions; val and test = shifted query conditions."""
    return {"train": DATABASE.model_copy(), "val": QUERY.model_copy(), "test": QUERY.model_copy()}
