"""The dashboard's players page in a real browser (Debian's Chromium, headless): it lists sessions and
updates live from the SSE stream as readings arrive and sessions close."""
import json
import os
from pathlib import Path

import pytest
import requests

import reference
from conftest import DATA, ROOT, TOPIC

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        pg = browser.new_page(viewport={"width": 1280, "height": 900})
        yield pg
        browser.close()


def test_dashboard_shows_sessions_live(sluice, page):
    path = DATA / "20210323_yoga.tcx"
    readings = reference.read(path)
    want = reference.sessions(readings)[0]
    page.goto(sluice.url + "/players")
    page.wait_for_selector("#status.live", timeout=15000)
    half = len(readings) // 2
    body = "\n".join(json.dumps(reference.event("yoga", t, b)) for t, b in readings[:half])
    assert requests.post(f"{sluice.url}/v1/topics/{TOPIC}/records", data=body, headers={"Content-Type": "application/x-ndjson"}, timeout=30).status_code == 200
    # Live progress arrives over SSE: an open session row appears without reloading.
    page.wait_for_selector('#sessions tr[data-player="yoga"][data-status="open"]', timeout=15000)
    body = "\n".join(json.dumps(reference.event("yoga", t, b)) for t, b in readings[half:])
    assert requests.post(f"{sluice.url}/v1/topics/{TOPIC}/records", data=body, headers={"Content-Type": "application/x-ndjson"}, timeout=30).status_code == 200
    sluice.drain()
    row = page.wait_for_selector('#sessions tr[data-player="yoga"][data-status="closed"]', timeout=15000)
    cells = [c.inner_text() for c in row.query_selector_all("td")]
    assert cells[4] == f"{want['low_ms'] / 60000:.1f}", cells
    assert cells[7] == str(want["samples"]), cells
    assert page.query_selector('#sessions tr[data-status="open"]') is None
    assert page.inner_text("#n-closed") == "1"
    assert page.query_selector("#players tr[data-player='yoga']") is not None
    # The chart library drew its canvas.
    assert page.evaluate("() => Chart.getChart('chart').data.datasets[0].data.length") == 1
    out = Path(os.environ.get("E2E_ARTIFACTS", ROOT / "target" / "e2e-artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out / "dashboard.png"), full_page=True)
