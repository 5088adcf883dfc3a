"""The FreeSWITCH driver against the ESL test server: the pieces of a switch the driver uses.

:class:`FsRig` scripts what a FreeSWITCH answers that mod_event_socket alone does not: mod_db
(``db insert/select``), ``show registrations`` and sofia's registration events. Calls are
placed the way the ``socket`` application places them (:meth:`EslServer.dial`, sync mode,
``full``) and come back as the applications the driver had the channel execute.
"""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from backline.core.connections import FreeswitchPbx, HostPort, Secret
from backline.core.conversations import ConversationBook
from backline.core.hours import HoursState
from backline.core.model import Directory
from backline.core.outage import Mode
from backline.core.ownership import OwnershipBook
from backline.core.records import NewAttempt
from backline.pbx.freeswitch import names
from backline.pbx.freeswitch.driver import FreeswitchDriver
from backline.pbx.ports import FaxDesk, VoicemailDesk
from tests.harness.eslserver import Channel, EslConnection, EslServer

PASSWORD = "ClueCon-test"
DOMAIN = "127.0.0.1"
ANNOUNCEMENT = "/srv/backline/announcement.wav"

# What an application does to the channel besides CHANNEL_EXECUTE/_COMPLETE (the test server
# models answer and hangup only): rxfax writes its TIFF and sets mod_spandsp's variables.
AppEffect = Callable[[Channel, str | None], Awaitable[None] | None]


class SwitchWithApps(EslServer):
    """The ESL test server, with scripted effects for the applications a test names.

    An effect may hang the channel up (:meth:`EslServer.hang_up`: the caller is gone,
    CHANNEL_HANGUP fires) and go on changing it, as an application finishing on a channel
    that is down does; CHANNEL_HANGUP_COMPLETE fires once the application has returned.
    ``set`` sets the channel variable as mod_dptools.c's base_set does (``name=value`` split
    at the first ``=``; an empty value unsets it), unless a test scripts it."""

    def __init__(self, password: str = PASSWORD, **options: Any) -> None:
        super().__init__(password, **options)
        self.app_effects: dict[str, AppEffect] = {}

    async def _execute(self, channel: Channel, app: str, arg: str | None,
                       app_uuid: str | None) -> None:
        effect = self.app_effects.get(app)
        if effect is None and app == "set":
            name, _, value = (arg or "").partition("=")
            if value:
                channel.variables[name] = value
            else:
                channel.variables.pop(name, None)
        if effect is not None:
            done = effect(channel, arg)  # before _COMPLETE: rxfax sets its variables at phase E
            if done is not None:
                await done
        await super()._execute(channel, app, arg, app_uuid)
        self.hangup_complete(channel)


