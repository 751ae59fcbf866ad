"""The web app end to end in headless Chromium (Playwright driving Debian's /usr/bin/chromium).

Serves the Gradio page (scripts/web.py in a subprocess, 127.0.0.1, free port) with tiny models, uploads a
generated photo, checks the answer, candidates and map appear, asks a follow-up, checks a bad
upload gives a message in the page, and saves screenshots (tests/artifacts/ or $PYTEST_ARTIFACTS; the README's
docs/web_screenshot.png is a screenshot of the trained demo models, taken by hand).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from _fixtures_app import REPO, noise_photo, tiny_app

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 60_000

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"no Chromium at {CHROMIUM}")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _artifact_dir() -> Path:
    d = Path(os.environ.get("PYTEST_ARTIFACTS", REPO / "tests" / "artifacts"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """scripts/web.py in a subprocess on a free port (the real entry point, offline env)."""
    app = tiny_app(tmp_path_factory.getbasetemp() / "tiny_app")
    port = _free_port()
    log = tmp_path_factory.mktemp("web") / "server.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    cmd = [sys.executable, str(REPO / "scripts" / "web.py"), "--model", str(app.llava), "--clip", str(app.clip),
           "--data", str(app.data), "--port", str(port), "--candidates", "3", "--max-new-tokens", "8",
           "--max-upload-mb", "0.2"]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"web.py exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if urllib.request.urlopen(url, timeout=2).status == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"web.py did not serve {url} in 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, app
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    url, _ = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1280, "height": 1500})
        outside: list[str] = []
        pg.on("request", lambda r: outside.append(r.url) if not r.url.startswith(url) and
              not r.url.startswith("data:") and not r.url.startswith("blob:") else None)
        pg.set_default_timeout(TIMEOUT_MS)
        pg.goto(url)
        pg.wait_for_selector("#upload")
        pg.outside_requests = outside
        yield pg
        browser.close()


def _upload(page, url: str, path: Path) -> None:
    """Fresh page (an upload box holding a file hides its file input), then upload ``path``."""
    page.goto(url)
    page.set_input_files("#upload input[type=file]", str(path))


def _answer_ready(page) -> None:
    page.wait_for_function("() => { const t = document.querySelector('#answer textarea');"
                           " return t && t.value.trim().length > 0 }")
    page.wait_for_selector("#map img")
    page.wait_for_function("() => (document.querySelector('#status') || {}).innerText?.includes('Done')")


def test_upload_answer_map_and_follow_up(page, server):
    url, app = server
    from data_gen.contract import read_manifest

    row = read_manifest(app.data).iloc[0]
    _upload(page, url, app.data / row["image"])
    _answer_ready(page)
    assert page.input_value("#answer textarea").strip()
    from llava_address.clip.locator import AddressLocator

    expected = AddressLocator.from_pretrained(app.clip).locate([app.data / row["image"]], k=3)[0]
    table = page.inner_text("#candidates")
    positions = [table.index(addr) for addr, _ in expected]  # all three shown, best first
    assert positions == sorted(positions)
    assert f"True address (dataset label): {row['sub_street']}" in page.inner_text("#status")
    assert page.get_attribute("#map img", "src")
    page.fill("#followup textarea", "Which street is it on?")
    page.click("#send")
    page.wait_for_function("() => document.querySelectorAll('#chatbot [data-testid=\"user\"]').length >= 2")
    page.wait_for_function("() => (document.querySelector('#status') || {}).innerText?.includes('Done')")
    users, bots = page.locator('#chatbot [data-testid="user"]'), page.locator('#chatbot [data-testid="bot"]')
    assert users.count() == 2 and bots.count() == 2
    assert "Which street is it on?" in users.nth(1).inner_text()
    assert bots.nth(1).inner_text().strip()  # the follow-up got a (random-model) reply
    page.get_by_text("Activation map: where does the model see an address?").click()
    page.fill("#act_query textarea", row["sub_street"])
    page.click("#act_show")
    page.wait_for_selector("#act_map img")
    shot = _artifact_dir() / "web_answer.png"
    page.screenshot(path=str(shot), full_page=True)
    assert page.outside_requests == []  # nothing fetched from the internet


def test_generated_photo_then_bad_uploads_give_messages(page, server, tmp_path):
    url, _ = server
    photo = noise_photo(tmp_path / "street.png", size=60)
    _upload(page, url, photo)
    _answer_ready(page)
    assert "True address" not in page.inner_text("#status")  # not a dataset photo: no ground truth
    bad = tmp_path / "notes.txt"
    bad.write_text("not a photo")
    _upload(page, url, bad)
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('not a readable image')")
    big = noise_photo(tmp_path / "huge.png", size=400)  # > the 0.2 MB limit set for this server
    _upload(page, url, big)
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('the limit is')")
    assert page.input_value("#answer textarea") == ""
    page.screenshot(path=str(_artifact_dir() / "web_bad_upload.png"), full_page=True)
