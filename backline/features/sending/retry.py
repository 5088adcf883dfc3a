"""When an alert that could not be sent is tried again.  Pure.

5 s after the first failure, then doubling (10 s, 20 s, ... ) up to every 5 minutes, for as
long as it takes: an alert is never given up on, because an outage with nobody told is worse
than a late email.  No jitter: each delivery is leased to one controller (see the journal), so
several controllers never retry the same one in step.
"""

from __future__ import annotations

from datetime import datetime, timedelta

FIRST_RETRY = 5.0  # seconds
MAX_RETRY = 300.0


def retry_delay(failed_tries: int) -> float:
    """Seconds to wait after the ``failed_tries``-th failure in a row (1 for the first)."""
    if failed_tries < 1:
        raise ValueError("failed_tries counts from 1")
    return min(FIRST_RETRY * float(2 ** min(failed_tries - 1, 32)), MAX_RETRY)


def next_try(now: datetime, failed_tries: int) -> datetime:
    return now + timedelta(seconds=retry_delay(failed_tries))
