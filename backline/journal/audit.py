"""The audit log: who did what, when (switches, link-page views, alerts and reminders sent)."""

from __future__ import annotations

from backline.core.records import AuditEntry
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

    def audit_entries(self, action: str, detail_prefix: str = "") -> list[AuditEntry]:
        """The audit entries of ``action`` whose detail starts with ``detail_prefix``, oldest
        first (the outage reminders read back what they sent; ``audit_log``'s newest-N
        would miss them behind a busy day of link-page views)."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("SELECT at, actor, action, detail FROM audit_log "
                                "WHERE action = ? AND substr(detail, 1, ?) = ? ORDER BY id"),
                        (action, len(detail_prefix), detail_prefix))
            return [AuditEntry(from_text(r[0]), r[1], r[2], r[3]) for r in cur.fetchall()]