@dataclass
class FsRig:
    server: EslServer
    driver: FreeswitchDriver
    db: dict[str, str] = field(default_factory=dict)
    registered: dict[str, tuple[str, float]] = field(default_factory=dict)  # call-id → phone
    # Where each registration came from (call-id → address; 127.0.0.1 when not named).
    sources: dict[str, str] = field(default_factory=dict)
    attempts: list[NewAttempt] = field(default_factory=list)
    mode: Mode = Mode.NORMAL

    def db_api(self, arg: str | None) -> str:
        """mod_db's ``db`` API (src/mod/applications/mod_db/mod_db.c, db_api_function: the
        argument split at ``/`` into at most 4, the last keeping any further ``/``):
        ``insert/realm/key/value`` → ``+OK``; ``select/realm/key`` → the value, or nothing
        for a key it does not hold; ``delete/realm/key`` → ``+OK``; anything else ``!err!``."""
        parts = (arg or "").split("/", 3)
        if parts[0] == "insert" and len(parts) == 4:
            self.db[f"{parts[1]}/{parts[2]}"] = parts[3]
            return "+OK"
        if parts[0] == "delete" and len(parts) == 3:
            self.db.pop(f"{parts[1]}/{parts[2]}", None)
            return "+OK"
        if parts[0] == "select" and len(parts) == 3:
            return self.db.get(f"{parts[1]}/{parts[2]}", "")
        return "!err!"

    def show_api(self, arg: str | None) -> str:
        """``show registrations``: mod_commands' CSV (mod_commands.c, show_function: the
        registrations table's columns as a header row, a row each), then ``\nN total.\n``."""
        if arg != "registrations":
            return "-USAGE: show ..."
        rows = ["reg_user,realm,token,url,expires,network_ip,network_port,network_proto,"
                "hostname,metadata"]
        for token, (phone, expires) in self.registered.items():
            source = self.sources.get(token, "127.0.0.1")
            rows.append(f"{phone},{DOMAIN},{token},sofia/backline/sip:{phone}@{source}:5070,"
                        f"{int(expires)},{source},5070,udp,backline-test,")
        return "\n".join(rows) + f"\n\n{len(self.registered)} total.\n"

    def register(self, phone: str, *, at: float = 2_000_000_000.0,
                 source: str = "127.0.0.1") -> str:
        """A desk phone registers from ``source``: sofia::register is fired (some of the
        headers sofia_reg.c, sofia_reg_handle_register, gives MY_EVENT_REGISTER) and ``show``
        will list it."""
        token = str(uuidlib.uuid4())
        self.registered[token] = (phone, at)
        self.sources[token] = source
        self.server.fire_event("CUSTOM", [
            ("profile-name", "backline"), ("from-user", phone), ("from-host", DOMAIN),
            ("contact", f'"{phone}" <sip:{phone}@{source}:5070>'), ("call-id", token),
            ("expires", "3600"), ("to-user", phone), ("to-host", DOMAIN),
            ("network-ip", source), ("network-port", "5070"), ("username", phone),
            ("realm", DOMAIN)],
            subclass="sofia::register")
        return token

    def refuse_digest(self, user: str, source: str, kind: str = "REGISTER") -> None:
        """sofia answers 403 to a REGISTER (or an INVITE, ``kind``) whose digest it refused:
        MY_EVENT_REGISTER_FAILURE with the headers sofia_reg.c
        (sofia_reg_handle_register_token) gives it, in that order (profile-name twice)."""
        self.server.fire_event("CUSTOM", [
            ("profile-name", "backline"), ("to-user", user), ("to-host", DOMAIN),
            ("network-ip", source), ("user-agent", "friendly-scanner"),
            ("profile-name", "backline"), ("network-port", "5060"),
            ("registration-type", kind)], subclass="sofia::register_failure")

    async def call(self, channel: Channel, within: float = 30.0) -> tuple[EslConnection,
                                                                         list[tuple[str, str]]]:
        """Place a call to the driver's socket; return the session and the applications the
        driver had the channel execute, in order (``(name, arg)``, arg "" when none).

        A carrier call carries the announcement's path as the rendered dialplan sets it
        before ``socket`` (:data:`ANNOUNCEMENT` here, unless the test set one)."""
        if channel.variables.get(names.ROUTE) == names.INBOUND:
            channel.variables.setdefault(names.ANNOUNCEMENT, ANNOUNCEMENT)
        conn = await self.server.dial(DOMAIN, self.driver.socket_port, channel,
                                      async_mode=False, full=True)
        await asyncio.wait_for(conn.closed.wait(), within)
        return conn, executed(conn)


def executed(conn: EslConnection) -> list[tuple[str, str]]:
    return [(c.get("execute-app-name") or "", c.get("execute-app-arg") or "")
            for c in conn.commands if c.command.startswith("sendmsg")]


def freeswitch_pbx(port: int, fax_spool: str = "/var/lib/freeswitch/fax") -> FreeswitchPbx:
    return FreeswitchPbx(esl=HostPort("127.0.0.1", port), esl_password=Secret(env="UNUSED"),
                         sip=HostPort(DOMAIN, 5060), socket=HostPort("127.0.0.1", 0),
                         fax_spool=fax_spool)


