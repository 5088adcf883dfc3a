"""Backup (outage) mode: the one switch that covers calls, SMS and fax together.

Pure: the current state and the request come in, the change to record comes out.  Who
switched it, from where and why are part of every change, because ops ask exactly that.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime


class Mode(enum.Enum):
    NORMAL = "normal"
    OUTAGE = "outage"


class Via(enum.Enum):
    """Where a switch was made."""

    CLI = "cli"
    CONSOLE = "console"
    DESK_PHONE = "desk-phone"
    CONTROLLER = "controller"


@dataclass(frozen=True, slots=True)
class ModeChange:
    mode: Mode
    at: datetime
    by: str
    via: Via
    reason: str


@dataclass(frozen=True, slots=True)
class ModeState:
    """The mode now and the change that set it (None: never switched, so normal)."""

    mode: Mode
    since: ModeChange | None

    @classmethod
    def initial(cls) -> ModeState:
        return cls(Mode.NORMAL, None)


class AlreadyInMode(ValueError):
    def __init__(self, state: ModeState) -> None:
        since = f" since {state.since.at.isoformat()} by {state.since.by}" if state.since else ""
        super().__init__(f"already {state.mode.value}{since}")
        self.state = state


def switch(state: ModeState, to: Mode, *, at: datetime, by: str, via: Via,
           reason: str) -> ModeChange:
    """The change that moves ``state`` to ``to``; raise :class:`AlreadyInMode` when it is there.

    Engaging needs a reason: whoever ends the outage, or reads the status page at 3 a.m.,
    must be able to see why it was engaged.
    """
    if state.mode is to:
        raise AlreadyInMode(state)
    if to is Mode.OUTAGE and not reason.strip():
        raise ValueError("engaging an outage needs a reason")
    return ModeChange(to, at, by, via, reason.strip())


def switch_key(change: ModeChange | None) -> str:
    """A switch's name as the controller reports it applied ("" for never switched): its
    mode and its time, which the journal keeps to the microsecond."""
    if change is None:
        return ""
    return f"{change.mode.value}@{change.at.astimezone(UTC).isoformat(timespec='microseconds')}"
