"""`importer dashboard` as a user meets it: started as a command, read in a real browser
(Playwright driving Debian's headless Chromium), while real workers import real PDFs."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert
from sqlalchemy.exc import DBAPIError
from starlette.routing import Route

from importer.config import Settings
from importer.dashboard.app import build_app
from importer.dashboard.auth import COOKIE, COOKIE_SECONDS, cookie_value
from importer.dashboard.guards import HEADERS
from importer.dashboard.highlight import pieces
from importer.dashboard.limits import Recent
from importer.dashboard.readonly import make_read_only
from importer.dashboard.routes import gearmand as gearmand_page
from importer.dashboard.serve import tls_files
from importer.dashboard.token import token_for
from importer.db.engine import open_database
from importer.db.models import Batch
from importer.doctor import check_exposure
from importer.errors import BadInput
from importer.gearman.address import free_port
from tests.conftest import SAMPLES, _unavailable, importer, submit_json
from tests.netns import Lan, NamespacesUnavailable
from tests.other_user import SYSTEM_PYTHON, as_nobody

CHROMIUM = Path("/usr/bin/chromium")
HOSTILE = "<img src=x onerror=alert(1)>.pdf"
SCREENSHOT = Path("/tmp/importer-dashboard.png")
TOKEN = "t0ken-for-the-dashboard-test-0123456789"


@contextmanager
def dashboard(env: dict[str, str], log: Path, *options: str) -> Iterator[str]:
    """`importer dashboard --port FREE`, as a user starts it; its URL once it answers."""
    port = free_port()
    with open(log, "w") as said:
        proc = subprocess.Popen(
            [sys.executable, "-m", "importer", "dashboard", "--port", str(port), *options],
            env=env,
            stdin=subprocess.DEVNULL,
            stderr=said,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"dashboard exited {proc.returncode}: {log.read_text()}")
            with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert time.monotonic() < deadline, "the dashboard did not listen within 30 s"
            time.sleep(0.1)
        yield f"{'https' if '--tls-cert' in options else 'http'}://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def printed_login(log: Path) -> str:
    """The login URL `importer dashboard` printed at start, as a user copies it."""
    found = re.search(r"https?://\S+/login\?token=\S+", log.read_text())
    assert found, f"no login URL in what the dashboard printed: {log.read_text()}"
    return found[0]


@pytest.fixture
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing: `apt-get install chromium` (scripts/install-deps)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield launched
        launched.close()


def _inbox(root: Path) -> Path:
    """A scan (two pages of OCR: time to watch), a born-digital report, a broken PDF, and
    a broken one whose name is HTML."""
    inbox = root / "inbox"
    inbox.mkdir()
    for name in ("scanned_letter.pdf", "born_digital.pdf", "broken.pdf"):
        shutil.copy(SAMPLES / name, inbox / name)
    (inbox / HOSTILE).write_bytes((SAMPLES / "broken.pdf").read_bytes() + b"\x01")
    return inbox


def _text(page: Page, selector: str) -> str:
    return page.locator(selector).inner_text()


def _watch_it_move(page: Page, before: str, tmp_path: Path) -> None:
    """The batch page changes on its own while workers run: no reload, the same page."""
    page.wait_for_function(
        "before => document.querySelector('#pages-done').textContent !== before",
        arg=before,
        timeout=60_000,
    )
    assert page.evaluate("window.notReloaded") is True
    shot = tmp_path / "dashboard-batch.png"
    page.screenshot(path=str(shot), full_page=True)
    shutil.copy(shot, SCREENSHOT)
    print(f"\nscreenshot of the batch page during the run: {SCREENSHOT} (and {shot})")


def _gearmand_shows_the_worker(page: Page, url: str, address: str) -> None:
    """The server is up, and the worker shows once it has connected (asked again until then)."""
    page.goto(f"{url}/gearmand")
    row = page.locator(f'tr[data-server="{address}"]')
    assert row.get_attribute("class") == "up"
    assert page.locator("table").nth(1).locator("tbody tr").count() >= 1  # doctor's exposure
    deadline = time.monotonic() + 30
    while int(row.locator("td").nth(3).inner_text()) < 1:
        assert time.monotonic() < deadline, "no worker for import showed on the gearmand page"
        page.wait_for_timeout(300)
        page.reload()


def _review_pages_flagged(page: Page) -> None:
    """The scan's two OCR pages were read below the review threshold: counted on the batch
    page, flagged on the document's."""
    scan = page.locator("tr", has=page.get_by_role("link", name="scanned_letter.pdf"))
    assert scan.locator("td").nth(4).inner_text() == "2"
    scan.get_by_role("link").click()
    flagged = page.locator("section.page.review")
    assert flagged.count() == 2
    assert flagged.first.locator(".flag").inner_text() == "needs review"
    page.go_back()


