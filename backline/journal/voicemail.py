"""The journal's side of voicemail emails: each member who opted in is told of each message
once (an email with a link, nothing of the caller), and each try's link is kept only as its
token's hash.  A store of :class:`~backline.journal.base.SqlJournal` (migration 15).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import backline.journal.rows as _rows
from backline.core.records import Attempt, AttemptKind
from backline.journal.store import SqlStore


class EmailState(enum.Enum):
    PENDING = "pending"
    SENT = "sent"


@dataclass(frozen=True, slots=True)
class VoicemailEmail:
    """One member to tell of one message (``attempt``), at their business email."""

    id: int
    attempt: Attempt
    user_id: str
    recipient: str
    state: EmailState
    tries: int


@dataclass(frozen=True, slots=True)
class VoicemailLink:
    """A link as the journal keeps it: the token's hash, never the token."""

    id: int
    email_id: int
    attempt_id: int
    created_at: datetime
    expires_at: datetime


_EMAIL_COLUMNS = "d.id, d.user_id, d.recipient, d.state, d.tries"


class VoicemailJournal(SqlStore):
    """Voicemail emails and their links; the journal provides the connection."""

    def owe_voicemail_emails(self, attempt_id: int, recipients: Sequence[tuple[str, str]],
                             now: datetime) -> int:
        """One pending email per (user, address) for the message ``attempt_id``, once;
        return how many are new."""
        new = 0
        with self._lock, self._transaction() as cur:
            for user_id, address in recipients:
                cur.execute(self._q(
                    "INSERT INTO voicemail_emails (attempt_id, user_id, recipient, state, "
                    "next_try_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id"),
                    (attempt_id, user_id, address, EmailState.PENDING.value,
                     _rows.to_text(now)))
                new += len(cur.fetchall())
        return new

    def voicemail_unconsidered(self, since: datetime, considered: int) -> list[Attempt]:
        """Messages at or after ``since`` with an id above ``considered`` and no email owed
        (none owed yet, or nobody to tell), oldest first."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "SELECT a.* FROM attempts a WHERE a.kind = ? AND a.at >= ? AND a.id > ? "
                "AND NOT EXISTS (SELECT 1 FROM voicemail_emails d WHERE d.attempt_id = a.id) "
                "ORDER BY a.id"),
                (AttemptKind.VOICEMAIL.value, _rows.to_text(since), considered))
            return [_rows.attempt_of(r) for r in cur.fetchall()]

    def claim_due_voicemail_emails(self, now: datetime, lease_until: datetime,
                                   limit: int = 100) -> list[VoicemailEmail]:
        """Pending emails due at ``now`` and not leased to another controller, oldest message
        first, now leased to the caller until ``lease_until``."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                f"SELECT {_EMAIL_COLUMNS}, a.* FROM voicemail_emails d "
                "JOIN attempts a ON a.id = d.attempt_id "
                "WHERE d.state = ? AND d.next_try_at <= ? AND d.claimed_until <= ? "
                "ORDER BY a.at, d.id LIMIT ?" + self.claim_lock),
                (EmailState.PENDING.value, _rows.to_text(now), _rows.to_text(now), limit))
            due = [_email(r) for r in cur.fetchall()]
            for e in due:
                cur.execute(self._q(
                    "UPDATE voicemail_emails SET claimed_until = ? WHERE id = ?"),
                    (_rows.to_text(lease_until), e.id))
            return due

    def next_voicemail_email_at(self) -> datetime | None:
        """When the earliest pending email falls due (its lease, if any, counted)."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "SELECT MIN(CASE WHEN claimed_until > next_try_at THEN claimed_until "
                "ELSE next_try_at END) FROM voicemail_emails WHERE state = ?"),
                (EmailState.PENDING.value,))
            row = cur.fetchone()
            return _rows.from_text(row[0]) if row is not None and row[0] else None

    def voicemail_email_sent(self, email_id: int, at: datetime) -> None:
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "UPDATE voicemail_emails SET state = ?, sent_at = ?, tries = tries + 1, "
                "claimed_until = '', last_error = '' WHERE id = ? AND state = ?"),
                (EmailState.SENT.value, _rows.to_text(at), email_id,
                 EmailState.PENDING.value))

    def voicemail_email_failed(self, email_id: int, next_try_at: datetime, error: str) -> None:
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "UPDATE voicemail_emails SET tries = tries + 1, next_try_at = ?, "
                "claimed_until = '', last_error = ? WHERE id = ? AND state = ?"),
                (_rows.to_text(next_try_at), error[:500], email_id,
                 EmailState.PENDING.value))

    def voicemail_emails(self) -> list[VoicemailEmail]:
        """Every voicemail email, in the order they were owed."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                f"SELECT {_EMAIL_COLUMNS}, a.* FROM voicemail_emails d "
                "JOIN attempts a ON a.id = d.attempt_id ORDER BY d.id"))
            return [_email(r) for r in cur.fetchall()]

    def add_voicemail_link(self, email_id: int, attempt_id: int, token_hash: str,
                           created_at: datetime, expires_at: datetime) -> int:
        """Keep a new link (by its hash) to message ``attempt_id``; return its id.  Durable
        before the email carrying it leaves."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "INSERT INTO voicemail_links (email_id, attempt_id, token_hash, created_at, "
                "expires_at) VALUES (?, ?, ?, ?, ?) RETURNING id"),
                (email_id, attempt_id, token_hash, _rows.to_text(created_at),
                 _rows.to_text(expires_at)))
            return int(cur.fetchone()[0])

    def voicemail_link(self, token_hash: str) -> VoicemailLink | None:
        """The link whose token hashes to ``token_hash``, expired or not; None if unknown."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "SELECT id, email_id, attempt_id, created_at, expires_at FROM voicemail_links "
                "WHERE token_hash = ?"), (token_hash,))
            row = cur.fetchone()
        if row is None:
            return None
        return VoicemailLink(int(row[0]), int(row[1]), int(row[2]), _rows.from_text(row[3]),
                             _rows.from_text(row[4]))

    def voicemail_between(self, since: datetime, until: datetime) -> list[Attempt]:
        """Messages journaled as left from ``since`` to ``until``, oldest first: those a
        member may have deleted from the spool since (a call that left one is not missed)."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "SELECT a.* FROM attempts a WHERE a.kind = ? AND a.at >= ? AND a.at <= ? "
                "ORDER BY a.at, a.id"),
                (AttemptKind.VOICEMAIL.value, _rows.to_text(since), _rows.to_text(until)))
            return [_rows.attempt_of(r) for r in cur.fetchall()]

    def voicemail_message(self, attempt_id: int) -> Attempt | None:
        """The message a link opens."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("SELECT a.* FROM attempts a WHERE a.id = ? AND a.kind = ?"),
                        (attempt_id, AttemptKind.VOICEMAIL.value))
            row = cur.fetchone()
            return _rows.attempt_of(row) if row is not None else None


def _email(row: Sequence[Any]) -> VoicemailEmail:
    return VoicemailEmail(int(row[0]), _rows.attempt_of(row[5:]), row[1], row[2],
                          EmailState(row[3]), int(row[4]))
