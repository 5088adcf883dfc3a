"""The journal's storage interface and the SQL shared by its backends.

The journal is the durable record every feature writes.  A method that records something
returns only after the database has it on disk, so whatever the caller acknowledges (to the
PBX, the SMS gateway, the CLI) survives a crash.  Backends differ only in how they connect,
their placeholder and their auto-increment type; the SQL and the record mapping live here.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, assert_never

import backline.journal.schema as schema
from backline.core.hours import HoursOverride, HoursState
from backline.core.outage import Mode, ModeChange, ModeState, Via
from backline.core.records import (
    AlertChannel,
    AlertDelivery,
    AlertLink,
    AlertSlot,
    AlertState,
    Attempt,
    AttemptKind,
    AuditEntry,
    ControllerReport,
    Delivery,
    JoinAlert,
    NewAttempt,
    OpenAlert,
    Outcome,
    Placement,
    filed,
)
from backline.journal.conversations import CallHandlingJournal, ConversationJournal
from backline.journal.delivery import InboxJournal
from backline.journal.emergency import EmergencyJournal
from backline.journal.replies import ReplyJournal
from backline.journal.rows import Cursor, _attempt, from_text, to_text

# An override row that hands the hours back to the schedule (``backline hours auto``).
HOURS_AUTO = "auto"


class JournalError(Exception):
    """The journal cannot be used (unreachable, newer schema, corrupt)."""


class SqlJournal(InboxJournal, ReplyJournal, EmergencyJournal, ConversationJournal,
                 CallHandlingJournal, abc.ABC):
    """Journal operations over a DB-API connection; subclasses connect and commit durably."""

    placeholder = "?"
    autoid = "INTEGER PRIMARY KEY AUTOINCREMENT"
    # Appended to the claim of due alert deliveries: row locks where writers run side by side.
    claim_lock = ""

    def __init__(self) -> None:
        # One connection, one writer at a time within this process: the controller calls us
        # from worker threads, and DB-API connections are not safe to share unguarded.
        self._lock = threading.Lock()

    # -- backend hooks ---------------------------------------------------------------------

    @abc.abstractmethod
    @contextmanager
    def _transaction(self) -> Iterator[Cursor]:
        """A cursor inside a transaction that is durably committed on a clean exit."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def _q(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _exclusive(self, cur: Cursor, table: str) -> None:
        """Keep other writers off ``table`` until commit, before a read-then-write decision.
        SQLite's ``BEGIN IMMEDIATE`` already holds the whole database, so nothing here."""

    # -- schema ----------------------------------------------------------------------------

    def migrate(self) -> int:
        """Apply pending migrations; return the schema version now in force."""
        with self._lock, self._transaction() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            cur.execute("SELECT MAX(version) FROM schema_version")
            current = cur.fetchone()[0] or 0
            if current > schema.LATEST:
                raise JournalError(f"the journal has schema version {current}, newer than this "
                                   f"Backline ({schema.LATEST}); upgrade Backline")
            for version in range(current + 1, schema.LATEST + 1):
                for statement in schema.MIGRATIONS[version - 1]:
                    cur.execute(statement.format(autoid=self.autoid))
                cur.execute(self._q("INSERT INTO schema_version (version) VALUES (?)"),
                            (version,))
            return schema.LATEST

    # -- attempts --------------------------------------------------------------------------

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
            return _attempt(row), False
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
        return _attempt(cur.fetchone()), False

    def attempts(self, since: datetime | None = None, limit: int = 100) -> list[Attempt]:
        """The most recent attempts (at or after ``since``), oldest first."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "SELECT * FROM (SELECT * FROM attempts WHERE at >= ? ORDER BY id DESC LIMIT ?) "
                "AS recent ORDER BY id"),
                (to_text(since) if since else "", limit))
            return [_attempt(r) for r in cur.fetchall()]

    def attempt(self, key: str) -> Attempt | None:
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("SELECT * FROM attempts WHERE key = ?"), (key,))
            row = cur.fetchone()
            return _attempt(row) if row is not None else None

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
            return _attempt(cur.fetchone())

    def held(self) -> dict[str, int]:
        """Attempts and emails waiting for the inbox (received in an outage), by kind."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("SELECT kind, COUNT(*) FROM attempts WHERE delivery = ? "
                                "GROUP BY kind"), (Delivery.HELD.value,))
            held = {str(kind): int(n) for kind, n in cur.fetchall()}
            emails = self._held_email_count(cur)
            return held | {"email": emails} if emails else held

    # -- the mode --------------------------------------------------------------------------

    def record_mode_change(self, change: ModeChange, expected: ModeState | None = None) -> None:
        """Record a switch.  With ``expected``, refuse (``StaleMode``) if the mode moved since."""
        with self._lock, self._transaction() as cur:
            if expected is not None:
                self._exclusive(cur, "mode_changes")
                now = self._mode_state(cur)
                if now != expected:
                    raise StaleMode(now)
            cur.execute(self._q(
                "INSERT INTO mode_changes (mode, at, by_whom, via, reason) VALUES (?, ?, ?, ?, ?)"),
                (change.mode.value, to_text(change.at), change.by, change.via.value,
                 change.reason))

    def mode_state(self) -> ModeState:
        with self._lock, self._transaction() as cur:
            return self._mode_state(cur)

    def _mode_state(self, cur: Cursor) -> ModeState:
        cur.execute("SELECT mode, at, by_whom, via, reason FROM mode_changes "
                    "ORDER BY id DESC LIMIT 1")
        row = cur.fetchone()
        if row is None:
            return ModeState.initial()
        change = _change(row)
        return ModeState(change.mode, change)

    def mode_history(self, limit: int = 20) -> list[ModeChange]:
        """The latest switches, newest first."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("SELECT mode, at, by_whom, via, reason FROM mode_changes "
                                "ORDER BY id DESC LIMIT ?"), (limit,))
            return [_change(r) for r in cur.fetchall()]

    # -- the hours override (backline.core.hours) ----------------------------------------------

    def record_hours_override(self, override: HoursOverride) -> None:
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("INSERT INTO hours_overrides (state, at, by_whom, via) "
                                "VALUES (?, ?, ?, ?)"),
                        (override.state.value if override.state else HOURS_AUTO,
                         to_text(override.at), override.by, override.via))

    def hours_override(self) -> HoursOverride | None:
        """The newest override (whether it still holds is the hours' to say), or None."""
        with self._lock, self._transaction() as cur:
            cur.execute("SELECT state, at, by_whom, via FROM hours_overrides "
                        "ORDER BY id DESC LIMIT 1")
            row = cur.fetchone()
        if row is None:
            return None
        state = None if row[0] == HOURS_AUTO else HoursState(row[0])
        return HoursOverride(state, from_text(row[1]), row[2], row[3])

    # -- running controllers ---------------------------------------------------------------

    def report_controller(self, report: ControllerReport, *,
                          forget_before: datetime | None = None) -> None:
        """Keep ``report`` as its holder's latest; drop rows not seen since
        ``forget_before`` (controllers that stopped without saying so)."""
        with self._lock, self._transaction() as cur:
            if forget_before is not None:
                cur.execute(self._q("DELETE FROM controllers WHERE seen_at < ?"),
                            (to_text(forget_before),))
            cur.execute(self._q(
                "INSERT INTO controllers (holder, node, seen_at, mode_switch, pbx_switch, "
                "pbx_at, inbox_blocked) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (holder) DO "
                "UPDATE SET node = excluded.node, seen_at = excluded.seen_at, "
                "mode_switch = excluded.mode_switch, pbx_switch = excluded.pbx_switch, "
                "pbx_at = excluded.pbx_at, inbox_blocked = excluded.inbox_blocked"),
                (report.holder, report.node, to_text(report.seen_at), report.mode_switch,
                 report.pbx_switch, to_text(report.pbx_at) if report.pbx_at else "",
                 report.inbox_blocked))

    def controllers(self) -> list[ControllerReport]:
        """Every controller's latest report, most recently seen first."""
        with self._lock, self._transaction() as cur:
            cur.execute("SELECT holder, node, seen_at, mode_switch, pbx_switch, pbx_at, "
                        "inbox_blocked FROM controllers ORDER BY seen_at DESC")
            return [ControllerReport(holder, node, from_text(seen), mode, pbx,
                                     from_text(pbx_at) if pbx_at else None, blocked)
                    for holder, node, seen, mode, pbx, pbx_at, blocked in cur.fetchall()]

    def forget_controller(self, holder: str) -> None:
        """A controller stopping: it no longer counts as running."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("DELETE FROM controllers WHERE holder = ?"), (holder,))

    # -- audit -----------------------------------------------------------------------------

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

    # -- backup alerts ---------------------------------------------------------------------
    #
    # An alert gathers attempts; it has one delivery per recipient (an email address or an
    # SMS number), each sent and retried on its own; each email try mints a link, kept as a
    # hash.  Deciding *where* an attempt goes is the caller's pure function (`place`); the
    # journal reads the newest alert and applies the decision in one transaction, so two
    # attempts arriving together cannot both open an alert.

    def unalerted_attempts(self, since: datetime, limit: int = 100_000) -> list[Attempt]:
        """Attempts recorded in an outage at or after ``since`` that no alert lists yet,
        oldest first: what a controller stopped between journaling an attempt and gathering
        it still owes an alert for."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "SELECT * FROM attempts WHERE mode = ? AND at >= ? AND NOT EXISTS "
                "(SELECT 1 FROM alert_attempts WHERE alert_attempts.attempt_id = attempts.id) "
                "ORDER BY id LIMIT ?"), (Mode.OUTAGE.value, to_text(since), limit))
            return [_attempt(r) for r in cur.fetchall()]

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
        """Pending deliveries due at ``now`` and not leased to someone else, oldest first,
        now leased until ``lease_until``; their alerts are closed to new attempts."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                f"SELECT {_DELIVERY_COLUMNS} FROM alert_deliveries d "
                "JOIN alerts al ON al.id = d.alert_id "
                "WHERE d.state = ? AND d.next_try_at <= ? AND d.claimed_until <= ? "
                "ORDER BY d.next_try_at, d.id LIMIT ?" + self.claim_lock),
                (AlertState.PENDING.value, to_text(now), to_text(now), limit))
            due = [_delivery(r) for r in cur.fetchall()]
            for alert_id in sorted({d.alert_id for d in due}):
                cur.execute(self._q("UPDATE alerts SET closed = 1 WHERE id = ?"), (alert_id,))
            for d in due:
                cur.execute(self._q(
                    "UPDATE alert_deliveries SET claimed_until = ? WHERE id = ?"),
                    (to_text(lease_until), d.id))
            return due

    def next_delivery_at(self) -> datetime | None:
        """When the earliest pending delivery falls due (its lease, if any, counted)."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "SELECT MIN(CASE WHEN claimed_until > next_try_at THEN claimed_until "
                "ELSE next_try_at END) FROM alert_deliveries WHERE state = ?"),
                (AlertState.PENDING.value,))
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
            return [_attempt(r) for r in cur.fetchall()]

    def audit_entries(self, action: str, detail_prefix: str = "") -> list[AuditEntry]:
        """The audit entries of ``action`` whose detail starts with ``detail_prefix``, oldest
        first (the outage reminders read back what they sent; ``audit_log``'s newest-N
        would miss them behind a busy day of link-page views)."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("SELECT at, actor, action, detail FROM audit_log "
                                "WHERE action = ? AND substr(detail, 1, ?) = ? ORDER BY id"),
                        (action, len(detail_prefix), detail_prefix))
            return [AuditEntry(from_text(r[0]), r[1], r[2], r[3]) for r in cur.fetchall()]


_DELIVERY_COLUMNS = ("d.id, d.alert_id, d.channel, d.recipient, d.message_id, d.state, d.tries, "
                     "d.next_try_at, d.last_error, d.sent_at, al.due_at")


def _delivery(row: Sequence[Any]) -> AlertDelivery:
    (id_, alert_id, channel, recipient, message_id, state, tries, next_try_at, last_error,
     sent_at, due_at) = row
    return AlertDelivery(int(id_), int(alert_id), AlertChannel(channel), recipient, message_id,
                         AlertState(state), int(tries), from_text(next_try_at), last_error,
                         from_text(sent_at) if sent_at else None, from_text(due_at))


class StaleMode(JournalError):
    """Someone switched the mode between our read and our write."""

    def __init__(self, now: ModeState) -> None:
        super().__init__(f"the mode changed meanwhile; it is now {now.mode.value}")
        self.now = now


def _change(row: Sequence[Any]) -> ModeChange:
    mode, at, by, via, reason = row
    return ModeChange(Mode(mode), from_text(at), by, Via(via), reason)