def _failures_show_names_as_text(
    page: Page, url: str, batch: str, inbox: Path, env: dict[str, str]
) -> None:
    """The failed file's reason, the one the database holds; a name full of HTML shown as
    typed, never an element."""
    shown = json.loads(importer("status", batch, "--json", env=env, check=True).stdout)
    broken = next(d for d in shown["documents"] if d["path"].endswith("/broken.pdf"))
    assert broken["status"] == "failed" and broken["error"]
    broken_row = page.locator("tr", has=page.get_by_role("link", name=broken["path"]))
    assert broken_row.locator("td.reason").inner_text() == broken["error"]
    kind = broken_row.locator("td").nth(5).inner_text()
    hostile = str(inbox / HOSTILE)
    assert page.get_by_role("link", name=hostile).is_visible()
    assert page.locator("img").count() == 0

    page.goto(f"{url}/failures")
    group = page.locator(f'section[data-kind="{kind}"]')
    assert "2 documents" in group.locator("h2").inner_text()
    assert group.get_by_role("link", name=hostile).is_visible()
    assert group.get_by_role("link", name=broken["path"]).is_visible()
    assert group.locator("code.command").inner_text() == f"importer retry {batch}"
    assert page.locator("img").count() == 0

    page.get_by_role("link", name=hostile).click()
    assert page.locator("h1").inner_text() == hostile
    assert page.locator("img").count() == 0


def _metrics_count_what_status_counts(
    page: Page, url: str, batch: str, env: dict[str, str]
) -> None:
    """The dashboard's /metrics, read as Prometheus reads it, says what the database says."""
    scraped = page.request.get(f"{url}/metrics")
    assert scraped.status == 200
    families = {f.name: f for f in text_string_to_metric_families(scraped.text())}
    documents = {s.labels["status"]: s.value for s in families["importer_documents"].samples}
    pages = {s.labels["source"]: s.value for s in families["importer_pages"].samples}
    shown = json.loads(importer("status", batch, "--json", env=env, check=True).stdout)
    counts = shown["batches"][0]
    assert documents["done"] == counts["done"] == 2
    assert documents["failed"] + documents["dead"] == counts["failed"] == 2
    assert sum(pages.values()) == counts["pages_done"]
    review = families["importer_pages_review"].samples[0].value
    assert review == sum(d["pages_review"] for d in shown["documents"]) > 0


def _search_marks_matches(page: Page, url: str) -> None:
    page.goto(f"{url}/search")
    page.fill("input[name=q]", "Eastfield library")
    page.get_by_role("button", name="Search").click()
    first = page.locator("ol.hits li").first
    assert first.locator("a.path").inner_text().endswith("/born_digital.pdf")
    assert {m.lower() for m in first.locator("mark").all_inner_texts()} == {"eastfield", "library"}
    page.goto(f"{url}/search?q=" + "%3Cb%3Elibrary%3C%2Fb%3E%20%22")
    assert page.locator("b").count() == 0
    # the document's text, from the hit's link
    page.goto(f"{url}/search?q=Eastfield")
    page.locator("ol.hits a.path").first.click()
    assert "Eastfield Public Library" in page.locator("section.page pre").first.inner_text()


