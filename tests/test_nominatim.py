"""NominatimGeocoder against a local http.server speaking Nominatim jsonv2."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from data_gen.nominatim import NominatimError, NominatimGeocoder, haversine_m


class FakeNominatim(BaseHTTPRequestHandler):
    server_version = "FakeNominatim/1"

    def do_GET(self):  # noqa: N802 (http.server API)
        srv = self.server
        q = parse_qs(urlparse(self.path).query)
        srv.log.append((time.monotonic(), urlparse(self.path).path, q))
        if srv.fail_next > 0:
            srv.fail_next -= 1
            self.send_response(503)
            self.end_headers()
            return
        if srv.limit_next > 0:  # rate limited, with the server's Retry-After (None: header absent)
            srv.limit_next -= 1
            self.send_response(429)
            if srv.retry_after is not None:
                self.send_header("Retry-After", srv.retry_after)
            self.end_headers()
            return
        if srv.redirect_to and urlparse(self.path).path == "/reverse":
            self.send_response(302)
            self.send_header("Location", srv.redirect_to + "?" + urlparse(self.path).query)
            self.end_headers()
            return
        lat, lon = float(q["lat"][0]), float(q["lon"][0])
        if lat > 80:
            body = {"error": "Unable to geocode"}
        else:
            body = {"place_id": 1, "lat": str(lat + 0.0001), "lon": str(lon), "category": "highway",
                    "type": "residential", "address": {"road": "Test Street", "suburb": "Testville"}}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeNominatim)
    srv.log, srv.fail_next, srv.limit_next, srv.retry_after, srv.redirect_to = [], 0, 0, None, ""
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def make(server, tmp_path, **kw):
    kw.setdefault("min_interval_s", 0.0)
    kw.setdefault("backoff_s", 0.01)
    return NominatimGeocoder(f"http://127.0.0.1:{server.server_address[1]}", tmp_path / "cache", **kw)


def test_parse_and_cache(server, tmp_path):
    geo = make(server, tmp_path)
    res = geo.reverse([60.1, 85.0], [24.9, 0.0], k=3)
    assert list(res.names[0]) == ["Test Street", "", ""] and res.highways[0, 0] == "residential"
    assert res.distances_m[0, 0] == pytest.approx(11.1, abs=0.2) and np.isinf(res.distances_m[0, 1])
    assert list(res.names[1]) == ["", "", ""]  # "Unable to geocode"
    path, q = server.log[0][1], server.log[0][2]
    assert path == "/reverse" and q["format"] == ["jsonv2"] and q["zoom"] == ["17"] and q["addressdetails"] == ["1"]
    assert len(server.log) == 2
    again = make(server, tmp_path)  # new instance, same cache dir: no request at all
    assert list(again.reverse_district([60.1, 85.0], [24.9, 0.0])) == ["Testville", ""]
    assert len(server.log) == 2 and again.requests_made == 0


def test_rate_limit_spacing(server, tmp_path):
    geo = make(server, tmp_path, min_interval_s=0.15)
    sent, get = [], geo.session.get

    def timed_get(*a, **k):  # send times, client side: server arrival times jitter on a loaded machine
        sent.append(time.monotonic())
        return get(*a, **k)
    geo.session.get = timed_get
    geo.reverse([1.0, 2.0, 3.0], [1.0, 1.0, 1.0], k=1)
    assert len(server.log) == 3 and len(sent) == 3 and min(np.diff(sent)) >= 0.149


def test_retry_on_503_then_clean_error(server, tmp_path):
    server.fail_next = 1
    geo = make(server, tmp_path, retries=2)
    assert geo.reverse([10.0], [10.0]).names[0, 0] == "Test Street"
    assert len(server.log) == 2
    server.fail_next = 100
    with pytest.raises(NominatimError, match="failed 3 times.*HTTP 503"):
        geo.reverse([11.0], [10.0])


def test_connection_refused_is_clean(tmp_path):
    geo = NominatimGeocoder("http://127.0.0.1:9", tmp_path, min_interval_s=0, retries=1, backoff_s=0.01, timeout_s=1)
    with pytest.raises(NominatimError, match="ConnectionError"):
        geo.reverse([1.0], [1.0])


def test_429_waits_retry_after_then_succeeds(server, tmp_path):
    server.limit_next, server.retry_after = 1, "0.3"
    geo = make(server, tmp_path, retries=2, backoff_s=0.01)
    assert geo.reverse([12.0], [10.0]).names[0, 0] == "Test Street"
    (t0, *_), (t1, *_) = server.log
    assert len(server.log) == 2 and t1 - t0 >= 0.29  # honoured the header, not the 0.01 s backoff
    server.limit_next, server.retry_after = 1, None  # no header: exponential backoff, still retried
    assert geo.reverse([13.0], [10.0]).names[0, 0] == "Test Street"
    server.limit_next, server.retry_after = 100, "1000"
    geo = make(server, tmp_path, retries=1, max_retry_after_s=0.05)
    t = time.monotonic()
    with pytest.raises(NominatimError, match="failed 2 times.*HTTP 429"):
        geo.reverse([14.0], [10.0])
    assert time.monotonic() - t < 2  # Retry-After capped


def test_redirects_stay_on_the_configured_host(server, tmp_path):
    port = server.server_address[1]
    server.redirect_to = f"http://127.0.0.1:{port}/reverse2"  # same host: followed
    geo = make(server, tmp_path)
    assert geo.reverse([15.0], [10.0]).names[0, 0] == "Test Street"
    assert [p for _, p, _ in server.log] == ["/reverse", "/reverse2"]
    server.redirect_to = f"http://localhost:{port}/reverse"  # another host name: refused, never contacted
    n = len(server.log)
    with pytest.raises(NominatimError, match="redirected to another host"):
        geo.reverse([16.0], [10.0])
    assert len(server.log) == n + 1


def test_haversine():
    assert haversine_m(0.0, 0.0, 0.0, 1.0) == pytest.approx(111_195, rel=1e-3)
