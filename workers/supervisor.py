"""`importer worker --concurrency N`: N worker processes, restarted when they die, plus the reaper.

Children are forked (start-up in milliseconds; "spawn" re-imports everything, about a
second) while the supervisor has no other thread, and spawned otherwise, since a fork
copies other threads' locks. Either way each child builds its own database engine and
gearman connections after it starts: nothing open is used across the fork.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from multiprocessing.process import BaseProcess
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from importer.backoff import Backoff
from importer.config import REAPER_SECONDS, Settings
from importer.db import lifecycle
from importer.db.engine import open_database
from importer.db.models import utcnow
from importer.errors import ConfigError, ImporterError
from importer.gearman.address import host_list
from importer.gearman.client import GearmanIO
from importer.mail import MailServerDown, check_server
from importer.outbox import MAIL_RETRY, deliver_pending, hold_due
from importer.requeue import requeue_stale
from importer.smtp_bounded import Deadline
from importer.stop_signals import held
from workers import engine, isolation, walls
from workers.job import JobContext, StopNow
from workers.loop import install_signal_handlers, owner_name, work
from workers.owner import Owner

log = logging.getLogger(__name__)

DRAIN_SECONDS = 60.0
RESTART = Backoff(base=0.5, cap=30.0)  # a slot whose worker died: 0.5 s, 1 s, ... 30 s
STABLE_SECONDS = 60.0  # a worker that ran this long before dying starts its backoff afresh
DELIVERY_SECONDS = 0.5  # how soon a queued e-mail leaves


@dataclass(frozen=True)
class WorkerOptions:
    concurrency: int = 1
    burst: bool = False
    max_jobs: int | None = None
    reaper_interval: float = REAPER_SECONDS
    log_level: int = logging.INFO


def _child_main(settings_data: dict[str, Any], opts: WorkerOptions, slot: int = 0) -> None:
    logging.basicConfig(
        level=opts.log_level,
        format="%(asctime)s %(processName)s %(levelname)s %(message)s",
        force=True,  # a forked child inherits the parent's handlers and level
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    isolation.make_non_dumpable()  # its environment and memory hold keys and passwords
    settings = Settings(**settings_data)
    engine.configure(
        child_user=isolation.child_user(settings.child_user, slot),
        hidden=[*settings.roots, settings.data_dir.resolve()],
        weak=settings.weak_isolation,
    )
    engine.start_forkserver()  # it imports the reader while we connect
    stop = threading.Event()
    busy = threading.Event()
    install_signal_handlers(stop, busy)

    def make_ctx() -> JobContext:
        db = open_database(settings.resolved_database_url)
        return JobContext(db=db, settings=settings, owner=owner_name())

    try:
        with contextlib.suppress(StopNow):
            _work(make_ctx, settings, opts, stop, busy)
    finally:
        engine.stop_forkserver()


def _work(make_ctx: Any, settings: Settings, opts: WorkerOptions, stop: Any, busy: Any) -> None:
    work(
        make_ctx,
        host_list(settings),
        burst=opts.burst,
        max_jobs=opts.max_jobs,
        stop=stop,
        busy=busy,
    )


def settings_payload(settings: Settings) -> dict[str, Any]:
    """Settings as plain data to hand to a spawned child (only what was set)."""
    return settings.model_dump(include=settings.model_fields_set | {"data_dir"})


class Supervisor:
    def __init__(self, settings: Settings, opts: WorkerOptions) -> None:
        self.settings = settings
        self.opts = opts

        self.children: dict[int, BaseProcess] = {}
        self.started_at: dict[int, float] = {}
        self.restart_at: dict[int, float] = {}
        self.deaths: dict[int, int] = {}  # slot -> its worker's deaths in a row
        self.owners: dict[int, str] = {}  # slot -> its worker as a lease names it
        self.stopping = threading.Event()
        try:  # a user that does not exist, or a wall that cannot stand, before any child starts
            user = isolation.child_user(settings.child_user)
            for warning in walls.require(user, weak=settings.weak_isolation):
                log.warning("%s", warning)
        except (ValueError, walls.WallsMissing) as e:
            raise ConfigError(str(e)) from e

    @held  # a stop between the fork and the record would leave a worker nobody stops
    def _start(self, slot: int) -> None:
        method = "fork" if threading.active_count() == 1 else "spawn"
        context: Any = mp.get_context(method)
        proc = context.Process(
            target=_child_main,
            args=(settings_payload(self.settings), self.opts, slot),
            name=f"worker-{slot}",
            daemon=False,
        )
        proc.start()
        self.children[slot] = proc
        self.started_at[slot] = time.monotonic()
        assert proc.pid is not None
        self.owners[slot] = Owner.of(proc.pid).encode()  # what its leases will name

    def start(self) -> None:
        isolation.make_non_dumpable()
        for slot in range(self.opts.concurrency):
            self._start(slot)

    def stop(self, *, timeout: float = DRAIN_SECONDS) -> None:
        """Ask children to drain; kill what is still there after the timeout."""
        self.stopping.set()
        for proc in self.children.values():
            if proc.is_alive() and proc.pid:
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.children.values():
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in self.children.values():
            if proc.is_alive():
                proc.kill()
                proc.join(5)

    def stop_now(self) -> None:
        for proc in self.children.values():
            if proc.is_alive() and proc.pid:
                os.kill(proc.pid, signal.SIGTERM)

    def reap_once(self, db: Any, gio: GearmanIO | None) -> None:
        try:
            if gio is not None:
                requeue_stale(
                    db,
                    gio,
                    self.settings.keyring(),
                    max_attempts=self.settings.max_attempts,
                    inline_cap_bytes=self.settings.inline_in_flight_mb << 20,
                )
        except ImporterError as e:
            log.warning("reaper pass skipped: %s", e.message)
        except SQLAlchemyError as e:
            # the database is down or restarting: the next pass tries again
            log.warning("reaper pass skipped: database error: %s", str(e).splitlines()[0])

    def _retry_due(self, db: Any, last_reap: datetime) -> bool:
        """A document whose retry backoff ended since the last reaper pass is sent now, not
        at the next pass: a killed document child costs its backoff, not a reaper interval
        too. One that a pass could not send (gearmand down) waits for the next pass."""
        try:
            due = lifecycle.next_retry_due(db)
        except (ImporterError, SQLAlchemyError):
            return False  # the reaper pass says why, at its time
        return due is not None and last_reap < due <= utcnow()

    def check_children(self, db: Any, gio: GearmanIO | None) -> None:
        """Restart dead workers, each after its own backoff, without holding up the others;
        the documents a dead one held go to the others at once."""
        now = time.monotonic()
        for slot, proc in list(self.children.items()):
            if proc.is_alive():
                continue
            if slot in self.restart_at:
                if now >= self.restart_at[slot]:
                    del self.restart_at[slot]
                    self._start(slot)
                continue
            self.hand_on(slot, db, gio)
            if proc.exitcode == 0 and (self.opts.burst or self.opts.max_jobs):
                del self.children[slot]
                continue
            if now - self.started_at.get(slot, now) >= STABLE_SECONDS:
                self.deaths[slot] = 0
            deaths = self.deaths.get(slot, 0)
            wait = RESTART.delay(deaths)
            log.warning("worker-%d exited with %s; restarting in %.1f s", slot, proc.exitcode, wait)
            self.restart_at[slot] = now + wait
            self.deaths[slot] = deaths + 1

    def hand_on(self, slot: int, db: Any, gio: GearmanIO | None) -> None:
        """A worker process has died: end its leases now and run a reaper pass, which sends
        its documents to gearmand again (or declares one dead after its last attempt)."""
        owner = self.owners.pop(slot, None)
        if owner is None:
            return
        try:
            held = lifecycle.expire_leases_of(db, owner)
        except (ImporterError, SQLAlchemyError) as e:
            log.warning("documents of a dead worker wait for their leases: %s", e)
            return
        if held:
            log.warning("worker-%d died holding %d document(s): handing them on", slot, held)
            self.reap_once(db, gio)

    def run(self) -> int:
        """Supervise until stopped, or (burst / max-jobs) until every child has exited cleanly."""
        db = open_database(self.settings.resolved_database_url)
        gio = GearmanIO.from_settings(self.settings)
        if not self.children:
            self.start()
        courier = Courier(self.settings)  # started after the fork: workers never inherit it
        next_reap = time.monotonic()
        last_reap = utcnow()
        try:
            while not self.stopping.is_set():
                if time.monotonic() >= next_reap or self._retry_due(db, last_reap):
                    last_reap = utcnow()
                    self.reap_once(db, gio)
                    next_reap = time.monotonic() + self.opts.reaper_interval
                self.check_children(db, gio)
                if not self.children:
                    return 0
                self.stopping.wait(0.5)
        finally:
            self.stop()
            gio.close()
            courier.finish(db)  # the last documents' e-mail goes out before we exit
        return 0


class Courier:
    """Delivers the outbox from a thread of the supervisor, every DELIVERY_SECONDS.

    Workers only write outbox rows (in the transaction that finishes a document or a
    batch); a slow or dead mail server holds up this thread, never a job. Each pass has
    IMPORTER_MAIL_DEADLINE_SECONDS; one that found the mail server silent leaves every
    e-mail of the pass waiting out its backoff, so the next passes wait on nothing."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopping = threading.Event()
        self.down_until = 0.0  # monotonic: the mail server was found down, try after this
        self.down_reason = ""
        self.thread = threading.Thread(target=self._run, name="courier", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        db = open_database(self.settings.resolved_database_url, migrate=False)
        self.check_server()
        while not self.stopping.wait(DELIVERY_SECONDS):
            self.deliver(db)

    def check_server(self) -> None:
        """Greet the mail server once at the start: one found silent while the first
        documents run holds up no e-mail, nor the end of `importer run`, a second time."""
        try:
            check_server(
                self.settings.resolved_mail_url, timeout=self.settings.mail_deadline_seconds
            )
        except MailServerDown as e:
            log.warning("e-mail will wait in the outbox: %s", e.message)
            self.server_down(e.message)
        except ImporterError as e:
            log.warning("mail server check: %s", e.message)

    def server_down(self, reason: str) -> None:
        self.down_until = time.monotonic() + MAIL_RETRY.delay(1)
        self.down_reason = reason

    def deliver(self, db: Any, seconds: float | None = None) -> None:
        try:
            wait = self.down_until - time.monotonic()
            if wait > 0:  # what was queued since waits with the reason, and tries no server
                hold_due(db, self.down_reason, timedelta(seconds=wait))
                return
            done = deliver_pending(
                db,
                mail_url=self.settings.resolved_mail_url,
                mail_from=self.settings.mail_from,
                seconds=seconds or self.settings.mail_deadline_seconds,
            )
        except ImporterError as e:
            log.warning("e-mail left in the outbox for the next pass: %s", e.message)
            return
        except SQLAlchemyError as e:
            log.warning("e-mail left in the outbox: database error: %s", str(e).splitlines()[0])
            return
        if done.server_down:
            self.server_down(done.server_down)

    def finish(self, db: Any) -> None:
        """Stop, and give what is due one last pass: the try under way and that pass
        together within IMPORTER_MAIL_DEADLINE_SECONDS (each try ends by its deadline)."""
        budget = Deadline(self.settings.mail_deadline_seconds)
        self.stopping.set()
        self.thread.join(budget.left())
        if not budget.passed:
            self.deliver(db, budget.left())


def install_supervisor_signals(sup: Supervisor) -> None:
    def on_signal(signum: int, _frame: Any) -> None:
        if sup.stopping.is_set():
            sup.stop_now()
        sup.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