@pytest.mark.slow
def test_dashboard_follows_a_live_import(  # type: ignore[no-untyped-def]
    tmp_path: Path, env: dict[str, str], gearmand, browser: Browser
) -> None:
    inbox = _inbox(tmp_path)
    batch = submit_json(inbox, env)["batch_id"]
    dialogs: list[str] = []
    worker = None
    try:
        with dashboard(env, tmp_path / "dashboard.log") as url:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))  # type: ignore[func-returns-value]
            page.goto(printed_login(tmp_path / "dashboard.log"))  # the URL it printed: logged in
            assert urlsplit(page.url).path == "/" and "token" not in page.url
            first = page.goto(f"{url}/batches/{batch}")
            assert first is not None
            assert "script-src 'self'" in first.headers["content-security-policy"]
            assert _text(page, "#documents-finished") == "0 / 4"
            before = _text(page, "#pages-done")
            page.evaluate("window.notReloaded = true")
            worker = subprocess.Popen(
                [sys.executable, "-m", "importer", "worker", "--burst"],
                env=env | {"IMPORTER_REVIEW_CONFIDENCE": "99"},  # every OCR page for review
                stdin=subprocess.DEVNULL,
            )
            _gearmand_shows_the_worker(context.new_page(), url, gearmand.address)
            _watch_it_move(page, before, tmp_path)
            page.wait_for_function(
                "() => document.querySelector('#documents-finished').textContent === '4 / 4'",
                timeout=90_000,
            )
            assert page.evaluate("window.notReloaded") is True
            assert worker.wait(60) == 0
            _review_pages_flagged(page)
            _failures_show_names_as_text(page, url, batch, inbox, env)
            _search_marks_matches(page, url)

            _metrics_count_what_status_counts(page, url, batch, env)
            # On loopback too, a request without the login cookie gets the login form only.
            assert browser.new_page().goto(f"{url}/batches/{batch}").status == 401  # type: ignore[union-attr]
            conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
            conn.request("GET", "/", headers={"Host": "attacker.example:8730"})
            assert conn.getresponse().status == 401
            conn.close()
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait()
    assert dialogs == []


def test_dashboard_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPORTER_")}
    env["IMPORTER_DATA_DIR"] = str(tmp_path / "data")
    refused = importer(
        "dashboard", "--listen", "192.0.2.10", "--port", "8730", env=env, timeout=60
    )  # an address of TEST-NET-1: refused for want of a token, before any bind
    assert refused.returncode == 2
    assert "IMPORTER_DASHBOARD_TOKEN" in refused.stderr and "192.0.2.10" in refused.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was opened
    with pytest.raises(BadInput, match="16 or more"):
        token_for(Settings(dashboard_token="short"), "127.0.0.1")
    made = token_for(Settings(data_dir=tmp_path / "mine"), "::1")
    assert made.generated and len(made.value) >= 32
    assert os.stat(tmp_path / "mine" / "dashboard_token").st_mode & 0o777 == 0o600
    assert token_for(Settings(data_dir=tmp_path / "mine"), "127.0.0.2") == made
    assert not token_for(Settings(dashboard_token=TOKEN), "127.0.0.1").generated


