"""Retention, the pure part: given what Backline keeps and the time, which files go.

Backline keeps its own copies of patient data on the PBX host: each fax (its PDF, or the TIFF
as received when it could not be converted) in ``connections.pbx.fax_dir``, each voicemail
recording in the voicemail store beside it (backline.pbx.voicemail_desk), and the PBX keeps
each message in its spool.  The practice's inbox is the system of record (DESIGN.md §6): once
it has accepted an item, those copies only wait to leak or to fill the disk (a full disk once
stopped calls being journaled).  With ``connections.storage.delivered_days`` set, they go that
many days after the inbox accepted the item, and only then: never an item still held, one
whose delivery is in doubt (a try whose answer never came leaves it held), one the inbox
refused, one that never went to the inbox (a fax received in normal mode), nor a file outside
Backline's stores (a fax left in the PBX's spool is the fax intake's until it is taken in).
The journal's record stays, saying what came and that its files were removed.

No I/O and no clock: the records, the time and where the stores are come in as arguments.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import PurePosixPath

from backline.core.fax_intake import BadFaxReport, stored_names
from backline.core.records import Attempt, AttemptKind, Delivery

MAX_DELIVERED_DAYS = 3650  # ten years: beyond that, nobody meant to prune
ACTOR = "retention"
ACTION = "retention.removed"


@dataclass(frozen=True, slots=True)
class Kept:
    """An attempt whose files Backline may still keep, and when the inbox accepted its item
    (None: it has not)."""

    attempt: Attempt
    accepted_at: datetime | None


@dataclass(frozen=True, slots=True)
class Stores:
    """Where Backline keeps its copies: faxes (``connections.pbx.fax_dir``) and voicemail."""

    fax: str
    voicemail: str


@dataclass(frozen=True, slots=True)
class Removal:
    """What goes for one attempt: ``files``, Backline's copies in its stores, and for a
    voicemail ``spooled``, the msg_id of the PBX's own copy ("" for none)."""

    attempt_id: int
    kind: AttemptKind
    files: tuple[str, ...]
    spooled: str
    accepted_at: datetime


def describe(days: int | None, *, inbox: bool, spool: bool) -> str:
    """What is kept, in words, for ``backline check`` and the start: ``inbox`` whether one
    is configured (nothing is accepted without it), ``spool`` whether the PBX's copy of a
    message is Backline's to remove (Asterisk's spool; not FreeSWITCH's own database)."""
    if days is None:
        return ("retention: off: every fax and voicemail recording is kept on this host "
                "(connections.storage.delivered_days removes them N days after the inbox "
                "accepted them)")
    said = (f"retention: faxes and voicemail recordings are removed {days} days after the "
            "inbox accepted them, " + ("with the PBX spool's copy of each message" if spool
                                       else "not FreeSWITCH's own copy of each message")
            + "; anything not accepted is kept")
    if not inbox:
        said += " (connections.inbox is not configured: nothing is accepted, all is kept)"
    return said


@dataclass(frozen=True, slots=True)
class Baseline:
    """The controller's clock and its process's monotonic clock, read together at its first
    round: what the time that passed since is measured against."""

    wall: datetime
    monotonic: float


def clock_ahead(base: Baseline, now: datetime, monotonic: float) -> timedelta:
    """How far the clock ``now`` has been stepped ahead of the time that passed since
    ``base`` (``monotonic`` seconds on the same monotonic clock); zero when it has not.  A
    round counts ``now`` less this: a date set a year ahead (by hand, or a bad time source)
    would otherwise remove at once what the inbox accepted yesterday.  A clock stepped back
    needs nothing: it only keeps files longer."""
    return max(timedelta(0), (now - base.wall) - timedelta(seconds=monotonic - base.monotonic))


def accepted_before(now: datetime, days: int) -> datetime:
    """Items the inbox accepted before this are due: more than ``days`` days ago."""
    return now - timedelta(days=days)


def due(kept: Iterable[Kept], now: datetime, days: int, stores: Stores, *,
        node: str = "") -> list[Removal]:
    """The removals due at ``now``, in the order given.  Only this controller's PBX node's
    attempts (``node``): each node keeps its files on its own host."""
    cut = accepted_before(now, days)
    out: list[Removal] = []
    for k in kept:
        a = k.attempt
        if a.delivery is not Delivery.DELIVERED or k.accepted_at is None \
                or not k.accepted_at < cut or a.pruned is not None or a.node != node:
            continue
        files = own_files(a, stores)
        if files:
            spooled = a.key.removeprefix("voicemail:") \
                if a.kind is AttemptKind.VOICEMAIL and a.key.startswith("voicemail:") else ""
            out.append(Removal(a.id, a.kind, files, spooled, k.accepted_at))
    return out


def own_files(a: Attempt, stores: Stores) -> tuple[str, ...]:
    """The files of ``a`` in Backline's own store: its ``file`` when it lies there, and for
    a fax both names the intake gives it (a converted fax's TIFF whose removal failed is
    still there); () when its file is elsewhere or it has none."""
    match a.kind:
        case AttemptKind.FAX:
            store = stores.fax
        case AttemptKind.VOICEMAIL:
            store = stores.voicemail
        case _:
            return ()
    if not _inside(a.file, store):
        return ()
    files = [a.file]
    if a.kind is AttemptKind.FAX and a.key.startswith("fax:"):
        # A key that is not a name the intake gives: only the file the record names.
        with contextlib.suppress(BadFaxReport):
            files += [str(PurePosixPath(store) / n)
                      for n in stored_names(a.key.removeprefix("fax:"))]
    return tuple(dict.fromkeys(files))


def _inside(file: str, store: str) -> bool:
    """``file`` is directly in ``store``: written there by the intake, not a path a record
    could point anywhere else with."""
    if not file or not store:
        return False
    path = PurePosixPath(file)
    return path.is_absolute() and ".." not in path.parts \
        and path.parent == PurePosixPath(store)


def removal_detail(r: Removal, days: int, removed: Sequence[str],
                   spool: Sequence[str] | None) -> str:
    """The audit entry of one removal: which attempt, what went and why.  File names only
    (they carry the PBX's call or message id, never a caller); ``spool`` is what went from
    the PBX's spool, None when Backline does not manage that PBX's copy."""
    kind = r.kind.value
    names = ", ".join(PurePosixPath(f).name for f in removed) or "none left"
    said = f"attempt {r.attempt_id} ({kind}): {days} days after the inbox accepted it " \
           f"({r.accepted_at.isoformat(timespec='seconds')}); removed from Backline's store: " \
           f"{names}"
    if r.kind is AttemptKind.VOICEMAIL:
        if spool is None:
            said += "; the PBX's own copy is not Backline's to remove"
        else:
            said += f"; from the PBX's spool: {', '.join(spool) or 'none left'}"
    return said
