"""What `importer search` finds, one typed home for the CLI, `--json` and the dashboard.

Page text is hostile: a hit carries its snippet as plain text and where the matches lie
in it as character offsets, never as markup; whoever shows it escapes every character.
The offsets cover every word of the query found in the snippet, matched without regard
to case or diacritics ("muller" marks "Müller"); a snippet cut inside the page starts
or ends with "…". Hits come from `importer.search.search`.

Example (`SearchHit.to_json()`)::

    {"path": "/srv/scans/manual.pdf", "batch_id": "b1f0...", "document_id": 17,
     "page": 4, "rank": 7.31, "snippet": "...the sequencer and the recorder...",
     "matches": [[7, 16], [25, 33]]}
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SearchHit:
    path: str
    batch_id: str
    document_id: int
    page: int  # 1-based page number
    rank: float  # higher is better; comparable only within one result list
    snippet: str  # plain text around the best match, whitespace collapsed
    matches: tuple[tuple[int, int], ...]  # [start, end) character offsets into `snippet`

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "batch_id": self.batch_id,
            "document_id": self.document_id,
            "page": self.page,
            "rank": self.rank,
            "snippet": self.snippet,
            "matches": [list(m) for m in self.matches],
        }
