"""`importer search`: every word, phrases in order, best first, snippets with offsets, on
SQLite and PostgreSQL; hostile queries neither fail nor inject; the index follows the pages."""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence

import pytest
from alembic import command
from sqlalchemy import func, insert, select, text

from importer.db import lifecycle
from importer.db.engine import Database, _alembic_config, open_database
from importer.db.models import Batch, Document, Page
from importer.errors import BadInput
from importer.search import MAX_TERMS, fold, search
from importer.states import DocStatus, PageSource
from tests.conftest import SAMPLES, importer, settings_from

FILLER = " ".join(f"filler{n}" for n in range(60))


def _document(db: Database, batch_id: str, path: str, *, status: DocStatus = DocStatus.done) -> int:
    with db.engine.begin() as conn:
        if conn.scalar(select(Batch.id).where(Batch.id == batch_id)) is None:
            conn.execute(insert(Batch), {"id": batch_id, "email": "ops@example.com", "total": 1})
        return int(
            conn.execute(
                insert(Document).returning(Document.id),
                {
                    "batch_id": batch_id,
                    "path": path,
                    "sha256": secrets.token_hex(32),
                    "job_id": secrets.token_hex(16),
                    "status": status,
                    "lease_owner": "test-owner" if status == DocStatus.running else None,
                },
            ).scalar_one()
        )


def _pages(db: Database, batch_id: str, path: str, texts: Sequence[str]) -> int:
    doc = _document(db, batch_id, path)
    with db.engine.begin() as conn:
        conn.execute(
            insert(Page),
            [
                {"document_id": doc, "number": n, "text": t, "source": PageSource.ocr}
                for n, t in enumerate(texts, start=1)
            ],
        )
    return doc


def _found(db: Database, query: str, **kw: object) -> list[tuple[str, int]]:
    return [(h.path, h.page) for h in search(db, query, **kw)]  # type: ignore[arg-type]


def test_every_word_must_match_and_phrases_keep_their_order(database_url: str) -> None:
    db = open_database(database_url)
    _pages(
        db,
        "b1",
        "/in/a.pdf",
        ["the quick brown fox jumps over the lazy dog", "brown bears and quick rivers"],
    )
    _pages(db, "b1", "/in/c.pdf", ["a fox alone"])
    assert _found(db, "quick fox") == [("/in/a.pdf", 1)]  # two words apart
    assert sorted(_found(db, "QUICK  Brown")) == [("/in/a.pdf", 1), ("/in/a.pdf", 2)]
    assert _found(db, "quick zebra") == []  # one word missing
    assert _found(db, '"brown fox"') == [("/in/a.pdf", 1)]
    assert _found(db, '"fox brown"') == []  # a phrase in order only
    assert _found(db, '"quick fox"') == []  # and side by side
    assert _found(db, '"lazy dog" quick') == [("/in/a.pdf", 1)]


def test_pages_holding_the_words_often_rank_first(database_url: str) -> None:
    db = open_database(database_url)
    _pages(db, "b1", "/in/once.pdf", [f"harbour crane {FILLER} {FILLER}"])
    _pages(db, "b1", "/in/often.pdf", [f"harbour crane {FILLER} harbour crane harbour {FILLER}"])
    _pages(db, "b1", "/in/none.pdf", [f"harbour {FILLER}"])
    hits = search(db, "harbour crane")
    assert [h.path for h in hits] == ["/in/often.pdf", "/in/once.pdf"]
    assert hits[0].rank > hits[1].rank > 0
    assert [h.path for h in search(db, "harbour crane", limit=1)] == ["/in/often.pdf"]
    assert len(search(db, "harbour", limit=2)) == 2


def test_snippet_offsets_fold_case_and_diacritics(database_url: str) -> None:
    db = open_database(database_url)
    page = f"{FILLER} Das Café\tvon Herrn\n\nMÜLLER in Zürich, Straße 5. {FILLER} café again"
    _pages(db, "b1", "/in/de.pdf", [page])
    for query, words in (
        ("cafe muller", {"cafe", "muller"}),
        ("CAFÉ", {"cafe"}),
        ("zurich", {"zurich"}),
        ('"herrn muller"', {"herrn", "muller"}),
    ):
        (hit,) = search(db, query)
        assert "  " not in hit.snippet and "\n" not in hit.snippet and "\t" not in hit.snippet
        assert len(hit.snippet) <= 170
        shown = [hit.snippet[a:b] for a, b in hit.matches]
        assert shown and {fold(w) for w in shown} == words, (query, shown, hit.snippet)
    (hit,) = search(db, "muller cafe")
    assert [hit.snippet[a:b] for a, b in hit.matches][:2] == ["Café", "MÜLLER"]
    assert "Das Café von Herrn MÜLLER in Zürich" in hit.snippet  # whitespace collapsed
    (hit,) = search(db, "Müller")
    assert hit.snippet.startswith("…") and hit.snippet.endswith("…")
    _pages(db, "b1", "/in/fr.pdf", ["Une crème brûlée au CAFÉ du coin"])  # no "ß": one pass
    (hit,) = search(db, "creme brulee")
    assert [hit.snippet[a:b] for a, b in hit.matches] == ["crème", "brûlée"]


