"""Refused requests on the public listener, counted per source and minute.  Pure.

Unsigned SMS posts and guessed link tokens are refused, and each refusal used to write an
fsynced audit row: one client made about 2,000 a second, with nothing to stop it and
nothing ever removed.  Now the first refusal of each kind from a source in a minute is
audited in full (address, user agent: what an investigation needs), the rest of that minute
only counted, and a source past ``per_minute`` refusals in a minute is answered 429 at once
(a link guesser no longer reaches the journal at all).  The counts are written once a
minute, one row per (minute, source, action).

Times come in as arguments; nothing here reads the clock or does I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

DEFAULT_PER_MINUTE = 60
# Sources tracked in one minute; past it every further source shares one row ("*"), so a
# spray from many addresses costs memory once, not per address.
MAX_SOURCES = 10_000
OTHERS = "*"


class Refusal(enum.Enum):
    FIRST = "first"      # the source's first of this kind this minute: audit it in full
    COUNTED = "counted"  # only counted
    LIMITED = "limited"  # the source is past its limit this minute: answer 429, do nothing


@dataclass(frozen=True, slots=True)
class RefusalCount:
    minute: datetime  # the minute's start, UTC
    source: str
    action: str
    count: int


def minute_of(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


class RefusalTally:
    """The current minute's counts (and any earlier minute not yet taken)."""

    def __init__(self, per_minute: int = DEFAULT_PER_MINUTE,
                 max_sources: int = MAX_SOURCES) -> None:
        self.per_minute = per_minute
        self.max_sources = max_sources
        self._counts: dict[tuple[datetime, str, str], int] = {}
        self._by_source: dict[tuple[datetime, str], int] = {}
        self._sources: dict[datetime, int] = {}  # distinct sources per minute

    def over(self, source: str, at: datetime) -> bool:
        """Whether ``source`` is past its limit in ``at``'s minute."""
        return self._by_source.get((minute_of(at), self._name(source, at)), 0) \
            >= self.per_minute

    def refused(self, source: str, action: str, at: datetime) -> Refusal:
        """Counts one refusal of ``action`` to ``source`` at ``at``; says what to do."""
        minute = minute_of(at)
        name = self._name(source, at)
        seen = self._by_source.get((minute, name), 0)
        if not seen:
            self._sources[minute] = self._sources.get(minute, 0) + 1
        self._by_source[(minute, name)] = seen + 1
        key = (minute, name, action)
        first = key not in self._counts
        self._counts[key] = self._counts.get(key, 0) + 1
        if seen >= self.per_minute:
            return Refusal.LIMITED
        return Refusal.FIRST if first else Refusal.COUNTED

    def take(self, before: datetime | None = None) -> list[RefusalCount]:
        """Removes and returns the counts of minutes before ``before``'s minute (all of them
        when None: the controller is stopping)."""
        cut = minute_of(before) if before is not None else None
        taken = [RefusalCount(m, s, a, n) for (m, s, a), n in self._counts.items()
                 if cut is None or m < cut]
        for c in taken:
            del self._counts[(c.minute, c.source, c.action)]
        for key in [k for k in self._by_source if cut is None or k[0] < cut]:
            del self._by_source[key]
        for minute in [m for m in self._sources if cut is None or m < cut]:
            del self._sources[minute]
        return taken

    def _name(self, source: str, at: datetime) -> str:
        minute = minute_of(at)
        if (minute, source) in self._by_source:
            return source
        return source if self._sources.get(minute, 0) < self.max_sources else OTHERS
