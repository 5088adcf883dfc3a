"""The calls FreeSWITCH hands to the controller's outbound socket (:class:`CallSocketServer`):
each is read from its channel data (untrusted caller text is only ever passed to the core,
never into a command), taken down the shared call path (:mod:`backline.pbx.callpath`:
decided, and journaled when that path says) and carried out as the decision's applications
(:mod:`backline.pbx.freeswitch.commands`), one ``sendmsg execute`` at a time.  A call sent
to ring the number's desk phones or to its voicemail is followed to its hangup
(:mod:`backline.pbx.freeswitch.hangup`), so one nobody took that left no message is
journaled as a missed call, as on Asterisk.

Split from :mod:`backline.pbx.freeswitch.driver`, which keeps the inbound link (registrations,
events, the mode and the lamp) and the driver's life.
"""

from __future__ import annotations

import dataclasses
import logging

from backline.core.decisions import InboundCall, InboundDecision, ReceiveFax
from backline.core.fax_intake import FaxEnd
from backline.core.voicemail import may_be_missed
from backline.pbx.callpath import CallPath
from backline.pbx.freeswitch import names, wire
from backline.pbx.freeswitch.callsocket import CallGone, CallSession
from backline.pbx.freeswitch.commands import (
    Application,
    Sounds,
    inbound_applications,
    outbound_applications,
)
from backline.pbx.freeswitch.fax import fax_end, fax_result_event
from backline.pbx.freeswitch.hangup import hung_up, is_hangup_of
from backline.pbx.ports import UnsafeValue

log = logging.getLogger("backline.freeswitch")

# How long after the fax applications the results may still be on their way (the hangup's
# events come after the reply to the last command on some switches).
FAX_RESULT_WAIT = 5.0
# The hangup's last event follows the last application's reply (or the caller's hangup) at
# once; the bound only catches a switch that never sends it (then nothing is filed).
HANGUP_WAIT = 30.0


