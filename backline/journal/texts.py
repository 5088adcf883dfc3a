"""The journal's side of staff texting: one row per text a member of staff sent from a
practice number, keyed by the caller's idempotency key (migration 13 makes ``staff_texts``).

The life of a text, each step one commit:

- ``pending``: asked for and allowed (:func:`backline.core.texting.decide_text`), due now;
- claimed: leased to one controller (``claimed_by`` until ``claimed_until``), as alert
  deliveries are, so controllers sharing the journal never both try it;
- ``sending``: handed to the gateway (the try counted) *before* the request leaves.  A
  controller that stops before this step leaves a claim that lapses, and the text is sent
  once by whoever claims it next; one that stops after it may have sent it, so a text found
  ``sending`` with its lease lapsed is ``in-doubt`` and never tried again (the Messages API
  takes no idempotency key: a second try could text the patient twice).  A status callback
  for it later says it went;
- ``sent`` (the gateway took it: ``message_sid``), ``failed`` (a try the gateway certainly
  did not act on: due again at ``next_try_at``), ``not-sent`` (never will be: ``detail``).

``delivery`` is the gateway's own status of a sent text (queued, sent, delivered,
undelivered, failed), from its signed status callbacks; it never moves backwards.

The text is patient data, stored as an inbound SMS's text is (``attempts.text``): in the
journal, whose files are private to the controller's user (``backline.journal.sqlite``).
``detail`` and the audit log never hold it, and name the party only by its last digits.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import backline.journal.rows as _rows
from backline.core.e164 import redact
from backline.core.texting import later_status
from backline.journal.rows import Cursor
from backline.journal.store import SqlStore


class TextState(enum.Enum):
    PENDING = "pending"
    FAILED = "failed"
    SENDING = "sending"
    SENT = "sent"
    IN_DOUBT = "in-doubt"
    NOT_SENT = "not-sent"


_OPEN = (TextState.PENDING.value, TextState.FAILED.value)


@dataclass(frozen=True, slots=True)
class StaffText:
    """One text: ``user`` texted ``body`` from the practice number ``sender`` to the party
    ``recipient``."""

    id: int
    key: str
    at: datetime
    user: str
    sender: str
    recipient: str
    body: str
    state: TextState
    detail: str
    tries: int
    next_try_at: datetime
    sent_at: datetime | None
    message_sid: str
    delivery: str
    delivery_at: datetime | None
    error_code: str

    def same_request(self, user: str, sender: str, recipient: str, body: str) -> bool:
        """Whether a request under this text's key asks for this very text."""
        return (self.user, self.sender, self.recipient, self.body) == (user, sender,
                                                                       recipient, body)


_COLUMNS = ("d.id, d.key, d.at, d.user_id, d.sender, d.recipient, d.body, d.state, d.detail, "
            "d.tries, d.next_try_at, d.sent_at, d.message_sid, d.delivery, d.delivery_at, "
            "d.error_code")


