"""The audit log: who did what, when (switches, link-page views, alerts and reminders sent)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from backline.core.records import AuditEntry
from backline.core.refusals import RefusalCount
from backline.journal.rows import from_text, to_text
from backline.journal.store import SqlStore


class AuditJournal(SqlStore):
    """Appending to the audit log and reading it back."""

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

    def desk_phone_refusals(self, limit: int = 10) -> list[AuditEntry]:
        """The latest switches a desk phone asked for and was refused (wrong PIN, locked out,
        not an admin's phone), newest first: audited as ``desk-phone:PHONE`` /
        ``ACTION.refused`` by the controller."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("SELECT at, actor, action, detail FROM audit_log "
                                "WHERE substr(actor, 1, 11) = 'desk-phone:' "
                                "AND substr(action, -8) = '.refused' "
                                "ORDER BY id DESC LIMIT ?"), (limit,))
            return [AuditEntry(from_text(r[0]), r[1], r[2], r[3]) for r in cur.fetchall()]

    def record_refusals(self, counts: Sequence[RefusalCount]) -> None:
        """Adds refusal counts, one row per (minute, source, action) (a count written again
        for the same minute, by a restart or another controller, adds to it)."""
        if not counts:
            return
        with self._lock, self._transaction() as cur:
            for c in counts:
                cur.execute(self._q(
                    "INSERT INTO refusals (minute, source, action, count) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (minute, source, action) "
                    "DO UPDATE SET count = refusals.count + excluded.count"),
                    (to_text(c.minute), c.source[:64], c.action[:64], c.count))

    def refusal_counts(self, since: datetime) -> list[RefusalCount]:
        """Refusal counts from ``since``'s minute on, oldest first."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("SELECT minute, source, action, count FROM refusals "
                                "WHERE minute >= ? ORDER BY minute, source, action"),
                        (to_text(since.replace(second=0, microsecond=0)),))
            return [RefusalCount(from_text(r[0]), r[1], r[2], int(r[3]))
                    for r in cur.fetchall()]

    def prune_audit(self, before: datetime) -> int:
        """Removes audit entries and refusal counts older than ``before`` (the retention
        period's start); returns how many rows went."""
        cut = to_text(before)
        removed = 0
        with self._lock, self._transaction() as cur:
            for table, column in (("audit_log", "at"), ("refusals", "minute")):
                cur.execute(self._q(f"SELECT COUNT(*) FROM {table} WHERE {column} < ?"),
                            (cut,))
                removed += int(cur.fetchone()[0])
                cur.execute(self._q(f"DELETE FROM {table} WHERE {column} < ?"), (cut,))
        return removed

    def audit_entries(self, action: str, detail_prefix: str = "") -> list[AuditEntry]:
        """The audit entries of ``action`` whose detail starts with ``detail_prefix``, oldest
        first (the outage reminders read back what they sent; ``audit_log``'s newest-N
        would miss them behind a busy day of link-page views)."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("SELECT at, actor, action, detail FROM audit_log "
                                "WHERE action = ? AND substr(detail, 1, ?) = ? ORDER BY id"),
                        (action, len(detail_prefix), detail_prefix))
            return [AuditEntry(from_text(r[0]), r[1], r[2], r[3]) for r in cur.fetchall()]
