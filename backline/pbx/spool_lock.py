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
at the next PBX login and retention round (``remove_dead_locks``); app_voicemail's own is
never touched: Asterisk writes nothing in it
(``ast_lock_path_lockfile`` makes its file with open(2) and closes it at once), so nothing in
it says whether its holder is gone.  ``held_too_long`` finds those that outlived any holder's
work, for ``backline doctor`` and the status page to name."""

from __future__ import annotations

import logging
import os
import secrets
import stat
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = ".lock"
# How long a folder's lock may be held before it is one nobody will give back.  app_voicemail
# holds one only while it counts, numbers, renames or copies that folder's files, never while
# a caller records (leave_voicemail records into tmp/ and takes the lock after) or a member
# listens; and a waiter gives up after 5 s, dropping the message (ast_lock_path_lockfile:
# ``time(NULL) - start < 5``; the file's time is when its holder made it, at most those 5 s
# before it got the lock).  So a lock older than 10 s already costs messages; a minute leaves
# alone a slow disk's close_mailbox (moving a full box's heard messages to Old).
HELD_TOO_LONG = 60.0  # seconds

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


def remove_dead_locks(root: Path) -> list[str]:
    """Remove every lock under ``root`` (the spool's ``voicemail/CONTEXT``: BOX/FOLDER/.lock)
    that a Backline process wrote and no longer runs to give back (killed mid-removal): the
    folders freed (``BOX/FOLDER``).  Run at each PBX login and each retention round, whatever
    is due: a folder that no round prunes again would otherwise stay locked, and
    app_voicemail drop every message to it.  app_voicemail's own (empty) are never touched.
    Raises OSError when ``root`` cannot be read."""
    freed: list[str] = []
    for folder in _folders(root):
        lock = folder / LOCK_NAME
        try:
            plain = stat.S_ISREG(lock.lstat().st_mode)
        except FileNotFoundError:
            continue
        if plain and left_by_the_dead(lock):
            log.warning("the voicemail folder %s/%s was locked by a Backline process that "
                        "ended holding it: its lock is removed", folder.parent.name,
                        folder.name)
            lock.unlink(missing_ok=True)
            freed.append(f"{folder.parent.name}/{folder.name}")
    return freed


def _folders(root: Path) -> Iterator[Path]:
    """Each box's folders under ``root`` (the spool's ``voicemail/CONTEXT``), by name; none
    when ``root`` is not there (no message yet), and a box removed meanwhile passed over.
    Raises OSError when ``root`` cannot be read."""
    try:
        boxes = sorted(e.path for e in os.scandir(root) if e.is_dir(follow_symlinks=False))
    except FileNotFoundError:
        return
    for box in boxes:
        try:
            folders = sorted(e.path for e in os.scandir(box) if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            continue
        yield from map(Path, folders)


@dataclass(frozen=True, slots=True)
class HeldLock:
    """A folder's lock (``path``) held for ``seconds``: ``box`` and ``folder`` name it (a
    practice number's box, nothing of a caller); ``holder`` is "" for app_voicemail's (empty),
    else what Backline wrote in it; ``ended``: a Backline process that no longer runs."""

    box: str
    folder: str
    path: Path
    seconds: float
    holder: str
    ended: bool


def held_too_long(root: Path, now: float,
                  longer_than: float = HELD_TOO_LONG) -> list[HeldLock]:
    """The folder locks under ``root`` (the spool's ``voicemail/CONTEXT``: BOX/FOLDER/.lock)
    older than ``longer_than`` seconds at ``now`` (seconds since the epoch, as file times are),
    by box and folder; none when ``root`` is not there (no message yet).  Reads the locks,
    never removes one.  Raises OSError when ``root`` cannot be read."""
    found: list[HeldLock] = []
    for folder in _folders(root):
        lock = folder / LOCK_NAME
        try:
            seen = lock.lstat()
            # Read only as a plain file: what it says is shown (never a symlink's target).
            holder = lock.read_bytes()[:64].decode("ascii", "replace").strip() \
                if stat.S_ISREG(seen.st_mode) else "?"
        except FileNotFoundError:
            continue  # none, or given back meanwhile
        made = seen.st_mtime
        if now - made > longer_than:
            found.append(HeldLock(folder.parent.name, folder.name, lock, now - made,
                                  holder, bool(holder) and left_by_the_dead(lock)))
    return found