def test_a_huge_page_is_stored_and_found(database_url: str) -> None:
    """Two megabytes of distinct words on one page: more than a tsvector holds."""
    db = open_database(database_url)
    doc = _document(db, "b1", "/in/huge.pdf", status=DocStatus.running)
    words = " ".join(f"w{n:07d}" for n in range(250_000))
    page = lifecycle.StoredPage(1, f"aardvark {words}", PageSource.text_layer, None, 0.1)
    assert lifecycle.finish(db, doc, owner="test-owner", status=DocStatus.done, pages=[page])
    (hit,) = search(db, "aardvark")
    assert hit.snippet.startswith("aardvark w0000000") and hit.matches == ((0, 8),)


def test_folding_remembers_a_bounded_number_of_characters() -> None:
    from importer.search import _FOLDING, _FOLDING_CACHE, make_snippet

    many = "".join(chr(c) for c in range(0x4E00, 0x4E00 + _FOLDING_CACHE + 5000))
    make_snippet(f"café {many}", {"cafe"})
    assert _FOLDING_CACHE - 100 < len(_FOLDING) <= _FOLDING_CACHE


HOSTILE = (
    "NEAR(quick fox",
    "quick*",
    "-quick",
    "text:quick",
    '"quick',
    'quick"',
    "quick AND OR NOT fox",
    "AND",
    "quick'; DROP TABLE pages; --",
    "quick) OR (1=1",
    "^quick",
    "quick + fox",
    "{text}: quick",
    "quick\x00fox",
    "quick \udcff fox",
    "quick " * 20,
    "💥 quick",
    "quick\\",
)


def test_hostile_queries_neither_fail_nor_inject(database_url: str) -> None:
    db = open_database(database_url)
    _pages(db, "b1", "/in/a.pdf", ["the quick brown fox", "and or not near"])
    for query in HOSTILE:
        hits = search(db, query)
        assert all(h.path == "/in/a.pdf" for h in hits), query
    assert _found(db, "NEAR( and, not") == [("/in/a.pdf", 2)]  # words, not operators
    assert _found(db, "quick AND OR NOT fox") == []  # "and", "or", "not" are words too
    assert _found(db, "and or not") == [("/in/a.pdf", 2)]
    assert _found(db, "quick'; DROP TABLE pages; --") == []
    with db.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Page)) == 2
    for empty in ("", "   ", '""', "* - : ( ) ^", "\x00\x1b", '" "'):
        with pytest.raises(BadInput, match="no word to look for"):
            search(db, empty)
    with pytest.raises(BadInput, match="at most"):
        search(db, " ".join(f"w{n}" for n in range(100)))
    phrase = '"' + " ".join(f"w{n}" for n in range(MAX_TERMS)) + '"'
    assert search(db, phrase) == []  # one phrase of MAX_TERMS words
    with pytest.raises(BadInput, match=f"has {MAX_TERMS + 1} words"):
        search(db, phrase + " extra")  # each word of a phrase counts


COMMON_PAGES = 50_000


def test_a_search_past_its_time_is_cancelled_with_advice(database_url: str) -> None:
    db = open_database(database_url)
    doc = _document(db, "b1", "/in/common.pdf")
    numbers = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)"
        " SELECT i FROM n"
        if db.dialect == "sqlite"
        else "SELECT generate_series(1, :count) AS i"
    )
    with db.engine.begin() as conn:  # both words on every page, never side by side
        conn.execute(
            text(
                "INSERT INTO pages (document_id, number, text, source, review)"
                f" SELECT :doc, i, 'annual ' || i || ' report', 'ocr', false FROM ({numbers}) s"
            ),
            {"doc": doc, "count": COMMON_PAGES},
        )
    with pytest.raises(BadInput, match=r"took longer than 0\.001 s: add words, quote a phrase"):
        search(db, '"annual report"', timeout=0.001)
    with db.engine.connect() as conn:  # the pooled connection is not cancelled any more
        assert conn.scalar(select(func.sum(func.length(Page.text)))) > COMMON_PAGES
    assert search(db, '"annual report"') == []
    assert len(search(db, '"annual 7 report"', limit=5)) == 1


def test_batch_filter_and_limit(database_url: str) -> None:
    db = open_database(database_url)
    _pages(db, "first", "/in/1.pdf", ["ledger entry one", "ledger entry two"])
    _pages(db, "second", "/in/2.pdf", ["ledger entry three"])
    assert sorted(_found(db, "ledger", batch_id="second")) == [("/in/2.pdf", 1)]
    assert sorted(_found(db, "ledger", batch_id="first")) == [("/in/1.pdf", 1), ("/in/1.pdf", 2)]
    assert _found(db, "ledger", batch_id="nobody") == []
    assert len(search(db, "ledger entry")) == 3
    assert len(search(db, "ledger", batch_id="first", limit=1)) == 1
    assert {h.batch_id for h in search(db, "ledger")} == {"first", "second"}
    with pytest.raises(BadInput, match="at least 1"):
        search(db, "ledger", limit=0)