class FreeswitchCalls(CallPath):
    """The shared call path, spelled for FreeSWITCH's outbound socket.  ``domain`` is the
    SIP domain the desk phones are users of; ``sounds`` where the sounds are (the driver
    sets both)."""

    domain: str
    sounds: Sounds

    async def on_call(self, data: wire.ChannelData, session: CallSession) -> None:
        route = data.get(f"variable_{names.ROUTE}")
        if route == names.OUTBOUND:
            await _execute(self._outbound(data), session)
        elif route == names.FEATURE:
            await _execute(await self._feature(data), session)
        else:
            await self._inbound(data, session)

    async def _inbound(self, data: wire.ChannelData, session: CallSession) -> None:
        """An inbound call, decided and journaled on the shared call path: the decision has
        gone out once FreeSWITCH runs its first application (a quick one: set or answer).
        If the journal fails before that, the session closes and the dialplan's fallback
        answers the caller."""
        dialed = data.get(f"variable_{names.NUMBER}") or data.get("Caller-Destination-Number")
        call = InboundCall(dialed=dialed or "", caller=data.get("Caller-Caller-ID-Number") or "")
        uuid = data.unique_id or ""
        receiving = False
        ringing: InboundDecision | None = None  # sent to ring or to voicemail: may be missed

        async def send(decision: InboundDecision) -> list[Application]:
            nonlocal receiving, ringing
            apps, receiving = self._inbound_applications(decision, uuid, data)
            if apps and may_be_missed(decision):
                ringing = decision
            await _execute(apps[:1], session)
            return apps[1:]

        try:
            rest = await self.take_inbound(call, uuid, send)
            if not session.hung_up:
                await _execute(rest, session)
        except CallGone:
            if receiving:  # the sender hung up mid-fax: what came is still taken in
                await self._fax_done(data, session)
            await self._hung_up(call, uuid, ringing, session)
            raise
        if receiving:
            await self._fax_done(data, session)
        await self._hung_up(call, uuid, ringing, session)

    async def _hung_up(self, call: InboundCall, uuid: str, decision: InboundDecision | None,
                       session: CallSession) -> None:
        """A call sent to ring or to voicemail (``decision``; None: any other) is over: its
        ``CHANNEL_HANGUP_COMPLETE`` (:mod:`backline.pbx.freeswitch.hangup`) down the call
        path, which journals it if it was missed."""
        if decision is None:
            return
        event = next((e for e in session.events if is_hangup_of(e, uuid)), None)
        if event is None:
            event = await session.wait_event(lambda e: is_hangup_of(e, uuid), HANGUP_WAIT)
        self.take_hangup(call, uuid, decision, hung_up(event) if event is not None else None)

    def _inbound_applications(self, decision: InboundDecision, uuid: str,
                              data: wire.ChannelData) -> tuple[list[Application], bool]:
        """The applications for an inbound decision, and whether they receive a fax."""
        # Where `backline render` wrote the announcement, as the rendered dialplan put it on
        # the call: no path is guessed here, so the controller plays the file the PBX's own
        # fail-safe plays.
        sounds = dataclasses.replace(
            self.sounds, announcement=data.get(f"variable_{names.ANNOUNCEMENT}") or "")
        try:
            return (inbound_applications(decision, self.domain, sounds, uuid),
                    isinstance(decision, ReceiveFax))
        except UnsafeValue as exc:
            # Nothing is executed: the session closes, `socket` returns and the rendered
            # dialplan's next actions answer with the announcement.
            log.error("inbound decision not sent: %s; the dialplan's fallback answers", exc)
            return ([], False)

    async def _fax_done(self, data: wire.ChannelData, session: CallSession) -> None:
        """mod_spandsp's results (on the channel's events) to the fax intake: the TIFF is
        stored, converted and journaled exactly as one received through Asterisk."""
        async def read_end() -> FaxEnd:
            event = fax_result_event(session.events)
            if event is None:  # not seen yet: the hangup's events carry them, if rxfax ran
                await session.wait_event(lambda e: e.name == "CHANNEL_HANGUP_COMPLETE"
                                         or fax_result_event([e]) is not None,
                                         FAX_RESULT_WAIT)
                event = fax_result_event(session.events)
            source: wire.Event | wire.ChannelData = event if event is not None else data
            return fax_end(data.unique_id or "", data.get("Caller-Caller-ID-Number") or "",
                           data.get(f"variable_{names.NUMBER}") or "",
                           lambda name: source.get(f"variable_{name}"))

        await self.take_fax_end(read_end)

    def _outbound(self, data: wire.ChannelData) -> list[Application]:
        # user_name is the directory user the desk phone authenticated as (FreeSWITCH sets
        # it after digest auth); the caller's own From header is not trusted for this.
        desk_phone = data.get("variable_user_name") or ""
        decision = self.take_outbound(desk_phone, data.get("Caller-Destination-Number") or "")
        try:
            return outbound_applications(decision, self.domain, self.sounds)
        except UnsafeValue as exc:
            log.error("outbound decision not sent: %s", exc)
            return [("answer", None), ("playback", self.sounds.outbound_refusal),
                    ("hangup", None)]

    async def _feature(self, data: wire.ChannelData) -> list[Application]:
        """``*28``/``*29`` + PIN from a desk phone: engage or end the outage; ``*26``/``*27``:
        force the hours closed or open (the controller checks the phone is an admin's and the
        PIN, and records the attempt either way)."""
        desk_phone = data.get("variable_user_name") or ""
        action = data.get(f"variable_{names.FEATURE_ACTION}") or ""
        pin = data.get(f"variable_{names.FEATURE_PIN}") or ""
        ok = await self.desk_phone_feature(desk_phone, action, pin)
        sound = names.FEATURE_OK_SOUND if ok else names.FEATURE_REFUSED_SOUND
        return [("answer", None), ("playback", sound), ("hangup", None)]



async def _execute(apps: list[Application], session: CallSession) -> None:
    """Run ``apps`` on the call in order, until one ends it."""
    for app, arg in apps:
        await session.execute(app, arg)
        if session.hung_up:
            break
