"""Reverse geocoding through a Nominatim-compatible HTTP service (for users who run one).

Same `reverse()` interface as `OfflineGeocoder`. Nominatim answers one address per point, so
slot 0 holds it and slots 1..k-1 stay empty. Requests are spaced by ``min_interval_s`` (the
public server's policy is 1 request/s), retried with exponential backoff on 5xx and
connection errors and on HTTP 429 (waiting ``Retry-After`` when the server sends it, capped
at ``max_retry_after_s``), and every answer is cached on disk as one JSON file per rounded
(lat, lon) so re-runs and repeated points cost no request. Redirects are followed only within
the configured host: a redirect elsewhere would send the user's coordinates to a third party.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urljoin, urlsplit

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
                 cache_decimals: int = 6, backoff_s: float = 1.0, max_retry_after_s: float = 120.0,
                 max_redirects: int = 5):
        self.base_url = base_url.rstrip("/")
        self.cache_dir = Path(cache_dir)
        self.min_interval_s, self.retries, self.timeout_s = float(min_interval_s), int(retries), float(timeout_s)
        self.cache_decimals, self.backoff_s = int(cache_decimals), float(backoff_s)
        self.max_retry_after_s, self.max_redirects = float(max_retry_after_s), int(max_redirects)
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

    def _get(self, url: str, params: dict | None) -> requests.Response:
        """GET following redirects by hand, only to the configured scheme and host."""
        origin = urlsplit(self.base_url)[:2]
        for _ in range(self.max_redirects + 1):
            resp = self.session.get(url, params=params, timeout=self.timeout_s, allow_redirects=False)
            if not resp.is_redirect:
                return resp
            target = urljoin(resp.url, resp.headers["Location"])
            if urlsplit(target)[:2] != origin:
                raise NominatimError(f"Nominatim {self.base_url} redirected to another host ({target}); "
                                     "refusing to send coordinates there: set the final URL as base_url")
            url, params = target, None  # the Location carries the query
        raise NominatimError(f"Nominatim {self.base_url}: more than {self.max_redirects} redirects")

    def _retry_after(self, resp: requests.Response, attempt: int) -> float:
        """Seconds to wait after HTTP 429: the Retry-After header (seconds or a date), else backoff."""
        raw = resp.headers.get("Retry-After", "").strip()
        wait = None
        if raw:
            try:
                wait = float(raw)
            except ValueError:
                try:
                    wait = parsedate_to_datetime(raw).timestamp() - time.time()
                except (TypeError, ValueError, IndexError):
                    wait = None
        if wait is None:
            wait = self.backoff_s * 2 ** attempt
        return min(max(wait, 0.0), self.max_retry_after_s)

    def _fetch(self, lat: float, lon: float) -> dict:
        url = f"{self.base_url}/reverse"
        params = {"format": "jsonv2", "lat": f"{lat}", "lon": f"{lon}", "zoom": 17, "addressdetails": 1}
        last_err, wait = "", 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(wait)
            wait = self.backoff_s * 2 ** attempt
            self._wait_turn()
            self.requests_made += 1
            try:
                resp = self._get(url, params)
            except (requests.ConnectionError, requests.Timeout) as exc:
                last_err = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status_code == 429:
                wait = self._retry_after(resp, attempt)
                last_err = f"HTTP 429 (rate limited; server asked to wait {wait:g}s)"
                log.warning("Nominatim rate limit (HTTP 429): waiting %.1fs before retrying", wait)
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
