"""Authentication and roles on the HTTP API (`[auth] enabled = true`): every role against
every HTTP API family, tokens and users managed by the CLI while the server runs, the
dashboard's login cookie with its CSRF token, and the dashboard logging in in headless
Chromium."""
import json
import re
import time

import pytest
import requests

from conftest import BIN, TOPIC, Sluice

READING = {"playerId": "p1", "heartbeat": 120, "createdAt": 1_700_000_000_000}
JSON = {"Content-Type": "application/json"}


def start(tmp_path, lake=None):
    s = Sluice(tmp_path / "data", env={"SLUICE_AUTH__ENABLED": "true", "SLUICE_STREAM__IDLE_TIMEOUT_MS": "0"}, lake=lake)
    s.start()
    m = re.search(r"admin password: (\S+)", s.log_path.read_text())
    assert m, "the first start printed the admin password"
    return s, m.group(1)


def cli(s, *args, stdin=None):
    import subprocess
    r = subprocess.run([str(BIN), *args, "--data-dir", str(s.data_dir)], input=stdin, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def token_for(s, user, role):
    cli(s, "users", "add", user, "--role", role, "--password-stdin", stdin=f"pw-{user}-secret\n")
    out = cli(s, "tokens", "create", "--user", user, "--description", "e2e")
    token = out.strip().splitlines()[-1]
    assert token.startswith("sluice_"), out
    return token


def call(s, token, method, path, body=None):
    headers = dict(JSON) if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body) if body is not None else None
    if path.endswith("/stream"):
        r = requests.request(method, s.url + path, headers=headers, stream=True, timeout=10)
        if r.status_code >= 400:
            r.content  # a refusal is a short JSON body: read it before closing
        r.close()
        return r
    return requests.request(method, s.url + path, headers=headers, data=data, timeout=30)


# (family, method, path with {r} for a per-role resource, body, permission needed).
MATRIX = [
    ("dashboard", "GET", "/", None, None),
    ("dashboard", "GET", "/v1/sessions", None, "read"),
    ("dashboard", "GET", "/v1/sessions/stream", None, "read"),
    ("metrics", "GET", "/metrics", None, "read"),
    ("topics", "GET", "/v1/topics", None, "read"),
    ("topics", "GET", f"/v1/topics/{TOPIC}", None, "read"),
    ("topics", "GET", f"/v1/topics/{TOPIC}/schema", None, "read"),
    ("topics", "POST", "/v1/topics", {"name": "made-by-{r}", "partitions": 1}, "manage"),
    ("topics", "PATCH", "/v1/topics/t-{r}", {"retention_ms": 3600000}, "manage"),
    ("topics", "PUT", "/v1/topics/t-{r}/schema", {"fields": [{"name": "a", "type": "int"}]}, "manage"),
    ("topics", "DELETE", "/v1/topics/t-{r}", None, "manage"),
    ("ingest", "POST", f"/v1/topics/{TOPIC}/records", READING, "produce"),
    ("read", "GET", f"/v1/topics/{TOPIC}/partitions/0/records", None, "consume"),
    ("groups", "GET", "/v1/groups", None, "read"),
    ("groups", "GET", "/v1/groups/g-{r}", None, "read"),
    ("groups", "POST", "/v1/groups/g-{r}/offsets", {"offsets": [{"topic": TOPIC, "partition": 0, "offset": 0}]}, "consume"),
    ("groups", "DELETE", "/v1/groups/g-{r}", None, "manage"),
    ("pipelines", "GET", "/v1/pipelines", None, "read"),
    ("pipelines", "GET", "/v1/pipelines/heart_rate", None, "read"),
    ("pipelines", "GET", "/v1/pipelines/heart_rate/stream", None, "read"),
    ("pipelines", "POST", "/v1/pipelines", {"name": "made_by_{r}", "sql": f'SELECT * FROM "{TOPIC}" WHERE heartbeat > 100'}, "manage"),
    ("pipelines", "POST", "/v1/pipelines/p_{r}/drain", None, "operate"),
    ("pipelines", "DELETE", "/v1/pipelines/p_{r}", None, "manage"),
    ("admin", "GET", "/v1/users", None, "admin"),
    ("admin", "POST", "/v1/users", {"name": "new-by-{r}", "role": "viewer"}, "admin"),
    ("admin", "GET", "/v1/tokens", None, "admin"),
    ("admin", "POST", "/v1/tokens", {"user": "new-by-{r}"}, "admin"),
    ("admin", "GET", "/v1/whoami", None, "read"),
]
ALLOWS = {
    None: set(),
    "viewer": {"read"},
    "operator": {"read", "produce", "consume", "operate"},
    "admin": {"read", "produce", "consume", "operate", "manage", "admin"},
}


