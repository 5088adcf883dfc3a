"""A 911 call's notices wait until its carrier leg is on its way (DESIGN.md §12: an
emergency call never waits on Backline, not even for CPU).

The dialplan's user event comes just before its ``Dial()``.  Acted on at once, the journal
write and the notice calls and emails shared the machine with Asterisk while it was still
writing the carrier's INVITE (bench/emergency.py measured 0.4-0.8 ms).  So the call is held
here until Asterisk's ``DialBegin`` for it: app_dial publishes that only after ``ast_call``
returned, and chan_pjsip's ``ast_call`` builds and sends the INVITE on the session's
serializer and waits for it (``ast_sip_push_task_wait_serializer``), so the INVITE is out
first (to a trunk addressed by IP; a host name would wait on DNS).  A 911 that never gets
that far (no channel, or hung up first) is released by the caller's ``Hangup``; a 503 from
the carrier still has its ``DialBegin``.  Both events are asked of Asterisk only for the
emergency numbers (:func:`leg_filters`), so no other call sends the controller more events.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from datetime import datetime

from backline.core.emergency import EmergencyCall
from backline.pbx.asterisk.ami import AmiLink
from backline.pbx.asterisk.events import emergency_call

log = logging.getLogger("backline.asterisk")

LEG_EVENTS = ("DialBegin", "Hangup")
HELD_AT_MOST = 64  # calls; beyond it the oldest is told at once


def leg_filters(emergency_numbers: Collection[str]) -> Iterator[dict[str, str]]:
    """AMI ``Filter`` actions for the events that release a held 911 call: the caller's
    channel (``Exten`` is the number it dialled; the carrier leg's ``DestExten`` is not
    matched) beginning its Dial or hanging up, on an emergency number only."""
    for event in LEG_EVENTS:
        for number in emergency_numbers:
            yield {"Action": "Filter", "Operation": "Add",
                   "MatchCriteria": f"action(include),name({event}),header(Exten),"
                                    "method(exact)",
                   "Filter": number}


class CarrierLegWatch:
    """911 calls the dialplan told of, each held until its carrier leg is on its way, its
    caller hung up, or the AMI link was lost (the end can no longer be seen), then handed to
    ``tell`` once (its work to ``run``, the driver's work after decisions); with no ``tell``
    none is held."""

    def __init__(self, ami: AmiLink, tell: Callable[[EmergencyCall], Awaitable[object]] | None,
                 run: Callable[[Awaitable[object]], None]) -> None:
        self._tell, self._run = tell, run
        self._held: dict[str, EmergencyCall] = {}
        for name in LEG_EVENTS:
            ami.on_event(name, self.on_its_way)
        ami.on_lost = self.release_all

    def told(self, event: Mapping[str, str], at: datetime) -> None:
        """The dialplan's user event (read by :func:`emergency_call`)."""
        call = emergency_call(event, at) if self._tell is not None else None
        if call is None:
            return
        self._held[call.key] = call
        if len(self._held) > HELD_AT_MOST:
            self._release(next(iter(self._held)))

    def on_its_way(self, event: Mapping[str, str]) -> None:
        """``DialBegin`` or ``Hangup`` of a channel: the held call it is, if any, goes on."""
        self._release(f"emergency:{event.get('Uniqueid', '')}")

    def release_all(self) -> None:
        """The AMI link is gone or closing: nothing held waits for events that may not come
        (a call told twice, here and from the PBX's record, is journaled once)."""
        for key in list(self._held):
            self._release(key)

    def _release(self, key: str) -> None:
        call = self._held.pop(key, None)
        if call is not None and self._tell is not None:
            self._run(self._tell(call))
