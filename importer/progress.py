"""How fast work goes and when it will be done: plain arithmetic on timestamped counts.

The rate is the recent one, over a sliding window of samples (a minute by default), not
the average since the start: a batch that slowed down (a long scanned manual after many
born-digital letters) or sped up (more workers) shows what it does now.

The estimate of the time left is in pages, the unit of work: the pages still to read are
known for documents a worker has counted, and estimated for the others at the mean page
count of the documents counted so far; they are divided by the recent pages per second.
There is no estimate (None, shown "—") before the window spans `min_span` seconds, before
any document has been counted, or while no page was read in the window (stalled workers
would otherwise give an infinite one).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

WINDOW_SECONDS = 60.0
MIN_SPAN_SECONDS = 5.0  # shorter spans see the workers' page flushes (1 s apart), not a rate


class Rate:
    """Items per second over the last `window` seconds of samples of a growing count.

    >>> r = Rate(window=60, min_span=5)
    >>> r.add(0.0, 0); r.add(10.0, 25); r.per_second()
    2.5
    """

    def __init__(self, window: float = WINDOW_SECONDS, min_span: float = MIN_SPAN_SECONDS) -> None:
        if not 0 < min_span <= window:
            raise ValueError(f"min_span {min_span} must be within (0, window {window}]")
        self.window = window
        self.min_span = min_span
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, at: float, count: int) -> None:
        """A sample: `count` at monotonic time `at`. Older samples leave the window, but
        the newest one at or before its start stays, so the rate spans the whole window."""
        if self._samples and at < self._samples[-1][0]:
            raise ValueError(f"sample at {at} is older than the last one")
        self._samples.append((at, count))
        start = at - self.window
        while len(self._samples) > 1 and self._samples[1][0] <= start:
            self._samples.popleft()

    def per_second(self) -> float | None:
        """The recent rate; None until the samples span `min_span` seconds. A count that
        went down (pages read again after a retry) counts as no progress, never negative."""
        if len(self._samples) < 2:
            return None
        (first_at, first), (last_at, last) = self._samples[0], self._samples[-1]
        span = last_at - first_at
        if span < self.min_span:
            return None
        return max(last - first, 0) / span


@dataclass(frozen=True)
class Remaining:
    """The work a batch has left, as far as it is known.

    `pages_left` is for the unfinished documents whose pages a worker has counted;
    `uncounted` are the unfinished documents not counted yet (most of a queue);
    `mean_pages` is pages per document over the documents counted, None before any.
    """

    documents: int
    pages_left: int
    uncounted: int
    mean_pages: float | None

    @property
    def pages(self) -> float | None:
        """Pages still to read, estimated; None when some are uncounted and no mean is known."""
        if self.uncounted == 0:
            return float(self.pages_left)
        if self.mean_pages is None:
            return None
        return self.pages_left + self.uncounted * self.mean_pages

    @property
    def pages_known(self) -> bool:
        """Whether every unfinished document has been counted (the pages left are exact)."""
        return self.uncounted == 0


def eta_seconds(remaining: Remaining, pages_per_second: float | None) -> float | None:
    """Seconds until the batch is done: the pages left at the recent rate; 0 once no
    document is left; None without enough data or while nothing moves."""
    if remaining.documents == 0:
        return 0.0
    pages = remaining.pages
    if pages is None or pages_per_second is None or pages_per_second <= 0:
        return None
    return pages / pages_per_second


def format_duration(seconds: float | None) -> str:
    """45s, 6m 10s, 2h 05m, 3d 04h; "—" for None."""
    if seconds is None:
        return "—"
    total = round(seconds)
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def format_rate(per_second: float | None, unit: str) -> str:
    """14.2 pages/s, 0.35 pages/s, 1,204 files/s; "— pages/s" for None."""
    if per_second is None:
        return f"— {unit}/s"
    if per_second >= 100:
        return f"{per_second:,.0f} {unit}/s"
    if per_second >= 1:
        return f"{per_second:.1f} {unit}/s"
    return f"{per_second:.2f} {unit}/s"