class TextJournal(SqlStore):
    """Staff texts; the journal provides the connection."""

    def add_text(self, key: str, at: datetime, user: str, sender: str, recipient: str,
                 body: str, via: str = "") -> tuple[StaffText, bool]:
        """Keep a text, pending and due ``at``, and audit who asked and, in ``via``, through
        whom (the API's token-holder, the CLI's login); or, when ``key`` is known already,
        the text kept under it.  True if it is new.  Durable on return."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "INSERT INTO staff_texts (key, at, user_id, sender, recipient, body, state, "
                "next_try_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING "
                "RETURNING id"),
                (key, _rows.to_text(at), user, sender, recipient, body,
                 TextState.PENDING.value, _rows.to_text(at)))
            new = cur.fetchone() is not None
            if new:
                cur.execute(self._q("INSERT INTO audit_log (at, actor, action, detail) "
                                    "VALUES (?, ?, ?, ?)"),
                            (_rows.to_text(at), user, "text.send",
                             f"{user} texted from {sender} to {redact(recipient)}"
                             + (f" (via {via})" if via else "")))
            cur.execute(self._q(f"SELECT {_COLUMNS} FROM staff_texts d WHERE d.key = ?"),
                        (key,))
            return _text(cur.fetchone()), new

    def text_by_key(self, key: str) -> StaffText | None:
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(f"SELECT {_COLUMNS} FROM staff_texts d WHERE d.key = ?"),
                        (key,))
            row = cur.fetchone()
            return _text(row) if row is not None else None

    def staff_texts(self, limit: int = 100, since: datetime | None = None
                    ) -> list[StaffText]:
        """The latest texts (asked for at or after ``since``), newest first."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(f"SELECT {_COLUMNS} FROM staff_texts d WHERE d.at >= ? "
                                "ORDER BY d.id DESC LIMIT ?"),
                        (_rows.to_text(since) if since else "", limit))
            return [_text(r) for r in cur.fetchall()]

    def claim_due_texts(self, now: datetime, lease_until: datetime, holder: str,
                        limit: int = 50) -> list[StaffText]:
        """Open texts due at ``now`` and not leased to anyone, oldest first, now leased to
        ``holder`` until ``lease_until``.  First, a text left ``sending`` by a controller
        whose lease lapsed becomes ``in-doubt``: it may have gone."""
        when = _rows.to_text(now)
        with self._lock, self._transaction() as cur:
            self._lapse(cur, now)
            cur.execute(self._q(
                f"SELECT {_COLUMNS} FROM staff_texts d WHERE d.state IN (?, ?) "
                "AND d.next_try_at <= ? AND d.claimed_until <= ? "
                "ORDER BY d.next_try_at, d.id LIMIT ?" + self.claim_lock),
                (*_OPEN, when, when, limit))
            due = [_text(r) for r in cur.fetchall()]
            for t in due:
                cur.execute(self._q("UPDATE staff_texts SET claimed_until = ?, claimed_by = ? "
                                    "WHERE id = ?"), (_rows.to_text(lease_until), holder, t.id))
            return due

    def _lapse(self, cur: Cursor, now: datetime) -> None:
        cur.execute(self._q(
            "UPDATE staff_texts SET state = ?, claimed_until = '', claimed_by = '', "
            "detail = ? WHERE state = ? AND claimed_until <= ?"),
            (TextState.IN_DOUBT.value, IN_DOUBT_STOPPED, TextState.SENDING.value,
             _rows.to_text(now)))

    def text_handed(self, text_id: int, now: datetime, holder: str) -> bool:
        """About to post the text to the gateway: ``sending``, the try counted.  False (and
        nothing changed) unless ``holder`` still holds its lease at ``now``: then someone
        else may be sending it, and this controller must not."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "UPDATE staff_texts SET state = ?, tries = tries + 1 WHERE id = ? "
                "AND state IN (?, ?) AND claimed_by = ? AND claimed_until > ? RETURNING id"),
                (TextState.SENDING.value, text_id, *_OPEN, holder, _rows.to_text(now)))
            return cur.fetchone() is not None

    def text_sent(self, text_id: int, at: datetime, message_sid: str) -> None:
        """The gateway took the text (``message_sid``, "" if its answer was unreadable)."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "UPDATE staff_texts SET state = ?, sent_at = ?, detail = '', claimed_until = '', "
                "claimed_by = '', message_sid = CASE WHEN message_sid = '' THEN ? "
                "ELSE message_sid END WHERE id = ? AND state IN (?, ?)"),
                (TextState.SENT.value, _rows.to_text(at), message_sid[:64], text_id,
                 TextState.SENDING.value, TextState.IN_DOUBT.value))

    def text_failed(self, text_id: int, next_try_at: datetime, why: str) -> None:
        """A try the gateway did not act on (``why``); due again at ``next_try_at``."""
        self._end_try(text_id, TextState.FAILED, why, next_try_at)

    def text_in_doubt(self, text_id: int, why: str) -> None:
        """A try that may have sent the text (``why``): never tried again."""
        self._end_try(text_id, TextState.IN_DOUBT, why)

    def text_not_sent(self, text_id: int, why: str) -> None:
        """A text that will never be sent (``why``), tried or not."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "UPDATE staff_texts SET state = ?, detail = ?, claimed_until = '', "
                "claimed_by = '' WHERE id = ? AND state IN (?, ?, ?)"),
                (TextState.NOT_SENT.value, why[:300], text_id, *_OPEN,
                 TextState.SENDING.value))

    def text_refused(self, text_id: int, now: datetime, holder: str, why: str,
                     audited: str) -> bool:
        """Decided again before its try and refused (``why``): ``not-sent``, never tried,
        and audited as its user's refused text (``audited``: the refusal, never the text or
        the party).  False (and nothing changed) unless ``holder`` still holds its lease at
        ``now``: then another controller has it."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "UPDATE staff_texts SET state = ?, detail = CASE WHEN detail = '' THEN ? "
                "ELSE CAST(? AS TEXT) || ' (last try: ' || detail || ')' END, "
                "claimed_until = '', claimed_by = '' WHERE id = ? AND state IN (?, ?) "
                "AND claimed_by = ? AND claimed_until > ? RETURNING user_id"),
                (TextState.NOT_SENT.value, why[:300], why[:300], text_id, *_OPEN, holder,
                 _rows.to_text(now)))
            row = cur.fetchone()
            if row is None:
                return False
            cur.execute(self._q("INSERT INTO audit_log (at, actor, action, detail) "
                                "VALUES (?, ?, ?, ?)"),
                        (_rows.to_text(now), row[0], "text.refused", audited[:300]))
            return True

    def _end_try(self, text_id: int, state: TextState, why: str,
                 next_try_at: datetime | None = None) -> None:
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "UPDATE staff_texts SET state = ?, detail = ?, claimed_until = '', "
                "claimed_by = '', next_try_at = COALESCE(CAST(? AS TEXT), next_try_at) "
                "WHERE id = ? AND state = ?"),
                (state.value, why[:300],
                 _rows.to_text(next_try_at) if next_try_at is not None else None, text_id,
                 TextState.SENDING.value))

    def release_texts(self, text_ids: Sequence[int], holder: str) -> None:
        """Give back the leases on texts claimed but not tried (shutting down)."""
        with self._lock, self._transaction() as cur:
            for text_id in text_ids:
                cur.execute(self._q(
                    "UPDATE staff_texts SET claimed_until = '', claimed_by = '' WHERE id = ? "
                    "AND state IN (?, ?) AND claimed_by = ?"), (text_id, *_OPEN, holder))

    def next_text_at(self) -> datetime | None:
        """When the earliest open (or in-flight) text falls due, its lease counted."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "SELECT MIN(CASE WHEN claimed_until > next_try_at THEN claimed_until "
                "ELSE next_try_at END) FROM staff_texts WHERE state IN (?, ?, ?)"),
                (*_OPEN, TextState.SENDING.value))
            row = cur.fetchone()
            return _rows.from_text(row[0]) if row is not None and row[0] else None

    def close_open_texts(self, now: datetime, why: str) -> int:
        """Every open text nobody is trying right now becomes ``not-sent`` for ``why`` (an
        outage was engaged before it went); return how many.  One left ``sending`` by a
        controller whose lease lapsed is ``in-doubt``, as when claiming."""
        with self._lock, self._transaction() as cur:
            self._lapse(cur, now)
            cur.execute(self._q(
                "UPDATE staff_texts SET state = ?, detail = CASE WHEN detail = '' THEN ? "
                "ELSE CAST(? AS TEXT) || ' (last try: ' || detail || ')' END "
                "WHERE state IN (?, ?) AND claimed_until <= ? RETURNING id"),
                (TextState.NOT_SENT.value, why, why, *_OPEN, _rows.to_text(now)))
            return len(cur.fetchall())

    def text_status(self, text_id: int | None, message_sid: str, status: str,
                    error_code: str, at: datetime) -> StaffText | None:
        """The gateway reports ``status`` for ``message_sid`` (of our text ``text_id``, as
        the signed callback URL names it, when it does): the text's delivery moves on, and a
        text ``in-doubt`` or still ``sending`` is ``sent`` (it went).  Returns the text, or
        None when the message is none of ours (or names another text's sid)."""
        with self._lock, self._transaction() as cur:
            if text_id is not None:
                cur.execute(self._q(f"SELECT {_COLUMNS} FROM staff_texts d WHERE d.id = ?"),
                            (text_id,))
            else:
                cur.execute(self._q(f"SELECT {_COLUMNS} FROM staff_texts d "
                                    "WHERE d.message_sid = ?"), (message_sid,))
            row = cur.fetchone()
            if row is None:
                return None
            text = _text(row)
            if text.message_sid and text.message_sid != message_sid:
                return None
            if text.state is TextState.IN_DOUBT:
                # It went: the gateway reports only on messages it took.  (A text still
                # ``sending`` gets its sid here; the try's own answer then finds it.)
                cur.execute(self._q("UPDATE staff_texts SET state = ?, sent_at = ?, "
                                    "detail = '' WHERE id = ?"),
                            (TextState.SENT.value, _rows.to_text(at), text.id))
            cur.execute(self._q("UPDATE staff_texts SET message_sid = ? WHERE id = ?"),
                        (message_sid[:64], text.id))
            if later_status(text.delivery, status):
                cur.execute(self._q(
                    "UPDATE staff_texts SET delivery = ?, delivery_at = ?, error_code = ? "
                    "WHERE id = ?"), (status, _rows.to_text(at), error_code[:16], text.id))
            cur.execute(self._q(f"SELECT {_COLUMNS} FROM staff_texts d WHERE d.id = ?"),
                        (text.id,))
            return _text(cur.fetchone())


IN_DOUBT_STOPPED = ("the controller sending it stopped after handing it to the gateway: it "
                    "may have gone, so it is not sent again")


def _text(row: Sequence[Any]) -> StaffText:
    (id_, key, at, user, sender, recipient, body, state, detail, tries, next_try_at, sent_at,
     sid, delivery, delivery_at, error_code) = row
    return StaffText(int(id_), key, _rows.from_text(at), user, sender, recipient, body,
                     TextState(state), detail, int(tries), _rows.from_text(next_try_at),
                     _rows.from_text(sent_at) if sent_at else None, sid, delivery,
                     _rows.from_text(delivery_at) if delivery_at else None, error_code)
