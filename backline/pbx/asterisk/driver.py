"""The Asterisk driver: FastAGI decisions and AMI registrations, around the pure core.

Each FastAGI session reads the call (untrusted text), asks the core, and writes the
decision's variables; the dialplan does the rest.  AMI keeps the desk-phone registrations
in view: the ring set is Asterisk's own contact list (``PJSIPShowContacts``), read again after
every login (a restarted Asterisk is picked up without restarting the controller) and after
every ``ContactStatus`` event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Unpack

from backline.core.bans import FAILURES as SECURITY_FAILURES
from backline.core.bans import source_of
from backline.core.connections import AsteriskPbx
from backline.core.conversations import ConversationBook
from backline.core.decisions import CallKind, InboundCall, InboundDecision
from backline.core.emergency import EmergencyCall
from backline.core.fax_intake import FaxEnd, fax_end_from_args
from backline.core.outage import Mode
from backline.core.ownership import OwnershipBook
from backline.core.park import ParkEvent
from backline.core.records import NewAttempt
from backline.core.registrations import Registration
from backline.core.transfers import decide_transfer
from backline.pbx.asterisk import commands
from backline.pbx.asterisk import dialplan_variables as v
from backline.pbx.asterisk.ami import AmiLink
from backline.pbx.asterisk.call_end import call_end_handler
from backline.pbx.asterisk.commands import inbound_variables, outbound_variables, packed
from backline.pbx.asterisk.contacts import NO_CONTACTS, desk_phone_contacts
from backline.pbx.asterisk.emergency_leg import CarrierLegWatch, leg_filters
from backline.pbx.asterisk.events import (
    PARK_EVENTS,
    attended_transfer,
    failsafe_call,
    only_events_we_use,
    park_event,
)
from backline.pbx.asterisk.fastagi import AgiRequest, AgiSession, FastAgiServer
from backline.pbx.asterisk.srtp_refusals import refusal_filters
from backline.pbx.asterisk.transfers import (
    ATTENDED_EVENT,
    OnTransfer,
    log_transfer,
    transfer_from_args,
    transfer_variables,
)
from backline.pbx.callpath import CallPath, CallPathOptions
from backline.pbx.mode_keys import ModeKeys
from backline.pbx.ports import LinkDown
from backline.pbx.registrar import LocationWatch

log = logging.getLogger("backline.asterisk")

NOTICE_RING_SECONDS = 30


class AsteriskDriver(CallPath, ModeKeys):
    def __init__(self, pbx: AsteriskPbx, ami_secret: str, book: OwnershipBook,
                 conversations: ConversationBook, mode: Callable[[], Mode],
                 record: Callable[[NewAttempt], Awaitable[object]],
                 feature: Callable[[str, Mode, str], Awaitable[bool]] | None = None,
                 after_login: Callable[[], Awaitable[object]] | None = None, *,
                 emergency: Callable[[EmergencyCall], Awaitable[object]] | None = None,
                 registrar_url: str = "",
                 **options: Unpack[CallPathOptions]) -> None:
        super().__init__(book, conversations, mode, record, log=log, feature=feature,
                         ring_seconds=pbx.ring_seconds, **options)
        self.pbx = pbx
        self.emergency = emergency  # told of each 911 a desk phone placed (emergency_leg)
        self.after_login = after_login
        # Told of each transfer once its decision is out (journal, conversation members).
        self.on_transfer: OnTransfer | None = None
        # Told of each step of a parked call (journal).
        self.on_park: Callable[[ParkEvent], Awaitable[object]] | None = None
        # Told of each failed SIP authentication (AMI security events): its event name and
        # the source's address (backline.features.bans).
        self.on_security: Callable[[str, str], object] | None = None
        # Per FastAGI session: the controller's decision (request in, decision out) and the
        # whole session with Asterisk's answers (bench/calls.py prints both).
        self.latencies: list[float] = []
        self.round_trips: list[float] = []
        self.latency_hook: Callable[[str, float], None] | None = None
        self.agi = FastAgiServer({v.AGI_INBOUND: self.inbound, v.AGI_OUTBOUND: self.outbound,
                                  v.AGI_FEATURE: self.feature, v.AGI_FAX: self.fax_heard,
                                  v.AGI_FAX_DONE: self.fax_done, v.AGI_TRANSFER: self.transfer,
                                  v.AGI_CALL_END: call_end_handler(self)},
                                 on_latency=self._latency)
        self.ami = AmiLink(pbx.ami.host, pbx.ami.port, pbx.ami_username, ami_secret,
                           on_login=self._logged_in)
        self.emergency_legs = CarrierLegWatch(
            self.ami, lambda: self.book.directory.emergency_numbers, emergency, self.after_decision)
        self.ami.on_event("ContactStatus", self.on_contact_status)
        self.ami.on_event("UserEvent", self.on_user_event)
        self.ami.on_event(ATTENDED_EVENT, self.on_attended_transfer)
        for name in PARK_EVENTS:
            self.ami.on_event(name, self.on_park_event)
        for name in SECURITY_FAILURES:
            self.ami.on_event(name, self.on_security_event)
        self._contacts_stale = False
        self._contacts_sync: asyncio.Task[None] | None = None
        self._odd_contacts: set[tuple[str, str]] = set()
        # Behind Kamailio as the registrar the ring set is its location table, not
        # Asterisk's contacts (this node holds none): backline.pbx.registrar.
        self.location: LocationWatch | None = None
        if pbx.registrar is not None:
            if not registrar_url:
                raise ValueError("connections.pbx.registrar needs the shared database's URL")
            self.location = LocationWatch(registrar_url, book, self.hold_registrations,
                                          self.registrations_unread)

    @property
    def up(self) -> bool:
        """Logged in to AMI: PBX-side state can be read and written."""
        return self.ami.up

    async def start(self, *, ami_within: float = 10.0) -> None:
        """Serve FastAGI first (calls get decisions at once), then log in to AMI."""
        await self.agi.start(self.pbx.agi.host, self.pbx.agi.port)
        if self.location is not None:
            self.location.start()
        await self.ami.connect(within=ami_within)

    async def stop(self) -> None:
        self.ami.close()
        if self.location is not None:
            await self.location.stop()
        if self._contacts_sync is not None:
            self._contacts_sync.cancel()
            await asyncio.gather(self._contacts_sync, return_exceptions=True)
        await self.agi.stop()
        await self.stop_after()

    def _latency(self, script: str, decided: float, total: float) -> None:
        self.latencies.append(decided)
        self.round_trips.append(total)
        if self.latency_hook is not None:
            self.latency_hook(script, decided)
        if len(self.latencies) > 100_000:
            del self.latencies[:50_000]
            del self.round_trips[:50_000]

    # -- FastAGI ---------------------------------------------------------------------------

    # Routing reads the arguments the dialplan filtered (the dialled number, the caller),
    # never agi_extension or agi_callerid: those are written unescaped (see fastagi).

    async def inbound(self, request: AgiRequest, session: AgiSession) -> None:
        """A carrier call; the arguments are the dialled number and the caller ID."""
        if len(request.args) != 2:
            log.error("an inbound request without its dialled number and caller arguments: "
                      "render the dialplan again (`backline render`); the PBX answers alone")
            return
        call = InboundCall(dialed=request.args[0], caller=request.args[1])
        await self._decide(call, request.get("uniqueid"), session)

    async def fax_heard(self, request: AgiRequest, session: AgiSession) -> None:
        """Fax tones (CNG, heard by the carrier endpoint's fax_detect) on a call taken as
        voice: decide again, as a fax.  The arguments are the dialled number and the caller,
        as the dialplan filtered them when the call came in."""
        dialed, caller = [*request.args, "", ""][:2]
        call = InboundCall(dialed=dialed, caller=caller, kind=CallKind.FAX)
        await self._decide(call, request.get("uniqueid"), session)

    async def _decide(self, call: InboundCall, uniqueid: str, session: AgiSession) -> None:
        async def send(decision: InboundDecision) -> None:
            await session.conclude(*packed(inbound_variables(decision, self.book)))

        await self.take_inbound(call, uniqueid, send)

    async def fax_done(self, request: AgiRequest, session: AgiSession) -> None:
        """The end of a fax call (the h extension of backline-fax, whatever ended it): the
        arguments are the dialled number and res_fax's FAX* variables (fax_intake checks
        them); nothing is sent back, the channel is gone."""
        async def read_end() -> FaxEnd:
            caller = request.args[5] if len(request.args) > 5 else ""
            return fax_end_from_args(request.get("uniqueid"), caller, request.args[:5])

        await self.take_fax_end(read_end)

    async def outbound(self, request: AgiRequest, session: AgiSession) -> None:
        desk_phone, digits = [*request.args, "", ""][:2]
        decision = self.take_outbound(desk_phone, digits)
        await session.conclude(*packed(outbound_variables(decision, self.book.directory)))

    async def transfer(self, request: AgiRequest, session: AgiSession) -> None:
        """A desk phone's blind transfer of an outside call (``backline-transfer``)."""
        t = transfer_from_args(request.args)
        decision = decide_transfer(self.book, self.conversations, self.registrations, t,
                                   self.mode(), self.pbx.ring_seconds)
        log_transfer(t, decision)
        await session.conclude(*packed(transfer_variables(decision, self.book.directory)))
        if self.on_transfer is not None:
            self.after_decision(self.on_transfer(f"call:{request.get('uniqueid')}", t,
                                                  decision))

    def on_attended_transfer(self, event: Mapping[str, str]) -> None:
        """A desk phone's attended transfer (REFER with Replaces) joined an outside caller to
        a call it had made: journal it and add the target to the conversation (off the event
        loop's hot path; the channels are read while they are still up)."""
        if event.get("Result") == "Success" and self.on_transfer is not None:
            self.after_decision(self._attended(dict(event)))

    async def _attended(self, event: Mapping[str, str]) -> None:
        assert self.on_transfer is not None
        await attended_transfer(
            event, self.ami, self.book, self.conversations, self.on_transfer,
            lambda t: decide_transfer(self.book, self.conversations, self.registrations, t,
                                      self.mode(), self.pbx.ring_seconds))

    async def feature(self, request: AgiRequest, session: AgiSession) -> None:
        """``*28``/``*29`` + PIN from a desk phone: engage or end the outage; ``*26``/``*27``:
        force the hours closed or open until the next scheduled change."""
        desk_phone, action, pin = [*request.args, "", "", ""][:3]
        ok = await self.desk_phone_feature(desk_phone, action, pin)
        await session.conclude(v.FEATURE_RESULT, "ok" if ok else "refused")

    # -- AMI -------------------------------------------------------------------------------

    def on_contact_status(self, event: Mapping[str, str]) -> None:
        """A desk phone's contact came, went or changed: read Asterisk's contacts again.

        The event alone cannot keep the ring set: it names whichever endpoint shares the AOR
        (one event per endpoint of the login, each with its own ``EndpointName``), not the
        desk phone that registered the contact, and a refresh raises none, so the order in
        which Asterisk drops contacts past ``max_contacts`` cannot be followed from events.
        The contact list says both (its ``Endpoint`` is the registering endpoint).
        """
        if self.book.is_active(event.get("AOR", "")) and self.location is None:
            self._contacts_changed()

    def _contacts_changed(self) -> None:
        """Read the contacts again soon: one read at a time, and one more after it if
        anything changed meanwhile, so a burst costs two reads and the last read starts after
        the last event (what it lists is at least as new as every event seen)."""
        self._contacts_stale = True
        if self._contacts_sync is None or self._contacts_sync.done():
            self._contacts_sync = asyncio.create_task(self._sync_contacts())

    async def _sync_contacts(self) -> None:
        while self._contacts_stale:
            self._contacts_stale = False
            try:
                await self.reload_contacts()
            except Exception:
                log.exception("reading the desk-phone registrations failed (the next "
                              "change or login reads them again)")

    def on_user_event(self, event: Mapping[str, str]) -> None:
        """A call the fail-safe took (failsafe_call); a desk phone's 911 is told by its
        carrier leg (backline.pbx.asterisk.emergency_leg)."""
        if (failsafe := failsafe_call(event, self.clock(), self.mode())) is not None:
            self.after_decision(self.record_later(failsafe))

    def on_security_event(self, event: Mapping[str, str]) -> None:
        """A failed SIP authentication: only its kind and the source's address go on."""
        source = source_of(event.get("RemoteAddress", ""))
        if source is not None and self.on_security is not None:
            self.on_security(event.get("Event", ""), source)

    def on_park_event(self, event: Mapping[str, str]) -> None:
        """A step of a parked call (res_parking's events): the parked channel is the outside
        caller's, whose uniqueid keys the call's record; the parker is a dial string
        (``PJSIP/ENDPOINT``), whoever picked it up a channel name."""
        if self.on_park is None:
            return
        park = park_event(event)
        if park is not None:
            self.after_decision(self.on_park(park))

    async def call_with_notice(self, desk_phone: str, about_phone: str, at: datetime) -> None:
        """Call ``desk_phone`` and play it the 911 notice about ``about_phone`` (see
        backline.features.emergency_notices): every contact it registered rings; returns when one
        answered, raises NoticeUnheard otherwise."""
        from backline.core.emergency import NoticeUnheard

        user = self.book.user_of_phone(desk_phone)
        contacts = [r.contact for r in self.registrations.live_registrations(user or "")
                    if r.desk_phone == desk_phone]
        if not contacts:
            raise NoticeUnheard(f"desk phone {desk_phone} is not registered")
        channel = commands.ring_targets([(desk_phone, c) for c in contacts], self.book.directory)
        try:
            reply: Any = await self.ami.action({
                "Action": "Originate", "Channel": channel, "Context": v.NOTICE_CONTEXT,
                "Exten": "s", "Priority": "1", "Async": "true",
                "Timeout": str(NOTICE_RING_SECONDS * 1000),
                "CallerID": '"911 notice" <911>',
                "Variable": f"{v.NOTICE_ABOUT}={about_phone},{v.NOTICE_AT}={int(at.timestamp())}",
            }, as_list=True, within=NOTICE_RING_SECONDS + 10.0)  # the queued ack, then the end
        except LinkDown as exc:
            raise NoticeUnheard(str(exc)) from None
        answers = list(reply)
        if not any(a.get("Event") == "OriginateResponse" and a.get("Response") == "Success"
                   for a in answers):
            reason = next((a.get("Reason", "") for a in answers
                           if a.get("Event") == "OriginateResponse"), "")
            raise NoticeUnheard(f"desk phone {desk_phone} did not answer (reason {reason})")

    async def _logged_in(self) -> None:
        d = self.book.directory
        await only_events_we_use(self.ami, [*leg_filters(d.emergency_numbers), *refusal_filters(d)])
        if self.location is not None:  # the registrar's table, not Asterisk's, rings
            if self.after_login is not None:
                await self.after_login()
            return
        if self._contacts_sync is not None and not self._contacts_sync.done():
            # A read sent on the lost link would wait out its deadline; nothing is held
            # until its answer, so it is dropped and the list read again on this login.
            self._contacts_sync.cancel()
            await asyncio.gather(self._contacts_sync, return_exceptions=True)
        self._contacts_changed()
        assert self._contacts_sync is not None
        await self._contacts_sync
        if self.after_login is not None:
            await self.after_login()

    async def reload_contacts(self) -> None:
        """The registrations Asterisk holds now become the ring set (after every AMI login,
        and after every contact change)."""
        try:
            events: Any = await self.ami.action({"Action": "PJSIPShowContacts"}, as_list=True,
                                                within=10.0)
        except LinkDown as exc:
            self.registrations_unread(exc)
            return
        answer = events[0] if events else {}
        if answer.get("Response") == "Error" and \
                not str(answer.get("Message", "")).startswith(NO_CONTACTS):
            # Not "none registered": keep ringing what we had; the next change reads again.
            self.registrations_unread(answer.get("Message", ""))
            return
        self.hold_contacts(events)

    def practice_changed(self) -> None:
        """After a live reload: the ring set drawn again under the new practice."""
        self.location.practice_changed() if self.location else self._contacts_changed()

    def hold_contacts(self, listing: Iterable[Mapping[str, str]]) -> None:
        """Hold exactly the desk-phone contacts of a ``PJSIPShowContacts`` answer (see
        backline.pbx.asterisk.contacts)."""
        held, odd = desk_phone_contacts(self.book, listing)
        for key in sorted(odd.keys() - self._odd_contacts):
            log.warning("%s", odd[key])
        self._odd_contacts = set(odd)
        self.hold_registrations(held)

    def hold_registrations(self, held: list[Registration]) -> None:
        """Hold exactly ``held`` (the PBX's or the registrar's list) as the ring set."""
        added, removed = self.registrations.mirror(held)
        for r in removed:
            log.info("desk phone %s is no longer registered (%s)", r.desk_phone,
                     self._held(r.desk_phone))
        for r in added:
            log.info("desk phone %s registered (%s)", r.desk_phone, self._held(r.desk_phone))
        self.registrations_changed()

    def _held(self, desk_phone: str) -> str:
        """How many registrations the phone's login holds, against its limit, for the log."""
        user = self.book.user_of_phone(desk_phone) or ""
        return (f"login {user} now holds {len(self.registrations.live_registrations(user))} "
                f"of {self.book.directory.max_per_login}")

    async def pbx_settings(self) -> str:
        """``core show settings`` (where Asterisk keeps its spool, logs, PID file), as text."""
        answer: Any = await self.ami.action({"Action": "Command",
                                             "Command": "core show settings"}, within=5.0)
        output = answer.get("Output", "")
        return "\n".join(output) if isinstance(output, list) else str(output)

    # -- the mode in the PBX (AstDB keys backline/mode and backline/ack, and the lamp) ------

    async def _get(self, key: str) -> str | None:
        events: Any = await self.ami.action(
            {"Action": "DBGet", "Family": v.DB_FAMILY, "Key": key}, as_list=True, within=3.0)
        for e in events:
            if e.get("Event") == "DBGetResponse":
                return str(e.get("Val", ""))
        return None

    async def _put(self, key: str, value: str) -> None:
        await self.ami.action({"Action": "DBPut", "Family": v.DB_FAMILY, "Key": key,
                               "Val": value}, within=3.0)

    async def _delete(self, key: str) -> None:
        await self.ami.action({"Action": "DBDel", "Family": v.DB_FAMILY, "Key": key},
                              within=3.0)

    async def light_lamp(self, mode: Mode) -> None:
        """The custom device state behind every desk phone's BLF key."""
        state = "INUSE" if mode is Mode.OUTAGE else "NOT_INUSE"
        await self.ami.action({"Action": "Command",
                               "Command": f"devstate change {v.LAMP} {state}"}, within=3.0)