def test_pages_stored_again_leave_no_stale_match(database_url: str) -> None:
    """A replayed job replaces pages by number (DELETE + INSERT) in the worker's own calls."""
    db = open_database(database_url)
    doc = _document(db, "b1", "/in/r.pdf", status=DocStatus.running)

    def page(number: int, words: str) -> lifecycle.StoredPage:
        return lifecycle.StoredPage(number, words, PageSource.ocr, 80.0, 1.0)

    assert lifecycle.save_pages(db, doc, "test-owner", [page(1, "zebra stripes")], 60)
    assert _found(db, "zebra") == [("/in/r.pdf", 1)]
    assert lifecycle.save_pages(db, doc, "test-owner", [page(1, "giraffe neck")], 60)
    assert lifecycle.finish(
        db, doc, owner="test-owner", status=DocStatus.done, pages=[page(2, "okapi")]
    )
    assert _found(db, "zebra") == []
    assert _found(db, "giraffe") == [("/in/r.pdf", 1)]
    assert _found(db, "okapi") == [("/in/r.pdf", 2)]
    with db.engine.begin() as conn:  # a page's text changed in place
        conn.execute(text("UPDATE pages SET text = 'tapir' WHERE document_id = :d"), {"d": doc})
    assert _found(db, "okapi") == [] and len(_found(db, "tapir")) == 2
    with db.engine.begin() as conn:  # a document removed takes its pages out of the index
        conn.execute(text("DELETE FROM documents WHERE id = :d"), {"d": doc})
    assert _found(db, "giraffe") == [] and _found(db, "tapir") == []


def test_the_migration_indexes_pages_imported_before(database_url: str) -> None:
    db = Database(database_url)
    cfg = _alembic_config()
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0006")
    _pages(db, "old", "/in/old.pdf", ["an archive from before the index", "Grüße aus Köln"])
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    assert _found(db, "archive index") == [("/in/old.pdf", 1)]
    assert _found(db, "grusse koln") == [("/in/old.pdf", 2)] or db.dialect == "sqlite"
    assert _found(db, "aus koln") == [("/in/old.pdf", 2)]
    _pages(db, "new", "/in/new.pdf", ["an index kept from now on"])
    assert sorted(_found(db, "index")) == [("/in/new.pdf", 1), ("/in/old.pdf", 1)]


def test_search_command_on_an_imported_pdf(env: dict[str, str]) -> None:
    pdf = SAMPLES / "born_digital.pdf"
    importer("run", str(pdf), "--email", "ops@example.com", "--workers", "1", env=env, check=True)

    found = importer("search", "library visitors", "--json", env=env, check=True)
    hits = json.loads(found.stdout)
    assert hits and hits[0]["path"] == str(pdf) and hits[0]["page"] == 1
    assert set(hits[0]) == {
        "path",
        "batch_id",
        "document_id",
        "page",
        "rank",
        "snippet",
        "matches",
    }
    for hit in hits:
        words = {fold(hit["snippet"][a:b]) for a, b in hit["matches"]}
        assert words and words <= {"library", "visitors"}
    batch = hits[0]["batch_id"]

    shown = importer("search", '"Annual Report" eastfield', "--batch", batch, env=env)
    assert shown.returncode == 0, shown.stderr
    assert f"{pdf}  page 1" in shown.stdout and "Eastfield Public Library" in shown.stdout

    # a page and a path from outside are shown as text: markup as it is, controls escaped
    db = open_database(settings_from(env).resolved_database_url)
    _pages(
        db, "hostile", "/in/[bold]x\x1b[2J.pdf", ["\x1b[2J[red]wombat\x1b]52;c;cHduZWQ=\x07 here"]
    )
    wombat = importer("search", "wombat", env=env)
    assert wombat.returncode == 0, wombat.stderr
    assert "\x1b" not in wombat.stdout and "\x07" not in wombat.stdout
    assert "/in/[bold]x\\x1b[2J.pdf" in wombat.stdout
    assert "\\x1b[2J[red]wombat\\x1b]52;c;cHduZWQ=\\x07 here" in wombat.stdout

    none = importer("search", "wombat", "--batch", batch, env=env)
    assert none.returncode == 0 and "no page matches: wombat" in none.stdout
    assert json.loads(importer("search", "zzzqqq", "--json", env=env, check=True).stdout) == []

    empty = importer("search", " * ", env=env)
    assert empty.returncode == 2 and "no word to look for" in empty.stderr
    helped = importer("search", "--help", env=env, check=True)
    assert "quoted phrases" in helped.stdout and "--batch" in helped.stdout
