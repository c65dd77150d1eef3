"""Search hits on a terminal: each page's path, number and rank, and its snippet with the
words found highlighted. Paths and snippets come from outside: every piece goes through
`printable` (one line each: controls, newlines, bidi and zero-width characters escaped),
and the highlights are laid on the pieces, never written as markup."""

from __future__ import annotations

import json
from collections.abc import Sequence

from rich.console import Console
from rich.text import Text

from importer.report_text import printable
from importer.search_hits import SearchHit

MATCH_STYLE = "bold yellow"


def snippet_text(hit: SearchHit) -> Text:
    """The snippet with its matches styled; a control character inside it is shown as an
    escape (several characters), so the text is built piece by piece, not offset-shifted."""
    out = Text()
    at = 0
    for start, end in hit.matches:
        out.append(printable(hit.snippet[at:start]))
        out.append(printable(hit.snippet[start:end]), style=MATCH_STYLE)
        at = end
    out.append(printable(hit.snippet[at:]))
    return out


def show(hits: Sequence[SearchHit], query: str, out: Console, *, as_json: bool) -> None:
    if as_json:
        # ASCII only, so no control character of a path or a page reaches the terminal
        out.file.write(json.dumps([h.to_json() for h in hits], indent=2, ensure_ascii=True) + "\n")
        return
    if not hits:
        out.print(Text.assemble("no page matches: ", printable(query)))
        return
    for hit in hits:
        out.print(
            Text.assemble(
                (printable(hit.path), "bold"),
                f"  page {hit.page}  rank {hit.rank:.3g}",
                ("  batch ", "dim"),
                (printable(hit.batch_id), "dim"),
            )
        )
        out.print(Text("  ").append_text(snippet_text(hit)))