@asynccontextmanager
async def fs_rig(directory: Directory, conversations: ConversationBook | None = None, *,
                 server: EslServer | None = None,
                 record: Callable[[NewAttempt], Awaitable[object]] | None = None,
                 mode: Callable[[], Mode] | None = None,
                 feature: Callable[[str, Mode, str], Awaitable[bool]] | None = None,
                 faxes: FaxDesk | None = None, fax_spool: str = "/var/lib/freeswitch/fax",
                 voicemail: VoicemailDesk | None = None,
                 import_record: Callable[[], Awaitable[object]] | None = None,
                 wait_login: bool = True,
                 clock: Callable[[], datetime] | None = None,
                 hours_feature: Callable[[str, HoursState, str], Awaitable[bool]] | None = None
                 ) -> AsyncIterator[FsRig]:
    srv = server or SwitchWithApps(PASSWORD)
    await srv.start()
    holder: list[FsRig] = []

    async def recorded(attempt: NewAttempt) -> bool:
        holder[0].attempts.append(attempt)
        return True

    driver = FreeswitchDriver(freeswitch_pbx(srv.port, fax_spool), PASSWORD,
                              OwnershipBook(directory), conversations or ConversationBook(),
                              mode or (lambda: holder[0].mode), record or recorded,
                              feature=feature, faxes=faxes, voicemail=voicemail,
                              import_record=import_record,
                              clock=clock or (lambda: datetime.now(UTC)),
                              hours_feature=hours_feature)
    driver.hub.backoff = (0.05, 0.2)
    rig = FsRig(srv, driver)
    holder.append(rig)
    srv.script_api("db", rig.db_api)
    srv.script_api("show", rig.show_api)
    try:
        await driver.start(esl_within=30.0 if wait_login else 0.0)
        yield rig
    finally:
        await driver.stop()
        await srv.close()


# --------------------------------------------------------------------------- mod_sofia presence


class SubscribeRefused(Exception):
    """The profile does not manage presence: SUBSCRIBE and the dialog package are not
    allowed (sofia.c, launch_sofia_profile: ``TAG_IF(profile->pres_type, ...)``)."""


@dataclass(frozen=True, slots=True)
class Notify:
    """A dialog NOTIFY mod_sofia sends one subscription. ``state``: the <dialog>'s <state>;
    None when the body holds no <dialog> (the lamp is dark)."""

    phone: str
    call_id: str
    state: str | None


@dataclass
class Subscription:
    phone: str
    to_user: str
    to_host: str
    call_id: str
    event: str = "dialog"
    proto: str = "sip"


