"""What `run`, `submit` and `status --watch` show while work is under way.

A batch's progress is read from the database (counts per state from its index, and the
running documents), with live page progress from gearmand for the running documents shown;
`Tracker` keeps the recent rates between readings (importer.progress). On a terminal it is
redrawn in place; anywhere else (a pipe, a log file, CI) it is one plain line every few
seconds, e.g.::

    batch 20260101-120000-a1b2c3: 120/500 documents, 1,830 pages, 14.2 pages/s, ETA 6m 10s, 2 failed

File names come from outside: shown on one line, through `importer.report_text.printable`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import PurePath
from types import TracebackType

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from sqlalchemy import func, select

from importer.db.engine import Database
from importer.db.models import Document
from importer.errors import ImporterError
from importer.gearman.client import GearmanIO
from importer.progress import Rate, Remaining, eta_seconds, format_duration, format_rate
from importer.report_text import printable
from importer.states import DocStatus

SHOWN_DOCUMENTS = 10  # running documents listed, then "and N more"
RUNNING_READ = 1000  # running documents read for the estimate (a fleet runs fewer)
PROGRESS_EVERY = 10.0  # seconds between plain lines when the output is not a terminal


@dataclass(frozen=True)
class RunningDocument:
    path: str
    job_id: str
    pages_done: int
    pages: int | None  # None until a worker has counted them


@dataclass(frozen=True)
class BatchProgress:
    """One batch at one moment. `running` holds the first SHOWN_DOCUMENTS running ones."""

    batch_id: str
    total: int
    finished: int  # done, failed or dead
    failed: int  # failed or dead
    pages_done: int
    remaining: Remaining
    running: tuple[RunningDocument, ...]
    running_total: int

    @property
    def pages_total(self) -> int | None:
        """The batch's pages, once every unfinished document has been counted."""
        if not self.remaining.pages_known:
            return None
        return self.pages_done + self.remaining.pages_left


@dataclass(frozen=True)
class Estimate:
    pages_per_second: float | None
    eta: float | None  # seconds


def read_progress(db: Database, batch_id: str, gio: GearmanIO | None) -> BatchProgress:
    """The batch's counts and running documents; with `gio`, live page progress of the
    running documents shown (a gearmand that does not answer leaves the database's). The
    counts and the work left are the database's alone, so that they agree."""
    with db.session() as s:
        per_state = {
            DocStatus(status): (int(count), int(pages))
            for status, count, pages in s.execute(
                select(
                    Document.status, func.count(), func.coalesce(func.sum(Document.pages_done), 0)
                )
                .where(Document.batch_id == batch_id)
                .group_by(Document.status)
            )
        }
        rows = s.execute(
            select(Document.path, Document.job_id, Document.pages_done, Document.pages)
            .where(Document.batch_id == batch_id, Document.status == DocStatus.running)
            .order_by(Document.id)
            .limit(RUNNING_READ)
        ).all()
    running = [RunningDocument(r.path, r.job_id, r.pages_done, r.pages) for r in rows]

    def n(*states: DocStatus) -> tuple[int, int]:
        counts = [per_state.get(state, (0, 0)) for state in states]
        return sum(c for c, _ in counts), sum(p for _, p in counts)

    done, done_pages = n(DocStatus.done)
    queued, _ = n(DocStatus.queued)
    failed, _ = n(DocStatus.failed, DocStatus.dead)
    running_total, _ = n(DocStatus.running)
    counted = [d for d in running if d.pages is not None]
    counted_docs = done + len(counted)
    counted_pages = done_pages + sum(d.pages or 0 for d in counted)
    remaining = Remaining(
        documents=queued + running_total,
        pages_left=sum(max((d.pages or 0) - d.pages_done, 0) for d in counted),
        uncounted=queued + running_total - len(counted),
        mean_pages=counted_pages / counted_docs if counted_docs else None,
    )
    shown = running[:SHOWN_DOCUMENTS]
    if gio is not None and shown:
        shown = _live(gio, shown)  # fresher than the database, for the lines shown only
    return BatchProgress(
        batch_id=batch_id,
        total=sum(c for c, _ in per_state.values()),
        finished=done + failed,
        failed=failed,
        pages_done=sum(p for _, p in per_state.values()),
        remaining=remaining,
        running=tuple(shown),
        running_total=running_total,
    )


def _live(gio: GearmanIO, docs: list[RunningDocument]) -> list[RunningDocument]:
    try:
        live = gio.status_by_unique(d.job_id for d in docs)
    except ImporterError:
        return docs
    out = []
    for d in docs:
        state = live.get(d.job_id)
        if state is not None and state.known and state.denominator:
            d = replace(d, pages_done=max(d.pages_done, state.numerator), pages=state.denominator)
        out.append(d)
    return out


