"""The embedded journal: SQLite, needing no server.

WAL lets the CLI read while the controller writes; ``synchronous=FULL`` makes every commit
reach the disk before it returns, which is what lets us acknowledge an attempt to the PBX.

The journal holds patient data (caller numbers, SMS texts, held emails): its directory is made
0700 when we create it, and the database 0600 before SQLite first opens it, whatever the
umask.  SQLite gives the ``-wal`` and ``-shm`` files it creates the database file's own mode
(``robust_open`` in its unix VFS), so they are 0600 too.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from backline.journal.base import SqlJournal
from backline.journal.rows import Cursor
from backline.journal.store import JournalError
from backline.journal.turns import give_turn, take_turn

# The files SQLite keeps for one journal, beside it.
COMPANIONS = ("", "-wal", "-shm", "-journal")


def exposed_files(path: Path) -> list[tuple[Path, int]]:
    """The journal's directory and files that exist and that other users may read or enter
    (group or other permission bits), with their modes: ``backline check`` warns of each."""
    found: list[tuple[Path, int]] = []
    for candidate in [path.parent, *(path.with_name(path.name + s) for s in COMPANIONS)]:
        try:
            mode = stat.S_IMODE(candidate.stat().st_mode)
        except OSError:
            continue
        if mode & 0o077:
            found.append((candidate, mode))
    return found


def _create_private(path: Path) -> None:
    """The journal's directory (0700 if we make it) and an empty database file (0600)
    before SQLite opens it: an explicit mode, since the umask only ever removes bits."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # an existing journal keeps its mode; `backline check` warns if it is open
    os.close(fd)


class SqliteJournal(SqlJournal):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        try:
            _create_private(path)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction is
            # exactly one `with` block and nothing is left open between calls.
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                       timeout=30.0)
            self._lock_wait = 30.0  # for a turn (backline.journal.turns), then for the lock
            self._wal()
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"cannot open the journal at {path}: {exc}") from exc

    def _wal(self, within: float = 30.0) -> None:
        """Switch to WAL, waiting out other processes doing the same on a new file.

        SQLite answers "database is locked" at once, without its busy handler, when two
        connections change the journal mode together (several controllers starting on one
        journal): try again for a while, as the busy handler would.
        """
        deadline = time.monotonic() + within
        pause = 0.005
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.2)

    @contextmanager
    def _transaction(self) -> Iterator[Cursor]:
        turn = take_turn(self.path.parent, self._lock_wait)
        if turn is None:
            raise JournalError(f"the journal at {self.path} failed: another writer kept its "
                               f"turn past {self._lock_wait:g} s")
        cur = self._db.cursor()
        committed = False
        try:
            cur.execute("BEGIN IMMEDIATE")
            yield cur
            cur.execute("COMMIT")
            committed = True
        except sqlite3.Error as exc:
            # Locked past the busy timeout, read-only, full, corrupt: nothing of this
            # transaction was committed, and callers handle it as the journal failing (as
            # the PostgreSQL backend reports its own errors).
            raise JournalError(f"the journal at {self.path} failed: {exc}") from exc
        finally:
            # Whatever interrupted the block, never leave a transaction open on the shared
            # connection: the next caller would silently join it.
            if not committed and self._db.in_transaction:
                self._db.rollback()
            cur.close()
            give_turn(turn)

    def wait_on_locks(self, seconds: float) -> None:
        """How long a transaction waits for another connection's write lock before it
        fails with JournalError (30 s unless set here)."""
        with self._lock:
            self._lock_wait = max(0.0, seconds)
            self._db.execute(f"PRAGMA busy_timeout = {max(0, int(seconds * 1000))}")

    def close(self) -> None:
        self._db.close()
