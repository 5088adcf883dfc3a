"""The journal's side of emergency calls: each 911 call once, and each on-site notice of it
sent once (Kari's Law: the people on site are told of every 911 call).  A store of
:class:`~backline.journal.base.SqlJournal`; the tables are made by the emergency migration.

A call and the notices it owes are written in one transaction, so a notice is never owed for
a call that is not recorded, and a call told twice (the PBX's event, then its call record
after a restart) adds nothing the second time.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import backline.journal.rows as _rows
from backline.journal.store import SqlStore

if TYPE_CHECKING:
    pass


class NoticeState(enum.Enum):
    PENDING = "pending"
    SENT = "sent"
    EXPIRED = "expired"  # a desk-phone notice nobody answered in time: email and SMS carry it


@dataclass(frozen=True, slots=True)
class EmergencyCallRecord:
    """A 911 call as journaled.  ``late``: found in the PBX's record after the controller
    was away, so its notices went out late."""

    id: int
    key: str
    at: datetime
    desk_phone: str
    dialled: str
    who: str
    location: str
    late: bool
    node: str


@dataclass(frozen=True, slots=True)
class EmergencyNotice:
    """One person to tell about one call, by ``channel`` (email, sms, desk-phone)."""

    id: int
    call: EmergencyCallRecord
    channel: str
    recipient: str
    state: NoticeState
    tries: int
    next_try_at: datetime
    last_error: str
    sent_at: datetime | None


_CALL_COLUMNS = "c.id, c.key, c.at, c.desk_phone, c.dialled, c.who, c.location, c.late, c.node"
# Notices are aliased ``d`` as alert deliveries are: the backend's ``claim_lock`` (PostgreSQL:
# ``FOR UPDATE OF d SKIP LOCKED``) names that alias.
_NOTICE_COLUMNS = ("d.id, d.channel, d.recipient, d.state, d.tries, d.next_try_at, "
                   "d.last_error, d.sent_at, " + _CALL_COLUMNS)


class EmergencyJournal(SqlStore):
    """Emergency calls and notices; the journal provides the connection."""

    def record_emergency_call(self, key: str, at: datetime, desk_phone: str, dialled: str,
                              who: str, location: str, recipients: Sequence[tuple[str, str]],
                              *, late: bool, node: str = "") -> bool:
        """Record the call and a pending notice per (channel, recipient), once; True if the
        call was new.  Durable on return."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("SELECT id FROM emergency_calls WHERE key = ?"), (key,))
            if cur.fetchone() is not None:
                return False
            cur.execute(self._q(
                "INSERT INTO emergency_calls (key, at, desk_phone, dialled, who, location, "
                "late, node) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"),
                (key, _rows.to_text(at), desk_phone, dialled, who, location, int(late), node))
            call_id = int(cur.fetchone()[0])
            for channel, recipient in dict.fromkeys(recipients):
                cur.execute(self._q(
                    "INSERT INTO emergency_notices (call_id, channel, recipient, state, "
                    "next_try_at) VALUES (?, ?, ?, ?, ?)"),
                    (call_id, channel, recipient, NoticeState.PENDING.value,
                     _rows.to_text(at)))
            return True

    def claim_due_notices(self, now: datetime, lease_until: datetime,
                          limit: int = 100) -> list[EmergencyNotice]:
        """Pending notices due at ``now`` and not leased to another controller, oldest call
        first, now leased to the caller until ``lease_until``."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                f"SELECT {_NOTICE_COLUMNS} FROM emergency_notices d "
                "JOIN emergency_calls c ON c.id = d.call_id "
                "WHERE d.state = ? AND d.next_try_at <= ? AND d.claimed_until <= ? "
                "ORDER BY c.at, d.id LIMIT ?" + self.claim_lock),
                (NoticeState.PENDING.value, _rows.to_text(now), _rows.to_text(now), limit))
            due = [_notice(r) for r in cur.fetchall()]
            for n in due:
                cur.execute(self._q(
                    "UPDATE emergency_notices SET claimed_until = ? WHERE id = ?"),
                    (_rows.to_text(lease_until), n.id))
            return due

    def next_notice_at(self) -> datetime | None:
        """When the earliest pending notice falls due (its lease, if any, counted)."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "SELECT MIN(CASE WHEN claimed_until > next_try_at THEN claimed_until "
                "ELSE next_try_at END) FROM emergency_notices WHERE state = ?"),
                (NoticeState.PENDING.value,))
            row = cur.fetchone()
            return _rows.from_text(row[0]) if row is not None and row[0] else None

    def notice_done(self, notice_id: int, state: NoticeState, at: datetime,
                    error: str = "") -> None:
        """Sent (or, for a desk phone, expired): never tried again."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "UPDATE emergency_notices SET state = ?, sent_at = ?, tries = tries + 1, "
                "claimed_until = '', last_error = ? WHERE id = ? AND state = ?"),
                (state.value, _rows.to_text(at), error[:500], notice_id,
                 NoticeState.PENDING.value))

    def notice_failed(self, notice_id: int, next_try_at: datetime, error: str) -> None:
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "UPDATE emergency_notices SET tries = tries + 1, next_try_at = ?, "
                "claimed_until = '', last_error = ? WHERE id = ? AND state = ?"),
                (_rows.to_text(next_try_at), error[:500], notice_id,
                 NoticeState.PENDING.value))

    def emergency_calls(self, limit: int = 20) -> list[EmergencyCallRecord]:
        """The most recent 911 calls, newest first."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                f"SELECT {_CALL_COLUMNS} FROM emergency_calls c ORDER BY c.at DESC, c.id DESC "
                "LIMIT ?"), (limit,))
            return [_call(r) for r in cur.fetchall()]

    def emergency_notices(self, call_key: str | None = None) -> list[EmergencyNotice]:
        """Every notice (of one call, or of all), in the order they were owed."""
        with self._lock, self._transaction() as cur:
            where, params = ("WHERE c.key = ? ", (call_key,)) if call_key is not None \
                else ("", ())
            cur.execute(self._q(
                f"SELECT {_NOTICE_COLUMNS} FROM emergency_notices d "
                f"JOIN emergency_calls c ON c.id = d.call_id {where}ORDER BY d.id"), params)
            return [_notice(r) for r in cur.fetchall()]


def _call(row: Sequence[Any]) -> EmergencyCallRecord:
    return EmergencyCallRecord(int(row[0]), row[1], _rows.from_text(row[2]), row[3], row[4],
                               row[5], row[6], bool(row[7]), row[8])


def _notice(row: Sequence[Any]) -> EmergencyNotice:
    return EmergencyNotice(int(row[0]), _call(row[8:]), row[1], row[2], NoticeState(row[3]),
                           int(row[4]), _rows.from_text(row[5]), row[6],
                           _rows.from_text(row[7]) if row[7] else None)
