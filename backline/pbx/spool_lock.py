"""app_voicemail's folder lock, taken the way Asterisk takes it, so that Backline removes a
message from the spool only while app_voicemail is not counting, renumbering, moving or
filing that folder's messages (it takes the lock for each of these).

Asterisk's ``ast_lock_path`` in its default ``lockmode = lockfile`` (Backline's rendered
asterisk.conf sets no other): a file named ``.lock`` in the folder is the lock.  A holder
makes a file of its own with a unique name (``.lock-`` and 8 hex digits), links it to
``.lock``, which fails while another holder's ``.lock`` is there, and removes its own name;
it releases the lock by removing ``.lock``.  Asterisk retries for up to 5 s; Backline tries
once and leaves the folder for its next pass (nothing it does is urgent).  With ``lockmode =
flock`` (an Asterisk ops configured themselves) this lock is not the one Asterisk takes."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".lock"


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
    mine = folder / f"{LOCK_NAME}-{secrets.token_hex(4)}"
    os.close(os.open(mine, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        os.link(mine, folder / LOCK_NAME)
    except FileExistsError:
        taken = False
    else:
        taken = True
    finally:
        mine.unlink(missing_ok=True)
    if not taken:
        yield False
        return
    try:
        yield True
    finally:
        (folder / LOCK_NAME).unlink(missing_ok=True)
