"""One routing and outage suite, run against both PBX drivers at their wire.

Each scenario is data: the practice state, a call, and the decision a user would notice
(these desk phones ring / the announcement plays / a refusal / the call goes out with this
caller ID). The Asterisk driver is driven through our FastAGI server by a client that speaks
as Asterisk does (the ``agi_*`` header block, ``200 result=1`` to each command); the
FreeSWITCH driver through the ESL test server (``socket`` outbound session, ``sendmsg``
execute). What each driver sends is turned back into the same decision shape and compared
with the one expected outcome. The real-Asterisk end-to-end tests are tests/test_asterisk_*.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import pytest

from backline.core.connections import AsteriskPbx, HostPort, Secret
from backline.core.conversations import ConversationBook
from backline.core.hours import HoursState
from backline.core.model import ClosedPath, Directory, Hours, Team, Window
from backline.core.outage import Mode
from backline.core.ownership import OwnershipBook
from backline.core.records import NewAttempt
from backline.pbx.asterisk import dialplan_variables as v
from backline.pbx.asterisk.driver import AsteriskDriver
from backline.pbx.freeswitch import names
from tests.harness.eslserver import Channel
from tests.harness.freeswitch_rig import ANNOUNCEMENT, fs_rig
from tests.practice import directory, number, t, u, user

TEAM = "+13125550100"
PRACTICE = "+13125550111"
PARTY = "+13035550123"
OTHER_PARTY = "+13035550999"


EXTENSIONS = {"ana": "101", "bob": "102", "sam": "111", "jo": "112", "lee": "113"}


ANSWERING_SERVICE = "+13125550199"
# The practice is open weekdays 08:00-17:00 (UTC, the test practice's zone); the team's
# number forwards to the answering service when closed, the main line takes a message.
WEEKDAYS_8_TO_5 = tuple((Window(480, 1020),) if day < 5 else () for day in range(7))
OPEN_AT = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)  # a Monday
CLOSED_AT = datetime(2026, 1, 5, 20, 0, tzinfo=UTC)


def practice() -> Directory:
    d = directory(
        [dataclasses.replace(x, extension=EXTENSIONS[x.id])
         for x in (user("ana"), user("bob"), user("sam"), user("jo"), user("lee", active=False))],
        [Team("front-desk", "Front Desk", ("sam", "jo"), extension="200")],
        [dataclasses.replace(
            number(TEAM, t("front-desk"), (u("ana"),), caller_id_name="Maple Street"),
            hours=Hours("UTC", WEEKDAYS_8_TO_5, closed=ClosedPath(forward_to=ANSWERING_SERVICE))),
         number(PRACTICE, caller_id_name="Maple Main")])
    return dataclasses.replace(d, hours=Hours("UTC", WEEKDAYS_8_TO_5))


# -- the decision shape both drivers are read back into ----------------------------------------


@dataclass(frozen=True)
class Heard:
    """What the caller or the staff would notice."""

    kind: str  # ring | internal | voicemail | announcement | refused | dial-out | refused-out
    #            | closed (announcement, voicemail) | forward (to the answering service)
    #            | fallback (the PBX heard no decision: its dialplan answers alone)
    phones: frozenset[str] = frozenset()
    to: str = ""
    caller_id: str = ""
    caller_id_name: str = ""


def ring(*phones: str) -> Heard:
    return Heard("ring", frozenset(phones))


def internal(phones: tuple[str, ...], extension: str, name: str) -> Heard:
    """A colleague's desk phones ring, showing the caller's extension and name."""
    return Heard("internal", frozenset(phones), caller_id=extension, caller_id_name=name)


def dial_out(to: str, caller_id: str, name: str) -> Heard:
    return Heard("dial-out", to=to, caller_id=caller_id, caller_id_name=name)


@dataclass(frozen=True)
class Scenario:
    name: str
    expected: Heard
    dialed: str = ""  # inbound: the practice number called
    desk_phone: str = ""  # outbound: who dials ...
    digits: str = ""  # ... what
    mode: Mode = Mode.NORMAL
    registered: tuple[str, ...] = ("ana-p0", "bob-p0", "sam-p0", "jo-p0", "lee-p0")
    added: tuple[tuple[str, str, str], ...] = ()  # (number, party, user) conversation adds
    journaled: str | None = None  # the attempt's outcome, when it must be on disk
    feature: str = ""  # engage (*28), end (*29), closed (*26), open (*27), from desk_phone ...
    pin: str = ""  # ... with these digits
    at: datetime = OPEN_AT  # the controller's clock
    journal_fails: bool = False  # every journal write raises (a full disk)


SCENARIOS = [
    Scenario("team number rings the team and its extra member, exactly", dialed=TEAM,
             expected=ring("ana-p0", "jo-p0", "sam-p0")),
    Scenario("practice number rings every active user, never a deactivated one",
             dialed=PRACTICE, expected=ring("ana-p0", "bob-p0", "jo-p0", "sam-p0")),
    Scenario("nobody registered: straight to the number's voicemail", dialed=TEAM,
             registered=(), expected=Heard("voicemail")),
    Scenario("unknown number is refused politely", dialed="+13125550000",
             expected=Heard("refused")),
    Scenario("outage: announcement, no ringing, attempt journaled", dialed=TEAM,
             mode=Mode.OUTAGE, expected=Heard("announcement"), journaled="announced"),
    Scenario("outbound from a member's number carries its caller ID", desk_phone="sam-p0",
             digits="3035550123", expected=dial_out(PARTY, TEAM, "Maple Street")),
    Scenario("outbound choosing a number the user is no member of is refused",
             desk_phone="bob-p0", digits="*73125550100" + "3035550123",
             expected=Heard("refused-out")),
    Scenario("a user added to a conversation may call that party from its number",
             desk_phone="bob-p0", digits="*73125550100" + "3035550123",
             added=((TEAM, PARTY, "bob"),), expected=dial_out(PARTY, TEAM, "Maple Street")),
    Scenario("... and only that party", desk_phone="bob-p0",
             digits="*73125550100" + "3035550999", added=((TEAM, PARTY, "bob"),),
             expected=Heard("refused-out")),
    Scenario("outage refuses outbound calls", desk_phone="sam-p0", digits="3035550123",
             mode=Mode.OUTAGE, expected=Heard("refused-out")),
    Scenario("911 goes out from any desk phone, in an outage too", desk_phone="sam-p0",
             digits="911", mode=Mode.OUTAGE, expected=dial_out("911", TEAM, "")),
    Scenario("911 goes out from a deactivated user's phone", desk_phone="lee-p0",
             digits="911", expected=dial_out("911", "", "")),
    Scenario("a colleague's extension rings their desk phone, showing the caller",
             desk_phone="sam-p0", digits="101", expected=internal(("ana-p0",), "111", "Sam")),
    Scenario("a colleague's extension rings in an outage too", desk_phone="sam-p0",
             digits="102", mode=Mode.OUTAGE, expected=internal(("bob-p0",), "111", "Sam")),
    Scenario("a team's extension rings exactly its active members", desk_phone="ana-p0",
             digits="200", expected=internal(("jo-p0", "sam-p0"), "101", "Ana")),
    Scenario("a team's extension does not ring the member who dials it",
             desk_phone="sam-p0", digits="200", mode=Mode.OUTAGE,
             expected=internal(("jo-p0",), "111", "Sam")),
    Scenario("an extension that is nobody's is refused", desk_phone="sam-p0", digits="199",
             expected=Heard("refused-out")),
    Scenario("a deactivated user's extension is nobody's", desk_phone="sam-p0",
             digits="113", mode=Mode.OUTAGE, expected=Heard("refused-out")),
    Scenario("closed: the closed announcement, then the number's voicemail", dialed=PRACTICE,
             at=CLOSED_AT, expected=Heard("closed"), journaled="voicemail"),
    Scenario("closed: forwarded to the answering service with the number's caller ID",
             dialed=TEAM, at=CLOSED_AT, journaled="forwarded",
             expected=Heard("forward", to=ANSWERING_SERVICE, caller_id=TEAM,
                            caller_id_name="Maple Street")),
    Scenario("closed, in an outage: the outage announcement", dialed=TEAM, at=CLOSED_AT,
             mode=Mode.OUTAGE, expected=Heard("announcement"), journaled="announced"),
    # One policy for when a call is journaled (backline.pbx.inbound.journaled_first): in an
    # outage before the PBX hears the decision, in normal mode right after it.
    Scenario("the journal failing in an outage: the PBX hears nothing, its fallback answers",
             dialed=TEAM, mode=Mode.OUTAGE, journal_fails=True, expected=Heard("fallback")),
    Scenario("the journal failing in normal mode: the call still rings (journaled after)",
             dialed=TEAM, journal_fails=True, expected=ring("ana-p0", "jo-p0", "sam-p0")),
    Scenario("*28 + the PIN from an admin's desk phone engages the outage",
             desk_phone="ana-p0", feature="engage", pin="2468", expected=Heard("switched")),
    Scenario("*26 + the PIN from an admin's desk phone forces the hours closed",
             desk_phone="ana-p0", feature="closed", pin="2468", expected=Heard("switched")),
    Scenario("*27 + a wrong PIN is refused", desk_phone="ana-p0", feature="open", pin="1111",
             expected=Heard("switch-refused")),
    Scenario("*29 + a wrong PIN is refused", desk_phone="ana-p0", feature="end", pin="1111",
             mode=Mode.OUTAGE, expected=Heard("switch-refused")),
]

ADMIN_PHONE, PIN = "ana-p0", "2468"
FEATURE_CODES = {"engage": "*28", "end": "*29", "closed": "*26", "open": "*27"}


class Rig(Protocol):
    async def run(self, s: Scenario) -> Heard: ...


@dataclass
class State:
    mode: Mode = Mode.NORMAL
    attempts: list[NewAttempt] = field(default_factory=list)
    at: datetime = OPEN_AT
    journal_fails: bool = False

    switches: list[tuple[str, Mode | HoursState, str]] = field(default_factory=list)

    async def record(self, attempt: NewAttempt) -> bool:
        if self.journal_fails:
            raise OSError("disk full")
        self.attempts.append(attempt)
        return True

    async def switch(self, desk_phone: str, to: Mode, pin: str) -> bool:
        """The controller's side of *28/*29 (its own tests cover the rule): what each
        driver passes it, and whether it said yes."""
        self.switches.append((desk_phone, to, pin))
        return (desk_phone, pin) == (ADMIN_PHONE, PIN)

    async def hours_switch(self, desk_phone: str, to: HoursState, pin: str) -> bool:
        """The controller's side of *26/*27, likewise."""
        self.switches.append((desk_phone, to, pin))
        return (desk_phone, pin) == (ADMIN_PHONE, PIN)


