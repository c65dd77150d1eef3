"""`importer search`: pages found through the full-text index (importer.db.page_search_ddl).

A query is words and "quoted phrases"; a page must hold every one of them (AND), a phrase
with its words in order. Nothing a person types is query syntax: each term goes to the
database as a quoted FTS5 string (SQLite) or through phraseto_tsquery (PostgreSQL), so
`NEAR(`, `*`, `-`, `:`, `OR`, a stray quote or an SQL quote are only words or separators.
Ranked with bm25 (SQLite) or ts_rank_cd normalized by length (PostgreSQL), among the
first RANK_CANDIDATES pages found. A query runs for at most SEARCH_SECONDS (a progress
handler on SQLite, statement_timeout on PostgreSQL): a pair of common words over millions
of pages would otherwise hold the command, or a dashboard request, for tens of seconds.
The snippet and where the words lie in it are worked
out here, on the page's text, folded as the index folds it.

    >>> search(db, 'muller "annual report"', batch_id="20261201-a1ca5d", limit=5)
    [SearchHit(path='/srv/scans/report.pdf', ..., page=2, rank=3.1,
               snippet='…Herrn Müller das Annual Report…', matches=((6, 12), (17, 23), ...))]
"""

from __future__ import annotations

import functools
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

from importer.db.engine import Database
from importer.db.page_search_ddl import FOLD, FTS_TABLE, VECTOR
from importer.errors import BadInput
from importer.search_hits import SearchHit

SNIPPET_CHARS = 160
LEAD_CHARS = 40  # context kept before the best match
MAX_TERMS = 32  # words, each word of a phrase counted
SEARCH_SECONDS = 5.0
# virtual machine steps between two looks at the clock: FTS5 matches a phrase inside one
# step of the query, reading its index through short statements of its own, and it is
# their steps that let a long phrase scan be stopped (about one look per 2 ms of a scan)
SQLITE_CHECK_EVERY = 100
QUERY_CANCELED = "57014"  # PostgreSQL's SQLSTATE for a statement_timeout
# Pages ranked for one query (or the limit, if higher): the first this many the index
# yields. Ranking reads each candidate's index entry (bm25, ts_rank_cd); a word on a tenth
# of a million pages would otherwise cost hundreds of milliseconds on PostgreSQL
# (`scripts/bench --sections search`).
RANK_CANDIDATES = 1_000
ELLIPSIS = "…"

# a phrase in double quotes (an unclosed one runs to the end), or a bare run of characters
_TERM = re.compile(r'"([^"]*)"?|([^\s"]+)')
# a word as SQLite's unicode61 sees one: letters and digits, with their combining marks
_WORD = re.compile(
    r"(?:[^\W_]|[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f])+"
)
# what a person cannot mean in a query and a database cannot take (NUL, lone surrogates)
_UNUSABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# letters that carry their mark in their shape, folded as unaccent folds them
_LETTERS = str.maketrans(
    {"ø": "o", "đ": "d", "ł": "l", "ħ": "h", "ŧ": "t", "ı": "i", "æ": "ae", "œ": "oe", "þ": "th"}
)


@dataclass(frozen=True)
class Term:
    """One thing a page must hold: a word, or a phrase of words in order."""

    raw: str  # as typed; each database splits it into words with its own tokenizer
    words: tuple[str, ...]  # folded, for finding them in a snippet


class _Folding(dict[int, str]):
    """str.translate's table for `fold`, one character at a time, filled as characters
    are met (and no further than _FOLDING_CACHE of them: page text is hostile)."""

    def __missing__(self, code: int) -> str:
        folded = fold(chr(code))
        if len(self) < _FOLDING_CACHE:
            self[code] = folded
        return folded


_FOLDING_CACHE = 65_536
_FOLDING = _Folding()


def fold(word: str) -> str:
    """Case and diacritics removed: "Müller" -> "muller", "Straße" -> "strasse"."""
    if word.isascii():
        return word.lower()
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return bare.translate(_LETTERS)


