"""Reverse geocoding through a Nominatim-compatible HTTP service (for users who run one).

Same `reverse()` interface as `OfflineGeocoder`. Nominatim answers one address per point, so
slot 0 holds it and slots 1..k-1 stay empty. Requests are spaced by ``min_interval_s`` (the
public server's policy is 1 request/s), retried with exponential backoff on 5xx and
connection errors, and every answer is cached on disk as one JSON file per rounded
(lat, lon) so re-runs and repeated points cost no request.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from pathlib import Path

import numpy as np
import requests

from data_gen.geocoder import GeocodeResult, check_latlon
from llava_address.common.geo import haversine_m
from llava_address.common.io import atomic_write_json

__all__ = ["NominatimGeocoder", "NominatimError", "haversine_m"]

log = logging.getLogger(__name__)


class NominatimError(RuntimeError):
    """The service kept failing (after retries) or answered something unusable."""


class NominatimGeocoder:
    def __init__(self, base_url: str, cache_dir: Path, min_interval_s: float = 1.0, retries: int = 3,
                 timeout_s: float = 10.0, user_agent: str = "llava-address/0.1 (offline dataset builder)",
                 cache_decimals: int = 6, backoff_s: float = 1.0):
        self.base_url = base_url.rstrip("/")
        self.cache_dir = Path(cache_dir)
        self.min_interval_s, self.retries, self.timeout_s = float(min_interval_s), int(retries), float(timeout_s)
        self.cache_decimals, self.backoff_s = int(cache_decimals), float(backoff_s)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = user_agent
        self._last = -math.inf
        self._lock = threading.Lock()
        self.requests_made = 0

    # ---- public ----------------------------------------------------------------
    def reverse(self, lat, lon, k: int = 5) -> GeocodeResult:
        lat, lon = check_latlon(lat, lon)
        out = GeocodeResult.empty(len(lat), k)
        for i, (la, lo) in enumerate(zip(lat, lon)):
            js = self.lookup(float(la), float(lo))
            road = (js.get("address") or {}).get("road", "")
            if not road:
                continue
            out.names[i, 0] = road
            out.highways[i, 0] = js.get("type", "") if js.get("category", js.get("class")) == "highway" else ""
            try:
                out.distances_m[i, 0] = float(haversine_m(la, lo, float(js["lat"]), float(js["lon"])))
            except (KeyError, TypeError, ValueError):
                raise NominatimError(f"Nominatim answer for ({la}, {lo}) has no usable lat/lon: {js}") from None
        return out

    def reverse_district(self, lat, lon) -> np.ndarray:
        """suburb, else neighbourhood, else quarter/city_district ("" if none) per point."""
        lat, lon = check_latlon(lat, lon)
        out = np.full(len(lat), "", dtype=object)
        for i, (la, lo) in enumerate(zip(lat, lon)):
            addr = self.lookup(float(la), float(lo)).get("address") or {}
            out[i] = next((addr[key] for key in ("suburb", "neighbourhood", "quarter", "city_district") if addr.get(key)), "")
        return out

    def lookup(self, lat: float, lon: float) -> dict:
        """The raw jsonv2 answer for one point, from the cache or the service."""
        rl, ro = round(lat, self.cache_decimals), round(lon, self.cache_decimals)
        key = hashlib.sha1(f"{self.base_url}|{rl:.{self.cache_decimals}f}|{ro:.{self.cache_decimals}f}".encode()).hexdigest()
        path = self.cache_dir / key[:2] / f"{key}.json"
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                log.warning("corrupt Nominatim cache entry %s: refetching", path)
        js = self._fetch(rl, ro)
        atomic_write_json(path, js)
        return js

    # ---- internals -------------------------------------------------------------
    def _wait_turn(self) -> None:
        with self._lock:
            delay = self._last + self.min_interval_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._last = time.monotonic()

    def _fetch(self, lat: float, lon: float) -> dict:
        url = f"{self.base_url}/reverse"
        params = {"format": "jsonv2", "lat": f"{lat}", "lon": f"{lon}", "zoom": 17, "addressdetails": 1}
        last_err = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            self._wait_turn()
            self.requests_made += 1
            try:
                resp = self.session.get(url, params=params, timeout=self.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as exc:
                last_err = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status_code >= 500:
                last_err = f"HTTP {resp.status_code}"
                continue
            if resp.status_code != 200:
                raise NominatimError(f"Nominatim {url} answered HTTP {resp.status_code} for ({lat}, {lon}): {resp.text[:200]}")
            try:
                js = resp.json()
            except ValueError:
                raise NominatimError(f"Nominatim {url} returned non-JSON for ({lat}, {lon}): {resp.text[:200]}") from None
            if not isinstance(js, dict):
                raise NominatimError(f"Nominatim {url} returned unexpected JSON for ({lat}, {lon}): {js!r:.200}")
            return js  # {"error": "Unable to geocode"} is a valid "nothing here" answer, cached too
        raise NominatimError(f"Nominatim {url} failed {self.retries + 1} times for ({lat}, {lon}): {last_err}")
