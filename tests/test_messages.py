"""The messages between a worker, its document child and its fork server.

Both sides import one module; these tests send each message through both halves, decode
the examples the docstrings show, and feed the readers what a subverted child or a
broken fork server could send.
"""

from __future__ import annotations

import inspect
import os
import sys
import textwrap
import time

import pytest

from importer.states import PageSource, TextLayerMode
from workers import forkserver_messages as control
from workers import messages
from workers.document import (
    ChildCrashed,
    CorruptPdf,
    DocumentError,
    DocumentInfo,
    LanguageUnavailable,
    Limits,
    PageResult,
)
from workers.engine import _Child, _Watch
from workers.forkserver import ForkServer, ForkServerError
from workers.wire import MalformedMessage


def example(cls: type) -> bytes:
    """The literal example after `::` in a class's docstring."""
    block = (inspect.getdoc(cls) or "").split("::\n", 1)[1].lstrip("\n")
    return textwrap.dedent(block.split("\n\n", 1)[0]).encode()


REQUEST = messages.Request(
    path="/data/in/a.pdf",
    lang="eng+deu",
    limits=Limits(page_timeout=1.5, max_pages=7),
    skip=(1, 4),
    text_layer=TextLayerMode.keep,
    fd=3,
    archive_fd=4,
    log_level=10,
)
ENGINE_MESSAGES = [
    messages.Info(3),
    messages.Info(0),
    messages.Step(),
    messages.Page(2, "Dear Sir,\n\fnaïve ✓", PageSource.ocr, 91.25, 2.5, False),
    messages.Page(4, "", PageSource.ocr, None, 0.5, True),
    messages.Page(3, "", PageSource.text_layer, None, 0.0, False),
    messages.Done(),
    messages.Error("CorruptPdf", "the PDF's page tree is damaged"),
]


# Round trips ----------------------------------------------------------------------------


def test_request_round_trip() -> None:
    assert messages.Request.decode(REQUEST.encode()) == REQUEST


@pytest.mark.parametrize("message", ENGINE_MESSAGES, ids=repr)
def test_engine_message_round_trip(message: messages.Message) -> None:
    line = message.encode()
    assert line.endswith(b"\n") and line.count(b"\n") == 1  # one line, whatever the text
    assert messages.decode(line) == message


@pytest.mark.parametrize(
    "cls", [messages.Request, messages.Info, messages.Step, messages.Page, messages.Done]
)
def test_docstring_examples_decode_and_encode_back(cls: type) -> None:
    decode = messages.Request.decode if cls is messages.Request else messages.decode
    message = decode(example(cls))
    assert type(message) is cls
    assert decode(message.encode()) == message


def test_error_example_names_the_error_raised() -> None:
    error = messages.decode(example(messages.Error))
    assert isinstance(error, messages.Error)
    raised = error.exception()
    assert type(raised) is CorruptPdf and raised.reason == "the PDF's page tree is damaged"


def test_pages_and_info_convert_to_what_the_engine_yields() -> None:
    page = PageResult(5, "text", PageSource.text_layer, None, 0.25)
    assert messages.Page.of(page).result() == page
    blank = PageResult(6, "", PageSource.ocr, None, 0.5, blank=True)
    assert messages.Page.of(blank).result() == blank
    info = messages.decode(messages.Info(4).encode())
    assert isinstance(info, messages.Info) and DocumentInfo(info.pages) == DocumentInfo(4)


def test_an_error_subclass_travels_as_its_nearest_known_kind() -> None:
    class NoDanish(LanguageUnavailable):
        pass

    class Unheard(DocumentError):
        pass

    assert messages.Error.of(NoDanish("dan")) == messages.Error("LanguageUnavailable", "dan")
    assert messages.Error.of(Unheard("?")) == messages.Error("ChildCrashed", "?")


@pytest.mark.parametrize(
    "message",
    [
        control.Fork(),
        control.Kill(4242),
        control.Ready(4100),
        control.Forked(4242),
        control.ForkFailed("BlockingIOError: [Errno 11] try again"),
        control.Exited(4242, -9),
        control.Exited(4242, 0),
    ],
    ids=repr,
)
def test_fork_server_message_round_trip(message: control.Request | control.Report) -> None:
    decode = control.decode_request if message.key == "op" else control.decode_report
    assert decode(message.encode()) == message


@pytest.mark.parametrize(
    "cls",
    [control.Fork, control.Kill, control.Ready, control.Forked, control.ForkFailed, control.Exited],
)
def test_fork_server_docstring_examples_decode(cls: type[control.Request | control.Report]) -> None:
    decode = control.decode_request if cls.key == "op" else control.decode_report
    assert type(decode(example(cls))) is cls