def fill(x, r):
    if isinstance(x, str):
        return x.replace("{r}", r)
    if isinstance(x, dict):
        return {k: fill(v, r) for k, v in x.items()}
    if isinstance(x, list):
        return [fill(v, r) for v in x]
    return x


def test_every_role_against_every_http_api_family(tmp_path):
    s, admin_pw = start(tmp_path)
    try:
        root = token_for(s, "root", "admin")
        tokens = {None: None, "viewer": token_for(s, "vic", "viewer"), "operator": token_for(s, "ola", "operator"), "admin": token_for(s, "ada", "admin")}
        # Per-role resources the destructive calls act on, made by an admin.
        for role in ALLOWS:
            r = role or "anon"
            assert call(s, root, "POST", "/v1/topics", {"name": f"t-{r}", "partitions": 1}).status_code in (200, 201)
            assert call(s, root, "POST", f"/v1/groups/g-{r}/offsets", {"offsets": [{"topic": TOPIC, "partition": 0, "offset": 0}]}).status_code == 200
            body = {"name": f"p_{r}", "sql": f'SELECT * FROM "{TOPIC}" WHERE heartbeat > 100'}
            assert call(s, root, "POST", "/v1/pipelines", body).status_code in (200, 201)
        cells = 0
        for role, token in tokens.items():
            for family, method, path, body, needed in MATRIX:
                r = role or "anon"
                resp = call(s, token, method, fill(path, r), fill(body, r))
                where = f"{role} {method} {fill(path, r)} ({family}): {resp.status_code} {resp.text[:200]}"
                if needed is None or needed in ALLOWS[role]:
                    assert resp.status_code < 400, where
                else:
                    assert resp.status_code == (401 if role is None else 403), where
                    err = resp.json()["error"]
                    assert err["code"] == ("unauthenticated" if role is None else "forbidden"), where
                    assert err["permission"] == needed, where
                    if role is None:
                        assert resp.headers.get("WWW-Authenticate", "").startswith("Bearer"), where
                cells += 1
        assert cells == len(MATRIX) * len(tokens)
        # /healthz stays public for load balancers.
        assert requests.get(s.url + "/healthz", timeout=10).status_code == 200
        assert call(s, tokens["viewer"], "GET", "/v1/whoami").json() == {"user": "vic", "role": "viewer", "permissions": ["read"], "limits": {}, "auth": True}
    finally:
        s.stop()


def test_cli_changes_apply_to_a_running_server(tmp_path):
    s, _ = start(tmp_path)
    try:
        t = token_for(s, "ola", "operator")
        assert call(s, t, "POST", f"/v1/topics/{TOPIC}/records", READING).status_code == 200
        assert requests.get(s.url + "/v1/topics", headers={"Authorization": f"bearer {t}"}, timeout=10).status_code == 200, "the scheme is case-insensitive"
        listed = cli(s, "tokens", "list")
        token_id = t.split("_")[1]
        assert token_id in listed and t.split("_")[2] not in listed, "the list shows ids, never tokens"
        assert t.split("_")[2] not in (s.data_dir / "auth" / "principals.json").read_text(), "tokens are stored hashed"
        cli(s, "users", "role", "ola", "viewer")
        time.sleep(0.6)
        assert call(s, t, "POST", f"/v1/topics/{TOPIC}/records", READING).status_code == 403, "a role change applies at once"
        cli(s, "tokens", "revoke", token_id)
        time.sleep(0.6)
        r = call(s, t, "GET", "/v1/topics")
        assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
        # An expired token is refused too.
        out = cli(s, "tokens", "create", "--user", "ola", "--expires-in-days", "0").strip().splitlines()[-1]
        time.sleep(0.6)
        assert call(s, out, "GET", "/v1/topics").status_code == 401
        assert call(s, "sluice_0000000000000000_" + "0" * 64, "GET", "/v1/topics").status_code == 401
        assert call(s, "not-a-token", "GET", "/v1/topics").status_code == 401
    finally:
        s.stop()


