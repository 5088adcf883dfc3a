"""What ops watch besides the mode: the PBX link, alert sending and inbox delivery.  Pure.

Each is a :class:`Health`: a plain verdict, a sentence that says it, and the last success and
the last error with their times, so "failing" comes with what failed and since when, and
"off" with why (a connection not configured, a secret missing).  The controller moves each
one along as its parts report; the status page and ``/status.json`` show them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime


class Verdict(enum.Enum):
    OK = "ok"            # the last try worked
    FAILING = "failing"  # the last try failed; it is tried again
    OFF = "off"          # turned off: not configured, or a secret it needs is missing
    IDLE = "idle"        # nothing tried yet


@dataclass(frozen=True, slots=True)
class Health:
    verdict: Verdict
    says: str
    last_success: datetime | None = None
    last_error: str = ""
    last_error_at: datetime | None = None

    def succeeded(self, at: datetime, says: str) -> Health:
        if self.verdict is Verdict.OFF:
            return self
        return replace(self, verdict=Verdict.OK, says=says, last_success=at)

    def failed(self, at: datetime, error: str, says: str) -> Health:
        if self.verdict is Verdict.OFF:
            return self
        return replace(self, verdict=Verdict.FAILING, says=says, last_error=error,
                       last_error_at=at)


def off(says: str) -> Health:
    return Health(Verdict.OFF, says)


def idle(says: str) -> Health:
    return Health(Verdict.IDLE, says)


# What each one is called on the page and in /status.json, in the order shown.
WATCHED = {"pbx_link": "PBX link", "alerts": "Backup alerts", "inbox": "Inbox delivery",
           "journal_disk": "Journal disk", "staff_texts": "Staff texts",
           "retention": "Retention", "clock": "Clock",
           "voicemail_locks": "Voicemail folders", "call_record": "PBX call record"}


def health_document(health: dict[str, Health]) -> dict[str, dict[str, object]]:
    """``/status.json``'s ``health``: per watched part, its verdict, sentence and last times."""
    return {name: {"verdict": h.verdict.value, "says": h.says,
                   "last_success": h.last_success.isoformat() if h.last_success else None,
                   "last_error": h.last_error or None,
                   "last_error_at": h.last_error_at.isoformat() if h.last_error_at else None}
            for name, h in health.items()}
