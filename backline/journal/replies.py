"""The journal's side of the outage SMS auto-reply: one reply per SMS attempt, kept as a
delivery of its own (migration 4 makes ``sms_replies``).

A reply is written right after its attempt, in the state the pure policy gave it
(``backline.features.sms.reply``): ``pending`` when it is to be sent, ``not-sent`` with the
reason when it never will be.  The sender (``backline.features.sms.auto_replies``) claims due
replies with a lease, as the alert deliveries are claimed, so one controller of several sends
each, and a restart picks up where the last one stopped; each try ends ``sent`` (the attempt's
outcome becomes ``auto-replied`` in the same commit) or ``failed`` with the reason, due again
later.  Once the outage is over an open reply is closed as ``not-sent``: its text ("we may not
see your message until the system is restored") would no longer be true.

``detail`` never holds a number or a text: only why, in words.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import backline.journal.rows as _rows
from backline.core.outage import Mode
from backline.core.records import Attempt, AttemptKind, Outcome
from backline.journal.store import SqlStore

if TYPE_CHECKING:
    from backline.journal.rows import Cursor


class ReplyState(enum.Enum):
    PENDING = "pending"    # to be sent, not tried yet
    FAILED = "failed"      # the last try failed (``detail``); tried again at ``next_try_at``
    SENT = "sent"          # the gateway took it
    NOT_SENT = "not-sent"  # never will be (``detail`` says why)

    @property
    def final(self) -> bool:
        return self in (ReplyState.SENT, ReplyState.NOT_SENT)


_OPEN = (ReplyState.PENDING.value, ReplyState.FAILED.value)


@dataclass(frozen=True, slots=True)
class SmsReply:
    """The automatic reply to one SMS attempt: from the practice number ``sender`` to the
    outside party ``recipient``."""

    id: int
    attempt_id: int
    sender: str
    recipient: str
    state: ReplyState
    detail: str
    tries: int
    next_try_at: datetime
    claimed_until: datetime | None
    sent_at: datetime | None
    message_sid: str


_COLUMNS = ("d.id, d.attempt_id, d.sender, d.recipient, d.state, d.detail, d.tries, "
            "d.next_try_at, d.claimed_until, d.sent_at, d.message_sid")


class ReplyJournal(SqlStore):
    """Reply operations; the journal provides the connection."""

    def add_sms_reply(self, attempt_id: int, sender: str, recipient: str, now: datetime,
                      not_sent: str = "") -> bool:
        """Keep the reply to ``attempt_id``: pending (due ``now``), or ``not-sent`` for the
        reason ``not_sent``.  True if new; a second call for the attempt changes nothing (a
        webhook posted again)."""
        state = ReplyState.NOT_SENT if not_sent else ReplyState.PENDING
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "INSERT INTO sms_replies (attempt_id, sender, recipient, state, detail, "
                "next_try_at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (attempt_id) DO NOTHING RETURNING id"),
                (attempt_id, sender, recipient, state.value, not_sent[:300],
                 _rows.to_text(now)))
            return cur.fetchone() is not None

    def claim_due_replies(self, now: datetime, lease_until: datetime,
                          limit: int = 50) -> list[SmsReply]:
        """Open replies due at ``now`` and not leased to anyone, oldest first, now leased
        until ``lease_until``."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                f"SELECT {_COLUMNS} FROM sms_replies d WHERE d.state IN (?, ?) "
                "AND d.next_try_at <= ? AND d.claimed_until <= ? "
                "ORDER BY d.next_try_at, d.id LIMIT ?" + self.claim_lock),
                (*_OPEN, _rows.to_text(now), _rows.to_text(now), limit))
            due = [_reply(r) for r in cur.fetchall()]
            for r in due:
                cur.execute(self._q("UPDATE sms_replies SET claimed_until = ? WHERE id = ?"),
                            (_rows.to_text(lease_until), r.id))
            return due

    def reply_sent(self, reply_id: int, at: datetime, message_sid: str) -> None:
        """The gateway took the reply: it is never sent again, and its attempt's outcome
        is ``auto-replied`` from this commit on."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "UPDATE sms_replies SET state = ?, sent_at = ?, message_sid = ?, "
                "tries = tries + 1, claimed_until = '', detail = '' WHERE id = ? AND state <> ?"),
                (ReplyState.SENT.value, _rows.to_text(at), message_sid[:64], reply_id,
                 ReplyState.SENT.value))
            cur.execute(self._q(
                "UPDATE attempts SET outcome = ? WHERE id = "
                "(SELECT attempt_id FROM sms_replies WHERE id = ?)"),
                (Outcome.AUTO_REPLIED.value, reply_id))

    def reply_failed(self, reply_id: int, next_try_at: datetime, why: str) -> None:
        """One more failed try (``why``); due again at ``next_try_at``."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "UPDATE sms_replies SET state = ?, tries = tries + 1, next_try_at = ?, "
                "claimed_until = '', detail = ? WHERE id = ? AND state IN (?, ?)"),
                (ReplyState.FAILED.value, _rows.to_text(next_try_at), why[:300], reply_id,
                 *_OPEN))

    def reply_not_sent(self, reply_id: int, why: str, *, tried: bool = True) -> None:
        """The reply will never be sent (``why``): a message no gateway would take."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "UPDATE sms_replies SET state = ?, tries = tries + ?, claimed_until = '', "
                "detail = ? WHERE id = ? AND state IN (?, ?)"),
                (ReplyState.NOT_SENT.value, 1 if tried else 0, why[:300], reply_id, *_OPEN))

    def release_replies(self, reply_ids: Sequence[int]) -> None:
        """Give back leases on replies claimed but not tried (shutting down)."""
        with self._lock, self._transaction() as cur:
            for reply_id in reply_ids:
                cur.execute(self._q(
                    "UPDATE sms_replies SET claimed_until = '' WHERE id = ? AND state IN (?, ?)"),
                    (reply_id, *_OPEN))

    def next_reply_at(self) -> datetime | None:
        """When the earliest open reply falls due (its lease, if any, counted)."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "SELECT MIN(CASE WHEN claimed_until > next_try_at THEN claimed_until "
                "ELSE next_try_at END) FROM sms_replies WHERE state IN (?, ?)"), _OPEN)
            row = cur.fetchone()
            return _rows.from_text(row[0]) if row is not None and row[0] else None

    def close_open_replies(self, now: datetime, why: str) -> int:
        """Once no outage is engaged, every open reply nobody is trying right now becomes
        ``not-sent`` for ``why``, its last failure kept in the reason; return how many.

        "No outage" is the journal's word, not the caller's: a controller that has not yet
        seen an outage just engaged (it looks once a second) must not close its replies."""
        with self._lock, self._transaction() as cur:
            if not self._normal_now(cur):
                return 0
            cur.execute(self._q("SELECT id FROM sms_replies WHERE state IN (?, ?) "
                                "AND claimed_until <= ?"), (*_OPEN, _rows.to_text(now)))
            ids = [int(r[0]) for r in cur.fetchall()]
            for reply_id in ids:
                self._close(cur, reply_id, now, why)
            return len(ids)

    def _normal_now(self, cur: Cursor) -> bool:
        cur.execute("SELECT mode FROM mode_changes ORDER BY id DESC LIMIT 1")
        row = cur.fetchone()
        return row is None or row[0] == Mode.NORMAL.value

    def final_reply(self, attempt_id: int, now: datetime, why: str) -> SmsReply | None:
        """The reply to ``attempt_id`` (None if it has none), closed as ``not-sent`` for
        ``why`` if it was still open, nobody is trying it and no outage is engaged (as in
        :meth:`close_open_replies`); otherwise it comes back open (its try decides)."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("SELECT id FROM sms_replies WHERE attempt_id = ?"),
                        (attempt_id,))
            row = cur.fetchone()
            if row is None:
                return None
            if self._normal_now(cur):
                self._close(cur, int(row[0]), now, why)
            cur.execute(self._q(f"SELECT {_COLUMNS} FROM sms_replies d WHERE d.id = ?"),
                        (int(row[0]),))
            return _reply(cur.fetchone())

    def _close(self, cur: Cursor, reply_id: int, now: datetime, why: str) -> None:
        cur.execute(self._q(
            "UPDATE sms_replies SET state = ?, detail = CASE WHEN detail = '' THEN ? "
            "ELSE CAST(? AS TEXT) || ' (last try: ' || detail || ')' END "
            "WHERE id = ? AND state IN (?, ?) AND claimed_until <= ?"),
            (ReplyState.NOT_SENT.value, why, why, reply_id, *_OPEN, _rows.to_text(now)))

    def replies_of_attempts(self, attempt_ids: Sequence[int]) -> dict[int, SmsReply]:
        """The replies to these attempts (those that have one), by attempt id."""
        if not attempt_ids:
            return {}
        marks = ", ".join("?" for _ in attempt_ids)
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(f"SELECT {_COLUMNS} FROM sms_replies d "
                                f"WHERE d.attempt_id IN ({marks})"), tuple(attempt_ids))
            return {r.attempt_id: r for r in map(_reply, cur.fetchall())}

    def sms_without_reply(self, since: datetime, limit: int = 10_000) -> list[Attempt]:
        """Outage SMS recorded at or after ``since`` that have no reply row: what a controller
        stopped between journaling an SMS and its reply still owes."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "SELECT * FROM attempts a WHERE a.kind = ? AND a.mode = ? AND a.outcome <> ? "
                "AND a.at >= ? AND NOT EXISTS "
                "(SELECT 1 FROM sms_replies r WHERE r.attempt_id = a.id) ORDER BY a.id LIMIT ?"),
                (AttemptKind.SMS.value, Mode.OUTAGE.value, Outcome.REFUSED.value,
                 _rows.to_text(since), limit))
            return [_rows.attempt_of(r) for r in cur.fetchall()]


def _reply(row: Sequence[Any]) -> SmsReply:
    (id_, attempt_id, sender, recipient, state, detail, tries, next_try_at, claimed_until,
     sent_at, message_sid) = row
    return SmsReply(int(id_), int(attempt_id), sender, recipient, ReplyState(state), detail,
                    int(tries), _rows.from_text(next_try_at),
                    _rows.from_text(claimed_until) if claimed_until else None,
                    _rows.from_text(sent_at) if sent_at else None, message_sid)
