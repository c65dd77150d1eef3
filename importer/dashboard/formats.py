"""How numbers, rates and durations read on the dashboard (Jinja filters); rates and
durations read as on the terminal (`importer.progress`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from importer.progress import format_duration, format_rate

NONE = "—"


def count(value: int | None) -> str:
    """1234567 -> "1,234,567"."""
    return NONE if value is None else f"{value:,}"


def when(value: datetime | None) -> str:
    """UTC, to the second: "2026-01-01 12:00:00 UTC"."""
    return NONE if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f} %" if whole else NONE


FILTERS: dict[str, Callable[..., Any]] = {
    "count": count,
    "rate": format_rate,
    "duration": format_duration,
    "when": when,
    "percent": percent,
}
