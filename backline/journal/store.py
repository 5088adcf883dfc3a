"""The connection every journal store runs on, and the journal's one error.

A store (attempts, the mode, alerts, the inbox queue, ...) is a subclass of
:class:`SqlStore` holding the SQL of one consumer; :class:`~backline.journal.base.SqlJournal`
is all of them over one connection, and a backend (``sqlite``, ``postgres``) says how to
connect, its placeholder and its auto-increment type.  A method that records something
returns only after the database has it on disk, so whatever the caller acknowledges (to the
PBX, the SMS gateway, the CLI) survives a crash.

Portable SQL only: ``?`` placeholders (``_q`` rewrites them for the backend),
``INSERT … RETURNING id``, TEXT and INTEGER columns.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from backline.journal.rows import Cursor


class JournalError(Exception):
    """The journal cannot be used (unreachable, newer schema, corrupt)."""


class SqlStore(abc.ABC):
    """One DB-API connection, one writer at a time; subclasses connect and commit durably."""

    placeholder = "?"
    autoid = "INTEGER PRIMARY KEY AUTOINCREMENT"
    # Appended to the claim of due rows: row locks where writers run side by side.
    claim_lock = ""

    def __init__(self) -> None:
        # One connection, one writer at a time within this process: the controller calls us
        # from worker threads, and DB-API connections are not safe to share unguarded.
        self._lock = threading.Lock()

    @abc.abstractmethod
    @contextmanager
    def _transaction(self) -> Iterator[Cursor]:
        """A cursor inside a transaction that is durably committed on a clean exit."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def _q(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _exclusive(self, cur: Cursor, table: str) -> None:  # noqa: B027 (a hook, empty here)
        """Keep other writers off ``table`` until commit, before a read-then-write decision.
        SQLite's ``BEGIN IMMEDIATE`` already holds the whole database, so nothing here."""
