"""Turns at writing one SQLite journal, for every connection of every process on the machine.

SQLite lets one writer in at a time and makes the others poll for the lock, each sleeping
longer the longer it has waited (up to 100 ms a try): against writers that keep the lock busy,
a writer that has waited long looks seldom while newcomers look often and win.  bench.journal
saw one record of 8 writers wait 5 s that way (the whole run), and an outage caller would hear
silence for it.  A writer here first takes a turn: an exclusive ``flock`` on the journal's
directory, waited for in the kernel, which wakes the waiters the moment the turn is given back.

The directory, not a file beside the journal: SQLite's own (POSIX) locks on the journal's
files are dropped for the whole process when any descriptor of those files is closed, and a
directory holds no data.  ``flock`` and POSIX locks do not interact on Linux.  Journals that
share a directory share its turns.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from pathlib import Path

NO_TURN = -1
"""Taken where the directory cannot be locked (a filesystem without ``flock``): SQLite's own
lock still keeps writers apart."""


def take_turn(directory: Path, within: float) -> int | None:
    """A descriptor holding the turn (give it back with :func:`give_turn`), :data:`NO_TURN`,
    or None when ``within`` seconds passed first.  The blocking wait runs in a thread of its
    own so that it can be given up: a process stopped mid-transaction (Ctrl-Z on a CLI
    command) makes writers fail after ``within`` as they always did, not hang."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return NO_TURN
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        pass
    except OSError:
        os.close(fd)
        return NO_TURN
    got = threading.Event()
    mutex = threading.Lock()
    abandoned = False

    def wait() -> None:
        # Should flock fail now (it did not a moment ago), SQLite's lock alone stands.
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        with mutex:
            if abandoned:
                os.close(fd)  # gives the turn straight back
            else:
                got.set()

    threading.Thread(target=wait, name="journal-turn", daemon=True).start()
    if got.wait(within):
        return fd
    with mutex:
        if got.is_set():
            return fd
        abandoned = True
    return None


def give_turn(fd: int) -> None:
    if fd != NO_TURN:
        os.close(fd)
