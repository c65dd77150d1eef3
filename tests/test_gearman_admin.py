"""The one admin text-protocol client, against a real gearmand: plain, and through stunnel."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from importer.certs import init_ca_dir
from importer.errors import GearmanUnavailable
from importer.gearman.address import Server, parse_host
from importer.gearman.admin import AdminRefused, admin_command
from importer.gearman.client import GearmanIO, JobSpec
from importer.gearman.connection import ServerError
from importer.gearman.server import GearmandProcess
from importer.gearman.stunnel import TlsGearmand, find_stunnel
from tests.gearmand_fixture import require_gearmand


def server_of(gearmand: GearmandProcess) -> Server:
    return Server(gearmand.listen, gearmand.port)


def test_one_line_answers_lose_their_ok(gearmand: GearmandProcess) -> None:
    assert admin_command(server_of(gearmand), "getpid") == [str(gearmand.pid)]
    assert admin_command(server_of(gearmand), "version") == ["1.1.20+ds"]


def test_listings_end_at_the_dot(gearmand: GearmandProcess) -> None:
    with GearmanIO([gearmand.address]) as gio:
        gio.submit_background([JobSpec("admin-1", b"x"), JobSpec("admin-2", b"y")])
    status = admin_command(server_of(gearmand), "status")
    assert "import\t2\t0\t0" in status
    assert "." not in status
    # every connection is listed, our own (which registered nothing) too
    assert admin_command(server_of(gearmand), "workers")[-1].endswith(" :")


def test_a_refused_command_is_told_apart_from_a_stranger(gearmand: GearmandProcess) -> None:
    with pytest.raises(AdminRefused, match="ERR"):
        admin_command(server_of(gearmand), "no such command")


@pytest.fixture
def stranger() -> Iterator[Server]:
    """Something on a port that answers a line, but not as gearmand does."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(64)
            conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    yield Server("127.0.0.1", listener.getsockname()[1])
    listener.close()
    thread.join(5)


def test_a_stranger_on_the_port_is_not_gearmand(stranger: Server) -> None:
    with pytest.raises(ServerError, match="not a gearmand answer") as raised:
        admin_command(stranger, "version")
    assert not isinstance(raised.value, AdminRefused)


def test_nothing_listening_is_a_server_error() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(ServerError):
        admin_command(Server("127.0.0.1", port), "version")


@pytest.fixture
def tls_gearmand(tmp_path: Path) -> Iterator[TlsGearmand]:
    require_gearmand()
    try:
        find_stunnel()
    except GearmanUnavailable as e:
        pytest.skip(e.message)
    init_ca_dir(tmp_path / "certs")
    with TlsGearmand(certs_dir=tmp_path / "certs", data_dir=tmp_path / "data") as server:
        yield server


def test_admin_through_mutual_tls(tls_gearmand: TlsGearmand) -> None:
    with_certificate = parse_host(tls_gearmand.host_entry())
    assert with_certificate.tls
    assert admin_command(with_certificate, "version", timeout=5.0) == ["1.1.20+ds"]
    assert admin_command(with_certificate, "workers", timeout=5.0)[-1].endswith(" :")

    plain = Server(tls_gearmand.dial_host, tls_gearmand.port)
    with pytest.raises(ServerError):
        admin_command(plain, "version", timeout=5.0)
