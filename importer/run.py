"""`importer run`: the whole pipeline on one machine, started and stopped by one command."""

from __future__ import annotations

import gc
import json
import logging
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.text import Text

from importer.commands import (
    archive_options,
    check_keys,
    check_lang,
    inline_options,
    print_submit_result,
    submit_with_progress,
)
from importer.config import Settings, make_private_dir
from importer.db.engine import Database, open_database
from importer.errors import ExitCode, GearmanUnavailable
from importer.gearman.address import free_port
from importer.gearman.client import GearmanIO
from importer.gearman.server import GearmandProcess
from importer.live_progress import PROGRESS_EVERY, BatchDisplay, Tracker, read_progress
from importer.notify import validate_address
from importer.outbox import mail_state
from importer.outbox_report import mail_lines
from importer.report_text import printable
from importer.states import NotifyMode, TextLayerMode
from importer.status import BatchStatus, documents, overview, unfinished
from importer.stop_signals import inside_held
from importer.submit import SubmitOptions
from workers.supervisor import Supervisor, WorkerOptions

log = logging.getLogger(__name__)


class _PrivateGearmand:
    """A private gearmand started in a thread, so that it starts while we open the database.

    `GearmandProcess.start` returns once gearmand answers, so `ready()` only joins the
    thread: call it before forking workers (a fork must not copy a running thread).
    """

    def __init__(self, settings: Settings, stack: ExitStack) -> None:
        self.proc = GearmandProcess(
            data_dir=settings.data_dir.resolve(),
            port=free_port(),
            job_retries=settings.gearmand_job_retries,
        )
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._start, name="gearmand-start", daemon=True)
        stack.callback(self._stop)
        self.thread.start()

    def _stop(self) -> None:
        self.thread.join()  # a start still under way would leave a gearmand behind
        self.proc.stop()

    def _start(self) -> None:
        try:
            self.proc.start()
        except BaseException as e:  # noqa: BLE001 - whatever it is, ready() raises it in the caller
            self.error = e

    def ready(self, settings: Settings, err: Console) -> Settings:
        self.thread.join()
        if self.error is not None:
            raise self.error
        err.print(
            f"started a private gearmand on {self.proc.address} (queue in {settings.data_dir})"
        )
        return settings.model_copy(update={"gearman_servers": self.proc.address})


def _gearmand_for(settings: Settings, stack: ExitStack) -> _PrivateGearmand | None:
    """None to use the configured gearmand, which answers; otherwise a private one on
    loopback, starting."""
    gio = GearmanIO.from_settings(settings)
    try:
        reachable = any(h.reachable for h in gio.ping())
    finally:
        gio.close()
    if reachable:
        return None
    if settings.gearman_servers_explicit:
        raise GearmanUnavailable(
            f"IMPORTER_GEARMAN_SERVERS={settings.gearman_servers} does not answer: start it "
            "(`importer gearmand`), or unset the variable to let `run` start a private one"
        )
    return _PrivateGearmand(settings, stack)


# SIGTERM (systemd, `kill`, a container stopping) and SIGHUP (the terminal closed) end the
# run as Ctrl-C does; 128 + the signal's number is the shell's code for such an end.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


# How soon a signal that came inside another library's code is tried again.
SIGNAL_RETRY_SECONDS = 0.05


def _in_our_code(frame: FrameType | None) -> bool:
    """Whether the main thread was stopped in the importer's own code: an exception raised
    there unwinds through `with` and `finally`. Raised inside logging, threading or another
    library, between a lock's acquire and the `try` that releases it (an at-fork hook of
    logging's, seen here), it leaves that lock held for ever, or is swallowed."""
    if inside_held(frame):
        return False  # a step that must not be cut in two: taken once it returns
    module = frame.f_globals.get("__name__", "") if frame is not None else ""
    return module.partition(".")[0] in {"importer", "workers"}


@contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into SystemExit in the main thread, so the run's ExitStack
    stops its workers and its private gearmand: by default either signal ends Python at
    once, and gearmand, in a session of its own, would go on listening (and holding the
    jobs) after us. The exit is raised only where our own code runs: a signal that comes
    inside a library is tried again every SIGNAL_RETRY_SECONDS (SIGALRM). A second signal
    during the cleanup is ignored: it must finish."""
    leaving = False
    pending: int | None = None

    def leave(signum: int, frame: FrameType | None) -> None:
        nonlocal leaving, pending
        if leaving:
            return
        if not _in_our_code(frame):
            pending = signum
            signal.setitimer(signal.ITIMER_REAL, SIGNAL_RETRY_SECONDS)
            return
        leaving = True
        signal.setitimer(signal.ITIMER_REAL, 0)
        log.warning("%s: stopping workers and gearmand", signal.Signals(signum).name)
        raise SystemExit(128 + signum)

    def again(_signum: int, frame: FrameType | None) -> None:
        if pending is not None:
            leave(pending, frame)

    previous = {sig: signal.signal(sig, leave) for sig in STOP_SIGNALS}
    previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, again)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _roots_for(settings: Settings, paths: Sequence[str]) -> Settings:
    if settings.allowed_roots:
        return settings
    roots = []
    for raw in paths:
        p = Path(raw).resolve()
        roots.append(str(p if p.is_dir() else p.parent))
    return settings.model_copy(update={"allowed_roots": ":".join(roots)})


# Shorter than a worker host's REAPER_SECONDS: the reaper also sends the documents due for
# another attempt (the first is due within 5 s), and here a person waits for the batch to end.
RUN_REAPER_SECONDS = 5.0
POLL_SECONDS = 0.02  # how often the end of the batch is looked for at first (one COUNT)...
POLL_MAX_SECONDS = 0.1  # ...and after a few seconds, when a few ms more do not show
SAMPLE_SECONDS = 0.5  # how often progress is read (and redrawn on a terminal)


def _wait(db: Database, gio: GearmanIO, batch_id: str, display: BatchDisplay) -> None:
    tracker = Tracker()
    sample = 0.0
    since = time.monotonic()
    while True:
        left = unfinished(db, batch_id)
        now = time.monotonic()
        if left == 0 or now >= sample:
            p = read_progress(db, batch_id, gio if display.wants_documents else None)
            display.show(p, tracker.observe(p, now), now, last=left == 0)
            sample = now + SAMPLE_SECONDS
        if left == 0:
            return
        time.sleep(min(POLL_MAX_SECONDS, POLL_SECONDS + (now - since) / 50))


def run_all(
    settings: Settings,
    paths: Sequence[str],
    email: str,
    *,
    workers: int,
    lang: str,
    notify: NotifyMode,
    force: bool,
    as_json: bool,
    out: Console,
    err: Console,
    text_layer: TextLayerMode | None = None,
    archive: Path | None = None,
    inline: bool = False,
    progress_every: float = PROGRESS_EVERY,
) -> int:
    opts = SubmitOptions(
        email=validate_address(email),
        lang=check_lang(lang),
        notify=notify,
        force=force,
        text_layer=text_layer or settings.text_layer,
        # the workers' reaper, here, can read the files: submit need only send them all
        inline_until_finished=False,
        **inline_options(settings, inline),
        **archive_options(settings, archive, dry_run=False),
    )
    for raw in paths:
        if not Path(raw).exists():
            from importer.errors import BadInput

            raise BadInput(f"{raw}: no such file or directory")
    make_private_dir(settings.data_dir)
    settings = _roots_for(settings, paths)
    with ExitStack() as stack:
        stack.enter_context(_stopped_by_signals())  # unwound last: cleanup stays covered
        private = _gearmand_for(settings, stack)  # it starts while the database opens
        settings.keyring()  # generate keys once, before workers race for them
        db = open_database(settings.resolved_database_url)
        check_keys(settings, db, err)
        started = time.monotonic()
        if private is not None:
            settings = private.ready(settings, err)
        # Everything imported so far lives until exit: the collector need not walk it again
        # (at exit that walk alone took half a second), and forked workers share its pages.
        gc.freeze()
        sup = Supervisor(
            settings,
            WorkerOptions(
                concurrency=workers,
                reaper_interval=RUN_REAPER_SECONDS,
                log_level=min(logging.getLogger().getEffectiveLevel(), logging.WARNING),
            ),
        )
        thread = threading.Thread(target=sup.run, name="supervisor", daemon=True)

        def stop_workers() -> None:
            sup.stopping.set()
            if thread.is_alive():
                thread.join(120)  # the supervisor drains and stops its workers
            else:
                sup.stop()  # a signal came between their fork and the supervisor's start

        stack.callback(stop_workers)  # before the fork: a signal at any point stops them
        sup.start()  # forked here, before any other thread exists
        thread.start()
        gio = GearmanIO.from_settings(settings)
        stack.callback(gio.close)
        result = submit_with_progress(
            settings, db, gio, paths, opts, err=err, quiet=False, every=progress_every
        )
        if not as_json:
            print_submit_result(result, opts, as_json=False, out=out)
        if result.batch_id is None:
            out.print("nothing to import")
            return int(ExitCode.ok)
        with BatchDisplay(err, progress_every) as display:
            _wait(db, gio, result.batch_id, display)
        # the courier's last pass, at most IMPORTER_MAIL_DEADLINE_SECONDS; then no e-mail
        # is under way, and what the summary says of them stays true
        stop_workers()
    batch = overview(db, result.batch_id).batches[0]
    mail = mail_state(db, result.batch_id)
    elapsed = time.monotonic() - started
    if as_json:
        summary = {**batch.to_json(), "seconds": round(elapsed, 2), "mail": mail.to_json()}
        out.print_json(json.dumps(summary))
    else:
        _print_summary(settings, batch, elapsed, out)
        for line in mail_lines(mail, settings.resolved_mail_url, notify):
            out.print(line, highlight=False, soft_wrap=True)
        for doc in documents(db, result.batch_id, None):
            if doc.failed:
                failure = f"{doc.status.value}: {doc.path}: {doc.error}"
                out.print("  " + printable(failure), highlight=False)
    return int(ExitCode.ok if batch.failed == 0 else ExitCode.some_failed)


def _print_summary(settings: Settings, batch: BatchStatus, elapsed: float, out: Console) -> None:
    out.print(
        Text.assemble(
            "\n",
            (f"batch {batch.id}", "bold"),
            f": {batch.done} of {batch.total} documents imported,"
            f" {batch.pages_done} pages, {batch.failed} failed, in {elapsed:.1f} s",
        )
    )
    out.print(f"details:  importer status {batch.id}")
    out.print(
        f"text:     importer export {batch.id} --format jsonl   (database: "
        f"{settings.resolved_database_url})"
    )
