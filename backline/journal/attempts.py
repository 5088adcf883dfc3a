"""The attempts: every call, SMS and fax received, recorded once by its key."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from backline.core.records import Attempt, AttemptKind, NewAttempt, Outcome, filed
from backline.journal.rows import Cursor, attempt_of, to_text
from backline.journal.store import SqlStore


class AttemptJournal(SqlStore):
    """Recording and reading attempts; what is owed to the inbox is the inbox queue's."""

    def record_attempt(self, a: NewAttempt) -> tuple[Attempt, bool]:
        """Record ``a`` once; return it and whether it was new (False: ``key`` seen before)."""
        with self._lock, self._transaction() as cur:
            return self._record(cur, a)

    def record_attempts(self, batch: Sequence[NewAttempt]) -> list[tuple[Attempt, bool]]:
        """Record each of ``batch`` once, in order, in one transaction: one durable commit
        for all of them (group commit, see backline.journal.writer)."""
        with self._lock, self._transaction() as cur:
            return [self._record(cur, a) for a in batch]

    def _record(self, cur: Cursor, a: NewAttempt) -> tuple[Attempt, bool]:
        a = filed(a)
        cur.execute(self._q("SELECT * FROM attempts WHERE key = ?"), (a.key,))
        row = cur.fetchone()
        if row is not None:  # a retry: no insert, so no id is used up
            return attempt_of(row), False
        # ON CONFLICT as well: two controllers recording the same key at once (on a
        # PostgreSQL journal) get one row and one "new", not an error.
        cur.execute(self._q(
            "INSERT INTO attempts (key, at, kind, mode, sender, recipient, outcome, text, "
            "file, detail, node, delivery, sender_raw) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (key) DO NOTHING RETURNING id"),
            (a.key, to_text(a.at), a.kind.value, a.mode.value, a.sender, a.recipient,
             a.outcome.value, a.text, a.file, a.detail, a.node, a.delivery.value,
             a.sender_raw))
        row = cur.fetchone()
        if row is not None:  # as written (read back, it is the same, at a parsing cost)
            return Attempt(int(row[0]), a.key, a.at.astimezone(UTC), a.kind, a.mode, a.sender,
                           a.recipient, a.outcome, a.text, a.file, a.detail, a.node,
                           a.delivery, a.sender_raw), True
        cur.execute(self._q("SELECT * FROM attempts WHERE key = ?"), (a.key,))
        return attempt_of(cur.fetchone()), False

    def attempts(self, since: datetime | None = None, limit: int = 100) -> list[Attempt]:
        """The most recent attempts (at or after ``since``), oldest first."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "SELECT * FROM (SELECT * FROM attempts WHERE at >= ? ORDER BY id DESC LIMIT ?) "
                "AS recent ORDER BY id"),
                (to_text(since) if since else "", limit))
            return [attempt_of(r) for r in cur.fetchall()]

    def attempt(self, key: str) -> Attempt | None:
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("SELECT * FROM attempts WHERE key = ?"), (key,))
            row = cur.fetchone()
            return attempt_of(row) if row is not None else None

    def correct_fax(self, key: str, was: Outcome, outcome: Outcome, file: str,
                    detail: str) -> Attempt | None:
        """Correct the record of a fax whose TIFF was taken in after it was first journaled
        (it was left in the PBX's spool: storage failed, or the spool was not where the
        controller looked).  Only if the record still says ``was``, so two controllers
        correcting the same fax write it once; return the corrected record, or None."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("UPDATE attempts SET outcome = ?, file = ?, detail = ? "
                                "WHERE key = ? AND kind = ? AND outcome = ? RETURNING id"),
                        (outcome.value, file, detail, key, AttemptKind.FAX.value, was.value))
            if cur.fetchone() is None:
                return None
            cur.execute(self._q("SELECT * FROM attempts WHERE key = ?"), (key,))
            return attempt_of(cur.fetchone())