class SofiaPresence:
    """mod_sofia's presence on one profile, for the dialog package a BLF key uses, from
    src/mod/endpoints/mod_sofia/sofia_presence.c (the copy read was commit cc93a683):

    * :meth:`subscribe` (sofia_presence_handle_sip_i_subscribe): the subscription is kept,
      a PRESENCE_PROBE with ``probe-type: dialog`` is fired on every SUBSCRIBE, refreshes
      included, and do_dialog_probe NOTIFYs the dialogs sofia knows for the id: none here
      (no call is up), so a body with no <dialog>;
    * a fired PRESENCE_IN (actual_sofia_presence_event_handler): skipped unless the profile's
      ``manage-presence`` is true (PRES_TYPE_FULL, "is passive, skipping"); matched to the
      subscriptions by ``call-id``, else by proto, event (``event_type``/``alt_event_type``)
      and the user and host of ``from``; each dialog subscription gets the NOTIFY
      sofia_presence_sub_callback builds: a <dialog> only with a ``unique-id``, its state
      from ``answer-state`` (else ``astate``, else the direction's default), ``terminated``
      when ``channel-state`` is CS_HANGUP.
    """

    def __init__(self, server: EslServer, settings: dict[str, str], profile: str = "backline"
                 ) -> None:
        managed = settings.get("manage-presence", "").lower()
        self.full = managed in ("true", "yes", "on", "1", "enabled", "active", "allow")
        self.allowed = self.full or managed in ("passive", "pnp")
        self.sip_ip = settings.get("sip-ip", "")
        self.server = server
        self.profile = profile
        self.subscriptions: dict[str, Subscription] = {}
        self.notifies: list[Notify] = []
        self.skipped = 0
        server.bindings.append(self.on_event)

    def subscribe(self, phone: str, to_user: str, call_id: str | None = None) -> str:
        """A SUBSCRIBE (Event: dialog) from ``phone`` for ``to_user@sip-ip``; the same
        ``call_id`` refreshes. Returns the subscription's Call-ID."""
        if not self.allowed:
            raise SubscribeRefused(self.profile)
        call_id = call_id or str(uuidlib.uuid4())
        self.subscriptions[call_id] = Subscription(phone, to_user, self.sip_ip, call_id)
        self.notifies.append(Notify(phone, call_id, None))  # do_dialog_probe: no dialogs
        self.server.fire_event("PRESENCE_PROBE", [
            ("probe-type", "dialog"), ("proto", "sip"), ("login", self.profile),
            ("sip_profile", self.profile), ("from", f"{phone}@{self.sip_ip}"),
            ("to", f"{to_user}@{self.sip_ip}"), ("proto-specific-event-name", "dialog"),
            ("expires", "3600"), ("event_type", "presence"), ("alt_event_type", "dialog"),
            ("sub-call-id", call_id)],
            calling=("sofia_presence.c", "sofia_presence_handle_sip_i_subscribe", 1))
        return call_id

    def lamp(self, phone: str) -> str | None:
        """What the phone's BLF key shows: the state in the last NOTIFY it got."""
        states = [n.state for n in self.notifies if n.phone == phone]
        return states[-1] if states else None

    def on_event(self, name: str, headers: Sequence[tuple[str, str]]) -> None:
        if name != "PRESENCE_IN":
            return
        if not self.full:
            self.skipped += 1
            return
        h = {k.lower(): v for k, v in headers}
        user, at, host = h.get("from", "").partition("@")
        if not at:
            return
        host = host.split("/", 1)[0]
        plus = user.find("+", 1)
        euser = user[plus + 1:] if plus > 0 else user
        proto = h.get("proto") or "sip"
        proto = "sip" if proto == "any" else proto
        event_type = h.get("event_type") or "presence"
        alt = h.get("alt_event_type") or ("dialog" if event_type == "presence" else "presence")
        if h.get("call-id"):
            targets = [s for s in self.subscriptions.values() if s.call_id == h["call-id"]]
        else:
            targets = [s for s in self.subscriptions.values()
                       if s.proto == proto and s.event in (event_type, alt)
                       and s.to_user == euser and s.to_host in (host, self.sip_ip)]
        for sub in targets:
            if sub.event == "dialog":
                self.notifies.append(Notify(sub.phone, sub.call_id,
                                            self._dialog_state(h, sub)))

    @staticmethod
    def _dialog_state(h: dict[str, str], sub: Subscription) -> str | None:
        """sofia_presence_sub_callback's <dialog><state> (no call up: calls_up is 0)."""
        call_state = h.get("channel-state", "")
        astate = h.get("astate", "")
        if call_state.lower() == "cs_hangup":
            astate = "hangup"
        if not h.get("unique-id"):
            return None
        direction = h.get("presence-call-direction", "")
        if direction == "inbound" and sub.to_user != h.get("caller-username", ""):
            direction = "outbound"  # "endpt is internal": reversed
        default = "early" if direction.lower() == "outbound" else "confirmed"
        astate = h.get("answer-state") or astate or default
        astate = {"answered": "confirmed", "hangup": "terminated"}.get(astate.lower(), astate)
        if astate.lower() == "ringing":
            astate = "early" if direction.lower() == "outbound" else "confirmed"
        return astate
