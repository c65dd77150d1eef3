"""What every page of the dashboard is handed: settings, database, templates, pace meter."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.templating import Jinja2Templates

from importer.config import Settings
from importer.dashboard.pace import PaceMeter
from importer.db.engine import Database

MAX_ID = 2**63 - 1  # the largest id or page number a database column holds


@dataclass(frozen=True)
class Dashboard:
    settings: Settings
    db: Database  # read-only connections (importer.dashboard.readonly)
    templates: Jinja2Templates
    pace: PaceMeter


def dashboard(request: Request) -> Dashboard:
    found = request.app.state.dashboard
    assert isinstance(found, Dashboard)
    return found


def int_param(request: Request, name: str) -> int | None:
    """A query parameter that must be a non-negative whole number, when given."""
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    if not value.isdigit() or int(value) > MAX_ID:
        raise HTTPException(400, f"{name}={value[:40]!r} is not a page position (a number)")
    return int(value)