class Tracker:
    """Recent page rates of batches, from one reading to the next."""

    def __init__(self) -> None:
        self._rates: dict[str, Rate] = {}

    def observe(self, p: BatchProgress, at: float) -> Estimate:
        rate = self._rates.setdefault(p.batch_id, Rate())
        rate.add(at, p.pages_done)
        per_second = rate.per_second()
        return Estimate(per_second, eta_seconds(p.remaining, per_second))


def summary_line(p: BatchProgress, est: Estimate) -> str:
    """The plain line: `batch ID: ` and the counts."""
    return f"batch {printable(p.batch_id)}: {counts(p, est)}"


def counts(p: BatchProgress, est: Estimate) -> str:
    pages = f"{p.pages_done:,}" if p.pages_total is None else f"{p.pages_done:,}/{p.pages_total:,}"
    return (
        f"{p.finished:,}/{p.total:,} documents, {pages} pages, "
        f"{format_rate(est.pages_per_second, 'pages')}, ETA {format_duration(est.eta)}, "
        f"{p.failed:,} failed"
    )


def document_lines(p: BatchProgress) -> list[Text]:
    """One line per running document shown, then how many more run."""
    lines = []
    for d in p.running:
        pages = "counting pages" if d.pages is None else f"page {d.pages_done}/{d.pages}"
        line = Text.assemble("  ", printable(PurePath(d.path).name), "  ", (pages, "cyan"))
        line.no_wrap, line.overflow = True, "ellipsis"
        lines.append(line)
    more = p.running_total - len(p.running)
    if more > 0:
        lines.append(Text(f"  and {more:,} more"))
    return lines


def block(
    p: BatchProgress, est: Estimate, elapsed: float | None = None, *, named: bool = False
) -> RenderableType:
    """What a terminal shows of a batch: its id when `named`, a bar with the counts (and
    the time since the start), then the running documents."""
    head = Table.grid(padding=(0, 1))
    head.add_row(
        ProgressBar(total=max(p.total, 1), completed=p.finished, width=20),
        Text(counts(p, est)),
        Text(format_duration(elapsed), style="dim") if elapsed is not None else "",
    )
    title = [Text(f"batch {printable(p.batch_id)}", style="bold")] if named else []
    return Group(*title, head, *document_lines(p))


class BatchDisplay:
    """A batch's progress on `console`: redrawn in place on a terminal, otherwise a plain
    line every `every` seconds."""

    def __init__(self, console: Console, every: float = PROGRESS_EVERY) -> None:
        self.console = console
        self.every = every
        self.started = time.monotonic()
        self.next_line = self.started + every
        self.live = Live(console=console, auto_refresh=False) if console.is_terminal else None

    def __enter__(self) -> BatchDisplay:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.live is not None:
            self.live.stop()

    def show(self, p: BatchProgress, est: Estimate, now: float, *, last: bool = False) -> None:
        """Redraw, or print a line when one is due (and always the `last` one)."""
        if self.live is not None:
            self.live.update(block(p, est, now - self.started), refresh=True)
        elif last or now >= self.next_line:
            self.console.print(summary_line(p, est), highlight=False, soft_wrap=True)
            self.next_line = now + self.every

    @property
    def wants_documents(self) -> bool:
        """Whether running documents are shown (worth asking gearmand about)."""
        return self.live is not None


class SubmitDisplay:
    """Files seen and queued, and files per second while `submit` walks and hashes: a
    transient spinner on a terminal, otherwise a plain line every `every` seconds."""

    def __init__(
        self,
        console: Console,
        every: float = PROGRESS_EVERY,
        *,
        quiet: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self.every = every
        self.clock = clock
        self.rate = Rate(min_span=1.0)
        self.started = self.last_sample = clock()
        self.next_line = self.started + every
        self.rate.add(self.started, 0)
        self.bar: Progress | None = None
        self.plain = not quiet and not console.is_terminal
        if not quiet and console.is_terminal:
            self.bar = Progress(
                SpinnerColumn(),
                TextColumn("submitting"),
                TextColumn("{task.fields[line]}"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            self.task = self.bar.add_task("submit", line="")

    def __enter__(self) -> Callable[[int, int], None]:
        if self.bar is not None:
            self.bar.start()
        return self.update

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.bar is not None:
            self.bar.stop()

    def update(self, seen: int, queued: int) -> None:
        now = self.clock()
        if now - self.last_sample >= 0.25:
            self.rate.add(now, seen)
            self.last_sample = now
        rate = format_rate(self.rate.per_second(), "files")
        line = f"{seen:,} files seen, {queued:,} queued, {rate}"
        if self.bar is not None:
            self.bar.update(self.task, line=line)
        elif self.plain and now >= self.next_line:
            self.console.print(f"submitting: {line}", highlight=False, soft_wrap=True)
            self.next_line = now + self.every
