"""Where a gearmand is: one parser, one formatter and one loopback test for every caller."""

from __future__ import annotations

from pathlib import Path

import pytest

from importer.config import Settings
from importer.gearman.address import (
    DEFAULT_PORT,
    format_address,
    host_list,
    is_loopback,
    parse_host,
    split_address,
)
from importer.mail import SmtpTarget


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("127.0.0.1:4730", ("127.0.0.1", 4730)),
        ("gearman.example.org:4731", ("gearman.example.org", 4731)),
        ("[::1]:4732", ("::1", 4732)),
        ("[fe80::1%eth0]:1", ("fe80::1%eth0", 1)),
        ("localhost", ("localhost", DEFAULT_PORT)),
        ("[::1]", ("::1", DEFAULT_PORT)),
        ("::1", ("::1", DEFAULT_PORT)),  # an IPv6 address alone, not host ":" port 1
        ("2001:db8::7", ("2001:db8::7", DEFAULT_PORT)),
    ],
)
def test_entries_parse_with_the_default_port(entry: str, expected: tuple[str, int]) -> None:
    assert split_address(entry) == expected
    assert parse_host(entry).host == expected[0] and parse_host(entry).port == expected[1]


@pytest.mark.parametrize(
    ("host", "port", "text"),
    [
        ("127.0.0.1", 4730, "127.0.0.1:4730"),
        ("gearman.example.org", 1, "gearman.example.org:1"),
        ("::1", 4730, "[::1]:4730"),
        ("2001:db8::7", 65535, "[2001:db8::7]:65535"),
    ],
)
def test_format_and_parse_round_trip(host: str, port: int, text: str) -> None:
    assert format_address(host, port) == text
    assert split_address(text) == (host, port)
    assert split_address(text, default_port=None) == (host, port)
    assert parse_host(text).address == text
    assert SmtpTarget(host, port).address == text


def test_a_required_port_is_the_last_group_even_without_brackets() -> None:
    settings = Settings(gearman_servers="[::1]:4730, ::1:4731,gearman.example.org:9")
    assert settings.servers == [("::1", 4730), ("::1", 4731), ("gearman.example.org", 9)]
    assert host_list(settings) == ["[::1]:4730", "[::1]:4731", "gearman.example.org:9"]


@pytest.mark.parametrize(
    "entry", ["localhost", "[::1]", "::1", ":4730", "[::1]x", "[::1", "h:0", "h:65536", "h:x"]
)
def test_entries_without_a_usable_port_are_refused_where_one_is_required(entry: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        split_address(entry, default_port=None)
    with pytest.raises(ValueError, match="host:port"):
        Settings(gearman_servers=entry)


@pytest.mark.parametrize("entry", [":4730", "h:0", "h:65536", "h:x", "[::1]x"])
def test_malformed_entries_are_refused_even_with_a_default(entry: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        split_address(entry)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("127.255.255.254", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("10.0.0.1", False),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("gearman.example.org", False),  # names are not looked up: remote unless localhost
        ("", False),
    ],
)
def test_one_loopback_answer_for_every_caller(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_everything_local_counts_all_of_127_as_loopback(tmp_path: Path) -> None:
    for servers, local in [
        ("127.0.0.2:4730", True),
        ("[::1]:4730", True),
        ("10.0.0.1:4730", False),
    ]:
        settings = Settings(data_dir=str(tmp_path), gearman_servers=servers)
        assert settings.everything_local is local, servers
