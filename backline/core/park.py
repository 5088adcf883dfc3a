"""What happened to a parked call, as its journal record says it.  Pure.

A desk phone's park key puts an outside caller in a slot; someone picks it up from another
phone, or nobody does and it rings back the phone that parked it, or the caller hangs up
while waiting.  Each step is one line of the call's record (who, which slot), so the
practice can tell who left a patient waiting and who took the call.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from backline.core.ownership import OwnershipBook


class ParkStep(enum.Enum):
    PARKED = "park.parked"
    PICKED_UP = "park.picked_up"
    TIMED_OUT = "park.timed_out"  # nobody picked it up: it rings back the parker
    ABANDONED = "park.abandoned"  # the caller hung up while parked


@dataclass(frozen=True, slots=True)
class ParkEvent:
    """One step of a parked call: the call's journal key (``call:UNIQUEID``), the slot,
    and the desk phone that parked it or (``PICKED_UP``) picked it up ("" if not ours)."""

    call_key: str
    step: ParkStep
    slot: str
    desk_phone: str


def park_note(event: ParkEvent, book: OwnershipBook, timeout: int) -> tuple[str, str]:
    """The user the step is by ("" if the desk phone is nobody's) and the record's words."""
    user = book.user_of_phone(event.desk_phone) or ""
    who = user or (f"desk phone {event.desk_phone}" if event.desk_phone else "an unknown phone")
    match event.step:
        case ParkStep.PARKED:
            note = f"parked in slot {event.slot} by {who}"
        case ParkStep.PICKED_UP:
            note = f"picked up from slot {event.slot} by {who}"
        case ParkStep.TIMED_OUT:
            note = (f"not picked up from slot {event.slot} within {timeout} s; rang back "
                    f"{who}")
        case ParkStep.ABANDONED:
            note = f"the caller hung up while parked in slot {event.slot}"
    return user, note