# What a subverted child could send -----------------------------------------------------


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"not json", "engine message is not JSON"),
        (b"\xff\xfe{}", "engine message is not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "engine message is not JSON"),
        (b'["t", "info"]', "engine message is not a JSON object"),
        (b'"info"', "engine message is not a JSON object"),
        (b"{}", "engine message of unknown kind None"),
        (b'{"t": "pwn"}', "engine message of unknown kind 'pwn'"),
        (b'{"t": 1}', "engine message of unknown kind 1"),
        (b'{"t": "info"}', "engine message info lacks pages"),
        (b'{"t": "info", "pages": "3"}', "engine message info pages must be an integer"),
        (b'{"t": "info", "pages": 3.0}', "engine message info pages must be an integer"),
        (b'{"t": "info", "pages": true}', "engine message info pages must be an integer"),
        (b'{"t": "info", "pages": -1}', "engine message info pages must be at least 0"),
        (b'{"t": "info", "pages": 3, "x": 1}', "engine message info has unknown fields x"),
        (b'{"t": "done", "pages": 3}', "engine message done has unknown fields pages"),
        (
            b'{"t": "page", "number": 1, "text": "a", "source": "ocr", "confidence": 1,'
            b' "blank": false}',
            "engine message page lacks seconds",
        ),
        (
            b'{"t": "page", "number": 1, "text": "a", "source": "ocr", "confidence": 1,'
            b' "seconds": 1}',
            "engine message page lacks blank",
        ),
        (
            b'{"t": "page", "number": 1, "text": "a", "source": "ocr", "confidence": 1,'
            b' "seconds": 1, "blank": 0}',
            "engine message page blank must be true or false",
        ),
        (
            b'{"t": "page", "number": 0, "text": "a", "source": "ocr", "confidence": 1,'
            b' "seconds": 1, "blank": false}',
            "engine message page number must be at least 1",
        ),
        (
            b'{"t": "page", "number": 1, "text": ["a"], "source": "ocr", "confidence": 1,'
            b' "seconds": 1, "blank": false}',
            "engine message page text must be a string",
        ),
        (
            b'{"t": "page", "number": 1, "text": "a", "source": "pickle", "confidence": 1,'
            b' "seconds": 1, "blank": false}',
            "engine message page source must be one of 'ocr', 'text-layer'",
        ),
        (
            b'{"t": "page", "number": 1, "text": "a", "source": "ocr", "confidence": NaN,'
            b' "seconds": 1, "blank": false}',
            "engine message is not JSON",
        ),
        (
            b'{"t": "page", "number": 1, "text": "a", "source": "ocr", "confidence": 1e999,'
            b' "seconds": 1, "blank": false}',
            "engine message page confidence must be a finite number",
        ),
        (
            b'{"t": "page", "number": 1, "text": "a", "source": "ocr", "confidence": "high",'
            b' "seconds": 1, "blank": false}',
            "engine message page confidence must be a number",
        ),
        (b'{"t": "error", "kind": "SystemExit", "reason": "x"}', "unknown kind 'SystemExit'"),
        (b'{"t": "error", "kind": "CorruptPdf", "reason": 7}', "error reason must be a string"),
    ],
)
def test_malformed_engine_messages_are_refused(line: bytes, error: str) -> None:
    with pytest.raises(MalformedMessage) as caught:
        messages.decode(line)
    assert error in str(caught.value)


def test_an_oversized_line_is_refused_before_parsing() -> None:
    line = b'{"t": "page", "text": "' + b"x" * messages.MAX_MESSAGE + b'"}'
    with pytest.raises(MalformedMessage, match="is over"):
        messages.decode(line)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"skip": [0]}, "skip must be a list of integers of at least 1"),
        ({"skip": "1,2"}, "skip must be a list of integers"),
        ({"text_layer": "never"}, "text_layer must be one of"),
        ({"fd": "3"}, "fd must be an integer"),
        ({"archive_fd": -1}, "archive_fd must be at least 0"),
        ({"limits": {"dpi": 300}}, "engine request limits lacks"),
        ({"log_level": None}, "log_level must be an integer"),
    ],
)
def test_malformed_requests_are_refused(change: dict[str, object], error: str) -> None:
    import json

    body = json.loads(REQUEST.encode())
    body.update(change)
    with pytest.raises(MalformedMessage, match=error):
        messages.Request.decode(json.dumps(body).encode())


def test_limits_of_the_wrong_type_are_refused() -> None:
    import json

    body = json.loads(REQUEST.encode())
    body["limits"]["max_pages"] = 7.5
    with pytest.raises(MalformedMessage, match="limits max_pages must be an integer"):
        messages.Request.decode(json.dumps(body).encode())