def test_login_cookie_needs_the_csrf_token_for_changes(tmp_path):
    s, admin_pw = start(tmp_path)
    try:
        b = requests.Session()
        r = b.post(s.url + "/v1/login", json={"user": "admin", "password": "wrong"}, timeout=30)
        assert r.status_code == 401 and r.json()["error"]["code"] == "login_failed"
        r = b.post(s.url + "/v1/login", json={"user": "admin", "password": admin_pw}, timeout=30)
        assert r.status_code == 200, r.text
        set_cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Path=/" in set_cookie, set_cookie
        csrf = r.json()["csrf"]
        assert b.get(s.url + "/v1/sessions", timeout=10).status_code == 200
        r = b.post(s.url + "/v1/pipelines/heart_rate/drain", timeout=60)
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed", r.text
        r = b.post(s.url + "/v1/pipelines/heart_rate/drain", headers={"X-CSRF-Token": "0" * 32}, timeout=60)
        assert r.status_code == 403
        r = b.post(s.url + "/v1/pipelines/heart_rate/drain", headers={"X-CSRF-Token": csrf}, timeout=60)
        assert r.status_code == 200, r.text
        assert b.post(s.url + "/v1/logout", timeout=10).status_code == 200
        assert b.get(s.url + "/v1/sessions", timeout=10).status_code == 401, "logged out"
        assert "sluice_logins_total" not in requests.get(s.url + "/metrics", timeout=10).text, "metrics need a principal"
    finally:
        s.stop()


def test_auth_off_keeps_the_api_open_on_loopback(sluice):
    assert requests.get(sluice.url + "/v1/topics", timeout=10).status_code == 200
    assert requests.get(sluice.url + "/login", timeout=10).status_code == 404


def test_the_dashboard_logs_in_in_chromium(tmp_path):
    pytest.importorskip("playwright")
    from test_dashboard import ARGS, CHROMIUM
    from playwright.sync_api import sync_playwright
    s, admin_pw = start(tmp_path)
    try:
        cli(s, "users", "add", "vic", "--role", "viewer", "--password-stdin", stdin="viewer-secret\n")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            page = browser.new_page()
            page.goto(s.url + "/")
            page.wait_for_url("**/login", timeout=15000)
            page.fill("#user", "vic")
            page.fill("#password", "not-it")
            page.click("button[type=submit]")
            page.wait_for_selector("#error:has-text('wrong user name or password')", timeout=15000)
            page.fill("#password", "viewer-secret")
            page.click("button[type=submit]")
            page.wait_for_url(s.url + "/", timeout=15000)
            page.wait_for_selector("#status.live", timeout=15000)
            cookies = page.context.cookies()
            c = next(c for c in cookies if c["name"] == "sluice_session")
            assert c["httpOnly"] and c["sameSite"] == "Strict"
            assert page.evaluate("() => document.cookie") == "", "scripts cannot read the session cookie"
            browser.close()
    finally:
        s.stop()


