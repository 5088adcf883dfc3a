"""The FreeSWITCH driver: per-call decisions over the outbound socket, registrations and the
mode over the inbound socket, around the same pure core as the Asterisk driver.

* Calls: the rendered dialplan hands each call to :class:`CallSocketServer` (ours, asyncio,
  our codec). The driver reads the call from the channel data (untrusted caller text is only
  ever passed to the core, never into a command), asks the core, journals an inbound attempt
  *before* FreeSWITCH hears the decision, and sends the decision's applications
  (:mod:`backline.pbx.freeswitch.commands`).
* Registrations: ``sofia::register``/``unregister``/``expire`` events on the inbound link
  (greenswitch, in its own thread: :mod:`backline.pbx.freeswitch.hub`), and a full
  ``show registrations`` after every login, so a restarted FreeSWITCH is picked up again.
* The mode: mod_db keys ``backline/mode`` and ``backline/ack``, read by the dialplan with
  ``${db(select/backline/mode)}``, so the PBX answers with the announcement on its own
  when it is engaged and we are away.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from backline.core.conversations import ConversationBook
from backline.core.fax_intake import BadFaxReport
from backline.core.hours import HoursOverride, HoursState
from backline.core.model import FreeswitchPbx
from backline.core.outage import Mode
from backline.core.ownership import OwnershipBook
from backline.core.records import NewAttempt
from backline.core.routing import InboundCall, ReceiveFax, Registrations, decide_outbound, dialled
from backline.pbx.freeswitch import names, wire
from backline.pbx.freeswitch.callsocket import CallGone, CallSession, CallSocketServer
from backline.pbx.freeswitch.commands import (
    Application,
    Sounds,
    UnsafeValue,
    inbound_applications,
    outbound_applications,
)
from backline.pbx.freeswitch.fax import fax_end, fax_result_event
from backline.pbx.freeswitch.hub import EslCommandFailed, EslHub, EslLinkDown
from backline.pbx.inbound import decide_inbound
from backline.pbx.ports import FaxDesk

log = logging.getLogger("backline.freeswitch")

_REGISTERED = "sofia::register"
_GONE = ("sofia::unregister", "sofia::expire")
_NO_REPLY = "-ERR no reply"
# How long after the fax applications the results may still be on their way (the hangup's
# events come after the reply to the last command on some switches).
FAX_RESULT_WAIT = 5.0


class FreeswitchDriver:
    def __init__(self, pbx: FreeswitchPbx, esl_password: str, book: OwnershipBook,
                 conversations: ConversationBook, mode: Callable[[], Mode],
                 record: Callable[[NewAttempt], Awaitable[object]], *,
                 feature: Callable[[str, Mode, str], Awaitable[bool]] | None = None,
                 hub: EslHub | None = None, faxes: FaxDesk | None = None,
                 import_record: Callable[[], Awaitable[object]] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 hours_override: Callable[[], HoursOverride | None] = lambda: None,
                 hours_feature: Callable[[str, HoursState, str], Awaitable[bool]] | None = None
                 ) -> None:
        self.pbx = pbx
        # The controller's clock: a call is decided (the number's hours) and journaled at it.
        self.clock = clock
        # The admins' override of the hours (*26/*27), and how a desk phone sets it.
        self.hours_override = hours_override
        self.hours_feature = hours_feature
        self.feature_switch = feature
        self.book = book
        self.conversations = conversations
        self.mode = mode
        self.record = record
        self.domain = pbx.sip.host
        # The announcement's path comes with each call (the rendered dialplan sets it).
        self.sounds = Sounds(announcement="", fax_spool=pbx.fax_spool)
        self.faxes = faxes
        self.import_record = import_record
        self.registrations = Registrations(book, book.directory.max_per_login)
        self.hub = hub or EslHub(pbx.esl.host, pbx.esl.port, esl_password,
                                 events=names.SUBSCRIPTIONS, on_up=self.after_login)
        self.hub.on_up = self.after_login
        self.calls = CallSocketServer(self.on_call)
        self.socket_port = pbx.socket.port
        self._events: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    @property
    def up(self) -> bool:
        """Logged in to the inbound Event Socket: PBX-side state can be read and written."""
        return self.hub.up

    async def start(self, *, esl_within: float = 10.0) -> None:
        """Serve calls first (they get decisions at once), then make the inbound link.

        The link is remade in the background whenever it drops; ``esl_within`` only bounds
        how long start waits for the first login (a PBX still booting is not an error).
        """
        self.socket_port = await self.calls.start(self.pbx.socket.host, self.pbx.socket.port)
        await self.hub.start()
        self._events = asyncio.create_task(self._consume_events())
        with contextlib.suppress(TimeoutError):
            await self.hub.wait_up(esl_within)

    async def stop(self) -> None:
        await self.calls.stop()
        await self.hub.stop()
        if self._events is not None:
            self._events.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._events

    # -- calls (outbound socket) -----------------------------------------------------------

    async def on_call(self, data: wire.ChannelData, session: CallSession) -> None:
        route = data.get(f"variable_{names.ROUTE}")
        receiving = False
        if route == names.OUTBOUND:
            apps = self._outbound(data)
        elif route == names.FEATURE:
            apps = await self._feature(data)
        else:
            apps, receiving = await self._inbound(data)
        try:
            for app, arg in apps:
                await session.execute(app, arg)
                if session.hung_up:
                    break
        except CallGone:
            if receiving:  # the sender hung up mid-fax: what came is still taken in
                await self._fax_done(data, session)
            raise
        if receiving:
            await self._fax_done(data, session)

    async def _inbound(self, data: wire.ChannelData) -> tuple[list[Application], bool]:
        """The applications for an inbound call, and whether they receive a fax."""
        dialed = data.get(f"variable_{names.NUMBER}") or data.get("Caller-Destination-Number")
        call = InboundCall(dialed=dialed or "", caller=data.get("Caller-Caller-ID-Number") or "")
        uuid = data.unique_id or ""
        # On disk before FreeSWITCH hears the decision: if this fails, the session closes
        # and the dialplan's fallback answers the caller.  A fax to be received is journaled
        # when it ends (the CDR import covers a controller that dies meanwhile).
        decided = await decide_inbound(self.book, self.registrations, call, self.mode(),
                                       self.pbx.ring_seconds, self.faxes, uuid,
                                       self.clock(), log, self.hours_override())
        decision = decided.decision
        if decided.attempt is not None:
            await self.record(decided.attempt)
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
        if self.faxes is None:
            log.warning("a fax ended but fax intake is not wired; the CDR import takes it")
            return
        event = fax_result_event(session.events)
        if event is None:  # not seen yet: the hangup's events carry them, if rxfax ran
            await session.wait_event(lambda e: e.name == "CHANNEL_HANGUP_COMPLETE"
                                     or fax_result_event([e]) is not None, FAX_RESULT_WAIT)
            event = fax_result_event(session.events)
        source: wire.Event | wire.ChannelData = event if event is not None else data
        try:
            end = fax_end(data.unique_id or "", data.get("Caller-Caller-ID-Number") or "",
                          data.get(f"variable_{names.NUMBER}") or "",
                          lambda name: source.get(f"variable_{name}"))
        except BadFaxReport as exc:
            log.error("fax report refused: %s", exc)
            return
        await self.faxes.fax_ended(end)

    def _outbound(self, data: wire.ChannelData) -> list[Application]:
        # user_name is the directory user the desk phone authenticated as (FreeSWITCH sets
        # it after digest auth); the caller's own From header is not trusted for this.
        desk_phone = data.get("variable_user_name") or ""
        call = dialled(desk_phone, data.get("Caller-Destination-Number") or "")
        decision = decide_outbound(self.book, self.conversations, call, self.mode(),
                                   self.book.directory.emergency_numbers,
                                   registrations=self.registrations,
                                   ring_seconds=self.pbx.ring_seconds)
        log.info("outbound call from desk phone %s: %s", desk_phone[:40],
                 type(decision).__name__)
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
        to = {"engage": Mode.OUTAGE, "end": Mode.NORMAL}.get(action)
        ok = False
        hours = {"closed": HoursState.CLOSED, "open": HoursState.OPEN}.get(action)
        if to is not None and self.feature_switch is not None:
            ok = await self.feature_switch(desk_phone, to, pin)
        elif hours is not None and self.hours_feature is not None:
            ok = await self.hours_feature(desk_phone, hours, pin)
        sound = names.FEATURE_OK_SOUND if ok else names.FEATURE_REFUSED_SOUND
        return [("answer", None), ("playback", sound), ("hangup", None)]

    # -- registrations (inbound socket events) ----------------------------------------------

    async def after_login(self) -> None:
        """After every login: the registrations FreeSWITCH has now, the lamp lit again from
        the controller's mode (a restarted FreeSWITCH keeps mod_db but forgets presence), and
        the calls it answered alone while we were away (its CDR) journaled, each once."""
        await self.reload_registrations()
        try:
            await self.light_lamp(self.mode())
        except (EslCommandFailed, EslLinkDown) as exc:  # the next login tries again
            log.warning("could not light the outage lamp: %s", exc)
        if self.import_record is not None:
            await self.import_record()

    async def _consume_events(self) -> None:
        while True:
            event = await self.hub.events.get()
            if event.name == "CUSTOM" and event.subclass is not None:
                self.on_registration_event(event)

    def on_registration_event(self, event: wire.Event) -> None:
        phone = event.get("username") or event.get("from-user") or event.get("user") or ""
        contact = event.get("call-id") or event.get("contact") or ""
        if self.book.user_of_phone(phone) is None or not contact:
            return
        if event.subclass == _REGISTERED:
            dropped = self.registrations.register(phone, contact, time.time())
            log.info("desk phone %s registered", phone)
            for r in dropped:
                log.info("desk phone %s dropped: its login is over the device limit",
                         r.desk_phone)
        elif event.subclass in _GONE:
            self.registrations.unregister(phone, contact)
            log.info("desk phone %s unregistered", phone)
        self._notify()

    async def reload_registrations(self) -> None:
        """After every login: the registrations FreeSWITCH has now are the truth.

        ``show registrations`` prints a CSV header (reg_user,realm,token,url,expires,...),
        one row per registration, a blank line and ``N total.``.
        """
        try:
            text = await self.hub.api("show", "registrations")
        except (EslCommandFailed, EslLinkDown) as exc:  # link down: the next login reloads
            log.warning("could not list the registrations: %s", exc)
            return
        lines = [line for line in text.splitlines() if line.strip()]
        fresh = Registrations(self.book, self.book.directory.max_per_login)
        rows = []
        if lines and lines[0].startswith("reg_user,"):
            columns = lines[0].split(",")
            for line in lines[1:]:
                values = line.split(",")
                if len(values) >= len(columns):
                    rows.append(dict(zip(columns, values, strict=False)))
        for row in sorted(rows, key=lambda r: _number(r.get("expires", ""))):
            phone = row.get("reg_user", "")
            if self.book.user_of_phone(phone) is not None:
                fresh.register(phone, row.get("token", "") or row.get("url", ""),
                               _number(row.get("expires", "")))
        self.registrations = fresh
        self._notify()
        log.info("%d desk-phone registration(s) loaded from FreeSWITCH", len(rows))

    async def wait_registered(self, users: set[str], within: float) -> None:
        """For tests and ops: until every given login has a live registration."""
        async with asyncio.timeout(within):
            while {u for u in users if self.registrations.live(u)} != users:
                changed = self._changed
                await changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- the mode in the PBX (mod_db) -------------------------------------------------------

    async def _db_get(self, key: str) -> str | None:
        try:
            text = (await self.hub.api("db", f"select/{names.DB_REALM}/{key}")).strip()
        except EslCommandFailed as exc:
            if exc.reply == _NO_REPLY:
                return None  # mod_db printed nothing: api_exec says so for a missing key
            raise
        return text or None

    async def _db_put(self, key: str, value: str) -> None:
        await self.hub.api("db", f"insert/{names.DB_REALM}/{key}/{value}")

    async def read_mode(self) -> tuple[str | None, str | None, str | None, str | None]:
        """The PBX's mode, our last agreement, and who/why if set from the console."""
        return (await self._db_get(names.DB_MODE), await self._db_get(names.DB_ACK),
                await self._db_get(names.DB_BY), await self._db_get(names.DB_REASON))

    async def forget_console_note(self) -> None:
        """Delete ``backline/by`` and ``backline/reason`` from mod_db."""
        for key in (names.DB_BY, names.DB_REASON):
            await self.hub.api("db", f"delete/{names.DB_REALM}/{key}")

    async def write_mode(self, mode: Mode, *, ack_only: bool = False) -> None:
        """Agree on ``mode`` with the PBX (the dialplan reads ``backline/mode``) and light
        every desk phone's lamp to match."""
        if not ack_only:
            await self._db_put(names.DB_MODE, mode.value)
        await self._db_put(names.DB_ACK, mode.value)
        await self.light_lamp(mode)

    async def light_lamp(self, mode: Mode) -> None:
        """The BLF lamp on (outage) or off, as a PRESENCE_IN event mod_sofia passes on."""
        presence = f"{names.LAMP}@{self.domain}"
        reply = await self.hub.command(wire.encode_sendevent("PRESENCE_IN", [
            ("proto", "sip"), ("from", presence), ("login", presence),
            ("status", "Outage engaged" if mode is Mode.OUTAGE else "Normal"),
            ("event_type", "presence"), ("alt_event_type", "dialog"),
            ("Presence-Call-Direction", "outbound"),
            ("answer-state", names.LAMP_ON if mode is Mode.OUTAGE else names.LAMP_OFF)]))
        if not isinstance(reply, wire.CommandReply) or not reply.ok:
            raise EslCommandFailed("sendevent PRESENCE_IN",
                                   getattr(reply, "text", "unexpected reply"))


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0
