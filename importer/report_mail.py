"""The HTML part of the e-mails, rendered from the templates in importer/templates/mail.

Every value is escaped by Jinja2's autoescape, so a file named `<script>….pdf` or
`<img onerror=…>` arrives as text; the `printable` filter writes out control and bidi
characters first. Mail clients drop `<style>` blocks and fetch nothing safely, so the
templates carry inline styles only and reference no outside resource.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from importer.report_text import count, format_duration, printable, printable_lines, when

if TYPE_CHECKING:
    from jinja2 import Environment


@cache
def _environment() -> Environment:
    # loaded with the first e-mail: every worker imports this module, few send mail
    from jinja2 import Environment, PackageLoader, StrictUndefined

    environment = Environment(
        loader=PackageLoader("importer", "templates/mail"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        printable=printable,
        lines=printable_lines,
        count=count,
        duration=format_duration,
        when=when,
    )
    return environment


def render_html(template: str, **context: Any) -> str:
    """One template of importer/templates/mail, filled in: a whole HTML document."""
    return _environment().get_template(template).render(**context)