# Runs inside the test's network namespace: every request a user's client could send.
_CLIENT = """
import http.client, json, sys, time
host, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def get(path, headers={}, method="GET", body=None):
    for _ in range(300):
        try:
            conn = http.client.HTTPConnection(host, port, timeout=10)
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            return [r.status, r.getheader("set-cookie"), r.getheader("www-authenticate"),
                    r.read().decode()]
        except ConnectionRefusedError:
            time.sleep(0.1)
    raise SystemExit("the dashboard never answered")
bearer = {"Authorization": "Bearer " + token}
form = {"Content-Type": "application/x-www-form-urlencoded"}
out = {path: {"none": get(path), "bearer": get(path, bearer),
              "wrong": get(path, {"Authorization": "Bearer " + token[:-1] + "x"})}
       for path in ("/", "/static/htmx.min.js", "/metrics", "/failures", "/gearmand")}
out["login-wrong"] = get("/login", form, "POST", "token=nope")
out["login-huge"] = get("/login", form, "POST", "token=" + "x" * 5000)
login = out["login"] = get("/login", form, "POST", "token=" + token)
cookie = login[1].split(";")[0]
out["cookie"] = get("/", {"Cookie": cookie})
out["forged-cookie"] = get("/", {"Cookie": cookie.split("=")[0] + "=" + "0" * 64})
print(json.dumps(out))
"""


def test_dashboard_token_guards_every_path_beyond_loopback(tmp_path: Path) -> None:
    """Listening on an address beyond loopback (a network namespace's own link), every
    path wants the token: as a bearer header, or the cookie the login form sets."""
    try:
        lan = Lan()
    except NamespacesUnavailable as e:
        pytest.skip(str(e))
    try:
        host = lan.add("dash")
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMPORTER_")}
        env |= {"IMPORTER_DATA_DIR": str(tmp_path / "data"), "IMPORTER_DASHBOARD_TOKEN": TOKEN}
        command = [sys.executable, "-m", "importer", "dashboard", "--listen", host.address]
        with open(tmp_path / "dashboard.log", "w") as said:
            host.start([*command, "--port", "8730"], env=env, stderr=said)
        client = host.run([sys.executable, "-c", _CLIENT, host.address, "8730", TOKEN], timeout=60)
        assert client.returncode == 0, client.stderr
        seen = json.loads(client.stdout)
    finally:
        lan.close()
    for path in ("/", "/static/htmx.min.js", "/metrics", "/failures", "/gearmand"):
        assert seen[path]["none"][0] == 401, path
        assert seen[path]["none"][2] == 'Bearer realm="importer dashboard"'
        assert seen[path]["wrong"][0] == 401, path
        assert seen[path]["bearer"][0] == 200, path
    assert 'name="token"' in seen["/"]["none"][3]  # the login form, for a browser
    # no gearmand in the namespace: shown down, with the reason
    assert '<tr data-server="127.0.0.1:4730" class="down">' in seen["/gearmand"]["bearer"][3]
    assert "Connection refused" in seen["/gearmand"]["bearer"][3]
    assert seen["login-wrong"][0] == 401 and seen["login-wrong"][1] is None
    assert seen["login-huge"][0] == 413
    status, cookie, _, _ = seen["login"]
    assert status == 303
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "max-age=43200"} <= flags
    assert "secure" not in flags  # no TLS here: and a warning that the token travels in clear
    warned = (tmp_path / "dashboard.log").read_text()
    assert "WARNING" in warned and "--tls-cert" in warned and "SSH tunnel" in warned
    assert TOKEN not in cookie
    assert seen["cookie"][0] == 200 and "Batches" in seen["cookie"][3]
    assert seen["forged-cookie"][0] == 401


def test_dashboard_connections_refuse_writes(database_url: str) -> None:
    db = make_read_only(open_database(database_url))
    with pytest.raises(DBAPIError, match="(?i)read.only|readonly"), db.session() as s:
        s.execute(insert(Batch).values(id="b1", email="a@b.example"))
    db.engine.dispose()


def test_snippet_pieces_keep_markup_as_text() -> None:
    snippet = '<b>cat</b> & "dog"'
    assert pieces(snippet, [(3, 6), (14, 17)]) == [
        ("<b>", False),
        ("cat", True),
        ('</b> & "', False),
        ("dog", True),
        ('"', False),
    ]
    # out of range, empty and overlapping offsets are clipped, never raise
    assert pieces("abc", [(1, 2), (1, 3), (5, 9), (2, 2)]) == [
        ("a", False),
        ("b", True),
        ("c", True),
    ]


