"""The FreeSWITCH driver: per-call decisions over the outbound socket, registrations and the
mode over the inbound socket, around the same pure core as the Asterisk driver.

* Calls: the rendered dialplan hands each call to :class:`CallSocketServer` (ours, asyncio,
  our codec), where :mod:`backline.pbx.freeswitch.calls` takes it down the shared call path.
* Registrations: ``sofia::register``/``unregister``/``expire`` events on the inbound link
  (greenswitch, in its own thread: :mod:`backline.pbx.freeswitch.hub`), and a full
  ``show registrations`` after every login, so a restarted FreeSWITCH is picked up again.
  ``sofia::register_failure`` (a refused digest) goes to ``on_security`` for the scanner
  bans, which spare the addresses desk phones are registered from
  (:mod:`backline.pbx.freeswitch.security`).
* Voicemail: mod_voicemail's ``vm::maintenance`` event says a message was kept
  (:mod:`backline.pbx.freeswitch.voicemail`): taken in on the shared call path.
* The mode: mod_db keys ``backline/mode`` and ``backline/ack``, read by the dialplan with
  ``${db(select/backline/mode)}``, so the PBX answers with the announcement on its own
  when it is engaged and we are away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Unpack

from backline.core.connections import FreeswitchPbx
from backline.core.conversations import ConversationBook
from backline.core.outage import Mode
from backline.core.ownership import OwnershipBook
from backline.core.records import NewAttempt
from backline.core.registrations import Registrations
from backline.pbx.callpath import CallPathOptions
from backline.pbx.freeswitch import names, voicemail, wire
from backline.pbx.freeswitch.calls import FreeswitchCalls
from backline.pbx.freeswitch.callsocket import CallSocketServer
from backline.pbx.freeswitch.commands import Sounds
from backline.pbx.freeswitch.hub import EslCommandFailed, EslHub, EslLinkDown
from backline.pbx.freeswitch.security import RegisteredFrom, failed_auth
from backline.pbx.freeswitch.voicemail_import import take_left_while_away
from backline.pbx.mode_keys import ModeKeys

log = logging.getLogger("backline.freeswitch")

_REGISTERED = "sofia::register"
_GONE = ("sofia::unregister", "sofia::expire")
_NO_REPLY = "-ERR no reply"


class FreeswitchDriver(FreeswitchCalls, ModeKeys):
    def __init__(self, pbx: FreeswitchPbx, esl_password: str, book: OwnershipBook,
                 conversations: ConversationBook, mode: Callable[[], Mode],
                 record: Callable[[NewAttempt], Awaitable[object]], *,
                 feature: Callable[[str, Mode, str], Awaitable[bool]] | None = None,
                 hub: EslHub | None = None,
                 import_record: Callable[[], Awaitable[object]] | None = None,
                 **options: Unpack[CallPathOptions]) -> None:
        super().__init__(book, conversations, mode, record, log=log, feature=feature,
                         ring_seconds=pbx.ring_seconds, **options)
        self.pbx = pbx
        self.domain = pbx.sip.host
        # The announcement's path comes with each call (the rendered dialplan sets it).
        self.sounds = Sounds(announcement="", fax_spool=pbx.fax_spool)
        self.import_record = import_record
        self.hub = hub or EslHub(pbx.esl.host, pbx.esl.port, esl_password,
                                 events=names.SUBSCRIPTIONS, on_up=self.after_login)
        self.hub.on_up = self.after_login
        self.calls = CallSocketServer(self.on_call)
        self.socket_port = pbx.socket.port
        self._events: asyncio.Task[None] | None = None
        # Registration events seen while ``show registrations`` is on its way.
        self._seen_in_reload: list[wire.Event] | None = None
        self._probes: set[asyncio.Task[None]] = set()
        # Told of each refused SIP digest (sofia::register_failure): its kind and the
        # source's address (backline.features.bans).
        self.on_security: Callable[[str, str], object] | None = None
        self.sources = RegisteredFrom()

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
        for task in list(self._probes):
            task.cancel()
        await asyncio.gather(*self._probes, return_exceptions=True)
        await self.hub.stop()
        if self._events is not None:
            self._events.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._events
        await self.stop_after()

    # -- registrations (inbound socket events) ----------------------------------------------

    async def after_login(self) -> None:
        """After every login: the registrations FreeSWITCH has now, the lamp lit again from
        the controller's mode (a restarted FreeSWITCH keeps mod_db but forgets presence), and
        the voicemail and calls it took alone while we were away journaled, each once."""
        await self.reload_registrations()
        try:
            await self.light_lamp(self.mode())
        except (EslCommandFailed, EslLinkDown) as exc:  # the next login tries again
            log.warning("could not light the outage lamp: %s", exc)
        if self.voicemail is not None:
            await take_left_while_away(self.hub, self.book.directory, self.domain, self.voicemail)
        if self.import_record is not None:
            await self.import_record()

    async def _consume_events(self) -> None:
        while True:
            event = await self.hub.events.get()
            failed = failed_auth(event)
            if failed is not None:
                if self.on_security is not None:
                    self.on_security(*failed)
            elif event.subclass == names.VOICEMAIL_EVENT:
                self.take_message_left(partial(voicemail.left_message, event, self.domain))
            elif event.name == "CUSTOM" and event.subclass is not None:
                self.on_registration_event(event)
            elif event.name == "PRESENCE_PROBE":
                self.on_presence_probe(event)

    def on_presence_probe(self, event: wire.Event) -> None:
        """A desk phone subscribed (or refreshed its subscription) to the lamp: mod_sofia has
        answered from the dialogs it knows, none, which puts the lamp out; the answer to its
        probe lights it again from the controller's mode, for that subscription only
        (``call-id``). The probed id is ``to``, its user after a ``+`` if one follows the
        first character (sofia_presence.c, do_dialog_probe)."""
        user, _, host = (event.get("to") or "").partition("@")
        plus = user.find("+", 1)
        user = user[plus + 1:] if plus > 0 else user
        if user not in names.LAMP_USERS or host.lower() != self.domain.lower():
            return
        task = asyncio.create_task(self._answer_probe(user, event.get("sub-call-id") or ""))
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    async def _answer_probe(self, user: str, call_id: str) -> None:
        try:
            await self._lamp(user, self.mode(), call_id)
        except (EslCommandFailed, EslLinkDown) as exc:  # the phone's next refresh asks again
            log.warning("could not answer the lamp's presence probe: %s", exc)

    def on_registration_event(self, event: wire.Event) -> None:
        if self._seen_in_reload is not None:
            self._seen_in_reload.append(event)
        if self._apply(event, self.registrations, self.sources):
            self.registrations_changed()

    def registered_from(self) -> frozenset[str]:
        """The addresses desk phones are registered from now: never banned."""
        return self.sources.addresses()

    def _apply(self, event: wire.Event, registrations: Registrations,
               sources: RegisteredFrom) -> bool:
        """A register/unregister event into ``registrations`` (and where it came from into
        ``sources``); False if it is none of ours."""
        phone = event.get("username") or event.get("from-user") or event.get("user") or ""
        contact = event.get("call-id") or event.get("contact") or ""
        if self.book.user_of_phone(phone) is None or not contact:
            return False
        if event.subclass == _REGISTERED:
            sources.note(event, registered=True)
            dropped = registrations.register(phone, contact, time.time())
            log.info("desk phone %s registered", phone)
            for r in dropped:
                log.info("desk phone %s dropped: its login is over the device limit",
                         r.desk_phone)
        elif event.subclass in _GONE:
            sources.note(event, registered=False)
            registrations.unregister(phone, contact)
            log.info("desk phone %s unregistered", phone)
        return True

    async def reload_registrations(self) -> None:
        """After every login: the registrations FreeSWITCH has now are the truth.

        ``show registrations`` prints a CSV header (reg_user,realm,token,url,expires,...),
        one row per registration, a blank line and ``N total.``.  An event that reaches us
        while the list is on its way may be newer than the list, so it is applied again on
        top of it (a register already listed is the same registration).
        """
        self._seen_in_reload = []
        try:
            text = await self.hub.api("show", "registrations")
        except (EslCommandFailed, EslLinkDown) as exc:  # link down: the next login reloads
            self.registrations_unread(exc)
            self._seen_in_reload = None
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
        sources = RegisteredFrom(row for row in rows
                                 if self.book.user_of_phone(row.get("reg_user", "")) is not None)
        for event in self._seen_in_reload:
            self._apply(event, fresh, sources)
        self._seen_in_reload = None
        self.sources = sources
        self.registrations = fresh
        self.registrations_changed()
        log.info("%d desk-phone registration(s) loaded from FreeSWITCH", len(rows))

    # -- the mode in the PBX (mod_db) -------------------------------------------------------

    async def _get(self, key: str) -> str | None:
        try:
            text = (await self.hub.api("db", f"select/{names.DB_REALM}/{key}")).strip()
        except EslCommandFailed as exc:
            if exc.reply == _NO_REPLY:
                return None  # mod_db printed nothing: api_exec says so for a missing key
            raise
        return text or None

    async def _put(self, key: str, value: str) -> None:
        await self.hub.api("db", f"insert/{names.DB_REALM}/{key}/{value}")

    async def _delete(self, key: str) -> None:
        await self.hub.api("db", f"delete/{names.DB_REALM}/{key}")

    async def light_lamp(self, mode: Mode) -> None:
        """The BLF lamp on (outage) or off on every desk phone watching ``*28`` or ``*29``."""
        for user in names.LAMP_USERS:
            await self._lamp(user, mode)

    async def _lamp(self, user: str, mode: Mode, call_id: str = "") -> None:
        """One PRESENCE_IN mod_sofia turns into a dialog NOTIFY (see names.LAMP_USERS): to
        every subscription to ``user@DOMAIN``, or with ``call_id`` to that one alone."""
        on = mode is Mode.OUTAGE
        presence = f"{user}@{self.domain}"
        headers = [
            ("proto", "sip"), ("login", presence), ("from", presence),
            ("status", "Outage engaged" if on else "Normal"),
            ("rpid", "active" if on else "unknown"),
            ("event_type", "presence"), ("alt_event_type", "dialog"),
            ("unique-id", names.LAMP_DIALOG),
            ("channel-state", "CS_ROUTING" if on else "CS_HANGUP"),
            ("answer-state", names.LAMP_ON if on else names.LAMP_OFF),
            ("presence-call-direction", "inbound")]
        if call_id:
            headers.append(("call-id", call_id))
        reply = await self.hub.command(wire.encode_sendevent("PRESENCE_IN", headers))
        if not isinstance(reply, wire.CommandReply) or not reply.ok:
            raise EslCommandFailed("sendevent PRESENCE_IN",
                                   getattr(reply, "text", "unexpected reply"))


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0
