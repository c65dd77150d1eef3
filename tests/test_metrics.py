"""/metrics (`importer.metrics`), the Prometheus examples in deploy/, and doctor's check for
a dashboard that answers without its token beyond loopback."""

from __future__ import annotations

import http.server
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event, text

from importer.config import Settings
from importer.dashboard_probe import DASHBOARD_PORT
from importer.db.engine import Database, open_database
from importer.db.models import Batch, Document
from importer.gearman.address import free_port
from importer.gearman.client import GearmanIO, JobSpec
from importer.gearman.server import GearmandProcess
from importer.metrics import GEARMAN_TIMEOUT_SECONDS, ImporterCollector, render
from importer.states import DocStatus
from tests.conftest import SAMPLES, importer, settings_from, submit_json

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
PROMETHEUS = DEPLOY / "prometheus.yml"
ALERTS = DEPLOY / "importer-alerts.yml"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(body: bytes) -> Samples:
    """Every sample of an exposition, keyed by its name and sorted labels."""
    found: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: value for (n, labels), value in samples.items() if n == name}


def one(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def database_counts(db: Database) -> dict[str, Any]:
    """What the database holds, asked in plain SQL beside the code under test."""
    with db.engine.connect() as conn:

        def rows(sql: str) -> dict[str, int]:
            return {str(k): int(v) for k, v in conn.execute(text(sql)).all()}

        return {
            "status": rows("SELECT status, count(*) FROM documents GROUP BY status"),
            "source": rows("SELECT source, count(*) FROM pages GROUP BY source"),
            "review": conn.execute(text("SELECT count(*) FROM pages WHERE review")).scalar(),
            "kinds": rows(
                "SELECT coalesce(error_kind, 'unclassified'), count(*) FROM documents"
                " WHERE status IN ('failed', 'dead') GROUP BY coalesce(error_kind, 'unclassified')"
            ),
            "refused": rows("SELECT kind, count(*) FROM rejected_jobs GROUP BY kind"),
            "sent": conn.execute(text("SELECT count(sent_at) FROM outbox")).scalar(),
            "pending": conn.execute(
                text("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            ).scalar(),
            "open": conn.execute(
                text("SELECT count(*) FROM batches WHERE finished_at IS NULL")
            ).scalar(),
            "finished": conn.execute(
                text("SELECT count(*) FROM batches WHERE finished_at IS NOT NULL")
            ).scalar(),
        }


@pytest.fixture
def hung_gearmands() -> Iterator[list[str]]:
    """Three ports that accept connections and never say a word (hung gearmands)."""
    listeners = [socket.create_server(("127.0.0.1", 0)) for _ in range(3)]
    try:
        yield [f"127.0.0.1:{listener.getsockname()[1]}" for listener in listeners]
    finally:
        for listener in listeners:
            listener.close()


@pytest.mark.slow
def test_a_scrape_counts_what_an_import_left_in_the_database(
    env: dict[str, str], database_url: str, tmp_path: Path, gearmand: GearmandProcess
) -> None:
    """One small import through gearmand and a worker: a PDF of text-layer pages and a
    scanned one, a broken PDF and a forged job; its e-mail went out. Then a batch of one
    file that is not a PDF, failed at submit: its e-mail waits for a worker. Every family
    equals the database's own count."""
    env["IMPORTER_DATABASE_URL"] = database_url
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    for name in ("mixed.pdf", "broken.pdf"):
        shutil.copy(SAMPLES / name, first / name)
    (second / "<b>notes<b> &amp;.pdf").write_text("not a PDF")
    submit_json(first, env)
    with GearmanIO([gearmand.address]) as gio:
        gio.submit_background([JobSpec(unique="forged-" + secrets.token_hex(4), data=b"{}")])
    importer("worker", "--burst", "--concurrency", "1", env=env, check=True, timeout=240)
    importer("submit", str(second), "--email", "ops@example.com", env=env)

    settings = settings_from(env)
    db = open_database(database_url)
    try:
        samples = parse(render(settings, db)[0])
        want = database_counts(db)
    finally:
        db.engine.dispose()
    assert by_label(samples, "importer_documents", "status") == {
        status: want["status"].get(status, 0)
        for status in ("queued", "running", "done", "failed", "dead")
    }
    assert want["status"]["done"] == 1 and want["status"]["failed"] == 2
    pages = by_label(samples, "importer_pages", "source")
    assert pages == {
        "text-layer": want["source"].get("text-layer", 0),
        "ocr": want["source"]["ocr"],
    }
    assert pages["ocr"] > 0 and pages["text-layer"] > 0
    assert one(samples, "importer_pages_review") == want["review"]
    failures = {k: v for k, v in by_label(samples, "importer_failures", "kind").items() if v}
    assert failures == want["kinds"] and sum(failures.values()) == 2
    assert one(samples, "importer_jobs_rejected_total") == want["refused"]["rejected"] == 1
    assert one(samples, "importer_jobs_replayed_total") == want["refused"].get("replayed", 0)
    assert one(samples, "importer_emails", state="sent") == want["sent"] == 1
    assert one(samples, "importer_emails", state="pending") == want["pending"] == 1
    assert one(samples, "importer_batches", state="finished") == want["finished"] == 2
    assert one(samples, "importer_batches", state="open") == want["open"] == 0
    assert one(samples, "importer_oldest_open_batch_created_timestamp_seconds") == 0
    assert (
        time.time() - 600
        < one(samples, "importer_last_document_finished_timestamp_seconds")
        <= time.time()
    )
    assert one(samples, "importer_gearmand_up", server=gearmand.address) == 1
    assert one(samples, "importer_gearmand_queue_depth", server=gearmand.address) == 0
    assert one(samples, "importer_database_up") == 1


def test_scrapes_within_the_cache_time_ask_the_database_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'importer.db'}"
    db = open_database(url)
    statements: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    settings = Settings(
        data_dir=tmp_path, database_url=url, gearman_servers=f"127.0.0.1:{free_port()}"
    )
    try:
        first = render(settings, db)[0]
        asked = len(statements)
        assert asked >= 5, statements
        again = render(settings, db)[0]
        assert len(statements) == asked, "a second scrape inside the cache time asked again"
        assert again == first
        now = [100.0]
        collector = ImporterCollector(settings, db, ttl=5.0, clock=lambda: now[0])
        list(collector.collect())
        list(collector.collect())
        assert len(statements) == 2 * asked
        now[0] += 5.0
        list(collector.collect())
        assert len(statements) == 3 * asked, "a scrape after the cache time did not ask anew"
    finally:
        db.engine.dispose()


def test_a_dead_gearmand_reads_as_down_without_stalling_the_scrape(
    tmp_path: Path, gearmand: GearmandProcess, hung_gearmands: list[str]
) -> None:
    """Hung servers and a refused one are down; the live one shows its queue; the scrape
    waits about one timeout, not one per server nor a TCP timeout."""
    refused = f"127.0.0.1:{free_port()}"
    with GearmanIO([gearmand.address]) as gio:
        gio.submit_background([JobSpec(unique=f"waiting-{n}", data=b"x") for n in range(3)])
    url = f"sqlite:///{tmp_path / 'importer.db'}"
    settings = Settings(
        data_dir=tmp_path,
        database_url=url,
        gearman_servers=",".join([*hung_gearmands, refused, gearmand.address]),
    )
    db = open_database(url)
    try:
        started = time.monotonic()
        samples = parse(render(settings, db)[0])
        took = time.monotonic() - started
    finally:
        db.engine.dispose()
    up = by_label(samples, "importer_gearmand_up", "server")
    assert up == {**dict.fromkeys([*hung_gearmands, refused], 0), gearmand.address: 1}
    assert one(samples, "importer_gearmand_queue_depth", server=gearmand.address) == 3
    assert one(samples, "importer_gearmand_jobs_running", server=gearmand.address) == 0
    assert one(samples, "importer_gearmand_workers", server=gearmand.address) == 0
    assert GEARMAN_TIMEOUT_SECONDS * 0.9 <= took < GEARMAN_TIMEOUT_SECONDS * 2.5, took


def test_a_failure_recorded_without_a_kind_reads_as_unclassified(tmp_path: Path) -> None:
    """Documents that failed before error kinds were recorded (revision 0006) have none."""
    url = f"sqlite:///{tmp_path / 'importer.db'}"
    db = open_database(url)
    with db.session() as s:
        s.add(Batch(id="b-old", email="ops@example.com", total=2))
        for n, kind in enumerate([None, "encrypted"]):
            s.add(
                Document(
                    batch_id="b-old",
                    path=f"/in/{n}.pdf",
                    sha256=f"{n:064x}",
                    job_id=f"j-old-{n}",
                    status=DocStatus.failed,
                    error="could not be read",
                    error_kind=kind,
                )
            )
    settings = Settings(
        data_dir=tmp_path, database_url=url, gearman_servers=f"127.0.0.1:{free_port()}"
    )
    try:
        samples = parse(render(settings, db)[0])
    finally:
        db.engine.dispose()
    failures = by_label(samples, "importer_failures", "kind")
    assert failures["unclassified"] == 1 and failures["encrypted"] == 1
    assert sum(failures.values()) == 2


def test_an_unreachable_database_reads_as_down(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/importer"
    settings = Settings(
        data_dir=tmp_path, database_url=url, gearman_servers=f"127.0.0.1:{free_port()}"
    )
    samples = parse(render(settings, Database(url))[0])
    assert one(samples, "importer_database_up") == 0
    assert not [name for name, _ in samples if name.startswith("importer_documents")]


# deploy/: the scrape config and the alerts ----------------------------------------------


def test_the_deploy_examples_name_only_metrics_a_scrape_serves(tmp_path: Path) -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    rules = yaml.safe_load(ALERTS.read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "importer")
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer" and job["authorization"]["credentials_file"]
    assert job["static_configs"][0]["targets"][0].endswith(f":{DASHBOARD_PORT}")
    assert config["rule_files"] == [ALERTS.name]
    alerts = {r["alert"]: r for group in rules["groups"] for r in group["rules"]}
    assert set(alerts) == {"ImporterNoProgress", "ImporterJobsRejected"}
    assert "importer_jobs_rejected_total[10m]" in alerts["ImporterJobsRejected"]["expr"]

    url = f"sqlite:///{tmp_path / 'importer.db'}"
    db = open_database(url)
    settings = Settings(
        data_dir=tmp_path, database_url=url, gearman_servers=f"127.0.0.1:{free_port()}"
    )
    try:
        served = {name for name, _ in parse(render(settings, db)[0])}
    finally:
        db.engine.dispose()
    named = set(re.findall(r"\bimporter_[a-z_]+\b", PROMETHEUS.read_text() + ALERTS.read_text()))
    named -= {"importer_alerts"}  # the file name in rule_files
    assert named, "the examples name no metric"
    assert named <= served, named - served


# on the PATH, or where `scripts/install-deps --test` puts it: beside the venv's python
PROMTOOL = shutil.which("promtool") or shutil.which("promtool", path=Path(sys.executable).parent)
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="no promtool: `scripts/install-deps --test` installs it"
)


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@needs_promtool
def test_promtool_accepts_the_config_and_the_rules(tmp_path: Path) -> None:
    token = tmp_path / "importer-dashboard.token"
    token.write_text("t" * 32)
    config = PROMETHEUS.read_text().replace("/etc/prometheus/importer-dashboard.token", str(token))
    (tmp_path / "prometheus.yml").write_text(config)
    shutil.copy(ALERTS, tmp_path / ALERTS.name)
    checked = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    checked = promtool("check", "rules", ALERTS.name, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    shown = ", ".join(
        f'{k}="{v}"' for k, v in {**labels, "job": "importer", "instance": "d"}.items()
    )
    return {"series": f"{name}{{{shown}}}", "values": values}


def alerts_at(minute: int, name: str, summary: str = "", **labels: str) -> dict[str, Any]:
    """What promtool should see firing at `minute`: nothing, or the alert with the
    summary a person reads and the description as the rules file has it."""
    if not summary:
        return {"eval_time": f"{minute}m", "alertname": name, "exp_alerts": []}
    rules = yaml.safe_load(ALERTS.read_text())
    rule = next(r for g in rules["groups"] for r in g["rules"] if r["alert"] == name)
    expected = {
        "exp_labels": {**rule["labels"], **labels, "job": "importer", "instance": "d"},
        "exp_annotations": {"summary": summary, "description": rule["annotations"]["description"]},
    }
    return {"eval_time": f"{minute}m", "alertname": name, "exp_alerts": [expected]}


def no_progress_case(open_: str, finished: str, oldest: str, *checks: Any) -> dict[str, Any]:
    """Series per minute as scrapes read them (promtool's clock starts at 0 s)."""
    return {
        "interval": "1m",
        "input_series": [
            series("importer_batches", open_, state="open"),
            series("importer_last_document_finished_timestamp_seconds", finished),
            series("importer_oldest_open_batch_created_timestamp_seconds", oldest),
        ],
        "alert_rule_test": list(checks),
    }


STALLED = "importer: 1 open batch(es), no document finished for 15 minutes"
CASES = [
    # a batch submitted at 0 on which nothing finishes: fires once 15 + 1 minutes pass
    no_progress_case(
        "1x40",
        "0x40",
        "0x40",
        alerts_at(15, "ImporterNoProgress"),
        alerts_at(17, "ImporterNoProgress", STALLED, state="open"),
    ),
    # a quiet night (the last document finished at 60 s), then a batch at 120 minutes:
    # its first quarter hour is no alert
    no_progress_case(
        "0x119 1x40",
        "60x160",
        "0x119 7200x40",
        alerts_at(125, "ImporterNoProgress"),
        alerts_at(134, "ImporterNoProgress"),
        alerts_at(137, "ImporterNoProgress", STALLED, state="open"),
    ),
    # documents finish every minute: never an alert
    no_progress_case(
        "1x60",
        "0+60x60",
        "0x60",
        alerts_at(30, "ImporterNoProgress"),
        alerts_at(59, "ImporterNoProgress"),
    ),
    # a batch stuck since 30 minutes while new batches keep arriving: still fires
    no_progress_case(
        "1x30 2x10 3x30",
        "0+60x30 1800x40",
        "0x70",
        alerts_at(44, "ImporterNoProgress"),
        alerts_at(47, "ImporterNoProgress", STALLED.replace("1 open", "3 open"), state="open"),
    ),
    # rejected jobs: a count from before Prometheus started is no alert; a rise is, for 10m
    {
        "interval": "1m",
        "input_series": [series("importer_jobs_rejected_total", "5x20 7x30")],
        "alert_rule_test": [
            alerts_at(15, "ImporterJobsRejected"),
            alerts_at(
                25,
                "ImporterJobsRejected",
                "importer: 2 job(s) rejected in the last 10 minutes",
            ),
            alerts_at(40, "ImporterJobsRejected"),
        ],
    },
]


@needs_promtool
def test_the_alerts_fire_when_they_should_and_not_before(tmp_path: Path) -> None:
    shutil.copy(ALERTS, tmp_path / ALERTS.name)
    unit = {"rule_files": [ALERTS.name], "evaluation_interval": "1m", "tests": CASES}
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump(unit, sort_keys=False))
    tested = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr


# doctor: a dashboard open beyond loopback -----------------------------------------------


@pytest.fixture
def outside_address() -> Iterator[str]:
    """An address of this machine beyond loopback, on a veth pair of the test's own
    (198.18.0.0/15, set aside for tests; a dummy interface needs a kernel module that
    containers often lack), removed afterwards."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("a link of the test's own needs root and iproute2 (ip)")
    link = f"impm{os.getpid() % 100000}"
    address = f"198.18.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 1}"
    made = subprocess.run(
        ["ip", "link", "add", link, "type", "veth", "peer", "name", link + "p"], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot make a veth pair: {made.stderr.decode().strip()}")
    try:
        subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", link], check=True)
        for end in (link, link + "p"):
            subprocess.run(["ip", "link", "set", end, "up"], check=True)
        yield address
    finally:
        subprocess.run(["ip", "link", "del", link], check=False)


class FakeDashboard(http.server.BaseHTTPRequestHandler):
    status = 200
    seen: list[tuple[str, str | None, str | None]] = []

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization"), self.headers.get("Host")))
        body = b"# TYPE importer_database_up gauge\nimporter_database_up 1.0\n"
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(address: str, status: int) -> tuple[http.server.HTTPServer, list[Any]]:
    """A stand-in dashboard on `address`, port 8730, answering GET with `status`; the list
    collects each request's path, Authorization and Host."""
    seen: list[Any] = []
    handler = type("Handler", (FakeDashboard,), {"status": status, "seen": seen})
    server = http.server.ThreadingHTTPServer((address, DASHBOARD_PORT), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


def doctor(env: dict[str, str]) -> tuple[int, dict[str, list[dict[str, str]]]]:
    proc = importer("doctor", "--json", env=env)
    rows: dict[str, list[dict[str, str]]] = {}
    for row in json.loads(proc.stdout):
        rows.setdefault(row["name"], []).append(row)
    return proc.returncode, rows


def test_doctor_flags_a_dashboard_that_answers_without_its_token(
    env: dict[str, str], outside_address: str
) -> None:
    server, seen = serve(outside_address, 200)
    try:
        code, rows = doctor(env)
    finally:
        server.shutdown()
        server.server_close()
    assert code == 1, rows
    exposed = [r for r in rows["dashboard exposure"] if r["state"] == "exposed"]
    assert len(exposed) == 1, rows["dashboard exposure"]
    assert f"http://{outside_address}:{DASHBOARD_PORT}/metrics" in exposed[0]["detail"]
    assert "IMPORTER_DASHBOARD_TOKEN" in exposed[0]["fix"]
    assert ("/metrics", None, f"127.0.0.1:{DASHBOARD_PORT}") in seen


def test_doctor_passes_a_dashboard_that_asks_for_its_token(
    env: dict[str, str], outside_address: str
) -> None:
    server, seen = serve(outside_address, 401)
    try:
        code, rows = doctor(env)
    finally:
        server.shutdown()
        server.server_close()
    assert code == 0, rows
    assert [r["state"] for r in rows["dashboard exposure"]] == ["ok"]
    assert (
        f"{outside_address}:{DASHBOARD_PORT}/metrics (401)"
        in rows["dashboard exposure"][0]["detail"]
    )
    assert seen, "doctor did not ask the dashboard"
