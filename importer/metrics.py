"""`/metrics`: the importer's state in Prometheus' text format, read when Prometheus asks.

Nothing is counted in this process: every value comes from the database (the truth, shared
by every host) and from each configured gearmand's admin `status`, when a scrape arrives.
What one scrape read is kept for CACHE_SECONDS, so several Prometheus servers, or a person
refreshing the page, cost the database one round of queries per interval. A scrape of an
archive of a million documents reads two indexes and scans the documents table once (the
figures are in the README, "Metrics and alerts").

An answer, in part::

    # HELP importer_documents Documents by status.
    # TYPE importer_documents gauge
    importer_documents{status="done"} 915400.0
    importer_documents{status="failed"} 1600.0
    # HELP importer_jobs_rejected_total Jobs workers refused: forged, tampered, expired, ...
    # TYPE importer_jobs_rejected_total counter
    importer_jobs_rejected_total 0.0
    # HELP importer_gearmand_up Whether the gearmand answered its admin status (1) or not (0).
    # TYPE importer_gearmand_up gauge
    importer_gearmand_up{server="127.0.0.1:4730"} 1.0
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from importer.config import Settings
from importer.db.engine import Database
from importer.db.models import Batch, Document, Outbox, RejectedJob
from importer.gearman.address import Server, host_list, parse_host
from importer.gearman.admin import admin_command
from importer.gearman.client import FUNCTION
from importer.gearman.connection import ServerError
from importer.reasons import ErrorKind
from importer.states import DocStatus, PageSource

log = logging.getLogger(__name__)

# How long one scrape's values are served again before the database is asked anew.
CACHE_SECONDS = 5.0
# Each gearmand gets this long to connect and answer; the servers are asked at once, so a
# dead or hung one delays a scrape by about this much, never by its TCP timeout.
GEARMAN_TIMEOUT_SECONDS = 1.0
# The holders named in `importer_jobs_held`: a rogue picks its own client ids, so at most
# this many series, the busiest.
HELD_WORKERS = 10
UNCLASSIFIED = "unclassified"  # a failure recorded without an error kind (documents.error_kind)


@dataclass(frozen=True)
class GearmandState:
    """One gearmand's admin `status` line for our function; all zero when it did not answer."""

    server: str
    up: bool
    waiting: int = 0  # jobs queued and not yet taken by a worker
    running: int = 0
    workers: int = 0  # workers registered for the function


@dataclass(frozen=True)
class DatabaseState:
    documents: dict[str, int]
    pages: dict[str, int]
    pages_review: int
    failures: dict[str, int]
    rejected: int
    replayed: int
    held_by: dict[str, int]  # jobs taken at gearmand and never claimed, by who held them
    emails_sent: int
    emails_pending: int
    batches_open: int
    batches_finished: int
    last_finished: datetime | None
    oldest_open_batch: datetime | None


@dataclass(frozen=True)
class Snapshot:
    database: DatabaseState | None  # None: the database did not answer
    gearmands: list[GearmandState] = field(default_factory=list)
    weak_isolation: bool = False  # IMPORTER_WEAK_ISOLATION, as this host is configured


