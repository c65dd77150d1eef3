"""GearmanIO, our client of gearmand: pipelined background submits, status by unique, admin.

Speaks the binary protocol (http://gearman.org/protocol/) on its own sockets rather than
through pygearman's client, for two reasons measured against gearmand 1.1.20:

- pygearman matches JOB_CREATED replies to requests by position but drops ERROR replies
  without consuming a request, so after one refused submit in a pipeline every later job
  gets its neighbour's handle (seen: job 2 refused, job 2 recorded with job 3's handle, job 4
  timed out although gearmand had queued it).
- pygearman has no GET_STATUS_UNIQUE (41/42), and its connect has no timeout.

Workers still use pygearman (`workers/`); TLS servers are given the same way as to pygearman
(dicts with host, port, keyfile, certfile, ca_certs) and wrapped the same way
(`tlscontext`).

Not thread-safe: give each thread its own GearmanIO.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from importer.errors import GearmanUnavailable
from importer.gearman.address import Server, host_list, parse_host
from importer.gearman.admin import ask
from importer.gearman.connection import (
    ERROR,
    JOB_CREATED,
    STATUS_RES_UNIQUE,
    Connection,
    ServerError,
    ServerTimeout,
    pack,
)
from importer.states import Priority

if TYPE_CHECKING:
    from importer.config import Settings

log = logging.getLogger(__name__)

FUNCTION = b"import"
# Requests per round trip to one server; their replies (~20 bytes each) stay well inside
# socket buffers, so every server's group can be on the wire before any reply is read.
GROUP_SIZE = 500
# gearmand 1.1.20 queues a 64-byte unique but never answers GET_STATUS_UNIQUE for it.
MAX_UNIQUE_BYTES = 63
# Seconds a failed server gets no jobs (unless no other is left), so one dead host does not
# slow down every call; after that it is tried again, and used again if it answers.
RETRY_DOWN_AFTER = 5.0
FIX = (
    "start gearmand (`importer gearmand`) or point IMPORTER_GEARMAN_SERVERS at a running one; "
    "`importer doctor` checks the connection"
)

GET_STATUS_UNIQUE = 41
_SUBMIT_BG = {Priority.high: 32, Priority.normal: 18, Priority.low: 34}

T = TypeVar("T")


@dataclass(frozen=True)
class JobSpec:
    """One background job; `unique` is our durable job ID (gearmand's handles restart at 1)."""

    unique: str
    data: bytes
    priority: Priority = Priority.normal

    def __post_init__(self) -> None:
        _check_unique(self.unique)


@dataclass(frozen=True)
class UniqueStatus:
    """gearmand's view of one job: known=False once a background job has finished (or never was)."""

    unique: str
    known: bool
    running: bool
    numerator: int
    denominator: int
    waiting: int  # clients waiting for the result: always 0 for background jobs


@dataclass(frozen=True)
class ServerHealth:
    address: str
    reachable: bool
    version: str | None
    error: str | None


@dataclass(frozen=True)
class FunctionStatus:
    function: str
    queued: int  # jobs on the server, running ones included (gearmand counts them so)
    running: int
    workers: int


class SubmitIncomplete(GearmanUnavailable):
    """Some jobs were queued and some were not: the caller records the handles it did get."""

    def __init__(self, message: str, accepted: dict[str, str], rejected: list[str]) -> None:
        super().__init__(message)
        self.accepted = accepted
        self.rejected = rejected


def _check_unique(unique: str) -> None:
    raw = unique.encode()
    if not raw or len(raw) > MAX_UNIQUE_BYTES or b"\0" in raw:
        raise ValueError(
            f"a job unique is 1 to {MAX_UNIQUE_BYTES} bytes without NUL, got {unique!r}"
        )


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class GearmanIO:
    """Client of every configured gearmand, with one lazily opened connection per server."""

    def __init__(self, hosts: list[str | dict[str, Any]], timeout: float = 10.0) -> None:
        if not hosts:
            raise ValueError("no gearmand given")
        self.servers = [parse_host(host) for host in hosts]
        self.timeout = timeout
        self._conns: dict[Server, Connection] = {}
        self._down_until: dict[Server, float] = {}
        # Jobs are dealt in turn from here; a random start spreads short runs over the servers.
        self._next = random.randrange(len(self.servers))

    @classmethod
    def from_settings(cls, settings: Settings) -> GearmanIO:
        return cls(host_list(settings))

    @property
    def addresses(self) -> str:
        return ", ".join(server.address for server in self.servers)

    # Connections -----------------------------------------------------------------------

    def _call(self, server: Server, action: Callable[[Connection], T]) -> T:
        """Run `action` on the server's connection; a cached one that breaks is reopened once.

        A cached connection dies silently when gearmand restarts; every action is safe to
        repeat on the same server (a resubmitted unique joins the job it already queued).
        """
        conn = self._conns.get(server)
        if conn is not None:
            try:
                return action(conn)
            except ServerTimeout:
                self._drop(server)
                self._down_until[server] = time.monotonic() + RETRY_DOWN_AFTER
                raise
            except ServerError as e:
                log.debug("gearmand %s: reconnecting after %s", server.address, e)
                self._drop(server)
        try:
            conn = self._conns[server] = Connection(server, self.timeout)
            result = action(conn)
        except ServerError:
            self._drop(server)
            self._mark_down(server)
            raise
        self._down_until.pop(server, None)
        return result

    def _drop(self, server: Server) -> None:
        conn = self._conns.pop(server, None)
        if conn is not None:
            conn.close()

    def _mark_down(self, server: Server) -> None:
        self._down_until[server] = time.monotonic() + RETRY_DOWN_AFTER

    def _targets(self, spent: set[Server]) -> list[Server]:
        """The servers to deal jobs to: every one not spent and not failed lately; only
        when none is left, the ones that failed lately (they may be back)."""
        usable = [server for server in self.servers if server not in spent]
        now = time.monotonic()
        up = [server for server in usable if self._down_until.get(server, 0.0) <= now]
        return up or usable

    def _deal(self, jobs: Sequence[JobSpec], servers: list[Server]) -> dict[Server, list[JobSpec]]:
        """One job to each server in turn, continuing where the last call stopped."""
        shares: dict[Server, list[JobSpec]] = {server: [] for server in servers}
        for index, job in enumerate(jobs, self._next):
            shares[servers[index % len(servers)]].append(job)
        self._next += len(jobs)
        return {server: share for server, share in shares.items() if share}

    def close(self) -> None:
        for server in list(self._conns):
            self._drop(server)

    def __enter__(self) -> GearmanIO:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # Submitting ------------------------------------------------------------------------

    def submit_background(
        self, jobs: Sequence[JobSpec], function: bytes = FUNCTION
    ) -> dict[str, str]:
        """Queue background jobs spread over the live servers; return unique -> handle.

        Jobs are dealt to the servers one at a time in turn, so a short submit reaches every
        server and each server's queue keeps the jobs' order (largest documents first). Each
        server takes its share in pipelined groups of up to GROUP_SIZE, and every server's
        group is sent before any reply is read, so the servers work in parallel. A server
        that fails or refuses a job gets no more jobs in this call: what it did not take is
        dealt to the others. Raises SubmitIncomplete (a GearmanUnavailable, carrying the
        handles that were given) unless every job was accepted.
        """
        if not function or b"\0" in function:
            raise ValueError(f"a function name is non-empty bytes without NUL, got {function!r}")
        handles: dict[str, str] = {}
        problems: dict[str, str] = {}
        spent: set[Server] = set()  # not used again in this call: a dead host costs a timeout
        pending = list(jobs)
        while pending and (servers := self._targets(spent)):
            shares = self._deal(pending, servers)
            self._submit_shares(shares, function, handles, problems)
            spent.update(
                server
                for server, share in shares.items()
                if any(job.unique not in handles for job in share)
            )
            pending = [job for job in pending if job.unique not in handles]
        rejected = [job.unique for job in jobs if job.unique not in handles]
        if rejected:
            detail = "; ".join(f"{address}: {text}" for address, text in problems.items())
            raise SubmitIncomplete(
                f"{len(rejected)} of {len(jobs)} jobs were not accepted by any gearmand "
                f"({detail or self.addresses}): {FIX}",
                accepted=handles,
                rejected=rejected,
            )
        log.debug("queued %d background jobs of %r", len(jobs), function)
        return handles

    def _submit_shares(
        self,
        shares: dict[Server, list[JobSpec]],
        function: bytes,
        handles: dict[str, str],
        problems: dict[str, str],
    ) -> None:
        """Each round sends every server its next group, then reads the servers' replies.

        A connection opened earlier that breaks (gearmand restarted) is reopened once and
        the group's unanswered jobs sent again; a new one that fails, or any that times
        out, ends the server's part in this call and marks it down for RETRY_DOWN_AFTER.
        """
        groups = {server: list(_chunks(share, GROUP_SIZE)) for server, share in shares.items()}
        failed: set[Server] = set()
        for turn in range(max(map(len, groups.values()))):
            sent: list[tuple[Server, Connection, bool, list[JobSpec]]] = []
            for server, chunks in groups.items():
                if turn >= len(chunks) or server in failed:
                    continue
                conn = self._conns.get(server)
                reused = conn is not None
                try:
                    if conn is None:
                        conn = self._conns[server] = Connection(server, self.timeout)
                    todo = _send_jobs(conn, chunks[turn], function, handles)
                except ServerError as e:
                    if not self._resend(
                        server, reused, e, chunks[turn], function, handles, problems
                    ):
                        failed.add(server)
                else:
                    sent.append((server, conn, reused, todo))
            for server, conn, reused, todo in sent:
                try:
                    _read_created(conn, todo, handles, problems)
                except ServerError as e:
                    if not self._resend(server, reused, e, todo, function, handles, problems):
                        failed.add(server)
                else:
                    self._down_until.pop(server, None)

    def _resend(
        self,
        server: Server,
        reused: bool,
        error: ServerError,
        group: Sequence[JobSpec],
        function: bytes,
        handles: dict[str, str],
        problems: dict[str, str],
    ) -> bool:
        """After a pipelined group failed: whether a fresh connection took the rest of it."""
        self._drop(server)
        if reused and not isinstance(error, ServerTimeout):
            log.debug("gearmand %s: reconnecting after %s", server.address, error)
            submit = partial(
                self._submit, group=group, function=function, handles=handles, problems=problems
            )
            try:
                self._call(server, submit)
                return True
            except ServerError as e:
                error = e
        else:
            self._mark_down(server)
        problems[server.address] = str(error)
        log.warning("gearmand %s did not take jobs: %s", server.address, error)
        return False

    @staticmethod
    def _submit(
        conn: Connection,
        group: Sequence[JobSpec],
        function: bytes,
        handles: dict[str, str],
        problems: dict[str, str],
    ) -> None:
        _read_created(conn, _send_jobs(conn, group, function, handles), handles, problems)

    # Status ----------------------------------------------------------------------------

    def status_by_unique(self, uniques: Iterable[str]) -> dict[str, UniqueStatus]:
        """Ask every server about each unique (GET_STATUS_UNIQUE); known on any server wins.

        Unreachable servers are skipped with a warning (their jobs then read as unknown);
        GearmanUnavailable only when none answers.
        """
        wanted = list(dict.fromkeys(uniques))
        for unique in wanted:
            _check_unique(unique)
        merged = {u: UniqueStatus(u, False, False, 0, 0, 0) for u in wanted}
        if not wanted:
            return merged
        failures = self._each_server(
            lambda conn: self._statuses(conn, wanted, merged), what="job status"
        )
        if failures:
            log.warning("job status without %s", ", ".join(failures))
        return merged

    @staticmethod
    def _statuses(conn: Connection, wanted: list[str], merged: dict[str, UniqueStatus]) -> None:
        replies = []
        for group in _chunks(wanted, GROUP_SIZE):
            conn.send(b"".join(pack(GET_STATUS_UNIQUE, unique.encode()) for unique in group))
            for unique in group:
                command, args = conn.read_packet()
                if command != STATUS_RES_UNIQUE or args[0].decode(errors="replace") != unique:
                    raise ServerError(f"reply {command} {args[:1]!r} to GET_STATUS_UNIQUE {unique}")
                replies.append(
                    UniqueStatus(
                        unique=unique,
                        known=args[1] == b"1",
                        running=args[2] == b"1",
                        numerator=int(args[3] or 0),
                        denominator=int(args[4] or 0),
                        waiting=int(args[5] or 0),
                    )
                )
        for status in replies:  # merged only once the whole server answered
            merged[status.unique] = _merge(merged[status.unique], status)

    def _each_server(self, action: Callable[[Connection], None], what: str) -> list[str]:
        """Run `action` on every server; return the failures; raise if none succeeded."""
        failures = []
        for server in self.servers:
            try:
                self._call(server, action)
            except ServerError as e:
                failures.append(f"{server.address} ({e})")
        if len(failures) == len(self.servers):
            raise GearmanUnavailable(
                f"no gearmand answered for {what}: {', '.join(failures)}: {FIX}"
            )
        return failures

    # Admin text protocol ---------------------------------------------------------------

    def ping(self) -> list[ServerHealth]:
        """Each server's reachability and version (admin `version`); never raises."""
        health = []
        for server in self.servers:
            try:
                version = self._call(server, lambda conn: ask(conn, "version")[0])
                health.append(ServerHealth(server.address, True, version, None))
            except ServerError as e:
                health.append(ServerHealth(server.address, False, None, str(e)))
        return health

    def admin_status(self) -> dict[str, FunctionStatus]:
        """Admin `status` summed over the servers: function -> queued, running, workers."""
        totals: dict[str, FunctionStatus] = {}

        def collect(conn: Connection) -> None:
            for line in ask(conn, "status"):
                parts = line.split("\t")
                if len(parts) != 4:
                    raise ServerError(f"unexpected status line {line!r}")
                name, queued, running, workers = parts[0], *map(int, parts[1:])
                old = totals.get(name, FunctionStatus(name, 0, 0, 0))
                totals[name] = FunctionStatus(
                    name, old.queued + queued, old.running + running, old.workers + workers
                )

        failures = self._each_server(collect, what="admin status")
        if failures:
            log.warning("admin status without %s", ", ".join(failures))
        return totals

    def admin_workers(self) -> list[str]:
        """Admin `workers` lines, each prefixed with its server's address and a space.

        A line reads "FD IP CLIENT_ID : FUNCTION...", e.g. "127.0.0.1:4730 33 127.0.0.1 - : import".
        """
        lines: list[str] = []

        def collect(conn: Connection) -> None:
            lines.extend(f"{conn.server.address} {line}" for line in ask(conn, "workers"))

        failures = self._each_server(collect, what="admin workers")
        if failures:
            log.warning("admin workers without %s", ", ".join(failures))
        return lines


def _merge(a: UniqueStatus, b: UniqueStatus) -> UniqueStatus:
    """One status from two servers' answers: known beats unknown, running beats queued."""
    if not b.known:
        return a
    if not a.known:
        return b
    best = max(a, b, key=lambda s: (s.running, s.denominator, s.numerator))
    return replace(best, waiting=a.waiting + b.waiting)


def _send_jobs(
    conn: Connection, group: Sequence[JobSpec], function: bytes, handles: dict[str, str]
) -> list[JobSpec]:
    """Send the group's jobs that have no handle yet in one write; return those jobs."""
    todo = [job for job in group if job.unique not in handles]
    conn.send(
        b"".join(
            pack(_SUBMIT_BG[job.priority], function, job.unique.encode(), job.data) for job in todo
        )
    )
    return todo


def _read_created(
    conn: Connection, todo: Sequence[JobSpec], handles: dict[str, str], problems: dict[str, str]
) -> None:
    """Read one reply per job sent, in order: a handle for each job gearmand created."""
    for job in todo:
        command, args = conn.read_packet()
        if command == JOB_CREATED:
            handles[job.unique] = args[0].decode()
        elif command == ERROR:
            problems[conn.server.address] = f"{args[0].decode()} {args[1].decode(errors='replace')}"
            log.warning("gearmand %s refused job %s: %s", conn.server.address, job.unique, args[1])
        else:
            raise ServerError(f"reply {command} to a submit")
