"""The journal's side of retention (backline.core.retention): the attempts whose files
Backline may still keep, with when the inbox accepted them, and the mark that their files were
removed, written with its audit entry in one transaction.  A store of
:class:`~backline.journal.base.SqlJournal` (migration 16 adds the mark's columns).
"""

from __future__ import annotations

from datetime import datetime

import backline.journal.rows as _rows
from backline.core.records import AttemptKind, AuditEntry, Delivery
from backline.core.retention import Kept
from backline.journal.delivery import ItemState
from backline.journal.store import SqlStore


class RetentionJournal(SqlStore):
    """What retention reads and marks; the journal provides the connection."""

    def kept_delivered(self, node: str, accepted_before: datetime, after_id: int = 0,
                       limit: int = 200) -> list[Kept]:
        """Faxes and voicemail of PBX node ``node`` the inbox accepted before
        ``accepted_before`` whose files are not yet removed, by id after ``after_id``, at most
        ``limit`` (the caller pages on).  The core decides again: this only narrows."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "SELECT i.accepted_at, a.* FROM attempts a "
                "JOIN inbox_items i ON i.attempt_id = a.id "
                "WHERE a.kind IN (?, ?) AND a.delivery = ? AND i.state = ? "
                "AND i.accepted_at <> '' AND i.accepted_at < ? AND a.pruned_at = '' "
                "AND a.file <> '' AND a.node = ? AND a.id > ? ORDER BY a.id LIMIT ?"),
                (AttemptKind.FAX.value, AttemptKind.VOICEMAIL.value, Delivery.DELIVERED.value,
                 ItemState.DELIVERED.value, _rows.to_text(accepted_before), node, after_id,
                 limit))
            return [Kept(_rows.attempt_of(r[1:]), _rows.from_text(r[0]))
                    for r in cur.fetchall()]

    def mark_pruned(self, attempt_id: int, at: datetime, days: int,
                    entry: AuditEntry) -> bool:
        """Note on the attempt that its files were removed ``at``, ``days`` after the inbox
        accepted it, and audit ``entry``, once: False (and nothing written) if it was marked
        before, so a removal repeated after a crash is audited once."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "UPDATE attempts SET pruned_at = ?, pruned_days = ? "
                "WHERE id = ? AND pruned_at = '' RETURNING id"),
                (_rows.to_text(at), days, attempt_id))
            if cur.fetchone() is None:
                return False
            cur.execute(self._q("INSERT INTO audit_log (at, actor, action, detail) "
                                "VALUES (?, ?, ?, ?)"),
                        (_rows.to_text(entry.at), entry.actor, entry.action, entry.detail))
            return True
