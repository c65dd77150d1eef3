"""What every page of the dashboard is handed: settings, database, templates, pace meter,
the search slots and the gearmand probes' last result; and its checks of parameters."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.templating import Jinja2Templates

from importer.config import Settings
from importer.dashboard.limits import Recent, Slots
from importer.dashboard.pace import PaceMeter
from importer.db.engine import Database
from importer.doctor import Check

MAX_ID = 2**63 - 1  # the largest id or page number a database column holds
MAX_DIGITS = len(str(MAX_ID))  # 19
SEARCHES_AT_ONCE = 2
PROBE_REUSE_SECONDS = 10.0


@dataclass(frozen=True)
class Dashboard:
    settings: Settings
    db: Database  # read-only connections (importer.dashboard.readonly)
    templates: Jinja2Templates
    pace: PaceMeter
    searches: Slots = field(default_factory=lambda: Slots(SEARCHES_AT_ONCE))
    exposure: Recent[list[Check]] = field(default_factory=lambda: Recent(PROBE_REUSE_SECONDS))


def dashboard(request: Request) -> Dashboard:
    found = request.app.state.dashboard
    assert isinstance(found, Dashboard)
    return found


def int_param(request: Request, name: str) -> int | None:
    """A query parameter that must be a non-negative whole number, when given."""
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    digits = value.isascii() and value.isdigit() and len(value) <= MAX_DIGITS
    if not digits or int(value) > MAX_ID:
        raise HTTPException(400, f"{name}={value[:40]!r} is not a page position (a number)")
    return int(value)


def has_control(text: str) -> bool:
    """Whether `text` holds a control character (NUL, a newline, ...): no batch id does,
    and PostgreSQL refuses a NUL in a query's text."""
    return any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text)