def _get(
    url: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    """One plain HTTP request with the token, as curl or a logged-in browser sends it:
    status, headers, body."""
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}", **(headers or {})})
        answer = conn.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read().decode()
    finally:
        conn.close()


def test_dashboard_refuses_other_sites_and_hostile_parameters(tmp_path: Path, pg_url: str) -> None:
    """On loopback: a page of another site cannot make the operator's
    browser search or probe; hostile parameters are 400/404 with the security headers,
    never a 500 (PostgreSQL refuses a NUL in a query)."""
    db = open_database(pg_url)
    with db.session() as s:
        s.add(Batch(id="20260101-120000-a1b2c3", email="a@b.example"))
        s.commit()
    db.engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPORTER_")}
    env |= {"IMPORTER_DATA_DIR": str(tmp_path / "data"), "IMPORTER_DATABASE_URL": pg_url}
    env["IMPORTER_DASHBOARD_TOKEN"] = TOKEN
    huge = "9" * 5000
    with dashboard(env, tmp_path / "dashboard.log") as url:
        own = url  # what a browser names as the Origin of the dashboard's own pages
        for path in ("/search?q=library", "/gearmand"):
            for headers in (
                {"Sec-Fetch-Site": "cross-site"},
                {"Sec-Fetch-Site": "same-site"},
                {"Origin": "http://attacker.example"},
                {"Origin": "null"},
                {"Origin": "https://127.0.0.1:" + url.rpartition(":")[2]},
                {"Sec-Fetch-Site": "same-origin", "Origin": "http://attacker.example"},
            ):
                status, seen, body = _get(url, path, headers)
                assert status == 403, (path, headers)
                assert "other sites" in body and "content-security-policy" in seen
            for headers in (
                {},  # curl, Prometheus
                {"Sec-Fetch-Site": "none"},  # typed into the address bar
                {"Sec-Fetch-Site": "same-origin", "Origin": own},  # the page's own htmx
            ):
                assert _get(url, path, headers)[0] == 200, (path, headers)
        batch = "/batches/20260101-120000-a1b2c3"
        assert _get(url, batch)[0] == 200
        for path, status in (
            (f"{batch}?after=%C2%B2", 400),  # a superscript two: isdigit(), not a number
            (f"{batch}?before=%D9%A3", 400),  # an Arabic-Indic three
            (f"{batch}?after={huge}", 400),
            (f"{batch}?after=12345678901234567890", 400),  # 20 digits: beyond any id
            ("/documents/1?from=%C2%B2", 400),
            (f"/documents/1?from={huge}", 400),
            ("/batches/x%00y", 404),
            ("/batches/x%0Ay", 404),
            ("/batches/x%00y/live", 404),
            ("/search?q=a&batch=x%00y", 400),
        ):
            got, seen, body = _get(url, path)
            assert got == status, (path, got, body[:300])
            assert "content-security-policy" in seen and "Traceback" not in body
    assert "Traceback" not in (tmp_path / "dashboard.log").read_text()


def _asgi(app: Any, path: str) -> tuple[int, dict[str, str], str]:
    """A GET with the token to the app in this process, addressed to loopback: status,
    headers, body."""
    target = urlsplit(path)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": unquote(target.path),
        "raw_path": target.path.encode(),
        "query_string": target.query.encode(),
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8730"), (b"authorization", f"Bearer {TOKEN}".encode())],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8730),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with suppress(RuntimeError):  # an unexpected error is raised again after its answer
        asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], headers, body.decode()