def parse(query: str) -> list[Term]:
    """The terms of a query; BadInput when nothing searchable is left."""
    cleaned = _UNUSABLE.sub(" ", query)
    terms = []
    for m in _TERM.finditer(cleaned):
        raw = (m.group(1) if m.group(1) is not None else m.group(2)).strip()
        words = tuple(fold(w) for w in _WORD.findall(raw))
        if words:
            terms.append(Term(" ".join(raw.split()), words))
    if not terms:
        raise BadInput(
            f"search query {query!r} has no word to look for: give words (every one must"
            ' be on the page) or "a phrase in quotes"'
        )
    count = sum(len(t.words) for t in terms)
    if count > MAX_TERMS:
        raise BadInput(
            f"search query has {count} words (a phrase's each counted); at most {MAX_TERMS}"
            " are looked for at once"
        )
    return terms


def search(
    db: Database,
    query: str,
    *,
    batch_id: str | None = None,
    limit: int = 20,
    timeout: float = SEARCH_SECONDS,
) -> list[SearchHit]:
    """The pages holding every term of `query`, best first, at most `limit` of them.

    BadInput (exit 2) when the query holds no word, has more than MAX_TERMS words, the
    limit is below 1, or the database took longer than `timeout` seconds."""
    if limit < 1:
        raise BadInput(f"search limit {limit} must be at least 1")
    terms = parse(query)
    if db.dialect == "sqlite":
        statement, params = _sqlite(terms, batch_id)
    else:
        statement, params = _postgresql(terms, batch_id)
    params.update(limit=limit, candidates=max(RANK_CANDIDATES, limit))
    with db.engine.connect() as conn:
        rows = _rows(conn, db.dialect, timeout, statement, params)
    words = {w for t in terms for w in t.words}
    hits = []
    for document_id, number, path, batch, rank, page_text in rows:
        snippet, matches = make_snippet(page_text, words)
        hits.append(SearchHit(path, batch, document_id, number, float(rank), snippet, matches))
    return hits


def _rows(
    conn: Connection, dialect: str, timeout: float, statement: str, params: dict[str, Any]
) -> Sequence[Any]:
    """The statement's rows, the database cancelling it after `timeout` seconds."""
    if dialect != "sqlite":
        conn.execute(
            text("SELECT set_config('statement_timeout', :ms, true)"),
            {"ms": str(max(1, round(timeout * 1000)))},
        )
        try:
            return conn.execute(text(statement), params).all()
        except OperationalError as e:
            if getattr(e.orig, "sqlstate", None) == QUERY_CANCELED:
                raise _too_slow(timeout) from None
            raise
    raw: Any = conn.connection.driver_connection
    deadline = time.monotonic() + timeout
    raw.set_progress_handler(lambda: time.monotonic() > deadline, SQLITE_CHECK_EVERY)
    try:
        return conn.execute(text(statement), params).all()
    except OperationalError:
        if time.monotonic() > deadline:
            raise _too_slow(timeout) from None
        raise
    finally:
        raw.set_progress_handler(None, SQLITE_CHECK_EVERY)


def _too_slow(timeout: float) -> BadInput:
    return BadInput(
        f"the search took longer than {timeout:g} s: add words, quote a phrase, or give --batch"
    )


def _sqlite(terms: Sequence[Term], batch_id: str | None) -> tuple[str, dict[str, Any]]:
    match = " AND ".join('"' + t.raw.replace('"', '""') + '"' for t in terms)
    params: dict[str, Any] = {"match": match}
    within = ""
    if batch_id is not None:
        within = (
            f" JOIN pages bp ON bp.rowid = {FTS_TABLE}.rowid"
            " JOIN documents bd ON bd.id = bp.document_id AND bd.batch_id = :batch_id"
        )
        params["batch_id"] = batch_id
    # the candidates and their rank from the index alone; pages and documents for the best
    return (
        "SELECT p.document_id, p.number, d.path, d.batch_id, -c.score, p.text FROM"
        f" (SELECT rowid, score FROM (SELECT {FTS_TABLE}.rowid AS rowid,"
        f" bm25({FTS_TABLE}) AS score FROM {FTS_TABLE}{within}"
        f" WHERE {FTS_TABLE} MATCH :match LIMIT :candidates) ORDER BY score LIMIT :limit) c"
        " JOIN pages p ON p.rowid = c.rowid JOIN documents d ON d.id = p.document_id"
        " ORDER BY c.score, p.document_id, p.number",
        params,
    )


