"""The journal's storage interface and the SQL shared by its backends.

The journal is the durable record every feature writes.  A method that records something
returns only after the database has it on disk, so whatever the caller acknowledges (to the
PBX, the SMS gateway, the CLI) survives a crash.  Backends differ only in how they connect,
their placeholder and their auto-increment type; the SQL and the record mapping live here.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

from telephony.journal import schema
from telephony.journal.records import (
    Attempt,
    AttemptKind,
    AuditEntry,
    Delivery,
    NewAttempt,
    Outcome,
)
from telephony.outage import Mode, ModeChange, ModeState, Via

_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


class JournalError(Exception):
    """The journal cannot be used (unreachable, newer schema, corrupt)."""


def to_text(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("journal times must be timezone-aware")
    return at.astimezone(UTC).strftime(_TIME)


def from_text(text: str) -> datetime:
    return datetime.strptime(text, _TIME).replace(tzinfo=UTC)


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class SqlJournal(abc.ABC):
    """Journal operations over a DB-API connection; subclasses connect and commit durably."""

    placeholder = "?"
    autoid = "INTEGER PRIMARY KEY AUTOINCREMENT"

    def __init__(self) -> None:
        # One connection, one writer at a time within this process: the controller calls us
        # from worker threads, and DB-API connections are not safe to share unguarded.
        self._lock = threading.Lock()

    # -- backend hooks ---------------------------------------------------------------------

    @abc.abstractmethod
    @contextmanager
    def _transaction(self) -> Iterator[Cursor]:
        """A cursor inside a transaction that is durably committed on a clean exit."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def _q(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    # -- schema ----------------------------------------------------------------------------

    def migrate(self) -> int:
        """Apply pending migrations; return the schema version now in force."""
        with self._lock, self._transaction() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            cur.execute("SELECT MAX(version) FROM schema_version")
            current = cur.fetchone()[0] or 0
            if current > schema.LATEST:
                raise JournalError(f"the journal has schema version {current}, newer than this "
                                   f"Backline ({schema.LATEST}); upgrade Backline")
            for version in range(current + 1, schema.LATEST + 1):
                for statement in schema.MIGRATIONS[version - 1]:
                    cur.execute(statement.format(autoid=self.autoid))
                cur.execute(self._q("INSERT INTO schema_version (version) VALUES (?)"),
                            (version,))
            return schema.LATEST

    # -- attempts --------------------------------------------------------------------------

    def record_attempt(self, a: NewAttempt) -> tuple[Attempt, bool]:
        """Record ``a`` once; return it and whether it was new (False: ``key`` seen before)."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("SELECT * FROM attempts WHERE key = ?"), (a.key,))
            row = cur.fetchone()
            if row is not None:
                return _attempt(row), False
            cur.execute(self._q(
                "INSERT INTO attempts (key, at, kind, mode, sender, recipient, outcome, text, "
                "file, detail, node, delivery) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                (a.key, to_text(a.at), a.kind.value, a.mode.value, a.sender, a.recipient,
                 a.outcome.value, a.text, a.file, a.detail, a.node, a.delivery.value))
            cur.execute(self._q("SELECT * FROM attempts WHERE key = ?"), (a.key,))
            return _attempt(cur.fetchone()), True

    def attempts(self, since: datetime | None = None, limit: int = 100) -> list[Attempt]:
        """The most recent attempts (at or after ``since``), oldest first."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "SELECT * FROM (SELECT * FROM attempts WHERE at >= ? ORDER BY id DESC LIMIT ?) "
                "AS recent ORDER BY id"),
                (to_text(since) if since else "", limit))
            return [_attempt(r) for r in cur.fetchall()]

    def attempt(self, key: str) -> Attempt | None:
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("SELECT * FROM attempts WHERE key = ?"), (key,))
            row = cur.fetchone()
            return _attempt(row) if row is not None else None

    def held(self) -> dict[str, int]:
        """Attempts waiting for the inbox (received in an outage), by kind."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("SELECT kind, COUNT(*) FROM attempts WHERE delivery = ? "
                                "GROUP BY kind"), (Delivery.HELD.value,))
            return {str(kind): int(n) for kind, n in cur.fetchall()}

    # -- the mode --------------------------------------------------------------------------

    def record_mode_change(self, change: ModeChange, expected: ModeState | None = None) -> None:
        """Record a switch.  With ``expected``, refuse (``StaleMode``) if the mode moved since."""
        with self._lock, self._transaction() as cur:
            if expected is not None:
                now = self._mode_state(cur)
                if now != expected:
                    raise StaleMode(now)
            cur.execute(self._q(
                "INSERT INTO mode_changes (mode, at, by_whom, via, reason) VALUES (?, ?, ?, ?, ?)"),
                (change.mode.value, to_text(change.at), change.by, change.via.value,
                 change.reason))

    def mode_state(self) -> ModeState:
        with self._lock, self._transaction() as cur:
            return self._mode_state(cur)

    def _mode_state(self, cur: Cursor) -> ModeState:
        cur.execute("SELECT mode, at, by_whom, via, reason FROM mode_changes "
                    "ORDER BY id DESC LIMIT 1")
        row = cur.fetchone()
        if row is None:
            return ModeState.initial()
        change = _change(row)
        return ModeState(change.mode, change)

    def mode_history(self, limit: int = 20) -> list[ModeChange]:
        """The latest switches, newest first."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("SELECT mode, at, by_whom, via, reason FROM mode_changes "
                                "ORDER BY id DESC LIMIT ?"), (limit,))
            return [_change(r) for r in cur.fetchall()]

    # -- audit -----------------------------------------------------------------------------

    def audit(self, entry: AuditEntry) -> None:
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("INSERT INTO audit_log (at, actor, action, detail) "
                                "VALUES (?, ?, ?, ?)"),
                        (to_text(entry.at), entry.actor, entry.action, entry.detail))

    def audit_log(self, limit: int = 100) -> list[AuditEntry]:
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("SELECT at, actor, action, detail FROM audit_log "
                                "ORDER BY id DESC LIMIT ?"), (limit,))
            return [AuditEntry(from_text(r[0]), r[1], r[2], r[3]) for r in cur.fetchall()]


class StaleMode(JournalError):
    """Someone switched the mode between our read and our write."""

    def __init__(self, now: ModeState) -> None:
        super().__init__(f"the mode changed meanwhile; it is now {now.mode.value}")
        self.now = now


def _attempt(row: Sequence[Any]) -> Attempt:
    (id_, key, at, kind, mode, sender, recipient, outcome, text, file, detail, node,
     delivery) = row
    return Attempt(int(id_), key, from_text(at), AttemptKind(kind), Mode(mode), sender,
                   recipient, Outcome(outcome), text, file, detail, node, Delivery(delivery))


def _change(row: Sequence[Any]) -> ModeChange:
    mode, at, by, via, reason = row
    return ModeChange(Mode(mode), from_text(at), by, Via(via), reason)