@pytest.mark.parametrize(
    ("data", "decode", "error"),
    [
        (b'{"op": "exec", "argv": ["sh"]}', control.decode_request, "unknown kind 'exec'"),
        (b'{"t": "fork"}', control.decode_request, "unknown kind None"),
        (b'{"op": "kill"}', control.decode_request, "request kill lacks pid"),
        (b'{"op": "kill", "pid": "1"}', control.decode_request, "pid must be an integer"),
        (b'{"op": "kill", "pid": -1}', control.decode_request, "pid must be at least 1"),
        (b'{"op": "kill", "pid": 0}', control.decode_request, "pid must be at least 1"),
        (b'{"t": "ready", "pid": "P"}', control.decode_report, "ready pid must be an integer"),
        (b'{"t": "forked"}', control.decode_report, "forked lacks pid"),
        (b'{"t": "exit", "pid": 9}', control.decode_report, "exit lacks status"),
        (b'{"t": "exit", "pid": 9, "status": 1.5}', control.decode_report, "must be an integer"),
        (b'{"t": "error", "reason": null}', control.decode_report, "reason must be a string"),
        (b'{"op": "fork"}', control.decode_report, "unknown kind None"),
        (b"{", control.decode_report, "fork server message is not JSON"),
        (b"x" * (control.MAX_CONTROL + 1), control.decode_report, "is over"),
    ],
)
def test_malformed_fork_server_messages_are_refused(
    data: bytes, decode: object, error: str
) -> None:
    with pytest.raises(MalformedMessage) as caught:
        decode(data)  # type: ignore[operator]
    assert error in str(caught.value)


# The readers in place --------------------------------------------------------------------


def watch_lines(*lines: bytes) -> list[object]:
    """What the worker makes of these lines from a document child (real pipes)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    os.write(out_w, b"".join(lines))
    os.close(out_w)
    os.close(err_w)
    with (
        open(os.devnull, "wb") as stdin,
        open(out_r, "rb", buffering=0) as stdout,
        open(err_r, "rb", buffering=0) as stderr,
    ):
        child = _Child(None, 0, stdin, stdout, stderr)  # type: ignore[arg-type]
        child.returncode = 0  # as if reaped: nothing to wait for
        limits = Limits(page_timeout=5, document_timeout=5)
        return list(_Watch(child, limits, frozenset()).run())


def test_the_worker_relays_a_childs_lines_as_results() -> None:
    page = messages.Page(1, "hello", PageSource.ocr, 88.0, 1.0, False)
    got = watch_lines(
        messages.Info(1).encode(), messages.Step().encode(), page.encode(), messages.Done().encode()
    )
    assert got == [DocumentInfo(1), page.result()]


def test_the_worker_raises_the_error_a_child_reports() -> None:
    with pytest.raises(CorruptPdf, match="damaged"):
        watch_lines(messages.Info(2).encode(), messages.Error("CorruptPdf", "damaged").encode())


@pytest.mark.parametrize(
    "line",
    [
        b'{"t": "info", "pages": "many"}\n',
        b'{"t": "page", "number": 1}\n',
        b'{"t": "eval", "code": "1"}\n',
        b"\x00\x01garbage\n",
    ],
)
def test_a_subverted_childs_line_fails_the_document_as_a_crash(line: bytes) -> None:
    with pytest.raises(ChildCrashed, match="worker child sent a malformed message"):
        watch_lines(messages.Info(2).encode(), line)


def fake_fork_server(send: bytes) -> ForkServer:
    """A process on the control socket that sends `send` where `ready` belongs."""
    script = (
        "import socket, sys, time\n"
        "s = socket.socket(fileno=int(sys.argv[1]))\n"
        f"s.send({send!r})\n"
        "time.sleep(30)\n"
    )
    return ForkServer([sys.executable, "-c", script], dict(os.environ))


@pytest.mark.parametrize(
    "greeting",
    [b'{"t": "ready", "pid": "me"}', b'{"t": "ready"}', b"[]", b'{"t": "ready", "pid": 1}'],
)
def test_the_worker_refuses_a_fork_server_that_greets_wrongly(greeting: bytes) -> None:
    server = fake_fork_server(greeting)
    try:
        with pytest.raises(ForkServerError, match="fork server (sent a malformed|said)"):
            server.start_child([0, 1, 2])
    finally:
        server.discard()


def test_the_fork_server_stops_on_a_malformed_request() -> None:
    from workers import engine

    engine.stop_forkserver()
    try:
        server = engine._forkserver()
        assert server._receive(time.monotonic() + 30) == control.Ready(server.pid)
        server.sock.send(b'{"op": "kill", "pid": "everyone"}')
        assert server.proc.wait(30) == 2
    finally:
        engine.stop_forkserver()
