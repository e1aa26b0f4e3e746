"""Every dashboard page in Debian's headless Chromium (Playwright): each loads with no
console error, on a desktop and a phone-sized screen, in the light and the dark theme,
and is saved as a screenshot under the test artefacts folder. Readings appear live on a
player's page; drain works from the pipelines page; the events list survives an SSE
reconnect with nothing lost or doubled; a viewer sees no operator or admin buttons."""
import json
import os
import time
from pathlib import Path

import pytest
import requests

import reference
from conftest import DATA, ROOT, TOPIC, Sluice
from test_dashboard import ARGS, CHROMIUM

ARTIFACTS = Path(os.environ.get("E2E_ARTIFACTS", ROOT / "target" / "e2e-artifacts")) / "pages"
BASE = 1_700_000_040_000
SQL = ('SELECT "playerId", window_start, window_end, count(*) AS n, avg(heartbeat) AS avg_hr '
       'FROM TUMBLE("heartbeat-raw-topic", "createdAt", INTERVAL \'1\' MINUTE) GROUP BY "playerId", window_start, window_end')

# (path, a selector that shows the page rendered its data)
PAGES = [
    ("/", "#health #card-ready"),
    ("/pipelines", '#pipelines tr[data-pipeline="heart_rate"]'),
    ("/pipelines/per_minute", '#output td:text-is("ann")'),
    ("/pipelines/heart_rate", "#sql"),
    ("/players", '#players tr[data-player="ann"]'),
    ("/players/ann", '#sessions tr[data-player="ann"]'),
    ("/topics", f'#topics tr[data-topic="{TOPIC}"]'),
    (f"/topics/{TOPIC}", "#record-table tr[data-offset]"),
    (f"/topics/{TOPIC}.dlq", "#record-table td.reason"),
    ("/groups", '#groups section[data-group="mon"]'),
    ("/alerts", '#alerts tr[data-rule="busy_minute"]'),
]


def readings(player, start, n):
    return [reference.event(player, start + i * 1000, 90 + i % 80) for i in range(n)]


def post(s, records):
    r = requests.post(f"{s.url}/v1/topics/{TOPIC}/records", json=records, timeout=30)
    assert r.status_code in (200, 422), r.text


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


def watch_console(page):
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


def seeded(tmp_path):
    s = Sluice(tmp_path / "data", env={"SLUICE_STREAM__IDLE_TIMEOUT_MS": "0"}).start()
    spec = {"name": "per_minute", "sql": SQL, "alerts": [{"name": "busy_minute", "column": "n", "above": 59}]}
    assert requests.post(f"{s.url}/v1/pipelines", json=spec, timeout=30).status_code == 201
    post(s, readings("ann", BASE, 120) + readings("bob", BASE, 90) + [{"playerId": "bad", "heartbeat": 999, "createdAt": [2023, 1, 1, 0, 0, 0, 0]}])
    assert requests.post(f"{s.url}/v1/pipelines/per_minute/drain", timeout=60).status_code == 200
    s.drain()
    assert requests.post(f"{s.url}/v1/groups/mon/offsets", json={"offsets": [{"topic": TOPIC, "partition": 0, "offset": 1}]}, timeout=10).status_code == 200
    return s


def test_every_page_loads_clean_on_desktop_and_phone_in_both_themes(tmp_path, browser):
    s = seeded(tmp_path)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        for name, viewport, theme in [("desktop", {"width": 1280, "height": 900}, "light"), ("phone", {"width": 390, "height": 844}, "dark")]:
            ctx = browser.new_context(viewport=viewport, color_scheme=theme)
            page = ctx.new_page()
            errors = watch_console(page)
            for path, ready in PAGES:
                page.goto(s.url + path)
                page.wait_for_selector(ready, timeout=15000)
                page.wait_for_timeout(300)  # let charts draw
                assert page.evaluate("() => document.documentElement.dataset.theme") == theme
                if name == "phone":
                    width = page.evaluate("() => document.documentElement.scrollWidth")
                    assert width <= viewport["width"] + 1, f"{path} is {width}px wide on a {viewport['width']}px screen"
                slug = path.strip("/").replace("/", "_").replace(".", "_") or "overview"
                page.screenshot(path=str(ARTIFACTS / f"{slug}-{name}-{theme}.png"), full_page=True)
                assert not errors, (path, errors)
            # Keyboard: the first Tab reaches the skip link, which moves focus to the page.
            page.goto(s.url + "/pipelines")
            page.keyboard.press("Tab")
            assert page.evaluate("() => document.activeElement.className") == "skip"
            ctx.close()
    finally:
        s.stop()


def test_readings_appear_live_and_drain_from_the_pipelines_page(tmp_path, browser):
    s = Sluice(tmp_path / "data", env={"SLUICE_STREAM__IDLE_TIMEOUT_MS": "0"}).start()
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors = watch_console(page)
        page.goto(s.url + "/players/cy")
        page.wait_for_selector("#status.live", timeout=15000)
        recs = reference.read(DATA / "20210323_yoga.tcx")[:300]
        t0 = time.monotonic()
        post(s, [reference.event("cy", t, b) for t, b in recs])
        page.wait_for_selector('#sessions tr[data-player="cy"][data-status="open"]', timeout=5000)
        appeared = time.monotonic() - t0
        assert appeared < 1.0, f"readings took {appeared:.2f} s to appear"
        assert page.inner_text("#open-note").startswith("Since ")
        # The live line holds the readings of the last 10 minutes of event time.
        newest = max(t for t, _ in recs)
        want = len([t for t, _ in recs if t >= newest - 600_000])
        page.wait_for_selector(f'#line-note[data-readings="{want}"]', timeout=5000)
        last_bpm = max(recs)[1]
        assert float(page.get_attribute("#line-note", "data-bpm")) == last_bpm
        # Drain from the pipelines page: the open session closes.
        page.goto(s.url + "/pipelines")
        page.click('button.drain[data-pipeline="heart_rate"]')
        page.wait_for_selector('button.drain[data-pipeline="heart_rate"][data-done="true"]', timeout=30000)
        assert s.sessions("cy")["closed"] and not s.sessions("cy")["open"]
        page.goto(s.url + "/players/cy")
        page.wait_for_selector('#sessions tr[data-player="cy"][data-status="closed"]', timeout=15000)
        page.screenshot(path=str(ARTIFACTS / "players_cy-after-drain.png"), full_page=True)
        assert not errors, errors
    finally:
        s.stop()


