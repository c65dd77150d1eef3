"""Generated pages for the search section, stored the way workers store them.

The text: sentences of pseudo-words drawn from a vocabulary of VOCABULARY words with a
Zipf-like distribution (the n-th word about 1/n as often as the first), some of them with
diacritics, so a frequent word sits on well over a tenth of the pages and the tail is rare;
a rare word planted on one page in RARE_EVERY, a phrase on one page in PHRASE_EVERY. Page
n's text depends on n alone: both databases of a pair get the same pages.

Stored as workers store them (`workers.job`): each document of PAGES_PER_DOCUMENT pages
claimed (`lifecycle.claim`), the first half of its pages in one `lifecycle.save_pages` (a
flush), the rest with `lifecycle.finish` — a text-layer document, read in about a second,
the case where indexing weighs most.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select

from importer.db import lifecycle
from importer.db.engine import Database
from importer.db.models import Batch, Document, utcnow
from importer.states import DocStatus, PageSource

VOCABULARY = 30_000
ZIPF = 1.05
WORDS_PER_PAGE = 220
PAGES_PER_DOCUMENT = 10
DOCUMENTS_PER_BATCH = 1_000
RARE_WORD = "quetzalcoatl"
RARE_EVERY = 10_007
PHRASE = "maintenance schedule"
PHRASE_EVERY = 97
OWNER = "bench-host:1"
EMAIL = "bench@example.com"

_SYLLABLES = [c + v for c in "bcdfghklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ou", "ie")]
_MARKED = str.maketrans({"a": "ä", "e": "é", "o": "ø", "u": "ü"})


def vocabulary() -> list[str]:
    """Distinct pseudo-words, the most frequent first; one word in twenty has a diacritic."""
    rng = random.Random(7)
    words: list[str] = []
    seen = {RARE_WORD, *PHRASE.split()}
    while len(words) < VOCABULARY:
        word = "".join(rng.choices(_SYLLABLES, k=rng.choice((1, 2, 2, 3, 3, 4))))
        if rng.random() < 0.05:
            word = word.translate(_MARKED)
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


@dataclass(frozen=True)
class Corpus:
    words: list[str]
    weights: list[float]  # cumulative

    @classmethod
    def build(cls) -> Corpus:
        words = vocabulary()
        ranked = (1 / (n + 1) ** ZIPF for n in range(len(words)))
        return cls(words, list(itertools.accumulate(ranked)))

    def page(self, n: int) -> str:
        rng = random.Random(n)
        drawn = rng.choices(self.words, cum_weights=self.weights, k=WORDS_PER_PAGE)
        if n % RARE_EVERY == 7:
            drawn[rng.randrange(len(drawn))] = RARE_WORD
        if n % PHRASE_EVERY == 3:
            at = rng.randrange(len(drawn) - 1)
            drawn[at : at + 2] = PHRASE.split()
        sentences = []
        for start in range(0, len(drawn), 12):
            words = drawn[start : start + 12]
            sentences.append(words[0].capitalize() + " " + " ".join(words[1:]) + ".")
        lines = [" ".join(sentences[i : i + 3]) for i in range(0, len(sentences), 3)]
        return "\n".join(lines)


@dataclass(frozen=True)
class Queued:
    job_id: str
    path: str


def documents(db: Database, count: int) -> list[Queued]:
    """`count` documents queued in batches of DOCUMENTS_PER_BATCH, in order."""
    now = utcnow()
    with db.engine.begin() as conn:
        for b, first in enumerate(range(0, count, DOCUMENTS_PER_BATCH)):
            size = min(DOCUMENTS_PER_BATCH, count - first)
            batch = f"search-{b:05d}"
            conn.execute(insert(Batch), {"id": batch, "email": EMAIL, "total": size})
            conn.execute(insert(Document), list(_queued(batch, first, size, now)))
        rows = conn.execute(select(Document.job_id, Document.path).order_by(Document.id))
        return [Queued(job_id, path) for job_id, path in rows]


def _queued(batch: str, first: int, size: int, now: Any) -> Iterator[dict[str, Any]]:
    for n in range(first, first + size):
        yield {
            "batch_id": batch,
            "path": f"/archive/{batch}/{n:07d}.pdf",
            "sha256": f"{n:064x}",
            "job_id": f"search-{n:024x}",
            "status": DocStatus.queued,
            "enqueued_at": now,
        }


def store(db: Database, doc: Queued, texts: list[str]) -> None:
    """One document, through the calls a worker makes."""
    claimed = lifecycle.claim(
        db, job_id=doc.job_id, path=doc.path, email=EMAIL, owner=OWNER, lease_seconds=3600
    )
    if not isinstance(claimed, lifecycle.Claimed):
        raise RuntimeError(f"{doc.path}: not claimed ({claimed})")
    doc_id = claimed.id
    pages = [
        lifecycle.StoredPage(n, t, PageSource.text_layer, None, 0.01)
        for n, t in enumerate(texts, start=1)
    ]
    half = len(pages) // 2
    if not lifecycle.save_pages(db, doc_id, OWNER, pages[:half], 3600, page_count=len(pages)):
        raise RuntimeError(f"document {doc_id}: the lease was lost")
    done = lifecycle.finish(db, doc_id, owner=OWNER, status=DocStatus.done, pages=pages[half:])
    if not done:
        raise RuntimeError(f"document {doc_id}: the lease was lost at the finish")
