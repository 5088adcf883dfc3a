"""Keeping the mode the same in the journal and in the PBX, whichever side switched it.

The PBX holds two keys: ``mode`` (what the dialplan and the console use) and ``ack`` (the
mode the controller last agreed with).  Both live in the PBX's own database, so the rule
below holds across restarts of either side:

- ``mode`` missing: the PBX is new; write the journal's mode.
- ``mode == ack``: nothing changed on the PBX since we agreed; if the journal moved (CLI,
  desk phone), push the journal's mode.
- ``mode != ack``: someone switched it on the PBX console; record that switch in the journal
  (unless the journal already says the same), then agree.

Pure: values in, one decision out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from backline.core.outage import Mode, ModeState
from backline.core.records import ControllerReport


@dataclass(frozen=True, slots=True)
class InSync:
    pass


@dataclass(frozen=True, slots=True)
class PushToPbx:
    """Write ``mode`` to the PBX (both keys) and set the lamp."""

    mode: Mode


@dataclass(frozen=True, slots=True)
class RecordConsoleSwitch:
    """The console switched to ``mode``: record it, then agree with the PBX."""

    mode: Mode


@dataclass(frozen=True, slots=True)
class Agree:
    """The PBX and the journal already say ``mode``; only the ack is behind."""

    mode: Mode


SyncAction = InSync | PushToPbx | RecordConsoleSwitch | Agree


def parse_mode(value: str | None) -> Mode | None:
    """The PBX key's value; anything unrecognised counts as missing (and gets rewritten)."""
    if value is None:
        return None
    try:
        return Mode(value.strip().lower())
    except ValueError:
        return None


def reconcile(pbx_mode: str | None, pbx_ack: str | None, journal: ModeState) -> SyncAction:
    mode, ack = parse_mode(pbx_mode), parse_mode(pbx_ack)
    if mode is None:
        return PushToPbx(journal.mode)
    if mode == ack:
        return InSync() if mode is journal.mode else PushToPbx(journal.mode)
    if mode is journal.mode:
        return Agree(mode)
    return RecordConsoleSwitch(mode)


# -- is a switch in effect? (what `backline outage engage/end` waits on) -----------------------


@dataclass(frozen=True, slots=True)
class InEffect:
    """Every running controller's PBX holds the switch: ``(node, since when)`` each."""

    applied: tuple[tuple[str, datetime], ...]


@dataclass(frozen=True, slots=True)
class NotYet:
    """Running controllers whose PBX does not hold it yet (their nodes, last seen when)."""

    waiting: tuple[tuple[str, datetime], ...]


@dataclass(frozen=True, slots=True)
class NoController:
    """No controller has reported lately: nothing applies the switch until one runs."""

    last_seen: datetime | None


Effect = InEffect | NotYet | NoController


def effect_of(reports: Sequence[ControllerReport], key: str, now: datetime,
              live_within: timedelta) -> Effect:
    """Whether the switch named ``key`` (``outage.switch_key``) is in effect, from the
    controllers' reports: those seen within ``live_within`` of ``now`` count as running."""
    live = [r for r in reports if now - r.seen_at <= live_within]
    if not live:
        return NoController(max((r.seen_at for r in reports), default=None))
    waiting = tuple((r.node, r.seen_at) for r in live
                    if r.pbx_switch != key or r.pbx_at is None)
    if waiting:
        return NotYet(waiting)
    return InEffect(tuple((r.node, r.pbx_at) for r in live if r.pbx_at is not None))