def test_events_survive_an_sse_reconnect(tmp_path, browser):
    s = Sluice(tmp_path / "data", env={"SLUICE_STREAM__IDLE_TIMEOUT_MS": "0"}).start()
    try:
        ctx = browser.new_context()
        page = ctx.new_page()
        page.goto(s.url + "/")
        page.wait_for_selector("#events li", timeout=15000)
        ctx.set_offline(True)
        page.wait_for_timeout(500)
        # Events happen while the page is cut off.
        for i in range(3):
            post(s, readings(f"p{i}", BASE + i * 600_000, 20))
            s.drain()
        ctx.set_offline(False)

        def ids():
            return page.eval_on_selector_all("#events li", "els => els.map(e => +e.dataset.id)")
        want = [int(e["id"]) for e in _events(s)]
        deadline = time.time() + 30
        while time.time() < deadline and sorted(ids()) != want:
            page.wait_for_timeout(250)
        got = ids()
        assert len(got) == len(set(got)), f"duplicates: {got}"
        assert sorted(got) == want, f"missing: {sorted(set(want) - set(got))}"
        ctx.close()
    finally:
        s.stop()


def test_a_players_line_survives_an_sse_reconnect(tmp_path, browser):
    s = Sluice(tmp_path / "data").start()
    try:
        ctx = browser.new_context()
        page = ctx.new_page()
        errors = watch_console(page)
        page.goto(s.url + "/players/rx")
        page.wait_for_selector("#status.live", timeout=15000)
        post(s, [reference.event("rx", BASE + i * 1000, 100 + i) for i in range(10)])
        page.wait_for_selector('#line-note[data-readings="10"]', timeout=5000)
        ctx.set_offline(True)
        page.wait_for_timeout(500)
        post(s, [reference.event("rx", BASE + (10 + i) * 1000, 170) for i in range(10)])
        ctx.set_offline(False)
        page.wait_for_selector('#line-note[data-readings="20"]', timeout=30000)
        page.wait_for_timeout(1000)
        assert page.get_attribute("#line-note", "data-readings") == "20", "no reading twice"
        assert page.get_attribute("#line-note", "data-zone") == "high"
        page.screenshot(path=str(ARTIFACTS / "players_rx-line.png"), full_page=True)
        assert not [e for e in errors if "ERR_INTERNET_DISCONNECTED" not in e], errors
        ctx.close()
    finally:
        s.stop()


def _events(s):
    out = []
    with requests.get(f"{s.url}/v1/events", params={"last_event_id": 0}, stream=True, timeout=(5, 2)) as r:
        try:
            for line in r.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    out.append(json.loads(line[5:]))
        except requests.exceptions.ConnectionError:
            pass  # the read timeout ends the replay
    return out[-30:]


def test_buttons_follow_the_role(tmp_path, browser):
    from test_auth import cli, start
    s, _ = start(tmp_path)
    try:
        cli(s, "users", "add", "vic", "--role", "viewer", "--password-stdin", stdin="viewer-secret\n")
        cli(s, "users", "add", "opal", "--role", "operator", "--password-stdin", stdin="operator-secret\n")
        seen = {}
        for user, pw in [("vic", "viewer-secret"), ("opal", "operator-secret")]:
            ctx = browser.new_context()
            page = ctx.new_page()
            errors = watch_console(page)
            page.goto(s.url + "/pipelines")
            page.wait_for_url("**/login", timeout=15000)
            page.fill("#user", user)
            page.fill("#password", pw)
            page.click("button[type=submit]")
            page.wait_for_url(s.url + "/", timeout=15000)
            errors.clear()  # the visit before logging in got its 401 (and went to /login)
            page.goto(s.url + "/pipelines")
            page.wait_for_selector('#pipelines tr[data-pipeline="heart_rate"]', timeout=15000)
            seen[user] = {b: page.query_selector_all(sel) != [] for b, sel in [("drain", "button.drain"), ("drop", "button.drop"), ("create", "form#create")]}
            page.goto(s.url + "/pipelines/heart_rate")
            page.wait_for_selector("#sql", timeout=15000)
            seen[user]["drain on page"] = page.query_selector("button.drain") is not None
            page.screenshot(path=str(ARTIFACTS / f"pipelines-{user}.png"), full_page=True)
            assert page.inner_text("#who") == f"{user} ({'viewer' if user == 'vic' else 'operator'})"
            assert not errors, (user, errors)
            ctx.close()
        assert seen["vic"] == {"drain": False, "drop": False, "create": False, "drain on page": False}, seen
        assert seen["opal"] == {"drain": True, "drop": False, "create": False, "drain on page": True}, seen
    finally:
        s.stop()
