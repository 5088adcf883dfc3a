"""The journal's side of conversation members: people added to one conversation (a practice
number and one outside party) alone.  A store of :class:`~backline.journal.base.SqlJournal`;
the tables are made by the conversation migration.

Each change writes the member list, the change's own row (who, when, from where) and the audit
log in one transaction: the list never says what no change and no audit entry explains.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import backline.journal.rows as _rows
from backline.core.conversations import ConversationKey
from backline.core.e164 import redact
from backline.journal.store import SqlStore

if TYPE_CHECKING:
    pass

ADD = "add"
REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class AddedMember:
    """Someone in one conversation alone, since when, added by whom and from where
    (``cli``, ``api``, ``transfer``)."""

    key: ConversationKey
    added_at: datetime
    added_by: str
    via: str


@dataclass(frozen=True, slots=True)
class ConversationChange:
    id: int
    at: datetime
    by: str
    via: str
    action: str  # ADD or REMOVE
    key: ConversationKey
    detail: str


class ConversationJournal(SqlStore):
    """Conversation members; the journal provides the connection."""

    def change_conversation(self, action: str, key: ConversationKey, at: datetime, by: str,
                            via: str, detail: str = "") -> bool:
        """Add (``ADD``) or remove (``REMOVE``) ``key``'s user; False if that changed nothing
        (already added, or not added), and then nothing is written.  Durable on return; the
        audit entry names the party only by its last digits."""
        if action not in (ADD, REMOVE):
            raise ValueError(f"not a conversation change: {action!r}")
        where = (key.number, key.party, key.user_id)
        with self._lock, self._transaction() as cur:
            if action == ADD:
                cur.execute(self._q(
                    "INSERT INTO conversation_members (number, party, user_id, added_at, "
                    "added_by, via) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING "
                    "RETURNING user_id"), (*where, _rows.to_text(at), by, via))
            else:
                cur.execute(self._q(
                    "DELETE FROM conversation_members WHERE number = ? AND party = ? AND "
                    "user_id = ? RETURNING user_id"), where)
            if cur.fetchone() is None:
                return False
            cur.execute(self._q(
                "INSERT INTO conversation_changes (at, by_whom, via, action, number, party, "
                "user_id, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
                (_rows.to_text(at), by, via, action, *where, detail))
            words = "added" if action == ADD else "removed"
            into = "to" if action == ADD else "from"
            cur.execute(self._q("INSERT INTO audit_log (at, actor, action, detail) "
                                "VALUES (?, ?, ?, ?)"),
                        (_rows.to_text(at), by, f"conversation.{action}",
                         f"{words} {key.user_id} {into} the conversation of {key.number} with "
                         f"{redact(key.party)} (via {via}){': ' + detail if detail else ''}"))
            return True

    def conversation_members(self) -> list[AddedMember]:
        """Everyone added to a conversation alone, oldest first."""
        with self._lock, self._transaction() as cur:
            cur.execute("SELECT number, party, user_id, added_at, added_by, via "
                        "FROM conversation_members ORDER BY added_at, number, party, user_id")
            return [_member(r) for r in cur.fetchall()]

    def conversation_keys(self) -> list[tuple[str, str, str]]:
        """Everyone added to a conversation alone as (number, party, user id), in no order:
        what a controller holds (ConversationBook.hold), without the when and by whom."""
        intern = sys.intern  # a few numbers and users repeated in every row: one string each
        keys: list[tuple[str, str, str]] = []
        with self._lock, self._transaction() as cur:
            cur.execute("SELECT number, party, user_id FROM conversation_members")
            while rows := cur.fetchmany(4096):
                keys.extend((intern(r[0]), r[1], intern(r[2])) for r in rows)
        return keys

    def conversation_changes_after(
            self, after: int) -> tuple[list[tuple[int, str, str, str, str]], tuple[int, int]]:
        """The changes with an id above ``after`` as (id, action, number, party, user id),
        oldest first, then the version (conversation_version) read after them.  A reader
        that held the changes up to ``after`` applies these only if the version is exactly
        its own moved by them; otherwise a change it did not see (a lower id committed late,
        on PostgreSQL) or one committed between the two reads is there: it reads all again."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "SELECT id, action, number, party, user_id FROM conversation_changes "
                "WHERE id > ? ORDER BY id"), (after,))
            rows = [(int(r[0]), r[1], r[2], r[3], r[4]) for r in cur.fetchall()]
            cur.execute("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM conversation_changes")
            count, newest = cur.fetchone()
            return rows, (int(count), int(newest))

    def conversation_version(self) -> tuple[int, int]:
        """How many changes there were and the newest's id: different whenever a change was
        committed since (even one whose id is lower than an earlier-read newest)."""
        with self._lock, self._transaction() as cur:
            cur.execute("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM conversation_changes")
            count, newest = cur.fetchone()
            return int(count), int(newest)

    def conversation_changes(self, limit: int = 100) -> list[ConversationChange]:
        """The latest changes, newest first."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q(
                "SELECT id, at, by_whom, via, action, number, party, user_id, detail "
                "FROM conversation_changes ORDER BY id DESC LIMIT ?"), (limit,))
            return [ConversationChange(int(r[0]), _rows.from_text(r[1]), r[2], r[3], r[4],
                                       ConversationKey(r[5], r[6], r[7]), r[8])
                    for r in cur.fetchall()]


@dataclass(frozen=True, slots=True)
class CallHandling:
    """One thing done with an answered call (a transfer), as its journal record says it."""

    call_key: str
    at: datetime
    by: str
    action: str
    note: str


class CallHandlingJournal(SqlStore):
    """Who handled a call and where it went; the journal provides the connection."""

    def record_handling(self, h: CallHandling) -> None:
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("INSERT INTO call_handling (call_key, at, by_user, action, "
                                "note) VALUES (?, ?, ?, ?, ?)"),
                        (h.call_key, _rows.to_text(h.at), h.by, h.action, h.note))

    def call_handling(self, call_key: str) -> list[CallHandling]:
        """What was done with the call ``call_key`` (``call:UNIQUEID``), oldest first."""
        with self._lock, self._transaction() as cur:
            cur.execute(self._q("SELECT call_key, at, by_user, action, note FROM call_handling "
                                "WHERE call_key = ? ORDER BY id"), (call_key,))
            return [CallHandling(r[0], _rows.from_text(r[1]), r[2], r[3], r[4])
                    for r in cur.fetchall()]


def _member(row: Sequence[Any]) -> AddedMember:
    return AddedMember(ConversationKey(row[0], row[1], row[2]), _rows.from_text(row[3]),
                       row[4], row[5])
