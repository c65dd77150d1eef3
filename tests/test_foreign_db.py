"""Another client's documents in the database (`importer.db.foreign`) on SQLite and
PostgreSQL: a named batch made once however many jobs arrive at the same moment, filled
to its size and no further, done (with its one e-mail) only once full and finished."""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from importer.db import foreign, lifecycle, open_database
from importer.db.models import Batch, Document, Outbox
from importer.states import DocStatus, TextLayerMode

SIZE = 6


def arrival(n: int, batch: str = "scans-1", size: int = SIZE) -> foreign.Arrival:
    return foreign.Arrival(
        f"php-{n}", f"/srv/scans/{n}.pdf", "ops@example.com", batch, size, 10, "ab" * 32
    )


def test_jobs_arriving_together_make_one_batch_and_fill_it_to_its_size(
    database_url: str,
) -> None:
    db = open_database(database_url)
    start = threading.Barrier(SIZE + 2)
    results: dict[int, str | None] = {}

    def deliver(n: int) -> None:
        start.wait()
        results[n] = foreign.record(db, arrival(n), text_layer=TextLayerMode.auto)

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(SIZE + 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    refused = {n: why for n, why in results.items() if why is not None}
    assert len(refused) == 2, results
    assert all("already holds its 6 documents" in why for why in refused.values())
    with db.session() as s:
        assert s.scalars(select(Batch.total)).all() == [SIZE]
        assert s.scalar(select(func.count()).select_from(Document)) == SIZE


def test_a_named_batch_is_done_once_it_holds_its_size_and_all_are_finished(
    database_url: str,
) -> None:
    db = open_database(database_url)

    def run(n: int) -> None:
        assert foreign.record(db, arrival(n, size=3), text_layer=TextLayerMode.auto) is None
        claimed = lifecycle.claim(
            db,
            job_id=f"php-{n}",
            path=f"/srv/scans/{n}.pdf",
            email="ops@example.com",
            owner="w",
            lease_seconds=60,
        )
        assert isinstance(claimed, lifecycle.Claimed)
        lifecycle.finish(db, claimed.id, owner="w", status=DocStatus.done)

    def finished() -> tuple[bool, int]:
        with db.session() as s:
            closed = s.scalar(select(Batch.finished_at)) is not None
            return closed, s.scalar(select(func.count()).select_from(Outbox)) or 0

    run(1)
    run(2)
    assert finished() == (False, 0)  # two of three, both done: the batch is still open
    run(3)
    assert finished() == (True, 1)
    refused = foreign.record(db, arrival(4, size=3), text_layer=TextLayerMode.auto)
    assert refused is not None and "already holds its 3 documents" in refused