def test_dashboard_limits_searches_probes_and_hides_crashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path, gearman_servers=f"127.0.0.1:{free_port()}")
    app = build_app(
        settings, make_read_only(open_database(settings.resolved_database_url)), token=TOKEN
    )
    board = app.state.dashboard

    # two searches running: a third is told to come back, not queued
    with board.searches.taken() as first, board.searches.taken() as second:
        assert first and second
        status, _, body = _asgi(app, "/search?q=library")
        assert status == 503 and "searches are running" in body
    assert _asgi(app, "/search?q=library")[0] == 200

    # reloading /gearmand reuses the exposure probes' result
    probes: list[Settings] = []

    def counted(settings: Settings, gio: Any) -> Any:
        probes.append(settings)
        return check_exposure(settings, gio)

    monkeypatch.setattr(gearmand_page, "check_exposure", counted)
    for _ in range(3):
        assert _asgi(app, "/gearmand")[0] == 200
    assert len(probes) == 1

    # an unexpected error: a plain 500 with the security headers, no traceback
    def broken(request: Any) -> Any:
        raise RuntimeError("secret detail of a bug")

    app.router.routes.append(Route("/broken", broken))
    status, headers, body = _asgi(app, "/broken")
    assert status == 500
    assert "secret detail" not in body and "Traceback" not in body
    assert {k: headers.get(k) for k in HEADERS} == HEADERS
    board.db.engine.dispose()


def test_recent_is_made_again_once_old() -> None:
    now = [100.0]
    recent: Recent[int] = Recent(10.0, clock=lambda: now[0])
    made = iter(range(10))
    assert recent.get(lambda: next(made)) == 0
    now[0] += 9.9
    assert recent.get(lambda: next(made)) == 0
    now[0] += 0.1
    assert recent.get(lambda: next(made)) == 1


def test_dashboard_serves_tls_with_a_certificate_of_certs_init(tmp_path: Path) -> None:
    """`importer certs init DIR` then `importer dashboard --tls-cert --tls-key`: https that
    the CA verifies, and a login cookie a browser sends over TLS only, for 12 hours."""
    certs = tmp_path / "certs"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPORTER_")}
    env |= {"IMPORTER_DATA_DIR": str(tmp_path / "data"), "IMPORTER_DASHBOARD_TOKEN": TOKEN}
    importer("certs", "init", str(certs), env=env, check=True, timeout=60)
    half = importer("dashboard", "--tls-cert", str(certs / "server.pem"), env=env, timeout=60)
    assert half.returncode == 2 and "--tls-key" in half.stderr, half.stderr
    with pytest.raises(BadInput, match="--tls-key needs --tls-cert"):
        tls_files(None, certs / "server.key")
    with pytest.raises(BadInput, match="not a certificate and its key"):
        tls_files(certs / "server.pem", certs / "ca.key")
    tls = ("--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"))
    with dashboard(env, tmp_path / "dashboard.log", *tls) as url:
        assert url.startswith("https://")
        trusted = ssl.create_default_context(cafile=str(certs / "ca.pem"))

        def request(method: str, path: str, body: str | None = None, **headers: str) -> Any:
            conn = http.client.HTTPSConnection(
                url.removeprefix("https://"), timeout=30, context=trusted
            )
            conn.request(method, path, body=body, headers=headers)
            answer = conn.getresponse()
            answer.read()
            conn.close()
            return answer

        assert request("GET", "/").status == 401
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        login = request("POST", "/login", "token=" + TOKEN, **form)
        assert login.status == 303
        cookie = login.getheader("set-cookie")
        flags = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"secure", "httponly", "samesite=strict", "max-age=43200"} <= flags
        assert request("GET", "/", Cookie=cookie.split(";")[0]).status == 200
        with pytest.raises(ssl.SSLCertVerificationError):  # not a certificate anyone trusts
            http.client.HTTPSConnection(
                url.removeprefix("https://"), timeout=30, context=ssl.create_default_context()
            ).request("GET", "/")
    said = (tmp_path / "dashboard.log").read_text()
    assert f"{url}/" in said and "WARNING" not in said


