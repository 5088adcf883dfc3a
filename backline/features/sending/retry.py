"""When an alert that could not be sent is tried again.  Pure.

5 s after the first failure, then doubling (10 s, 20 s, ... ) up to every 5 minutes, for as
long as it takes: an alert is never given up on, because an outage with nobody told is worse
than a late email.  No jitter: each delivery is leased to one controller (see the journal), so
several controllers never retry the same one in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

FIRST_RETRY = 5.0  # seconds
MAX_RETRY = 300.0


@dataclass(frozen=True, slots=True)
class Backoff:
    """Seconds before the next try: ``first`` after the first failure, doubling up to
    ``cap``.  The inbox drain starts at 1 s (the head of its queue holds every later item
    back); tests make it short; nothing is ever given up on."""

    first: float = FIRST_RETRY
    cap: float = MAX_RETRY

    def delay(self, failed_tries: int) -> float:
        """After the ``failed_tries``-th failure in a row (1 for the first)."""
        return min(self.first * float(2 ** min(max(failed_tries - 1, 0), 32)), self.cap)


def retry_delay(failed_tries: int) -> float:
    """Seconds to wait after the ``failed_tries``-th failure in a row (1 for the first)."""
    if failed_tries < 1:
        raise ValueError("failed_tries counts from 1")
    return Backoff().delay(failed_tries)


def next_try(now: datetime, failed_tries: int) -> datetime:
    return now + timedelta(seconds=retry_delay(failed_tries))
