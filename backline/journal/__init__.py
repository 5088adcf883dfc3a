"""The journal: the durable record of attempts, outage history, alerts, links, deliveries and
the audit log.  ``open_journal(url)`` picks the backend by the URL's scheme.
"""

from __future__ import annotations

from pathlib import Path

from backline.core.records import (
    AlertChannel,
    AlertDelivery,
    AlertLink,
    AlertSlot,
    AlertState,
    Attempt,
    AttemptKind,
    AuditEntry,
    ControllerReport,
    Delivery,
    JoinAlert,
    NewAttempt,
    OpenAlert,
    Outcome,
    Placement,
)
from backline.journal.base import SqlJournal
from backline.journal.modes import StaleMode
from backline.journal.store import JournalError

Journal = SqlJournal

__all__ = ["AlertChannel", "AlertDelivery", "AlertLink", "AlertSlot", "AlertState", "Attempt",
           "AttemptKind", "AuditEntry", "ControllerReport", "Delivery", "JoinAlert", "Journal",
           "JournalError", "NewAttempt", "OpenAlert", "Outcome", "Placement", "StaleMode",
           "open_journal"]


def open_journal(url: str) -> Journal:
    """Open (and migrate) the journal at ``url``: ``sqlite:///path`` or ``postgresql://…``."""
    if url.startswith("sqlite://"):
        from backline.journal.sqlite import SqliteJournal

        journal: Journal = SqliteJournal(Path(url.removeprefix("sqlite://")))
    elif url.startswith(("postgresql://", "postgres://")):
        from backline.journal.postgres import PostgresJournal

        journal = PostgresJournal(url)
    else:
        raise JournalError(f"unknown storage URL scheme in {url!r}")
    try:
        journal.migrate()
    except BaseException:
        journal.close()  # a refused (newer) or unreachable journal leaves no connection open
        raise
    return journal
