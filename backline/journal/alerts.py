"""Backup alerts, their deliveries and their links.

An alert gathers attempts; it has one delivery per recipient (an email address or an
SMS number), each sent and retried on its own; each email try mints a link, kept as a
hash.  Deciding *where* an attempt goes is the caller's pure function (`place`); the
journal reads the newest alert and applies the decision in one transaction, so two
attempts arriving together cannot both open an alert.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, assert_never

from backline.core.outage import Mode
from backline.core.records import (
    AlertChannel,
    AlertDelivery,
    AlertLink,
    AlertSlot,
    AlertState,
    Attempt,
    JoinAlert,
    OpenAlert,
    Placement,
)
from backline.journal.rows import attempt_of, from_text, to_text
from backline.journal.store import JournalError, SqlStore


class AlertJournal(SqlStore):
    """Gathering outage attempts on alerts and sending each alert's deliveries."""

    def unalerted_attempts(self, since: datetime, limit: int = 100_000) -> list[Attempt]:
        """Attempts recorded in an outage at or after ``since`` that no alert lists yet,
        oldest first: what a controller stopped between journaling an attempt and gathering
        it still owes an alert for."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "SELECT * FROM attempts WHERE mode = ? AND at >= ? AND NOT EXISTS "
                "(SELECT 1 FROM alert_attempts WHERE alert_attempts.attempt_id = attempts.id) "
                "ORDER BY id LIMIT ?"), (Mode.OUTAGE.value, to_text(since), limit))
            return [attempt_of(r) for r in cur.fetchall()]

    def gather(self, attempt_ids: Sequence[int], now: datetime,
               place: Callable[[AlertSlot | None, datetime], Placement],
               recipients: Sequence[tuple[AlertChannel, str]],
               new_message_id: Callable[[], str]) -> int:
        """List each attempt on an alert; return how many were newly listed.

        ``place(newest alert or None, now)`` decides between joining the newest alert and
        opening another; an opened alert gets one pending delivery per recipient, due at its
        ``due_at``, each with a Message-ID from ``new_message_id()``.  An attempt already
        listed is skipped, so repeating a call changes nothing.
        """
        listed = 0
        with self._lock, self._transaction() as cur:
            self._exclusive(cur, "alerts")  # one gatherer decides on the newest alert at once
            for attempt_id in attempt_ids:
                cur.execute(self._q("SELECT 1 FROM alert_attempts WHERE attempt_id = ?"),
                            (attempt_id,))
                if cur.fetchone() is not None:
                    continue
                cur.execute("SELECT id, due_at, window_seconds, closed FROM alerts "
                            "ORDER BY id DESC LIMIT 1")
                row = cur.fetchone()
                newest = (AlertSlot(int(row[0]), from_text(row[1]), int(row[2]), bool(row[3]))
                          if row is not None else None)
                decision = place(newest, now)
                match decision:
                    case JoinAlert():
                        alert_id = decision.alert_id
                    case OpenAlert():
                        due = to_text(decision.due_at)
                        cur.execute(self._q(
                            "INSERT INTO alerts (created_at, due_at, window_seconds, closed) "
                            "VALUES (?, ?, ?, 0) RETURNING id"),
                            (to_text(now), due, decision.window_seconds))
                        alert_id = int(cur.fetchone()[0])
                        for channel, recipient in recipients:
                            cur.execute(self._q(
                                "INSERT INTO alert_deliveries (alert_id, channel, recipient, "
                                "message_id, state, next_try_at) VALUES (?, ?, ?, ?, ?, ?)"),
                                (alert_id, channel.value, recipient, new_message_id(),
                                 AlertState.PENDING.value, due))
                    case _:
                        assert_never(decision)
                cur.execute(self._q(
                    "INSERT INTO alert_attempts (attempt_id, alert_id) VALUES (?, ?)"),
                    (attempt_id, alert_id))
                listed += 1
        return listed

    def claim_due_deliveries(self, now: datetime, lease_until: datetime,
                             limit: int = 200) -> list[AlertDelivery]:
        """Pending deliveries due at ``now`` and not leased to someone else, in the order
        their alerts were made, now leased until ``lease_until``; their alerts are closed to
        new attempts.

        A recipient's alerts go in order: what is due is a recipient's (channel and address)
        earliest pending delivery, and with it every later one of theirs whose alert is due
        (its gathering over), whatever their own retry times.  Each failed try sets its own
        next try (an alert that failed three times waits longer than one that failed once),
        so after an SMTP outage a later alert would otherwise fall due, and go, before an
        earlier one."""
        pending = AlertState.PENDING.value
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                f"SELECT {_DELIVERY_COLUMNS} FROM alert_deliveries d "
                "JOIN alerts al ON al.id = d.alert_id "
                "WHERE d.state = ? AND d.claimed_until <= ? AND al.due_at <= ? "
                # The recipient's earliest pending delivery is due ...
                "AND (SELECT h.next_try_at FROM alert_deliveries h WHERE h.state = ? "
                "AND h.channel = d.channel AND h.recipient = d.recipient "
                "ORDER BY h.id LIMIT 1) <= ? "
                # ... and none before this one is leased to another sender.
                "AND NOT EXISTS (SELECT 1 FROM alert_deliveries e WHERE e.state = ? "
                "AND e.channel = d.channel AND e.recipient = d.recipient AND e.id < d.id "
                "AND e.claimed_until > ?) "
                "ORDER BY d.id LIMIT ?" + self.claim_lock),
                (pending, to_text(now), to_text(now), pending, to_text(now), pending,
                 to_text(now), limit))
            due = [_delivery(r) for r in cur.fetchall()]
            for alert_id in sorted({d.alert_id for d in due}):
                cur.execute(self._q("UPDATE alerts SET closed = 1 WHERE id = ?"), (alert_id,))
            for d in due:
                cur.execute(self._q(
                    "UPDATE alert_deliveries SET claimed_until = ? WHERE id = ?"),
                    (to_text(lease_until), d.id))
            return due

    def next_delivery_at(self) -> datetime | None:
        """When the earliest pending delivery falls due (its lease, if any, counted): only a
        recipient's earliest pending one counts, as only it can make theirs due (see
        ``claim_due_deliveries``)."""
        pending = AlertState.PENDING.value
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "SELECT MIN(CASE WHEN d.claimed_until > d.next_try_at THEN d.claimed_until "
                "ELSE d.next_try_at END) FROM alert_deliveries d WHERE d.state = ? "
                "AND NOT EXISTS (SELECT 1 FROM alert_deliveries e WHERE e.state = ? "
                "AND e.channel = d.channel AND e.recipient = d.recipient AND e.id < d.id)"),
                (pending, pending))
            row = cur.fetchone()
            return from_text(row[0]) if row is not None and row[0] else None

    def add_alert_link(self, delivery_id: int, token_hash: str, created_at: datetime,
                       expires_at: datetime) -> int:
        """Keep a new link (by its hash) for ``delivery_id``'s alert; return the link's id."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "INSERT INTO alert_links (alert_id, delivery_id, token_hash, created_at, "
                "expires_at) SELECT alert_id, id, ?, ?, ? FROM alert_deliveries WHERE id = ?"),
                (token_hash, to_text(created_at), to_text(expires_at), delivery_id))
            cur.execute(self._q("SELECT id FROM alert_links WHERE token_hash = ?"),
                        (token_hash,))
            row = cur.fetchone()
            if row is None:
                raise JournalError(f"no alert delivery {delivery_id}")
            return int(row[0])

    def delivery_sent(self, delivery_id: int, at: datetime) -> None:
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "UPDATE alert_deliveries SET state = ?, sent_at = ?, tries = tries + 1, "
                "claimed_until = '', last_error = '' WHERE id = ?"),
                (AlertState.SENT.value, to_text(at), delivery_id))

    def delivery_failed(self, delivery_id: int, next_try_at: datetime, error: str) -> None:
        """One more failed try; the delivery is due again at ``next_try_at``."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "UPDATE alert_deliveries SET tries = tries + 1, next_try_at = ?, "
                "claimed_until = '', last_error = ? WHERE id = ? AND state = ?"),
                (to_text(next_try_at), error[:500], delivery_id, AlertState.PENDING.value))

    def release_deliveries(self, delivery_ids: Sequence[int]) -> None:
        """Give back leases on deliveries that were claimed but not tried (shutting down)."""
        with self._lock, self._transaction() as cur:
            for delivery_id in delivery_ids:
                cur.execute(self._q(
                    "UPDATE alert_deliveries SET claimed_until = '' WHERE id = ? AND state = ?"),
                    (delivery_id, AlertState.PENDING.value))

    def alert_deliveries(self, alert_id: int | None = None) -> list[AlertDelivery]:
        """Every delivery (of ``alert_id``, or of all alerts), oldest first."""
        with self._lock, self._transaction() as cur:
            where, params = ("WHERE d.alert_id = ? ", (alert_id,)) if alert_id is not None \
                else ("", ())
            cur.execute(self._q(
                f"SELECT {_DELIVERY_COLUMNS} FROM alert_deliveries d "
                f"JOIN alerts al ON al.id = d.alert_id {where}ORDER BY d.id"), params)
            return [_delivery(r) for r in cur.fetchall()]

    def alert_backlog(self) -> int:
        """Deliveries not yet accepted by the SMTP server or the SMS gateway."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("SELECT COUNT(*) FROM alert_deliveries WHERE state = ?"),
                        (AlertState.PENDING.value,))
            return int(cur.fetchone()[0])

    def alert_link(self, token_hash: str) -> AlertLink | None:
        """The link whose token hashes to ``token_hash``, expired or not; None if unknown."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "SELECT id, alert_id, delivery_id, created_at, expires_at FROM alert_links "
                "WHERE token_hash = ?"), (token_hash,))
            row = cur.fetchone()
            if row is None:
                return None
            return AlertLink(int(row[0]), int(row[1]), int(row[2]), from_text(row[3]),
                             from_text(row[4]))

    def alert_attempts(self, alert_id: int) -> list[Attempt]:
        """The attempts an alert lists, oldest first."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "SELECT attempts.* FROM attempts JOIN alert_attempts "
                "ON alert_attempts.attempt_id = attempts.id "
                "WHERE alert_attempts.alert_id = ? ORDER BY attempts.id"), (alert_id,))
            return [attempt_of(r) for r in cur.fetchall()]


_DELIVERY_COLUMNS = ("d.id, d.alert_id, d.channel, d.recipient, d.message_id, d.state, d.tries, "
                     "d.next_try_at, d.last_error, d.sent_at, al.due_at")


def _delivery(row: Sequence[Any]) -> AlertDelivery:
    (id_, alert_id, channel, recipient, message_id, state, tries, next_try_at, last_error,
     sent_at, due_at) = row
    return AlertDelivery(int(id_), int(alert_id), AlertChannel(channel), recipient, message_id,
                         AlertState(state), int(tries), from_text(next_try_at), last_error,
                         from_text(sent_at) if sent_at else None, from_text(due_at))