def read_database(db: Database) -> DatabaseState:
    """Every database value of a scrape. Per status and per error kind the counts come from
    indexes (`ix_documents_status_*`); the page sums and the newest finish from one pass
    over the documents table."""
    failed = (DocStatus.failed, DocStatus.dead)
    with db.engine.connect() as conn:
        documents = {s.value: 0 for s in DocStatus}
        for status, count in conn.execute(
            select(Document.status, func.count()).group_by(Document.status)
        ):
            documents[DocStatus(status).value] = count
        text_layer, ocr, review, last_finished = conn.execute(
            select(
                func.coalesce(func.sum(Document.pages_text_layer), 0),
                func.coalesce(func.sum(Document.pages_ocr), 0),
                func.coalesce(func.sum(Document.pages_review), 0),
                func.max(Document.finished_at),
            )
        ).one()
        failures = {kind.value: 0 for kind in ErrorKind} | {UNCLASSIFIED: 0}
        for kind, count in conn.execute(
            select(Document.error_kind, func.count())
            .where(Document.status.in_(failed))
            .group_by(Document.error_kind)
        ):
            failures[kind or UNCLASSIFIED] = failures.get(kind or UNCLASSIFIED, 0) + count
        refused = dict(
            conn.execute(select(RejectedJob.kind, func.count()).group_by(RejectedJob.kind)).all()
        )
        held_by = dict(
            conn.execute(
                select(RejectedJob.worker, func.count())
                .where(RejectedJob.kind == "held")
                .group_by(RejectedJob.worker)
                .order_by(func.count().desc())
                .limit(HELD_WORKERS)
            ).all()
        )
        emails, sent = conn.execute(select(func.count(), func.count(Outbox.sent_at))).one()
        batches, finished = conn.execute(select(func.count(), func.count(Batch.finished_at))).one()
        oldest_open = conn.execute(
            select(func.min(Batch.created_at)).where(Batch.finished_at.is_(None))
        ).scalar()
    return DatabaseState(
        documents=documents,
        pages={PageSource.text_layer.value: int(text_layer), PageSource.ocr.value: int(ocr)},
        pages_review=int(review),
        failures=failures,
        rejected=int(refused.get("rejected", 0)),
        replayed=int(refused.get("replayed", 0)),
        held_by={str(worker): int(count) for worker, count in held_by.items()},
        emails_sent=int(sent),
        emails_pending=int(emails - sent),
        batches_open=int(batches - finished),
        batches_finished=int(finished),
        last_finished=last_finished,
        oldest_open_batch=oldest_open,
    )


def read_gearmand(server: Server, timeout: float = GEARMAN_TIMEOUT_SECONDS) -> GearmandState:
    """One server's admin `status` for our function; up=False when it does not answer in
    time or answers something that is not gearmand's."""
    try:
        lines = admin_command(server, "status", timeout=timeout)
    except ServerError as e:
        log.debug("gearmand %s: no admin status for /metrics: %s", server.address, e)
        return GearmandState(server.address, up=False)
    for line in lines:
        parts = line.split("\t")
        if len(parts) == 4 and parts[0] == FUNCTION.decode() and all(map(str.isdigit, parts[1:])):
            total, running, workers = map(int, parts[1:])
            return GearmandState(server.address, True, total - running, running, workers)
    return GearmandState(server.address, up=True)


def read_gearmands(
    settings: Settings, timeout: float = GEARMAN_TIMEOUT_SECONDS
) -> list[GearmandState]:
    """Every configured gearmand, asked at the same time."""
    servers = [parse_host(entry) for entry in host_list(settings)]
    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        return list(pool.map(lambda server: read_gearmand(server, timeout), servers))


def families(snapshot: Snapshot) -> list[Metric]:
    """The snapshot as metric families, every name under `importer_`."""
    out: list[Metric] = []
    db = snapshot.database
    out.append(
        GaugeMetricFamily(
            "importer_database_up",
            "Whether the database answered the last scrape's queries (1) or not (0).",
            value=1 if db else 0,
        )
    )
    if db is not None:
        out += _database_families(db)
    up = GaugeMetricFamily(
        "importer_gearmand_up",
        "Whether the gearmand answered its admin status (1) or not (0).",
        labels=["server"],
    )
    waiting = GaugeMetricFamily(
        "importer_gearmand_queue_depth",
        "Import jobs queued on this gearmand and not yet taken by a worker.",
        labels=["server"],
    )
    running = GaugeMetricFamily(
        "importer_gearmand_jobs_running",
        "Import jobs a worker is running, as this gearmand sees them.",
        labels=["server"],
    )
    workers = GaugeMetricFamily(
        "importer_gearmand_workers",
        "Workers connected to this gearmand that take import jobs.",
        labels=["server"],
    )
    for g in snapshot.gearmands:
        up.add_metric([g.server], 1 if g.up else 0)
        waiting.add_metric([g.server], g.waiting)
        running.add_metric([g.server], g.running)
        workers.add_metric([g.server], g.workers)
    weak = GaugeMetricFamily(
        "importer_weak_isolation",
        "1 when IMPORTER_WEAK_ISOLATION lets workers read PDFs without the walls the host"
        " refuses (a failure to fix, SECURITY.md); 0 otherwise.",
        value=1 if snapshot.weak_isolation else 0,
    )
    return [*out, up, waiting, running, workers, weak]


