"""app_voicemail's folder lock, taken the way Asterisk takes it, so that Backline removes a
message from the spool only while app_voicemail is not counting, renumbering, moving or
filing that folder's messages (it takes the lock for each of these).

Asterisk's ``ast_lock_path`` in its default ``lockmode = lockfile`` (Backline's rendered
asterisk.conf sets no other): a file named ``.lock`` in the folder is the lock.  A holder
makes a file of its own with a unique name (``.lock-`` and 8 hex digits), links it to
``.lock``, which fails while another holder's ``.lock`` is there, and removes its own name;
it releases the lock by removing ``.lock``.  Asterisk retries for up to 5 s; Backline tries
once and leaves the folder for its next pass (nothing it does is urgent).  With ``lockmode =
flock`` (an Asterisk ops configured themselves) this lock is not the one Asterisk takes.

A ``.lock`` nobody removes costs messages: app_voicemail that cannot lock a folder within
5 s drops the message being left ("Voicemail will be lost").  So Backline holds it only while
it removes files, and names itself in it (``backline PID STARTTIME``; app_voicemail's are
empty): one left by a Backline process that ended holding it (killed mid-removal) is removed
at the next try; app_voicemail's own is never touched."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".lock"

log = logging.getLogger("backline.voicemail")


class FolderHeld(Exception):
    """Another holder (app_voicemail) had the lock of ``folders`` (``BOX/FOLDER``): their
    messages were left as they are, for the next pass; ``removed``: what went meanwhile from
    the folders that were free, by msg_id."""

    def __init__(self, folders: Sequence[str], removed: Mapping[str, list[str]]) -> None:
        super().__init__(f"app_voicemail held the lock of {', '.join(folders)} (a message being "
                         "left, listened to or renumbered, or a lock left by a crash): their "
                         "messages are kept and tried again at the next pass")
        self.folders = tuple(folders)
        self.removed = dict(removed)


@contextmanager
def folder_lock(folder: Path) -> Iterator[bool]:
    """Hold ``folder``'s lock inside the block (True), or nothing when another holder has it
    (False: not waited for).  Raises OSError when the folder cannot be written."""
    mine, lock = folder / f"{LOCK_NAME}-{secrets.token_hex(4)}", folder / LOCK_NAME
    with os.fdopen(os.open(mine, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        out.write(f"backline {os.getpid()} {started(os.getpid())}\n".encode())
    taken = False
    try:
        for first in (True, False):
            try:
                os.link(mine, lock)
            except FileExistsError:
                if first and left_by_the_dead(lock):
                    log.warning("the voicemail folder %s/%s was locked by a Backline process "
                                "that ended holding it: its lock is removed", folder.parent.name,
                                folder.name)
                    lock.unlink(missing_ok=True)
                    continue
            else:
                taken = True
            break
    finally:
        mine.unlink(missing_ok=True)
    if not taken:
        yield False
        return
    try:
        yield True
    finally:
        lock.unlink(missing_ok=True)


def started(pid: int) -> str:
    """When process ``pid`` started (clock ticks after boot, /proc/PID/stat's 22nd field):
    with the pid it names one process, not whichever has that pid now; "" if none has."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[-1].split()  # after the command's name, which may hold ' '
    return fields[19] if len(fields) > 19 else ""


def left_by_the_dead(lock: Path) -> bool:
    """Whether ``lock`` is a Backline process's that is no longer running (never true of
    app_voicemail's own, which are empty)."""
    try:
        words = lock.read_text("ascii").split()
    except (OSError, UnicodeDecodeError):
        return False
    if len(words) != 3 or words[0] != "backline" or not words[1].isdigit():
        return False
    return started(int(words[1])) != words[2]