def test_login_cookies_are_each_their_own_and_expire_at_the_server(tmp_path: Path) -> None:
    """Each login gets a cookie of its own (a nonce), and the server refuses one past its
    12 hours, one made for another token, and the old fixed HMAC(token, label)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPORTER_")}
    env |= {"IMPORTER_DATA_DIR": str(tmp_path / "data"), "IMPORTER_DASHBOARD_TOKEN": TOKEN}
    with dashboard(env, tmp_path / "dashboard.log") as url:

        def get(path: str, cookie: str | None = None) -> http.client.HTTPResponse:
            conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
            conn.request("GET", path, headers={"Cookie": f"{COOKIE}={cookie}"} if cookie else {})
            answer = conn.getresponse()
            answer.read()
            conn.close()
            return answer

        logins = [get(f"/login?token={TOKEN}") for _ in range(2)]
        assert [login.status for login in logins] == [303, 303]
        assert all(login.getheader("location") == "/" for login in logins)
        cookies = [
            str(login.getheader("set-cookie")).split(";")[0].partition("=")[2] for login in logins
        ]
        assert cookies[0] != cookies[1] and TOKEN not in cookies[0]
        assert get("/", cookies[0]).status == 200 and get("/", cookies[1]).status == 200
        assert get(f"/login?token={TOKEN[:-1]}x").status == 401
        stale = cookie_value(TOKEN, now=time.time() - COOKIE_SECONDS - 1)
        assert get("/", stale).status == 401
        far = cookie_value(TOKEN, now=time.time() + 365 * 86400)  # beyond any cookie it sets
        assert get("/", far).status == 401
        assert get("/", cookie_value("another-token-0123456789")).status == 401
        fixed = hmac.new(TOKEN.encode(), b"importer dashboard session", hashlib.sha256)
        assert get("/", fixed.hexdigest()).status == 401
        expires, nonce, mac = cookies[0].split(".")
        assert get("/", f"{int(expires) + 3600}.{nonce}.{mac}").status == 401  # expiry moved


_NOBODY_CLIENT = """
import http.client, json, sys
out = {}
for path in ("/", "/metrics", "/search?q=Eastfield", "/failures", "/login?token=guess"):
    conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=10)
    conn.request("GET", path)
    answer = conn.getresponse()
    out[path] = [answer.status, answer.read().decode()]
print(json.dumps(out))
"""


def test_another_local_user_gets_only_the_login_form_on_loopback(
    shared_tmp: Path, env: dict[str, str]
) -> None:
    """Without IMPORTER_DASHBOARD_TOKEN, on 127.0.0.1: uid 65534 reads no page, no search,
    no /metrics, nor the generated token (0600 in the 0700 data dir); the URL printed at
    start logs the operator in."""
    data = Path(env["IMPORTER_DATA_DIR"])
    folder = shared_tmp / "in"
    folder.mkdir()
    shutil.copy(SAMPLES / "born_digital.pdf", folder / "report.pdf")
    env["IMPORTER_ALLOWED_ROOTS"] = str(folder)
    submit_json(folder, env)
    importer("worker", "--burst", env=env, check=True)
    with dashboard(env, data.parent / "dashboard.log") as url:
        port = url.rpartition(":")[2]
        seen = as_nobody(SYSTEM_PYTHON, "-c", _NOBODY_CLIENT, port)
        assert seen.returncode == 0, seen.stderr
        for path, (status, body) in json.loads(seen.stdout).items():
            assert status == 401, path
            assert "Eastfield" not in body and "report.pdf" not in body and "importer_" not in body
        token_file = data / "dashboard_token"
        assert os.stat(token_file).st_mode & 0o777 == 0o600
        assert as_nobody("cat", str(token_file)).returncode != 0
        login = printed_login(data.parent / "dashboard.log")
        assert login == f"{url}/login?token={token_file.read_text().strip()}"
        conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
        conn.request("GET", urlsplit(login).path + "?" + urlsplit(login).query)
        answer = conn.getresponse()
        cookie = str(answer.getheader("set-cookie")).split(";")[0]
        conn.close()
        conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
        conn.request("GET", "/search?q=Eastfield", headers={"Cookie": cookie})
        answer = conn.getresponse()
        assert answer.status == 200 and "report.pdf" in answer.read().decode()
        conn.close()
