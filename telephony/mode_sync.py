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

from dataclasses import dataclass

from telephony.outage import Mode, ModeState


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
