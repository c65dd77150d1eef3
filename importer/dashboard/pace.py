"""How fast a batch goes and when it will be done, as the dashboard watches it.

Each time a batch is shown its counts (`importer.status.BatchStatus`) are added to a
sliding window of samples (`importer.progress.Rate`): the rates are the recent ones, seen
by this process, and the estimate divides the pages left (`remaining`) by the recent pages
a second. A finished batch shows its averages over its whole run instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import select

from importer.db.engine import Database
from importer.db.models import Document
from importer.progress import Rate, Remaining, eta_seconds
from importer.states import DocStatus
from importer.status import BatchStatus

# a batch nobody has looked at for this long is forgotten
FORGET_SECONDS = 600.0
RUNNING_READ = 1000  # running documents read for the estimate (a fleet runs fewer)


@dataclass(frozen=True)
class Pace:
    docs_per_second: float | None
    pages_per_second: float | None
    eta_seconds: float | None  # None: finished, or not enough seen yet to tell


@dataclass
class _Watch:
    pages: Rate
    documents: Rate
    seen: float


class PaceMeter:
    """Recent rates per batch; shared by the dashboard's request threads."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._watched: dict[str, _Watch] = {}
        self._lock = threading.Lock()

    def paces(self, db: Database, batches: Iterable[BatchStatus]) -> list[tuple[BatchStatus, Pace]]:
        return [(batch, self.observe(db, batch)) for batch in batches]

    def observe(self, db: Database, batch: BatchStatus) -> Pace:
        finished = batch.done + batch.failed
        if batch.finished_at is not None:
            seconds = (batch.finished_at - batch.created_at).total_seconds()
            return Pace(_per(finished, seconds), _per(batch.pages_done, seconds), None)
        left = remaining(db, batch)
        with self._lock:
            now = self._clock()
            watch = self._watched.get(batch.id) or _Watch(Rate(), Rate(), now)
            self._watched[batch.id] = watch
            watch.seen = now
            watch.pages.add(now, batch.pages_done)
            watch.documents.add(now, finished)
            pages, documents = watch.pages.per_second(), watch.documents.per_second()
            for key in [k for k, w in self._watched.items() if w.seen < now - FORGET_SECONDS]:
                del self._watched[key]
        return Pace(documents, pages, eta_seconds(left, pages))


def remaining(db: Database, batch: BatchStatus) -> Remaining:
    """What is left of an unfinished batch, from the counts already read and the pages of
    its running documents (ix_documents_batch_status_pages): the batch is not counted again.
    Pages per document are the mean over the documents done and the running ones counted."""
    running = (
        select(Document.pages_done, Document.pages)
        .where(Document.batch_id == batch.id, Document.status == DocStatus.running)
        .limit(RUNNING_READ)
    )
    with db.session() as s:
        rows = s.execute(running).all()
    counted = [(done, pages) for done, pages in rows if pages is not None]
    done_pages = max(batch.pages_done - sum(done for done, _ in rows), 0)
    counted_documents = batch.done + len(counted)
    counted_pages = done_pages + sum(pages for _, pages in counted)
    unfinished = batch.queued + batch.running
    return Remaining(
        documents=unfinished,
        pages_left=sum(max(pages - done, 0) for done, pages in counted),
        uncounted=unfinished - len(counted),
        mean_pages=counted_pages / counted_documents if counted_documents else None,
    )


def _per(count: int, seconds: float) -> float | None:
    return count / seconds if seconds > 0 else None
