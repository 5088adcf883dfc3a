"""Which attempts raise an alert, and how a burst of them is gathered.  Pure.

**The rule.** The first attempt after a quiet spell is alerted at once.  An attempt that comes
while the previous alert's *window* is still running waits for the window's end and joins
whatever else comes by then, so recipients get at most one alert per window.  While attempts
keep coming, each window is twice the last (10 s, 20 s, 40 s, then 60 s at most); once a whole
window passes without one, the next is alerted at once again and the window is back to 10 s.

A burst of 50 calls therefore sends two alerts (the first call at once, the other 49 ten
seconds later), a steady busy morning about one a minute, and a lone call after a quiet hour
one alert straight away: every attempt is alerted within a minute, and most within seconds.

An alert that has begun to be sent is *closed*: nothing joins it afterwards, so the page a
recipient opens lists what the alert was sent for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from backline.core.outage import Mode
from backline.core.records import AlertSlot, Attempt, JoinAlert, OpenAlert, Outcome, Placement


@dataclass(frozen=True, slots=True)
class GatherPolicy:
    first_window: int = 10  # seconds
    max_window: int = 60

    def __post_init__(self) -> None:
        if not 0 <= self.first_window <= self.max_window:
            raise ValueError("need 0 <= first_window <= max_window")

    def place(self, newest: AlertSlot | None, now: datetime) -> Placement:
        """Where an attempt noticed at ``now`` goes, given the newest alert so far."""
        if newest is None:
            return OpenAlert(now, self.first_window)
        if not newest.closed and newest.due_at > now:
            return JoinAlert(newest.id)
        window_ends = newest.due_at + timedelta(seconds=newest.window_seconds)
        if now >= window_ends:
            return OpenAlert(now, self.first_window)
        return OpenAlert(window_ends, min(max(1, newest.window_seconds * 2), self.max_window))


def raises_alert(attempt: Attempt) -> bool:
    """An inbound attempt in an outage does; a refused one (a number that is not the
    practice's, a forged webhook) does not, or anyone could make the alerts ring."""
    return attempt.mode is Mode.OUTAGE and attempt.outcome is not Outcome.REFUSED
