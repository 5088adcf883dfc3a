"""A voicemail folder whose lock outlived any holder's work (``backline.pbx.spool_lock``):
app_voicemail drops every message left there after 5 s ("Couldn't lock directory ...
Voicemail will be lost"), whether retention is on or not.  What ``backline doctor`` and the
status page say of it: the box (a practice number's, nothing of a caller), how long, whose,
and the fix.  Pure: the locks and the time come in."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from backline.features.status.health import Health, Verdict
from backline.pbx.spool_lock import HELD_TOO_LONG, HeldLock

# A lock's file is made up to 5 s before its holder gets the lock (ast_lock_path_lockfile
# retries that long), and doctor fails clocks more than 2 s apart: a lock older than the
# Asterisk running now by more than this was made before it started.
BEFORE_START = 10.0  # seconds


def held_for(seconds: float) -> str:
    """``2 d 3 h``, ``1 h 5 min``, ``4 min``, ``40 s``: how long a lock has been held."""
    if seconds < 60:
        return f"{int(seconds)} s"
    minutes = int(seconds) // 60
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def whose(lock: HeldLock) -> str:
    if not lock.holder:
        return "app_voicemail (an Asterisk stopped while it held it leaves it so)"
    if lock.holder.startswith("backline ") and lock.ended:
        return "a Backline process that ended holding it"
    if lock.holder.startswith("backline "):
        return f"Backline's retention (pid {lock.holder.split()[1]}, still running)"
    return "neither app_voicemail nor Backline (its file is not theirs)"


def lock_line(lock: HeldLock, number: str | None) -> str:
    """``box 1025550102's INBOX (+13125550102) locked 1 h 0 min ago by app_voicemail ...``"""
    of = f" ({number})" if number else ""
    return (f"box {lock.box}'s {lock.folder}{of} locked {held_for(lock.seconds)} ago by "
            f"{whose(lock)}")


def lock_fix(locks: Sequence[HeldLock], asterisk_up: float | None = None) -> str:
    """What to do: remove each lock once its holder is gone.  One a Backline process that is
    gone wrote is Backline's to remove, and it does at the next retention round or PBX login
    (backline.pbx.spool_lock.remove_dead_locks); nothing waits for it: removable now.
    Backline removes none of app_voicemail's: they are empty, so nothing in them says the
    holder is gone.  With ``asterisk_up`` (seconds the Asterisk running now has been up), a
    lock made before it started is said to be no process of its: removable now."""
    dead = [lock for lock in locks if lock.holder.startswith("backline ") and lock.ended]
    older = [lock for lock in locks if lock not in dead and asterisk_up is not None
             and lock.seconds > asterisk_up + BEFORE_START]
    rest = [lock for lock in locks if lock not in older and lock not in dead]
    said = []
    if dead:
        said.append("Backline's, left by a Backline process that is gone: Backline removes it "
                    "at its next retention round or controller start (PBX login), or remove "
                    "it now: rm " + " ".join(str(lock.path) for lock in dead))
    if older and asterisk_up is not None:
        said.append(f"made before the Asterisk running now started ({held_for(asterisk_up)} "
                    "ago), so none of its app_voicemail holds it: remove it now: rm "
                    + " ".join(str(lock.path) for lock in older))
    if rest:
        said.append("once Asterisk is stopped, or its holder is otherwise gone (no "
                    "app_voicemail takes a folder's lock for more than seconds), remove it: "
                    "rm " + " ".join(str(lock.path) for lock in rest))
    return "; ".join(said)


def locks_health(locks: Sequence[HeldLock], number_of: Callable[[str], str | None],
                 at: datetime) -> Health:
    """The status page's line: failing while a folder lock is held past HELD_TOO_LONG,
    naming each box and the fix; ok otherwise."""
    if not locks:
        return Health(Verdict.OK, "no voicemail folder locked longer than "
                      f"{int(HELD_TOO_LONG)} s", last_success=at)
    lines = "; ".join(lock_line(lock, number_of(lock.box)) for lock in locks)
    return Health(Verdict.FAILING, f"{lines}: app_voicemail drops every message left there "
                  f"after 5 s. Fix: {lock_fix(locks)}", last_error=lines, last_error_at=at)


def unreadable(error: str, at: datetime) -> Health:
    """The spool's voicemail folders could not be read (the voicemail intake cannot either)."""
    return Health(Verdict.FAILING, f"the PBX's voicemail spool cannot be read: {error}",
                  last_error=error, last_error_at=at)
