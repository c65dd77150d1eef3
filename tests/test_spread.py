"""Several gearmand servers: jobs spread over every live one, a worker serves them all.

Real gearmand processes on free ports; each server's share is read from its own admin
`status`, so nothing here trusts the submitter's own account of where jobs went.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from importer import submit
from importer.db import Document, open_database
from importer.db.engine import Database
from importer.gearman import client
from importer.gearman.client import GearmanIO, JobSpec
from importer.gearman.server import GearmandProcess
from importer.states import DocStatus
from tests.conftest import SAMPLES, importer, submit_json
from tests.test_submit_partial import (  # noqa: F401  (crash: a fixture)
    EMAIL,
    KEYRING,
    Crash,
    crash,
    held_jobs,
    pdfs,
)

Factory = Callable[..., GearmandProcess]


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return open_database(f"sqlite:///{tmp_path / 'importer.db'}")


def queued_on(server: GearmandProcess) -> int:
    """Jobs this one server holds, from its admin `status`."""
    with GearmanIO([server.address], timeout=5) as gio:
        function = gio.admin_status().get("import")
    return function.queued if function else 0


def run_submit(db: Database, servers: list[GearmandProcess], folder: Path) -> int:
    """`importer submit` as the CLI runs it: a GearmanIO of its own for one run."""
    with GearmanIO([s.address for s in servers], timeout=5) as gio:
        result = submit.submit(db, gio, KEYRING, [str(folder)], submit.SubmitOptions(email=EMAIL))
    return result.submitted


def queued_with_handles(db: Database) -> int:
    with db.session() as s:
        docs = list(s.scalars(select(Document)))
    assert all(d.status == DocStatus.queued for d in docs)
    return sum(bool(d.gearman_handle and d.enqueued_at) for d in docs)


@pytest.mark.parametrize("count", [2, 3])
def test_a_short_submit_puts_jobs_on_every_server(
    db: Database, gearmand_factory: Factory, tmp_path: Path, count: int
) -> None:
    servers = [gearmand_factory() for _ in range(count)]
    assert run_submit(db, servers, pdfs(tmp_path / "in", 30)) == 30
    shares = [queued_on(s) for s in servers]
    assert sum(shares) == 30
    assert min(shares) >= 0.6 * 30 / count, shares  # each at least 60% of an even share
    assert queued_with_handles(db) == 30


def test_one_job_at_a_time_still_reaches_every_server(gearmand_factory: Factory) -> None:
    one, two = gearmand_factory(), gearmand_factory()
    with GearmanIO([one.address, two.address]) as gio:
        for n in range(10):
            gio.submit_background([JobSpec(f"single-{n}", b"x")])
    assert (queued_on(one), queued_on(two)) == (5, 5)


def test_a_stopped_server_gets_nothing_and_a_restarted_one_is_used_again(
    db: Database, gearmand_factory: Factory, tmp_path: Path
) -> None:
    up, down = gearmand_factory(), gearmand_factory()
    down.stop()
    assert run_submit(db, [up, down], pdfs(tmp_path / "first", 30)) == 30
    assert (queued_on(up), queued_with_handles(db)) == (30, 30)

    down.start()  # the same port and queue file
    started = time.monotonic()
    folder = tmp_path / "second"
    folder.mkdir()
    for n in range(30):
        (folder / f"again-{n:03d}.pdf").write_bytes(b"%%PDF-1.4\n%% again %d\n" % n)
    assert run_submit(db, [up, down], folder) == 30
    assert time.monotonic() - started < client.RETRY_DOWN_AFTER
    assert queued_on(down) >= 30 * 0.3
    assert queued_on(up) + queued_on(down) == 60
    assert queued_with_handles(db) == 60


def test_a_long_lived_client_skips_a_down_server_then_uses_it_again(
    gearmand_factory: Factory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "RETRY_DOWN_AFTER", 2.0)
    up, down = gearmand_factory(), gearmand_factory()
    down.stop()
    jobs = (JobSpec(f"job-{n:03d}", b"x") for n in range(1000))
    with GearmanIO([up.address, down.address], timeout=5) as gio, caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert len(gio.submit_background([next(jobs) for _ in range(10)])) == 10
        down.start()
        came_back = time.monotonic()
        assert len(gio.submit_background([next(jobs) for _ in range(10)])) == 10
        assert queued_on(down) == 0  # still within RETRY_DOWN_AFTER of its failure
        while queued_on(down) == 0:
            assert time.monotonic() - came_back < client.RETRY_DOWN_AFTER + 1.0
            gio.submit_background([next(jobs) for _ in range(10)])
            time.sleep(0.1)
        assert len(gio.submit_background([next(jobs) for _ in range(10)])) == 10
    attempts = [r for r in caplog.records if f"gearmand {down.address} did not" in r.getMessage()]
    assert len(attempts) == 1  # tried once while it was down, not on every call


def test_a_restarted_server_is_reconnected_not_skipped(gearmand_factory: Factory) -> None:
    one, two = gearmand_factory(), gearmand_factory()
    with GearmanIO([one.address, two.address], timeout=5) as gio:
        gio.submit_background([JobSpec(f"before-{n}", b"x") for n in range(10)])
        two.kill()
        two.restart()  # the cached connection is dead; the server is not
        gio.submit_background([JobSpec(f"after-{n}", b"x") for n in range(10)])
    assert (queued_on(one), queued_on(two)) == (10, 10)


@pytest.mark.parametrize("on_send", [1, 2])
def test_a_server_dying_mid_group_keeps_its_jobs_and_the_rest_go_to_the_other(
    db: Database,
    gearmand_factory: Factory,
    crash: Callable[..., Crash],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    on_send: int,
) -> None:
    monkeypatch.setattr(submit, "GROUP_SIZE", 10)  # 5 jobs a server per round trip
    up, dying = gearmand_factory(), gearmand_factory()
    plan = crash(dying, on_send=on_send, after=2)  # on a new connection, or one in use
    assert run_submit(db, [up, dying], pdfs(tmp_path / "in", 40)) == 40
    assert plan.fired
    assert queued_with_handles(db) == 40
    dying.start()  # the same durable queue: exactly the jobs it acknowledged
    on_dying, on_up = held_jobs(dying), held_jobs(up)
    assert len(on_dying) == 5 * (on_send - 1) + 2
    assert len(on_up) == 40 - len(on_dying)
    with db.session() as s:
        assert set(s.scalars(select(Document.job_id))) == set(on_dying) | set(on_up)


def test_one_worker_drains_every_server(gearmand_factory: Factory, tmp_path: Path) -> None:
    one, two = gearmand_factory(), gearmand_factory()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    born = (SAMPLES / "born_digital.pdf").read_bytes()
    for n in range(6):  # distinct files (a comment after %%EOF), each with a real text layer
        (inbox / f"born-{n}.pdf").write_bytes(born + b"%% copy %d\n" % n)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPORTER_")}
    env.update(
        IMPORTER_DATA_DIR=str(tmp_path / "data"),
        IMPORTER_GEARMAN_SERVERS=f"{one.address},{two.address}",
        IMPORTER_SECRET_KEYS="k1:" + secrets.token_hex(16),
        IMPORTER_ALLOWED_ROOTS=str(tmp_path),
    )
    batch = submit_json(inbox, env)["batch_id"]
    assert (queued_on(one), queued_on(two)) == (3, 3)

    importer("worker", "--burst", "--concurrency", "1", env=env, check=True, timeout=300)

    assert (queued_on(one), queued_on(two)) == (0, 0)
    status = json.loads(importer("status", batch, "--json", env=env, check=True).stdout)
    assert [d["status"] for d in status["documents"]] == ["done"] * 6