# -- Asterisk, through FastAGI -------------------------------------------------------------------

_SET = re.compile(r'SET VARIABLE ([A-Z_]+) "(.*)"\n')


def _asterisk_heard(variables: dict[str, str]) -> Heard:
    if not variables:  # the session closed with nothing set: the dialplan's fallback plays
        return Heard("fallback")
    if v.FEATURE_RESULT in variables:
        return Heard("switched" if variables[v.FEATURE_RESULT] == "ok" else "switch-refused")
    if v.DECISION in variables and hasattr(v, "FIELDS"):  # one packed variable per decision
        values = variables[v.DECISION].split(v.FIELD_SEPARATOR)
        variables = dict(zip(v.FIELDS, values, strict=True))
    action = variables[v.ACTION]
    if action == v.RING:
        return ring(*(target.split("/")[1] for target in variables[v.DIAL].split("&")))
    if action == v.INTERNAL:
        return internal(tuple(target.split("/")[1] for target in variables[v.DIAL].split("&")),
                        variables[v.CALLER_ID_NUM], variables[v.CALLER_ID_NAME])
    if action == v.FORWARD:
        return Heard("forward", to=variables[v.DIAL_TO], caller_id=variables[v.CALLER_ID_NUM],
                     caller_id_name=variables[v.CALLER_ID_NAME])
    if action == v.CLOSED:
        assert variables[v.SOUND] == "closed-" + PRACTICE.lstrip("+")
        return Heard("closed")
    if action == v.CALL:
        return dial_out(variables[v.DIAL_TO], variables[v.CALLER_ID_NUM],
                        variables[v.CALLER_ID_NAME])
    return Heard({v.VOICEMAIL: "voicemail", v.ANNOUNCE: "announcement", v.UNKNOWN: "refused",
                  v.REFUSE: "refused-out"}[action])


