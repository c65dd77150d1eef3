"""How values read in the reports a person gets: counts, durations, times, outside text.

File names and error texts come from the files being imported, so they are treated as
hostile wherever they are shown: `printable` writes out what could forge a line or hide
text (controls, bidi overrides, zero-width marks, surrogates) as escapes, in the plain
text and the HTML part of an e-mail alike.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime

_UNSAFE_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}


def printable(text: str) -> str:
    """Escape what could forge a line or hide text: controls, bidi overrides, surrogates.

    Surrogates matter too: file names read with surrogateescape carry them, and they
    cannot be encoded into the UTF-8 body at all. Newlines and tabs are escaped too: the
    result is always one line (a terminal's status row, a search hit, an e-mail line).
    """
    if text.isprintable():  # nothing of those categories (nor any other space but " ")
        return text
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch) in _UNSAFE_CATEGORIES
        else ch
        for ch in text
    )


def printable_lines(text: str) -> list[str]:
    """An error's own lines, each made printable: kept apart, never joined into one."""
    return [printable(line) for line in text.splitlines()] or [""]


def multiline(text: str, *, indent: str) -> str:
    """Keep an error's own line breaks, indented so they cannot pass for a new entry."""
    return ("\n" + indent).join(printable_lines(text))


def count(number: int) -> str:
    """1234567 as '1,234,567': a large batch's figures read at a glance."""
    return f"{number:,}"


def format_duration(seconds: float) -> str:
    """Render a duration the way a person says it: '45 s', '3 min 12 s', '2 h 5 min'."""
    if seconds < 1:
        return "under 1 s"
    total = round(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def aware(moment: datetime) -> datetime:
    """The database hands back naive UTC times (SQLite); treat them as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def when(moment: datetime) -> str:
    return aware(moment).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