def _postgresql(terms: Sequence[Term], batch_id: str | None) -> tuple[str, dict[str, Any]]:
    params: dict[str, Any] = {f"t{i}": t.raw for i, t in enumerate(terms)}
    query = " && ".join(f"phraseto_tsquery('simple', {FOLD}(:t{i}))" for i in range(len(terms)))
    within = ""
    if batch_id is not None:
        within = " JOIN documents bd ON bd.id = bp.document_id AND bd.batch_id = :batch_id"
        params["batch_id"] = batch_id
    # ranked from the candidates' vectors; the text read for the best only
    return (
        "SELECT c.document_id, c.number, d.path, d.batch_id, c.score, p.text FROM"
        f" (SELECT f.document_id, f.number, ts_rank_cd(f.{VECTOR}, {query}, 1) AS score"
        f" FROM (SELECT bp.document_id, bp.number, bp.{VECTOR} FROM pages bp{within}"
        f" WHERE bp.{VECTOR} @@ ({query}) LIMIT :candidates) f"
        " ORDER BY score DESC, f.document_id, f.number LIMIT :limit) c"
        " JOIN pages p ON p.document_id = c.document_id AND p.number = c.number"
        " JOIN documents d ON d.id = c.document_id"
        " ORDER BY c.score DESC, c.document_id, c.number",
        params,
    )


def make_snippet(page_text: str, words: set[str]) -> tuple[str, tuple[tuple[int, int], ...]]:
    """About SNIPPET_CHARS of the page around its best match (the window holding the most
    different words, then the most matches), whitespace collapsed, and the [start, end)
    offsets in it of every word of the query."""
    flat = " ".join(page_text.split())
    folded = flat.lower() if flat.isascii() else flat.translate(_FOLDING)
    if len(folded) == len(flat):  # each character folded to one: the offsets hold
        found = [
            (m.start(), m.end(), m.group()) for m in _matcher(frozenset(words)).finditer(folded)
        ]
    else:  # "ß" -> "ss", a lone combining mark -> "": word by word
        spans = ((m.start(), m.end(), fold(m.group())) for m in _WORD.finditer(flat))
        found = [(start, end, word) for start, end, word in spans if word in words]
    start = 0
    if found:
        anchor = _best(found)
        start = max(0, anchor - LEAD_CHARS)
        if start:
            space = flat.find(" ", start, anchor)
            start = space + 1 if space != -1 else anchor
    end = min(len(flat), start + SNIPPET_CHARS)
    if end < len(flat):
        space = flat.rfind(" ", start, end + 1)
        if space > start:
            end = space
    lead = ELLIPSIS if start else ""
    snippet = lead + flat[start:end] + (ELLIPSIS if end < len(flat) else "")
    shift = len(lead) - start
    matches = tuple((s + shift, e + shift) for s, e, _ in found if s >= start and e <= end)
    return snippet, matches


@functools.lru_cache(maxsize=64)
def _matcher(words: frozenset[str]) -> re.Pattern[str]:
    """Any of the (folded) words, whole: neither letter nor digit on either side."""
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<![^\W_])(?:{alternatives})(?![^\W_])")


def _best(found: list[tuple[int, int, str]]) -> int:
    """Where the window with the most different words (then the most matches) starts."""
    reach = SNIPPET_CHARS - LEAD_CHARS
    best, score = found[0][0], (0, 0)
    inside: Counter[str] = Counter()
    j = 0
    for i, (s, _, word) in enumerate(found):
        while j < len(found) and (j <= i or found[j][1] <= s + reach):
            inside[found[j][2]] += 1
            j += 1
        if (len(inside), j - i) > score:
            best, score = s, (len(inside), j - i)
        inside[word] -= 1
        if not inside[word]:
            del inside[word]
    return best