class AsteriskRig:
    def __init__(self, driver: AsteriskDriver, port: int, state: State) -> None:
        self.driver, self.port, self.state = driver, port, state

    async def agi(self, script: str, extension: str, args: tuple[str, ...] = (),
                  caller: str = "+17205550141") -> dict[str, str]:
        """One FastAGI session as Asterisk runs it; returns the variables set."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        block = ["agi_network: yes", f"agi_network_script: {script}",
                 f"agi_request: agi://127.0.0.1:{self.port}/{script}",
                 "agi_channel: PJSIP/carrier-00000001", f"agi_callerid: {caller}",
                 'agi_calleridname: "Bob\\"; Hangup()" <123;x>',
                 f"agi_extension: {extension}", "agi_uniqueid: 1700000000.1",
                 *(f"agi_arg_{i}: {a}" for i, a in enumerate(args, start=1))]
        writer.write(("\n".join(block) + "\n\n").encode())
        await writer.drain()
        variables: dict[str, str] = {}
        while line := await asyncio.wait_for(reader.readline(), 5.0):
            match = _SET.fullmatch(line.decode())
            assert match, f"unexpected AGI command {line!r}"
            variables[match.group(1)] = match.group(2)
            writer.write(b"200 result=1\n")
            await writer.drain()
        writer.close()
        return variables

    async def run(self, s: Scenario) -> Heard:
        # Asterisk's contact list, as PJSIPShowContacts answers (the driver reads it again on
        # every ContactStatus event; there is no AMI here).
        self.driver.hold_contacts([
            {"Event": "ContactList", "ObjectName": f"{phone.rsplit('-', 1)[0]};@{i:032x}",
             "Endpoint": phone, "Uri": f"sip:{phone}@127.0.0.1:5070",
             "ExpirationTime": "1796409041"} for i, phone in enumerate(s.registered)])
        if s.dialed:  # as the dialplan passes them: the dialled number and the caller
            return _asterisk_heard(await self.agi("inbound", s.dialed,
                                                  (s.dialed, "+17205550141")))
        if s.feature:
            code = FEATURE_CODES[s.feature]
            return _asterisk_heard(await self.agi("feature", code,
                                                  (s.desk_phone, s.feature, s.pin)))
        return _asterisk_heard(await self.agi("outbound", s.digits, (s.desk_phone, s.digits)))


@asynccontextmanager
async def asterisk(d: Directory, conversations: ConversationBook, state: State
                   ) -> AsyncIterator[Rig]:
    pbx = AsteriskPbx(ami=HostPort("127.0.0.1", 1), ami_username="backline",
                      ami_secret=Secret(env="UNUSED"), agi=HostPort("127.0.0.1", 0),
                      sip=HostPort("127.0.0.1", 5060))
    driver = AsteriskDriver(pbx, "unused", OwnershipBook(d), conversations,
                            lambda: state.mode, state.record, state.switch,
                            clock=lambda: state.at, hours_feature=state.hours_switch)
    port = await driver.agi.start("127.0.0.1", 0)  # FastAGI only: AMI is not needed here
    try:
        yield AsteriskRig(driver, port, state)
    finally:
        await driver.stop()


# -- FreeSWITCH, through the Event Socket ------------------------------------------------------


def _freeswitch_heard(apps: list[tuple[str, str]], outbound: bool) -> Heard:
    if not apps:  # the session closed with nothing executed: the dialplan's fallback plays
        return Heard("fallback")
    if ("playback", names.FEATURE_OK_SOUND) in apps:
        return Heard("switched")
    if ("playback", names.FEATURE_REFUSED_SOUND) in apps:
        return Heard("switch-refused")
    settings = dict(arg.split("=", 1) for app, arg in apps if app == "set")
    for app, arg in apps:
        if app == "bridge" and arg.startswith("user/") and outbound:
            return internal(tuple(target[5:].split("@")[0] for target in arg.split(",")),
                            settings.get("effective_caller_id_number", ""),
                            settings.get("effective_caller_id_name", ""))
        if app == "bridge" and arg.startswith("user/"):
            return ring(*(target[5:].split("@")[0] for target in arg.split(",")))
        if app == "bridge" and arg.startswith(f"sofia/gateway/{names.GATEWAY}/") \
                and not outbound:
            return Heard("forward", to=arg.rsplit("/", 1)[1],
                         caller_id=settings.get("effective_caller_id_number", ""),
                         caller_id_name=settings.get("effective_caller_id_name", ""))
        if app == "bridge" and arg.startswith(f"sofia/gateway/{names.GATEWAY}/"):
            return dial_out(arg.rsplit("/", 1)[1],
                            settings.get("effective_caller_id_number", ""),
                            settings.get("effective_caller_id_name", ""))
        if app == "playback" and arg == ANNOUNCEMENT:
            return Heard("announcement")
        if app == "playback" and "/closed-" in arg:
            assert arg.endswith("/closed-" + PRACTICE.lstrip("+") + ".wav"), arg
            assert apps[apps.index((app, arg)) + 1][0] == "voicemail", apps  # then a message
            return Heard("closed")
        if app == "playback":
            return Heard("refused-out" if outbound else "refused")
        if app == "voicemail":
            return Heard("voicemail")
    raise AssertionError(f"no decision in {apps}")


class FreeswitchScenarioRig:
    def __init__(self, rig: object) -> None:
        from tests.harness.freeswitch_rig import FsRig

        assert isinstance(rig, FsRig)
        self.rig = rig

    async def run(self, s: Scenario) -> Heard:
        for phone in s.registered:
            self.rig.register(phone)
        live = {p.rsplit("-", 1)[0] for p in s.registered} - {"lee"}
        await self.rig.driver.wait_registered(live, 30)
        if s.dialed:
            channel = Channel(caller_id_number="+17205550141",
                              caller_id_name='"Bob\\"; Hangup()" <123;x>',
                              destination_number=s.dialed,
                              variables={names.ROUTE: names.INBOUND, names.NUMBER: s.dialed})
        elif s.feature:
            channel = Channel(caller_id_number=s.desk_phone,
                              destination_number=FEATURE_CODES[s.feature],
                              variables={names.ROUTE: names.FEATURE, "user_name": s.desk_phone,
                                         names.FEATURE_ACTION: s.feature,
                                         names.FEATURE_PIN: s.pin})
        else:
            channel = Channel(caller_id_number=s.desk_phone, destination_number=s.digits,
                              variables={names.ROUTE: names.OUTBOUND,
                                         "user_name": s.desk_phone})
        _, apps = await self.rig.call(channel)
        return _freeswitch_heard(apps, outbound=not s.dialed)


@asynccontextmanager
async def freeswitch(d: Directory, conversations: ConversationBook, state: State
                     ) -> AsyncIterator[Rig]:
    async with fs_rig(d, conversations, record=state.record, mode=lambda: state.mode,
                      feature=state.switch, clock=lambda: state.at,
                      hours_feature=state.hours_switch) as rig:
        yield FreeswitchScenarioRig(rig)


DRIVER_RIGS: dict[str, Callable[[Directory, ConversationBook, State],
                                AbstractAsyncContextManager[Rig]]] = {
    "asterisk": asterisk, "freeswitch": freeswitch}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
@pytest.mark.parametrize("driver", sorted(DRIVER_RIGS))
async def test_scenario(driver: str, scenario: Scenario) -> None:
    d = practice()
    conversations = ConversationBook()
    for num, party, who in scenario.added:
        conversations.add(num, party, who)
    state = State(mode=scenario.mode, at=scenario.at, journal_fails=scenario.journal_fails)
    async with DRIVER_RIGS[driver](d, conversations, state) as rig:
        assert await rig.run(scenario) == scenario.expected
    if scenario.feature:
        to = {"engage": Mode.OUTAGE, "end": Mode.NORMAL, "closed": HoursState.CLOSED,
              "open": HoursState.OPEN}[scenario.feature]
        assert state.switches == [(scenario.desk_phone, to, scenario.pin)]
    if scenario.expected.kind == "internal":
        assert state.attempts == []  # a call between staff is no patient's attempt
    if scenario.journaled is not None:
        # The decision's record; on FreeSWITCH a scripted call that reached the voicemail and
        # left no message is a missed call besides (tests/test_freeswitch_missed.py).
        (attempt,) = [a for a in state.attempts if not a.key.startswith("missed:")]
        assert (attempt.outcome.value, attempt.recipient) == (scenario.journaled,
                                                              scenario.dialed)
