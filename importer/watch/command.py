"""The body of `importer watch`: passes over the folders, for ever or once.

A pass walks the folders (`importer.submit.walk`: the same filters, links and confinement
as `submit`), passes over files decided on before and unchanged since, waits for new or
changed ones to settle, and submits those that have into the open batch
(`importer.submit.submit_files`, which skips what was already imported by its sha256).
The batch is closed once it is `batch_every` old or holds `batch_files` documents.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from importer.commands import check_keys, require_reachable
from importer.config import Settings
from importer.db.engine import Database, open_database
from importer.db.models import utcnow
from importer.errors import BadInput, GearmanUnavailable
from importer.gearman.client import GearmanIO
from importer.submit import SubmitOptions, submit_files, walk
from importer.watch.settle import INCOMPLETE_ROUNDS, Readiness, Settler, readiness
from importer.watch.sources import InotifySource, PollSource, blind_to_inotify, fstype_of
from importer.watch.state import BatchSettings, Outcome, Settled, WatchState

log = logging.getLogger(__name__)

NETWORK_POLL_SECONDS = 30.0  # the poll chosen for a network file system without --poll
MIN_WAIT = 1.0  # the least time before a file that is not ready is looked at again


@dataclass(frozen=True)
class WatchOptions:
    submit: SubmitOptions
    settle: float = 5.0
    poll: float | None = None  # None: inotify, unless a folder is on a network fs
    batch_every: float = 60.0  # minutes
    batch_files: int | None = None
    once: bool = False


@dataclass
class PassReport:
    files: int = 0
    unchanged: int = 0  # decided on before, the same size and mtime since
    waiting: int = 0  # not settled yet
    submitted: int = 0  # files handed to submit in this pass
    next_due: float | None = None  # monotonic time the next waiting file may settle
    outcomes: dict[str, int] = field(default_factory=dict)


class Watcher:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        gio: GearmanIO,
        dirs: Sequence[str],
        opts: WatchOptions,
    ) -> None:
        self.settings = settings
        self.db = db
        self.gio = gio
        self.dirs = list(dirs)
        self.opts = opts
        self.confine, _ = walk(self.dirs, opts.submit, settings.roots)  # checks the DIRs
        for path in self.confine:
            if not path.is_dir():
                raise BadInput(f"{path} is not a directory: `importer watch` watches folders")
        self.state = WatchState(db, self.confine, opts.submit.email)
        self.settler = Settler(opts.settle)
        self.known = self.state.known()
        self.batch = BatchSettings(
            email=opts.submit.email,
            lang=opts.submit.lang,
            notify=opts.submit.notify,
            text_layer=opts.submit.text_layer,
        )

    def recover(self) -> None:
        """Files left pending by a watch stopped while it submitted them."""
        for decided in self.state.resolve_pending(submitted=False):
            log.info("%s: %s before the restart", decided.path, decided.outcome.value)
        self.known = self.state.known()

    def scan(self) -> PassReport:
        report = PassReport()
        _, files = walk(self.dirs, self.opts.submit, self.settings.roots)
        present: set[str] = set()
        ready: list[Settled] = []
        now = time.monotonic()
        for path in files:
            try:
                info = os.stat(path, follow_symlinks=False)
            except OSError:
                continue
            report.files += 1
            seen = (info.st_size, info.st_mtime_ns)
            if self.known.get(path) == seen:
                report.unchanged += 1
                continue
            present.add(path)
            settled, wait = self._settled(path, *seen, now)
            if settled is None:
                report.waiting += 1
                due = now + wait
                report.next_due = due if report.next_due is None else min(report.next_due, due)
            else:
                ready.append(settled)
        self.settler.keep_only(present)
        self._submit(ready, report)
        return report

    def _settled(
        self, path: str, size: int, mtime_ns: int, now: float
    ) -> tuple[Settled | None, float]:
        """The file, if it may be submitted now; else the seconds until it is looked at again."""
        wait = self.settler.observe(path, size, mtime_ns, now)
        if wait > 0:
            return None, wait
        state = readiness(path, self.confine, size, mtime_ns)
        if state in (Readiness.changed, Readiness.gone):
            self.settler.forget(path)
            return None, max(self.opts.settle, MIN_WAIT)
        if state is Readiness.incomplete:
            held = self.settler.unchanged_for(path, now)
            if held < INCOMPLETE_ROUNDS * self.opts.settle:
                if held < self.opts.settle * 2:
                    log.info("%s: a PDF without its end yet (%%%%EOF): waiting", path)
                return None, max(self.opts.settle, MIN_WAIT)
            log.warning(
                "%s: unchanged for %.0f s without its end (%%%%EOF): submitted as it is",
                path,
                held,
            )
        self.settler.forget(path)
        return Settled(path, size, mtime_ns, looks_pdf=state is not Readiness.other), 0.0

    def _submit(self, ready: list[Settled], report: PassReport) -> None:
        while ready:
            if not any(h.reachable for h in self.gio.ping()):
                log.warning(
                    "gearmand does not answer at %s: %d settled files wait for the next pass",
                    self.settings.gearman_servers,
                    len(ready),
                )
                return
            batch_id = self.state.start_batch(self.batch, self.opts.submit.priority)
            room = len(ready)
            if self.opts.batch_files:
                room = max(self.opts.batch_files - self.state.documents_in(batch_id), 1)
            chunk, ready = ready[:room], ready[room:]
            self.state.mark_pending(batch_id, chunk)
            try:
                submit_files(
                    self.db,
                    self.gio,
                    self.settings.keyring(),
                    self.confine,
                    [f.path for f in chunk],
                    self.opts.submit,
                    into=batch_id,
                )
            except GearmanUnavailable as e:
                log.error("%s", e.message)
            for decided in self.state.resolve_pending(submitted=True):
                report.outcomes[decided.outcome.value] = (
                    report.outcomes.get(decided.outcome.value, 0) + 1
                )
                _log_decided(decided.path, decided.outcome, decided.reason, batch_id)
            self.known.update({f.path: (f.size, f.mtime_ns) for f in chunk})
            report.submitted += len(chunk)
            self.roll_if_due()

    def roll_if_due(self) -> float | None:
        """Close the batch when it is due; the monotonic time it will be, if open."""
        opened = self.state.open_batch()
        if opened is None:
            return None
        batch_id, since = opened
        age = (utcnow() - since).total_seconds()
        full = self.opts.batch_files and self.state.documents_in(batch_id) >= self.opts.batch_files
        window = self.opts.batch_every * 60
        if full or age >= window:
            closed = self.state.close_batch()
            if closed is not None:
                log.info("batch %s closed: its e-mail goes when its documents are done", closed)
            return None
        return time.monotonic() + window - age


def _log_decided(path: str, outcome: Outcome, reason: str | None, batch_id: str) -> None:
    if outcome is Outcome.submitted:
        log.info("%s: queued in batch %s", path, batch_id)
    elif outcome is Outcome.failed:
        log.warning("%s: recorded failed in batch %s: %s", path, batch_id, reason)
    else:
        log.info("%s: %s, %s", path, outcome.value, reason)


def choose_source(
    dirs: Sequence[Path], opts: WatchOptions, stop: threading.Event, say: Callable[[str], None]
) -> PollSource | InotifySource:
    if opts.poll is not None:
        say(f"importer watch: polling every {opts.poll:g} s (--poll)")
        return PollSource(opts.poll, stop)
    for path in dirs:
        fstype = fstype_of(path)
        if blind_to_inotify(fstype):
            say(
                f"importer watch: {path} is on {fstype}, a network file system where inotify"
                f" sees no change made by another host: polling every"
                f" {NETWORK_POLL_SECONDS:g} s (set it with --poll SECONDS)"
            )
            return PollSource(NETWORK_POLL_SECONDS, stop)
    say("importer watch: inotify (changes are seen as they happen)")
    return InotifySource(dirs, opts.submit.recursive, stop)


def run_watch(
    settings: Settings,
    db: Database,
    gio: GearmanIO,
    dirs: Sequence[str],
    opts: WatchOptions,
    *,
    say: Callable[[str], None],
) -> int:
    watcher = Watcher(settings, db, gio, dirs, opts)
    watcher.recover()
    stop = threading.Event()
    say(
        f"importer watch: {', '.join(map(str, watcher.confine))} for {opts.submit.email};"
        f" files are taken once unchanged for {opts.settle:g} s; a batch every"
        f" {opts.batch_every:g} min" + (f" or {opts.batch_files} files" if opts.batch_files else "")
    )
    if opts.once:
        return _once(watcher)
    source = choose_source(watcher.confine, opts, stop, say)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        while not stop.is_set():
            report = _pass(watcher)
            due = [t for t in (report.next_due, watcher.roll_if_due()) if t is not None]
            source.wait(max(min(due) - time.monotonic(), 0.0) if due else float("inf"))
    finally:
        if isinstance(source, InotifySource):
            source.close()
    say("importer watch: stopped")
    return 0


def _pass(watcher: Watcher) -> PassReport:
    try:
        report = watcher.scan()
    except BadInput as e:  # a folder gone (an unmounted share): it may come back
        log.warning("%s; trying again", e.message)
        return PassReport()
    if report.submitted or report.waiting:
        log.info(
            "pass: %d files, %d decided before, %d settling, %d submitted %s",
            report.files,
            report.unchanged,
            report.waiting,
            report.submitted,
            report.outcomes,
        )
    else:
        log.debug("pass: %d files, nothing new", report.files)
    return report


def _once(watcher: Watcher) -> int:
    """One pass and, for the files it found changing, one more once they may have settled;
    what still changes then is left for the next run."""
    report = _pass(watcher)
    if report.next_due is not None:
        time.sleep(max(report.next_due - time.monotonic(), 0.0))
        report = _pass(watcher)
    if report.waiting:
        log.info("%d files still changing: left for the next run", report.waiting)
    watcher.roll_if_due()
    return 0


def do_watch(
    settings: Settings,
    dirs: Sequence[str],
    opts: WatchOptions,
    *,
    err: Console,
) -> int:
    """Collaborators built once: the database (current, this host's keys agreeing with
    the fleet's) and gearmand, which must answer at the start."""
    db = open_database(settings.resolved_database_url)
    check_keys(settings, db, err)
    gio = GearmanIO.from_settings(settings)
    try:
        require_reachable(gio, settings)
        return run_watch(
            settings, db, gio, dirs, opts, say=lambda text: err.print(text, highlight=False)
        )
    finally:
        gio.close()
