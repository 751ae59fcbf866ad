"""What a scene caption says about capture conditions: time of day and weather, or None when it does not say.

Why from the caption: it is the one place the dataset records what the photo shows (SynthCity writes
the conditions it rendered; a BLIP caption may or may not mention them). The phrases are SynthCity's
own (:data:`data_gen.synthcity.draw.TIMES_OF_DAY`, ``WEATHER_PHRASE``), so QA answers and their
scoring use exactly the words the renderer wrote. A caption without a time-of-day phrase is not a
SynthCity condition caption: its weather is then unknown, not "clear".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from data_gen.synthcity.draw import TIMES_OF_DAY, WEATHER_PHRASE

__all__ = ["SceneFacts", "scene_facts", "TIME_WORDS", "WEATHER_WORDS", "parse_time_answer", "parse_weather_answer"]

TIME_PHRASES = {name: spec[0] for name, spec in TIMES_OF_DAY.items()}   # "night" -> "at night"
WEATHER_PHRASES = {k: v for k, v in WEATHER_PHRASE.items() if v}        # "rain" -> "in the rain"
# how an answer names each condition (first match wins; scoring reads answers with these)
TIME_WORDS = {"night": ("night",), "dusk": ("dusk", "evening", "twilight"), "overcast": ("overcast", "cloudy"),
              "day": ("daylight", "daytime", "sunny", "bright day")}
WEATHER_WORDS = {"rain": ("rain",), "fog": ("fog",), "snow": ("snow",), "clear": ("clear", "dry")}


@dataclass(frozen=True)
class SceneFacts:
    time_of_day: str | None   # one of TIMES_OF_DAY's keys
    weather: str | None       # one of WEATHER_PHRASE's keys


def scene_facts(caption: str | None) -> SceneFacts:
    """Caption -> (time of day, weather); None for what the caption does not state."""
    text = (caption or "").lower()
    tod = next((k for k, p in TIME_PHRASES.items() if p in text), None)
    weather = next((k for k, p in WEATHER_PHRASES.items() if p in text), None)
    if weather is None and tod is not None:  # SynthCity states rain/fog/snow; silence then means clear
        weather = "clear"
    return SceneFacts(tod, weather)


def _first(text: str, words: dict[str, tuple[str, ...]]) -> str | None:
    text = text.lower()
    hits = [(m.start(), k) for k, ws in words.items() for w in ws for m in [re.search(rf"\b{w}", text)] if m]
    return min(hits)[1] if hits else None


def parse_time_answer(answer: str) -> str | None:
    """The time of day an answer names first (None: it names none)."""
    return _first(answer, TIME_WORDS)


def parse_weather_answer(answer: str) -> str | None:
    """The weather an answer names first (None: it names none)."""
    return _first(answer, WEATHER_WORDS)
