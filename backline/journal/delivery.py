"""The journal's side of delivery to the practice's inbox: held emails and the inbox queue.

A store of :class:`~backline.journal.base.SqlJournal` (migration 3 makes its tables).  Every
item owed to the inbox (an attempt recorded with ``Delivery.HELD``, or an email the SMTP
listener took in) gets one ``inbox_items`` row; the drain (``backline.features.inbox.service``)
sends them in (received_at, id) order and records here what the inbox said.  Acceptance and
the attempt's ``delivery`` change in one transaction, so ``backline attempts`` and the status
page's backlog never disagree with the queue.

Portable SQL only: ``?`` placeholders (a backend rewrites them), ``INSERT … RETURNING id``,
TEXT and INTEGER columns.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import backline.journal.rows as _rows
from backline.core.outage import Mode
from backline.core.records import Attempt, Delivery
from backline.journal.store import SqlStore

if TYPE_CHECKING:
    from backline.journal.rows import Cursor

DRAIN_LEASE = "drain"


class ItemState(enum.Enum):
    HELD = "held"            # not yet accepted by the inbox
    DELIVERED = "delivered"  # the inbox accepted it (2xx); never sent again
    FAILED = "failed"        # the inbox refused it for good (4xx); ops must look


@dataclass(frozen=True, slots=True)
class HeldEmail:
    """An email as the SMTP listener took it in: ``data`` byte for byte.  Queue and list
    queries leave ``data`` empty (b""): a backlog of big emails must not sit in memory at
    once; :meth:`InboxJournal.held_email_data` reads one when it is sent.  Once the inbox
    accepted it, the journal keeps no body at all."""

    id: int
    received_at: datetime
    mail_from: str
    rcpt_to: tuple[str, ...]
    data: bytes


@dataclass(frozen=True, slots=True)
class InboxItem:
    """One item owed to the inbox: exactly one of ``attempt`` and ``email`` is set."""

    id: int
    key: str  # stable across tries and restarts: the idempotency key's source
    kind: str  # call, sms, fax or email
    received_at: datetime
    state: ItemState
    tries: int
    next_try_at: datetime | None
    last_error: str
    accepted_at: datetime | None
    attempt: Attempt | None
    email: HeldEmail | None


_ITEM_COLUMNS = ("i.id, i.item_key, i.kind, i.received_at, i.state, i.tries, i.next_try_at, "
                 "i.last_error, i.accepted_at, i.attempt_id, i.email_id")
_ATTEMPT_COLUMNS = ("a.id, a.key, a.at, a.kind, a.mode, a.sender, a.recipient, a.outcome, "
                    "a.text, a.file, a.detail, a.node, a.delivery, a.sender_raw, a.pruned_at, "
                    "a.pruned_days")
_EMAIL_COLUMNS = "e.id, e.received_at, e.mail_from, e.rcpt_to"  # not the body: see HeldEmail
# Where each part starts in a row of _items' SELECT: counted, so a column added to one part
# cannot shift the next part's fields unnoticed.
_ATTEMPT_AT = _ITEM_COLUMNS.count(",") + 1
_EMAIL_AT = _ATTEMPT_AT + _ATTEMPT_COLUMNS.count(",") + 1


class InboxJournal(SqlStore):
    """Queue operations for the inbox drain; the journal provides the connection."""

    # -- taking items in -------------------------------------------------------------------

    def hold_email(self, key: str, received_at: datetime, mail_from: str,
                   rcpt_to: Sequence[str], data: bytes) -> int:
        """Keep an email durably and queue it for the inbox; return its id.  Returns only
        once it is committed, so the SMTP listener may then answer 250."""
        text = base64.b64encode(data).decode("ascii")
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "INSERT INTO held_emails (received_at, mail_from, rcpt_to, data_b64) "
                "VALUES (?, ?, ?, ?) RETURNING id"),
                (_rows.to_text(received_at), mail_from, "\n".join(rcpt_to), text))
            email_id = int(cur.fetchone()[0])
            cur.execute(self._q(
                "INSERT INTO inbox_items (item_key, kind, email_id, received_at, state, size) "
                "VALUES (?, 'email', ?, ?, ?, ?)"),
                (key, email_id, _rows.to_text(received_at), ItemState.HELD.value, len(text)))
            return email_id

    def held_email_bytes(self) -> int:
        """What the emails not yet accepted by the inbox take in the journal (their stored
        text; a failed one stays until ops act, so it counts)."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("SELECT COALESCE(SUM(size), 0) FROM inbox_items "
                                "WHERE kind = 'email' AND state <> ?"),
                        (ItemState.DELIVERED.value,))
            return int(cur.fetchone()[0])

    def enqueue_held(self) -> int:
        """Queue every attempt held for the inbox that is not queued yet; return how many.
        Cheap to repeat: the drain runs it each round, so attempts journaled by any path
        (controller, CDR import, fax spool) join the queue without a hook of their own."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "INSERT INTO inbox_items (item_key, kind, attempt_id, received_at, state) "
                "SELECT 'attempt:' || a.key, a.kind, a.id, a.at, ? FROM attempts a "
                "WHERE a.delivery = ? AND NOT EXISTS "
                "(SELECT 1 FROM inbox_items i WHERE i.attempt_id = a.id) "
                # Two controllers enqueueing at once (PostgreSQL): one row, no error.
                "ON CONFLICT DO NOTHING RETURNING id"),
                (ItemState.HELD.value, Delivery.HELD.value))
            return len(cur.fetchall())

    # -- the drain's lease -----------------------------------------------------------------

    def claim_drain(self, holder: str, now: datetime, until: datetime, *,
                    dead: str = "") -> bool:
        """Take (or keep) the drain lease for ``holder`` until ``until``; False if another
        holder's lease is still running.  ``dead``: a holder known to be gone (its process
        no longer runs), whose lease is taken even before it expires, if it still holds it."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "UPDATE inbox_lease SET holder = ?, lease_until = ? "
                "WHERE name = ? AND (holder = ? OR lease_until <= ? OR holder = ?) "
                "RETURNING name"),
                (holder, _rows.to_text(until), DRAIN_LEASE, holder, _rows.to_text(now),
                 dead or holder))
            return cur.fetchone() is not None

    def claim_lease(self, name: str, holder: str, now: datetime, until: datetime) -> bool:
        """Take (or keep) the lease ``name`` (another row of ``inbox_lease``, made on first
        use) for ``holder`` until ``until``; False while another holder's lease runs.  For
        work that one controller of several must do once (an outage reminder)."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "INSERT INTO inbox_lease (name, holder, lease_until) VALUES (?, '', '') "
                "ON CONFLICT DO NOTHING"), (name,))
            cur.execute(self._q(
                "UPDATE inbox_lease SET holder = ?, lease_until = ? "
                "WHERE name = ? AND (holder = ? OR lease_until <= ?) RETURNING name"),
                (holder, _rows.to_text(until), name, holder, _rows.to_text(now)))
            return cur.fetchone() is not None

    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease ``name`` up (its row goes), if ``holder`` still holds it."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("DELETE FROM inbox_lease WHERE name = ? AND holder = ? "
                                "AND name <> ?"), (name, holder, DRAIN_LEASE))

    def drain_holder(self) -> str:
        """Who holds (or last held) the drain lease; "" if nobody ever did."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("SELECT holder FROM inbox_lease WHERE name = ?"),
                        (DRAIN_LEASE,))
            row = cur.fetchone()
            return str(row[0]) if row is not None else ""

    def release_drain(self, holder: str) -> None:
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "UPDATE inbox_lease SET lease_until = '' WHERE name = ? AND holder = ?"),
                (DRAIN_LEASE, holder))

    # -- the queue -------------------------------------------------------------------------

    def next_inbox_items(self, limit: int = 50) -> list[InboxItem]:
        """The oldest items not yet accepted or refused, in the order they go out."""
        return self._items("WHERE i.state = ? ORDER BY i.received_at, i.id LIMIT ?",
                           (ItemState.HELD.value, limit))

    def inbox_items(self, state: ItemState | None = None, limit: int = 1000) -> list[InboxItem]:
        """Items (in ``state``, or all), most recent ``limit`` of them, in queue order."""
        where, params = ("", []) if state is None else ("WHERE i.state = ? ", [state.value])
        rows = self._items(f"{where}ORDER BY i.received_at DESC, i.id DESC LIMIT ?",
                           (*params, limit))
        return rows[::-1]

    def held_email_data(self, email_id: int) -> bytes:
        """One held email's bytes, as taken in (b"" once the inbox accepted it)."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("SELECT data_b64 FROM held_emails WHERE id = ?"), (email_id,))
            row = cur.fetchone()
        if row is None:
            raise KeyError(f"no held email {email_id}")
        return base64.b64decode(row[0])

    def requeue_failed(self) -> int:
        """Put every item the inbox refused back in the queue (their attempts back to
        ``held``), for when the cause is fixed; return how many.  They go out in their
        received order again, so ahead of later items."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "UPDATE attempts SET delivery = ? WHERE id IN (SELECT attempt_id FROM "
                "inbox_items WHERE state = ? AND attempt_id IS NOT NULL)"),
                (Delivery.HELD.value, ItemState.FAILED.value))
            cur.execute(self._q(
                "UPDATE inbox_items SET state = ?, next_try_at = '' WHERE state = ? "
                "RETURNING id"),
                (ItemState.HELD.value, ItemState.FAILED.value))
            return len(cur.fetchall())

    def _items(self, tail: str, params: Sequence[Any]) -> list[InboxItem]:
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                f"SELECT {_ITEM_COLUMNS}, {_ATTEMPT_COLUMNS}, {_EMAIL_COLUMNS} "
                "FROM inbox_items i LEFT JOIN attempts a ON a.id = i.attempt_id "
                f"LEFT JOIN held_emails e ON e.id = i.email_id {tail}"), params)
            return [_item(r) for r in cur.fetchall()]

    def inbox_accepted(self, item_ids: Sequence[int], at: datetime) -> None:
        """The inbox took these items (2xx): they are never sent again, and their attempts
        show ``delivered``.  One commit for several: the drain records acceptances in
        batches (a crash before the commit only re-sends items the inbox already has, which
        their idempotency keys make harmless)."""
        with self._lock, self._transaction() as cur:
            for item_id in item_ids:
                self._settle(cur, item_id, ItemState.DELIVERED, Delivery.DELIVERED, at, "")

    def inbox_refused(self, item_id: int, at: datetime, reason: str) -> None:
        """The inbox refused the item for good (4xx): reported, never retried."""
        self._finish(item_id, ItemState.FAILED, Delivery.FAILED, at, reason)

    def _finish(self, item_id: int, state: ItemState, delivery: Delivery, at: datetime,
                reason: str) -> None:
        with self._lock, self._transaction() as cur:
            self._settle(cur, item_id, state, delivery, at, reason)

    def _settle(self, cur: Cursor, item_id: int, state: ItemState, delivery: Delivery,
                at: datetime, reason: str) -> None:
        # `state = held` in the WHERE: an item settled once stays as it was settled.
        cur.execute(self._q(
            "UPDATE inbox_items SET state = ?, tries = tries + 1, last_error = ?, "
            "accepted_at = ? WHERE id = ? AND state = ?"),
            (state.value, reason[:300],
             _rows.to_text(at) if state is ItemState.DELIVERED else "", item_id,
             ItemState.HELD.value))
        cur.execute(self._q(
            "UPDATE attempts SET delivery = ? WHERE id = "
            "(SELECT attempt_id FROM inbox_items WHERE id = ? AND state = ?)"),
            (delivery.value, item_id, state.value))
        if state is ItemState.DELIVERED:
            # The inbox has it: patient mail should not stay in the journal (or its backups).
            cur.execute(self._q(
                "UPDATE held_emails SET data_b64 = '' WHERE id = "
                "(SELECT email_id FROM inbox_items WHERE id = ? AND state = ?)"),
                (item_id, state.value))

    def inbox_retry(self, item_id: int, next_try_at: datetime, reason: str) -> None:
        """A try that did not reach acceptance (timeout, 5xx, connection lost)."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "UPDATE inbox_items SET tries = tries + 1, next_try_at = ?, last_error = ? "
                "WHERE id = ? AND state = ?"),
                (_rows.to_text(next_try_at), reason[:300], item_id, ItemState.HELD.value))

    def inbox_counts(self) -> dict[str, int]:
        """Queued items by state (held, delivered, failed)."""
        with self._lock, self._transaction() as cur:
            cur.execute("SELECT state, COUNT(*) FROM inbox_items GROUP BY state")
            return {str(state): int(n) for state, n in cur.fetchall()}

    def held(self) -> dict[str, int]:
        """Attempts and emails waiting for the inbox (received in an outage), by kind."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("SELECT kind, COUNT(*) FROM attempts WHERE delivery = ? "
                                "GROUP BY kind"), (Delivery.HELD.value,))
            held = {str(kind): int(n) for kind, n in cur.fetchall()}
            cur.execute(self._q("SELECT COUNT(*) FROM inbox_items WHERE kind = 'email' "
                                "AND state = ?"), (ItemState.HELD.value,))
            emails = int(cur.fetchone()[0])
            return held | {"email": emails} if emails else held

    def held_between(self, since: datetime, until: datetime) -> dict[str, int]:
        """What an outage from ``since`` to ``until`` held, by kind: its attempts (``call``,
        ``sms``, ``fax``) and the emails kept (``email``), whether delivered since or not."""
        with self._lock, self._transaction() as cur:
            window = (_rows.to_text(since), _rows.to_text(until))
            cur.execute(self._q("SELECT kind, COUNT(*) FROM attempts WHERE mode = ? AND "
                                "at >= ? AND at <= ? GROUP BY kind"),
                        (Mode.OUTAGE.value, *window))
            held = {str(kind): int(n) for kind, n in cur.fetchall()}
            cur.execute(self._q("SELECT COUNT(*) FROM held_emails WHERE received_at >= ? "
                                "AND received_at <= ?"), window)
            return held | {"email": int(cur.fetchone()[0])}

    def item_of_attempts(self, attempt_ids: Sequence[int]) -> dict[int, InboxItem]:
        """The queue rows of these attempts (those queued), by attempt id."""
        if not attempt_ids:
            return {}
        marks = ", ".join("?" for _ in attempt_ids)
        rows = self._items(f"WHERE i.attempt_id IN ({marks})", tuple(attempt_ids))
        return {r.attempt.id: r for r in rows if r.attempt is not None}


def _item(row: Sequence[Any]) -> InboxItem:
    (id_, key, kind, received_at, state, tries, next_try_at, last_error, accepted_at,
     attempt_id, email_id) = row[:_ATTEMPT_AT]
    attempt = _rows.attempt_of(row[_ATTEMPT_AT:_EMAIL_AT]) if attempt_id is not None else None
    email = None
    if email_id is not None:
        e_id, e_at, mail_from, rcpt_to = row[_EMAIL_AT:_EMAIL_AT + 4]
        email = HeldEmail(int(e_id), _rows.from_text(e_at), mail_from,
                          tuple(r for r in str(rcpt_to).split("\n") if r), b"")
    return InboxItem(int(id_), key, kind, _rows.from_text(received_at), ItemState(state),
                     int(tries), _rows.from_text(next_try_at) if next_try_at else None,
                     last_error, _rows.from_text(accepted_at) if accepted_at else None,
                     attempt, email)
