"""The one retry policy: its numbers, its cap, its jitter, and the policies that use it."""

from __future__ import annotations

import pytest

from importer.backoff import Backoff, Jitter
from importer.db.lifecycle import DOCUMENT_RETRY
from importer.db.retry import RETRY
from importer.outbox import MAIL_RETRY
from workers.loop import RECONNECT
from workers.supervisor import RESTART


def test_each_wait_doubles_up_to_the_cap() -> None:
    policy = Backoff(base=0.5, cap=30.0)
    assert [policy.delay(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


def test_a_negative_attempt_waits_the_base() -> None:
    assert Backoff(base=0.5, cap=30.0).delay(-3) == 0.5


def test_any_number_of_failures_waits_the_cap() -> None:
    policy = Backoff(base=30.0, cap=3600.0)
    assert policy.delay(7) == policy.delay(10_000) == policy.delay(10**9) == 3600.0


def test_another_factor() -> None:
    assert [Backoff(base=1.0, cap=100.0, factor=3.0).delay(n) for n in range(5)] == [
        1,
        3,
        9,
        27,
        81,
    ]


def test_full_jitter_stays_between_zero_and_the_wait() -> None:
    policy = Backoff(base=5.0, cap=600.0, jitter=Jitter.full)
    waits = [policy.delay(3) for _ in range(2000)]
    assert all(0.0 <= w <= 40.0 for w in waits)
    assert min(waits) < 4.0 and max(waits) > 36.0  # spread over the whole range


def test_spread_jitter_stays_within_a_fifth() -> None:
    policy = Backoff(base=0.2, cap=5.0, jitter=Jitter.spread)
    waits = [policy.delay(2) for _ in range(2000)]
    assert all(0.64 <= w <= 0.96 for w in waits)
    assert min(waits) < 0.7 and max(waits) > 0.9


@pytest.mark.parametrize(
    ("policy", "ceilings"),
    [
        (DOCUMENT_RETRY, [2, 4, 8, 16, 32, 64, 128, 256, 512]),  # a document's next attempt
        (RETRY, [0.2, 0.4, 0.8, 1.6, 3.2, 5, 5, 5, 5]),  # waiting out the database
        (MAIL_RETRY, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]),  # an e-mail not sent
        (RECONNECT, [0.5, 1, 2, 4, 8, 16, 30, 30, 30]),  # a worker reconnecting to gearmand
        (RESTART, [0.5, 1, 2, 4, 8, 16, 30, 30, 30]),  # a dead worker's restart
    ],
)
def test_the_policies_in_use(policy: Backoff, ceilings: list[float]) -> None:
    assert [policy.ceiling(n) for n in range(9)] == pytest.approx(ceilings)


def test_which_policies_spread_their_clients() -> None:
    assert DOCUMENT_RETRY.jitter is Jitter.full  # many documents failed together
    assert RETRY.jitter is Jitter.spread  # many workers lost the database together
    assert (MAIL_RETRY.jitter, RECONNECT.jitter, RESTART.jitter) == (Jitter.none,) * 3
