"""The journal's disk, shared by the least and the most important writes.

A call, an SMS or a fax is journaled before the caller or the gateway hears back; an email
the intake takes in is journaled too, and anyone on the internet can send one of 50 MB.  When
mail filled the journal's disk, outage calls went unjournaled and every signed SMS got 500.
So held mail has a budget of its own (``email_intake.held_mb``), and below a free-space floor
(``email_intake.free_floor_mb``) the intake turns mail away (452: the sender's server keeps
it and tries again) while calls and SMS go on journaling into what is left.

The free space is in ``/metrics`` (``backline_journal_free_bytes`` beside the floor) and on
the status page, which warns from twice the floor down, before mail is turned away.

Only a journal on this machine (SQLite) has a disk we can measure; PostgreSQL's is its
server's to watch, so there the floor is not applied and the page says so.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from backline.core.connections import DEFAULT_FREE_FLOOR_MB, DEFAULT_HELD_MB, EmailIntake
from backline.features.status.health import Health, Verdict, off

MB = 1024 * 1024
WARN_FACTOR = 2  # the page warns from this many times the floor down


def disk_health(free: int | None, floor: int, at: datetime) -> Health:
    """The status page's word on the journal's disk.  Pure: ``free`` (None: not ours to
    measure) and ``floor`` in bytes."""
    if free is None:
        return off("the journal is not on this machine (PostgreSQL): its server's disk is "
                   "watched there")
    says = f"{free // MB} MB free on the journal's disk"
    if free < floor:
        return Health(Verdict.FAILING, f"only {says}: below the floor of {floor // MB} MB, "
                      "the email intake is turning mail away (calls and SMS still journal)",
                      last_error="below the free-space floor", last_error_at=at)
    if free < WARN_FACTOR * floor:
        return Health(Verdict.FAILING, f"only {says}: below {floor // MB} MB the email "
                      "intake will turn mail away", last_error="close to the free-space floor",
                      last_error_at=at)
    return Health(Verdict.OK, f"{says} (mail is turned away below {floor // MB} MB)",
                  last_success=at)


class JournalDisk:
    """Where the journal lives (None: not on this machine) and what held mail may take."""

    def __init__(self, where: Path | None, floor_bytes: int, held_budget: int,
                 held_bytes: Callable[[], int]) -> None:
        self.where = where
        self.floor = floor_bytes
        self.held_budget = held_budget
        self._held_bytes = held_bytes

    @classmethod
    def of(cls, journal: object, intake: EmailIntake | None,
           held_bytes: Callable[[], int]) -> JournalDisk:
        """The disk of ``journal`` (an SQLite journal has a ``path``), with the intake's
        budget (its defaults when there is no intake: the page still warns)."""
        path = getattr(journal, "path", None)
        floor = intake.free_floor_mb if intake is not None else DEFAULT_FREE_FLOOR_MB
        held = intake.held_mb if intake is not None else DEFAULT_HELD_MB
        return cls(path.parent if isinstance(path, Path) else None, floor * MB, held * MB,
                   held_bytes)

    def free_bytes(self) -> int | None:
        """Free bytes for an unprivileged writer on the journal's filesystem (a statvfs, no
        file read); None when that is not ours to measure or cannot be read."""
        if self.where is None:
            return None
        try:
            return shutil.disk_usage(self.where).free
        except OSError:
            return None

    def health(self, at: datetime) -> Health:
        return disk_health(self.free_bytes(), self.floor, at)

    def why_no_room(self, size: int = 0) -> str:
        """Why a message of ``size`` bytes (0: not known yet) cannot be kept now, or "".
        Reads the journal: call it in a worker thread."""
        free = self.free_bytes()
        if free is not None and free - size < self.floor:
            return "the journal's disk is at its free-space floor"
        # Stored as base64: four bytes for every three.
        if self._held_bytes() + (size * 4 + 2) // 3 > self.held_budget:
            return "held mail is at its budget"
        return ""