def test_cli_clients_send_the_token(tmp_path):
    import os
    import subprocess

    from conftest import DATA
    s, _ = start(tmp_path)
    try:
        t = token_for(s, "ola", "operator")
        run = lambda env, *a: subprocess.run([str(BIN), *a, "--server", s.url], capture_output=True, text=True, timeout=120, env={**os.environ, **env})
        r = run({}, "topics", "list")
        assert r.returncode != 0 and "SLUICE_TOKEN" in r.stderr, r.stderr
        r = run({"SLUICE_TOKEN": t}, "topics", "list")
        assert r.returncode == 0 and TOPIC in r.stdout, r.stderr
        r = run({"SLUICE_TOKEN": t}, "topics", "delete", TOPIC)
        assert r.returncode != 0 and "403" in r.stderr and "manage" in r.stderr, r.stderr
        r = run({"SLUICE_TOKEN": t}, "replay", str(DATA / "20210323_yoga.tcx"), "--speed", "0", "--player", "yoga")
        assert r.returncode == 0, r.stderr
        r = run({}, "replay", str(DATA / "20210323_yoga.tcx"), "--speed", "0", "--retry-secs", "1")
        assert r.returncode != 0 and "401" in r.stderr, r.stderr
        r = run({"SLUICE_TOKEN": t}, "pipelines", "drain", "heart_rate")
        assert r.returncode == 0, r.stderr
        assert [x["player_id"] for x in call(s, t, "GET", "/v1/sessions").json()["closed"]] == ["yoga"]
    finally:
        s.stop()


def audit_events(s, admin_token, until, timeout=10):
    """The records of `__audit`, read as an admin, once one satisfies `until` (or after `timeout` s)."""
    deadline = time.time() + timeout
    while True:
        r = call(s, admin_token, "GET", "/v1/topics/__audit/partitions/0/records?offset=0&max=1000")
        assert r.status_code == 200, r.text
        events = [json.loads(x["value"]) if isinstance(x["value"], str) else x["value"] for x in r.json()["records"]]
        if any(until(e) for e in events) or time.time() > deadline:
            return events
        time.sleep(0.3)


def test_the_audit_topic_records_who_did_what_from_where(tmp_path):
    s, admin_pw = start(tmp_path)
    try:
        admin = token_for(s, "ada", "admin")
        viewer = token_for(s, "vic", "viewer")
        operator = token_for(s, "ola", "operator")
        assert requests.post(s.url + "/v1/login", json={"user": "vic", "password": "nope"}, timeout=30).status_code == 401
        assert requests.post(s.url + "/v1/login", json={"user": "vic", "password": "pw-vic-secret"}, timeout=30).status_code == 200
        assert call(s, admin, "POST", "/v1/topics", {"name": "doomed", "partitions": 1}).status_code in (200, 201)
        assert call(s, viewer, "DELETE", "/v1/topics/doomed").status_code == 403
        assert call(s, admin, "DELETE", "/v1/topics/doomed").status_code == 200
        assert call(s, operator, "POST", "/v1/pipelines/heart_rate/drain").status_code == 200
        made = call(s, admin, "POST", "/v1/tokens", {"user": "vic"})
        assert made.status_code == 201, made.text
        # Clients can neither write nor delete the audit topic, nor read it below admin.
        assert call(s, admin, "POST", "/v1/topics/__audit/records", {"x": 1}).status_code == 403
        assert call(s, admin, "DELETE", "/v1/topics/__audit").status_code == 409
        assert call(s, operator, "GET", "/v1/topics/__audit/partitions/0/records").status_code == 403
        events = audit_events(s, admin, lambda e: (e["action"], e["principal"], e["target"]) == ("token_create", "ada", "vic"))
        actions = [(e["action"], e["principal"], e["target"], e.get("status")) for e in events]
        for want in [
            ("user_add", "sluice", "admin", None),  # the first admin, made at the first start
            ("login_failed", "vic", "vic", None),
            ("login", "vic", "vic", None),
            ("topic_delete", "vic", "doomed", 403),
            ("topic_delete", "ada", "doomed", 200),
            ("pipeline_drain", "ola", "heart_rate", 200),
            ("token_create", "ada", "vic", None),
        ]:
            assert want in actions, (want, actions)
        cli_adds = [e for e in events if e["action"] == "user_add" and e["target"] == "vic"]
        assert cli_adds and cli_adds[0]["principal"].startswith("local:") and cli_adds[0]["source"] == "cli", cli_adds
        http = [e for e in events if e["action"] == "topic_delete"]
        assert all(e["source"].startswith("127.0.0.1:") for e in http), http
    finally:
        s.stop()