def _database_families(db: DatabaseState) -> list[Metric]:
    documents = GaugeMetricFamily("importer_documents", "Documents by status.", labels=["status"])
    for status, count in db.documents.items():
        documents.add_metric([status], count)
    pages = GaugeMetricFamily(
        "importer_pages",
        "Pages stored, by where their text came from: the PDF's text layer or OCR.",
        labels=["source"],
    )
    for source, count in db.pages.items():
        pages.add_metric([source], count)
    failures = GaugeMetricFamily(
        "importer_failures",
        "Documents failed for good or out of attempts, by the kind of error.",
        labels=["kind"],
    )
    for kind, count in sorted(db.failures.items()):
        failures.add_metric([kind], count)
    emails = GaugeMetricFamily(
        "importer_emails", "Notification e-mails, sent or waiting to be.", labels=["state"]
    )
    emails.add_metric(["sent"], db.emails_sent)
    emails.add_metric(["pending"], db.emails_pending)
    batches = GaugeMetricFamily("importer_batches", "Batches, open or finished.", labels=["state"])
    batches.add_metric(["open"], db.batches_open)
    batches.add_metric(["finished"], db.batches_finished)
    held = CounterMetricFamily(
        "importer_jobs_held",
        "Jobs a worker took at gearmand and never claimed (sent again), by who held them.",
        labels=["worker"],
    )
    for worker, count in sorted(db.held_by.items()):
        held.add_metric([worker], count)
    return [
        documents,
        pages,
        GaugeMetricFamily(
            "importer_pages_review",
            "Pages read badly enough to need a person's review.",
            value=db.pages_review,
        ),
        failures,
        CounterMetricFamily(
            "importer_jobs_rejected",
            "Jobs workers refused: forged, tampered, expired, or naming no document.",
            value=db.rejected,
        ),
        CounterMetricFamily(
            "importer_jobs_replayed",
            "Redeliveries of jobs whose document had finished (gearmand's own replays).",
            value=db.replayed,
        ),
        held,
        emails,
        batches,
        GaugeMetricFamily(
            "importer_last_document_finished_timestamp_seconds",
            "When a document last finished (done or failed), in Unix time; 0 if none has.",
            value=_unix(db.last_finished),
        ),
        GaugeMetricFamily(
            "importer_oldest_open_batch_created_timestamp_seconds",
            "When the oldest batch still open was submitted, in Unix time; 0 if none is open.",
            value=_unix(db.oldest_open_batch),
        ),
    ]


def _unix(moment: datetime | None) -> float:
    return moment.timestamp() if moment is not None else 0.0


class ImporterCollector(Collector):
    """Reads a Snapshot when collected, and serves it again for `ttl` seconds.

    Thread-safe: concurrent scrapes (Starlette runs sync handlers in a thread pool) wait
    for the one that is reading, then share its snapshot.
    """

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        ttl: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.db = db
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._read_at: float | None = None
        self._families: list[Metric] = []

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            now = self.clock()
            if self._read_at is None or now - self._read_at >= self.ttl:
                self._families = families(self._read())
                self._read_at = self.clock()
            return list(self._families)

    def _read(self) -> Snapshot:
        try:
            database: DatabaseState | None = read_database(self.db)
        except OperationalError as e:
            log.warning("/metrics: database %s did not answer: %s", self.db.safe_url, e)
            database = None
        return Snapshot(database, read_gearmands(self.settings), self.settings.weak_isolation)


@dataclass
class _Registry:
    settings: Settings
    registry: CollectorRegistry


# One registry per Database, so its collector's cache lives as long as the dashboard's
# database does; a registry of our own keeps the process's default metrics out.
_REGISTRIES: weakref.WeakKeyDictionary[Database, _Registry] = weakref.WeakKeyDictionary()
_REGISTRIES_LOCK = threading.Lock()


def registry_for(settings: Settings, db: Database) -> CollectorRegistry:
    with _REGISTRIES_LOCK:
        found = _REGISTRIES.get(db)
        if found is None or found.settings is not settings:
            registry = CollectorRegistry()
            registry.register(ImporterCollector(settings, db))
            found = _REGISTRIES[db] = _Registry(settings, registry)
        return found.registry


def render(settings: Settings, db: Database) -> tuple[bytes, str]:
    """The body of GET /metrics and its content type. Blocking (database queries, gearmand
    admin connections): call it from a worker thread, not an event loop."""
    return generate_latest(registry_for(settings, db)), CONTENT_TYPE_LATEST
