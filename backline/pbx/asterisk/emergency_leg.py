"""A 911 call is told to the controller only once its carrier leg is on its way (DESIGN.md
§12: an emergency call never waits on Backline, not even for CPU).

The dialplan used to raise a user event just before its ``Dial()``; acted on at once, the
journal write and the notice calls and emails shared the machine with Asterisk while it was
still writing the carrier's INVITE (bench/emergency.py measured 0.4-0.8 ms).  Now the
controller acts on Asterisk's own ``DialBegin`` for the call: app_dial publishes it only
after ``ast_call`` returned, and chan_pjsip's ``ast_call`` builds and sends the INVITE on
the session's serializer and waits for it (``ast_sip_push_task_wait_serializer``), so the
INVITE is out first (to a trunk addressed by IP over UDP; a host name waits on DNS, TCP or
TLS on a new connection).  A 911 that never gets that far (no channel, or hung up first)
is told by its caller's ``Hangup``; one the carrier refuses at once (503) has its
``DialBegin``.  Both events are asked of Asterisk only for the emergency numbers
(:func:`leg_filters`), so no other call sends the controller more events, and the dialplan
has one step fewer before its ``Dial()``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from datetime import UTC, datetime

from backline.core.emergency import EmergencyCall
from backline.pbx.asterisk import dialplan_variables as v
from backline.pbx.asterisk.ami import AmiLink
from backline.pbx.asterisk.events import emergency_call

log = logging.getLogger("backline.asterisk")

LEG_EVENTS = ("DialBegin", "Hangup")
TOLD_KEPT = 256  # calls remembered as told (a Hangup follows each DialBegin)
# A desk phone's own 911, and a caller it blind-transferred to 911 (same numbers, same notice).
_EMERGENCY_CONTEXTS = (v.DESK_CONTEXT, v.TRANSFER_CONTEXT)


def leg_filters(emergency_numbers: Collection[str]) -> Iterator[dict[str, str]]:
    """AMI ``Filter`` actions for the events that tell of a desk phone's 911: the caller's
    channel (``Exten`` is the number it dialled; the carrier leg's ``DestExten`` is not
    matched) beginning its Dial or hanging up, on an emergency number only."""
    for event in LEG_EVENTS:
        for number in emergency_numbers:
            yield {"Action": "Filter", "Operation": "Add",
                   "MatchCriteria": f"action(include),name({event}),header(Exten),"
                                    "method(exact)",
                   "Filter": number}


class CarrierLegWatch:
    """The 911 calls desk phones placed, each handed to ``tell`` once (its work to ``run``,
    the driver's work after decisions) at the first ``DialBegin`` or ``Hangup`` of the
    caller's channel in the desk context on an emergency number; with no ``tell``, nothing."""

    def __init__(self, ami: AmiLink, numbers: Callable[[], Collection[str]],
                 tell: Callable[[EmergencyCall], Awaitable[object]] | None,
                 run: Callable[[Awaitable[object]], None]) -> None:
        self._numbers, self._tell, self._run = numbers, tell, run
        self._told: dict[str, None] = {}  # the latest calls' keys, oldest first
        for name in LEG_EVENTS:
            ami.on_event(name, self.on_its_way)

    def on_its_way(self, event: Mapping[str, str], at: datetime | None = None) -> None:
        """``DialBegin`` or ``Hangup`` of a channel (Asterisk sends only those on an emergency
        number, :func:`leg_filters`); a desk phone's 911 it is not, and one told, is let be."""
        if self._tell is None or event.get("Context") not in _EMERGENCY_CONTEXTS \
                or event.get("Exten") not in self._numbers():
            return
        call = emergency_call(event, at or datetime.now(UTC))
        if call is None or call.key in self._told:
            return
        self._told[call.key] = None
        if len(self._told) > TOLD_KEPT:
            del self._told[next(iter(self._told))]
        self._run(self._tell(call))
