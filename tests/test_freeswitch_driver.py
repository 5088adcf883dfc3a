"""The FreeSWITCH driver over real TCP against the ESL test server (written from
mod_event_socket.c): the commands each decision sends, the mode in mod_db, registrations,
and what a broken or vanished switch does to the link (it is dropped and made again; the
controller keeps deciding calls meanwhile)."""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backline.app.controller import Controller
from backline.core.model import Carry, Directory, Team
from backline.core.outage import Mode, ModeChange, ModeState, Via
from backline.core.records import AttemptKind, Delivery, NewAttempt, Outcome
from backline.journal import open_journal
from backline.pbx.fax_desk import FaxIntake
from backline.pbx.freeswitch import names, wire
from backline.pbx.freeswitch.hub import EslHub, EslLinkDown
from tests.fax_samples import FINE, STANDARD, fax_tiff, letter
from tests.harness.eslserver import (
    Channel,
    EslServer,
    RawReply,
    api_response,
    command_reply,
    event_frame,
    huge_header_frame,
    serialize_event,
)
from tests.harness.freeswitch_rig import (
    ANNOUNCEMENT,
    DOMAIN,
    PASSWORD,
    AppEffect,
    FsRig,
    SwitchWithApps,
    fs_rig,
)
from tests.practice import directory, number, t, u, user

TEAM = "+13125550100"
PRACTICE = "+13125550111"
ODD_CALLER_NAME = '"Bob\\"; Hangup()" <123;x>'


def practice() -> Directory:
    return directory(
        [user("ana"), user("sam"), user("jo"), user("lee", active=False)],
        [Team("front-desk", "Front Desk", ("sam", "jo"))],
        [number(TEAM, t("front-desk"), (u("ana"),), caller_id_name="Maple Street"),
         number(PRACTICE), number("+13125550199", carries=(Carry.FAX,))])


def inbound(dialed: str, caller: str = "+17205550141", name: str = "Caller") -> Channel:
    return Channel(caller_id_number=caller, caller_id_name=name, destination_number=dialed,
                   context=names.CARRIER_CONTEXT,
                   variables={names.ROUTE: names.INBOUND, names.NUMBER: dialed})


def outbound(phone: str, digits: str) -> Channel:
    return Channel(caller_id_number=phone, caller_id_name=phone, destination_number=digits,
                   context=names.DESK_CONTEXT,
                   variables={names.ROUTE: names.OUTBOUND, "user_name": phone})


async def registered(rig: FsRig, *phones: str) -> None:
    for phone in phones:
        rig.register(phone)
    users = {p.rsplit("-", 1)[0] for p in phones}
    await rig.driver.wait_registered(users, 30)


async def test_session_opens_with_connect_myevents_linger_then_rings_the_members() -> None:
    async with fs_rig(practice()) as rig:
        await registered(rig, "ana-p0", "sam-p0", "jo-p0")
        conn, apps = await rig.call(inbound(TEAM))
        assert [c.command for c in conn.commands][:3] == ["connect", "myevents", "linger"]
        assert apps == [
            # The number it may be missed on, kept to mod_cdr_csv's row of the call
            # (tests/test_freeswitch_missed_away.py).
            ("set", f"{names.MISSABLE}={TEAM}"),
            ("set", "hangup_after_bridge=true"), ("set", "continue_on_fail=true"),
            ("set", "call_timeout=25"),
            # Only an answer ends the ringing: a phone's early media wins nothing.
            ("set", "ignore_early_media=ring_ready"),
            ("bridge", f"user/ana-p0@{DOMAIN},user/jo-p0@{DOMAIN},user/sam-p0@{DOMAIN}"),
            ("answer", ""), ("voicemail", f"default {DOMAIN} {TEAM[-10:]}"), ("hangup", "")]
        # Each application waits for the previous one: event-lock on every sendmsg.
        assert all(c.get("event-lock") == "true" for c in conn.commands
                   if c.command == "sendmsg")
        # The call rang out (no ``originate_disposition: call accepted``) and left no message
        # (no ``voicemail_message_len``): a missed call too (tests/test_freeswitch_missed.py).
        await rig.driver.stop_after()
        assert [a.outcome.value for a in rig.attempts] == ["rang", "missed"]


async def test_a_freeswitch_that_never_answers_connect_is_dropped_saying_what_it_did_not_answer(
        caplog: pytest.LogCaptureFixture) -> None:
    async with fs_rig(practice()) as rig:
        rig.driver.calls.quick_within = 0.5  # the peer below never answers: the bound is hit
        reader, writer = await asyncio.open_connection("127.0.0.1", rig.driver.socket_port)
        try:
            assert await reader.readuntil(b"\n\n") == b"connect\n\n"
            # Nothing comes back: the controller closes the session (the dialplan's fallback
            # then answers the caller), and says why.
            assert await asyncio.wait_for(reader.read(), 30) == b""
        finally:
            writer.close()
        assert rig.driver.calls.failures == 1
        said = [r.getMessage() for r in caplog.records if r.name == "backline.esl.call"]
        assert said == ["call session dropped: FreeSWITCH did not answer `connect` (the "
                        "channel's data) within 0.5 s: the session is closed and the "
                        "dialplan's fallback (the announcement) answers the caller"], said


async def test_registrations_are_reloaded_after_every_login() -> None:
    async with fs_rig(practice()) as rig:
        rig.registered["tok-1"] = ("sam-p0", 100.0)
        rig.server.connections[0].drop()  # the switch restarts
        await rig.server.wait_connection(2)
        await rig.driver.wait_registered({"sam"}, 30)
        _, apps = await rig.call(inbound(TEAM))
        assert ("bridge", f"user/sam-p0@{DOMAIN}") in apps


async def test_outage_answers_with_the_announcement_journals_and_rings_nobody() -> None:
    async with fs_rig(practice()) as rig:
        await registered(rig, "ana-p0")
        rig.mode = Mode.OUTAGE
        _, apps = await rig.call(inbound(PRACTICE))
        assert apps == [("answer", ""), ("playback", ANNOUNCEMENT), ("hangup", "")]
        (attempt,) = rig.attempts
        assert (attempt.outcome.value, attempt.mode, attempt.recipient) == \
            ("announced", Mode.OUTAGE, PRACTICE)


async def test_the_announcement_played_is_the_file_backline_render_wrote(tmp_path: Path) -> None:
    """Rendered, installed beside a stock-like freeswitch.xml and loaded; a carrier INVITE
    runs through the loaded profile and dialplan up to ``socket``: in an outage the
    controller plays the file render wrote (``<out>/announcement.wav``), the one the
    dialplan's own fail-safe plays, not a path of its own."""
    import dataclasses
    import shutil

    from backline.core.connections import Connections, Storage
    from backline.localpbx.freeswitch import write_rendered
    from tests.harness.freeswitch_conf import (
        Routed,
        hunt,
        load,
        sip_profile,
        stock_tree,
        until_socket,
    )

    async with fs_rig(practice()) as rig:
        pbx = rig.driver.pbx
        d = dataclasses.replace(practice(), connections=Connections(Storage("sqlite:///x"),
                                                                    pbx=pbx))
        out = tmp_path / "out"
        await asyncio.to_thread(write_rendered, d, pbx, out, tmp_path / "secrets.json")
        shutil.copytree(out, tmp_path / "conf")
        root, _ = load(stock_tree(tmp_path / "conf"))
        routed = sip_profile(root, "backline").invite(pbx.trunk.host, PRACTICE)
        assert isinstance(routed, Routed), routed
        actions = hunt(root, routed)
        variables = until_socket(actions, routed.variables,
                                 api=lambda command, arg: rig.db_api(arg))
        rig.mode = Mode.OUTAGE
        _, apps = await rig.call(Channel(caller_id_number="+17205550141",
                                         destination_number=PRACTICE,
                                         context=routed.context, variables=variables))
        wav = out / "announcement.wav"
        assert wav.is_file()
        assert apps == [("answer", ""), ("playback", str(wav)), ("hangup", "")]
        socket = [app for app, _ in actions].index("socket")
        assert actions[socket + 1:socket + 3] == [("answer", ""), ("playback", str(wav))]


async def test_unknown_number_is_refused_politely() -> None:
    async with fs_rig(practice()) as rig:
        _, apps = await rig.call(inbound("+13125550000"))
        assert apps == [("answer", ""), ("playback", names.REFUSAL_SOUND), ("hangup", "")]


async def test_outbound_carries_the_numbers_caller_id_and_911_always_goes_out() -> None:
    async with fs_rig(practice()) as rig:
        _, apps = await rig.call(outbound("sam-p0", "3035550123"))
        assert apps == [("set", f"effective_caller_id_number={TEAM}"),
                        ("set", "effective_caller_id_name=Maple Street"),
                        ("bridge", "sofia/gateway/carrier/+13035550123"), ("hangup", "")]
        rig.mode = Mode.OUTAGE
        _, apps = await rig.call(outbound("lee-p0", "911"))  # deactivated, outage: still out
        assert ("bridge", "sofia/gateway/carrier/911") in apps
        _, apps = await rig.call(outbound("sam-p0", "3035550123"))
        assert apps == [("answer", ""), ("playback", names.OUTBOUND_REFUSAL_SOUND),
                        ("hangup", "")]


async def test_911_the_controller_places_carries_the_callback_number_in_pai() -> None:
    """A 911 the controller decides (not the rendered dialplan's own extension) leaves with
    the callback number in From and, through sip_cid_type=pid, in P-Asserted-Identity, as
    on Asterisk (tests/test_emergency.py); set before the bridge, which reads it."""
    async with fs_rig(practice()) as rig:
        _, apps = await rig.call(outbound("sam-p0", "911"))
        bridge = apps.index(("bridge", "sofia/gateway/carrier/911"))
        assert ("set", "effective_caller_id_number=+13125550100") in apps[:bridge]
        assert ("set", "sip_cid_type=pid") in apps[:bridge]


@pytest.mark.parametrize(("name", "caller"), [
    (ODD_CALLER_NAME, "123;x"),
    ("Eve\nHangup", "+1720\r\nsendmsg"),
    ("${system(id)}", "%0Aexit"),
])
async def test_untrusted_caller_ids_never_reach_a_command(name: str, caller: str) -> None:
    async with fs_rig(practice()) as rig:
        await registered(rig, "ana-p0")
        conn, apps = await rig.call(inbound(TEAM, caller=caller, name=name))
        assert ("bridge", f"user/ana-p0@{DOMAIN}") in apps  # the call is still decided
        sent = b"".join(c.raw for c in conn.commands)
        for piece in ("Bob", "Hangup", "system", "Eve", "sendmsg\n", "1720"):
            assert piece.encode() not in sent.replace(b"sendmsg\ncall-command", b"")
        # Kept as data in the journal, as FreeSWITCH delivers it: switch_url_encode leaves an
        # upper-case "%0A" as it is, so the reader decodes the caller's "%0A" to a newline.
        assert rig.attempts[0].sender == caller.replace("%0A", "\n")


async def test_mode_lives_in_mod_db_and_a_console_switch_is_read_back() -> None:
    async with fs_rig(practice()) as rig:
        await rig.driver.write_mode(Mode.OUTAGE)
        assert rig.db == {"backline/mode": "outage", "backline/ack": "outage"}
        rig.db["backline/mode"] = "normal"  # fs_cli -x 'db insert/backline/mode/normal'
        assert await rig.driver.read_mode() == ("normal", "outage", None, None)
        await rig.driver.write_mode(Mode.NORMAL, ack_only=True)
        assert rig.db["backline/ack"] == "normal"


async def test_controller_pushes_its_mode_into_freeswitch(tmp_path: Path) -> None:
    d = practice()
    journal = open_journal(f"sqlite:///{tmp_path / 'j.db'}")
    controller = Controller(d, journal)
    change = ModeChange(Mode.OUTAGE, controller.clock(), "ops", Via.CLI, "drill")
    journal.record_mode_change(change, ModeState.initial())
    async with fs_rig(d, controller.conversations, record=controller.record_attempt,
                      mode=controller.mode) as rig:
        controller.attach(rig.driver)
        await controller.sync_once()
        assert rig.db["backline/mode"] == "outage"
        await rig.call(inbound(PRACTICE))
        (attempt,) = journal.attempts(limit=10)
        assert (attempt.outcome.value, attempt.recipient) == ("announced", PRACTICE)
        # Ended on the FreeSWITCH console: recorded in the journal as a console switch.
        rig.db["backline/mode"] = "normal"  # fs_cli -x 'db insert/backline/mode/normal'
        await controller.sync_once()
        assert controller.mode() is Mode.NORMAL
        assert journal.mode_history(1)[0].via is Via.CONSOLE
        # A switch that breaks the protocol: the tick survives, the link is made again, and
        # the next tick pushes a switch made meanwhile (from the CLI, say).
        rig.server.script_api("db", lambda arg: RawReply(huge_header_frame(1_000_000)))
        await controller.sync_once()
        rig.server.script_api("db", rig.db_api)
        state = journal.mode_state()
        journal.record_mode_change(ModeChange(Mode.OUTAGE, controller.clock(), "ops",
                                              Via.CLI, "again"), state)
        await rig.server.wait_connection(2)
        await rig.driver.hub.wait_up(30)
        await controller.sync_once()
        assert rig.db["backline/mode"] == "outage"
    await controller.close()
    journal.close()


async def test_a_command_freeswitch_refuses_fails_the_round_as_the_pbxs_and_is_retried(
        tmp_path: Path) -> None:
    """-ERR from mod_db is a refused command, not a lost link: the link stays up, the round
    counts as failed on the PBX's side, and the next round pushes the mode."""
    d = practice()
    journal = open_journal(f"sqlite:///{tmp_path / 'j.db'}")
    controller = Controller(d, journal)
    journal.record_mode_change(ModeChange(Mode.OUTAGE, controller.clock(), "ops", Via.CLI,
                                          "drill"), ModeState.initial())
    async with fs_rig(d, controller.conversations, record=controller.record_attempt,
                      mode=controller.mode) as rig:
        controller.attach(rig.driver)
        rig.server.script_api("db", lambda arg: "-ERR mod_db is not loaded")
        await controller.sync_once()
        assert controller.failed_rounds == 1
        assert 'backline_mode_rounds_failed_total{part="pbx"} 1.0' in \
            controller.metrics.render().decode()
        assert rig.driver.up and rig.driver.hub.logins == 1  # the link was never dropped
        rig.server.script_api("db", rig.db_api)
        await controller.sync_once()
        assert rig.db["backline/mode"] == "outage"
        assert controller.failed_rounds == 1
    await controller.close()
    journal.close()


async def test_the_consoles_by_and_reason_are_deleted_once_recorded(tmp_path: Path) -> None:
    d = practice()
    journal = open_journal(f"sqlite:///{tmp_path / 'j.db'}")
    controller = Controller(d, journal)
    async with fs_rig(d, controller.conversations, record=controller.record_attempt,
                      mode=controller.mode) as rig:
        controller.attach(rig.driver)
        await controller.sync_once()
        # fs_cli -x 'db insert/backline/by/kim', .../reason/..., then .../mode/outage
        rig.db.update({"backline/by": "kim", "backline/reason": "fiber cut",
                       "backline/mode": "outage"})
        await controller.sync_once()
        change = journal.mode_history(1)[0]
        assert (change.by, change.reason, change.via) == ("console:kim", "fiber cut",
                                                          Via.CONSOLE)
        assert "backline/by" not in rig.db and "backline/reason" not in rig.db
        rig.db["backline/mode"] = "normal"  # a plain switch afterwards
        await controller.sync_once()
        assert journal.mode_history(1)[0].by == "console"
    await controller.close()
    journal.close()


# -- a broken or vanished switch ---------------------------------------------------------------

BROKEN = {
    "wrong Content-Length": RawReply(b"Content-Type: api/response\nContent-Length: x12\n\nok"),
    "truncated body then close": RawReply(api_response(b"outage", content_length=5000),
                                          close=True),
    "1 MB header": RawReply(huge_header_frame(1_000_000)),
    "reply to no command": RawReply(api_response(b"x") + api_response(b"y")),
    "command/reply to an api": RawReply(command_reply("+OK accepted")),
    "event shorter than its own Content-Length": RawReply(event_frame(
        b"Event-Name: BACKGROUND_JOB\nContent-Length: 10\n\nabc")),
    "event without Event-Name": RawReply(event_frame(b"Job-UUID: x\n\n")),
}


@pytest.mark.parametrize("how", sorted(BROKEN))
async def test_a_malformed_frame_drops_the_link_which_is_made_again(how: str) -> None:
    async with fs_rig(practice()) as rig:
        # The login's own commands (registrations, then the lamp) answered first: a surplus
        # reply is only "to no command" while nothing else of ours is waiting.
        await rig.server.wait_command("sendevent", nth=len(names.LAMP_USERS))
        broken = BROKEN[how]
        rig.server.script_api("db", lambda arg: broken)
        with pytest.raises(EslLinkDown):
            await rig.driver.read_mode()
        # Calls are decided meanwhile: they do not depend on the inbound link.
        _, apps = await rig.call(inbound("+13125550000"))
        assert apps[-1] == ("hangup", "")
        rig.server.script_api("db", rig.db_api)
        await rig.server.wait_connection(2)
        await rig.driver.hub.wait_up(30)
        await rig.driver.write_mode(Mode.OUTAGE)
        assert rig.db["backline/mode"] == "outage"
        assert rig.driver.hub.logins == 2
        assert rig.driver.hub.drops  # recorded, with the reason


async def test_bad_url_encoding_in_an_event_is_kept_verbatim_and_the_link_stays() -> None:
    async with fs_rig(practice()) as rig:
        conn = rig.server.connections[0]
        bad = serialize_event([("Event-Name", "CUSTOM"), ("Event-Subclass", "sofia::register"),
                               ("username", "ana-p0"), ("call-id", "a%ZZb%"),
                               ("contact", "%")], encode=False)
        conn.send_raw(event_frame(bad))
        await rig.driver.wait_registered({"ana"}, 30)
        assert rig.driver.registrations.has_contact("ana", "a%ZZb%")
        assert rig.driver.hub.logins == 1 and rig.driver.up


async def test_a_switch_that_never_greets_times_out_and_is_retried() -> None:
    server = EslServer(PASSWORD, greet=False)
    async with fs_rig(practice(), server=server, wait_login=False) as rig:
        rig.driver.hub.connect_timeout = 0.2
        await server.wait_connection(2, within=30)
        assert not rig.driver.up
        with pytest.raises(EslLinkDown):
            await rig.driver.read_mode()


@pytest.mark.parametrize(("server", "why"), [
    (EslServer(PASSWORD, reject=True), "ACL refused"),
    (EslServer("another password"), "refused the ESL password"),
])
async def test_a_refused_login_is_retried_with_backoff_and_never_hangs(
        server: EslServer, why: str) -> None:
    """The reader ends before (or right after) auth: greenswitch's bare auth wait would raise
    LoopExit or hang; here each attempt ends with its reason and the next one follows."""
    async with fs_rig(practice(), server=server, wait_login=False) as rig:
        await server.wait_connection(3, within=30)
        assert not rig.driver.up
        assert any(why in d for d in rig.driver.hub.drops), rig.driver.hub.drops


async def test_a_truncated_body_does_not_spin_the_hub() -> None:
    """greenswitch loops on b'' here without ever yielding to its hub: the hub could then
    never run another greenlet, so a link made again proves the reader gave up instead."""
    async with fs_rig(practice()) as rig:
        rig.server.script_api("db", lambda arg: RawReply(
            api_response(b"x", content_length=100), close=True))
        with pytest.raises(EslLinkDown):
            await rig.driver.read_mode()
        rig.server.script_api("db", rig.db_api)
        await rig.server.wait_connection(2)
        await rig.driver.hub.wait_up(30)
        assert await rig.driver.read_mode() == (None, None, None, None)
        assert rig.driver.hub.logins == 2
        # The truncated body is seen, unless the server's close became an RST that threw the
        # unread bytes away first (the kernel's choice): either way the link was dropped.
        why = rig.driver.hub.drops[0]
        assert "closed after 1 of 100 body bytes" in why or "reset by peer" in why, why


async def test_pending_commands_fail_when_the_link_drops() -> None:
    async with fs_rig(practice()) as rig:
        gate = asyncio.Event()

        async def never(arg: str | None) -> str:
            await gate.wait()
            return "+OK"

        rig.server.script_api("db", never)
        pending = asyncio.create_task(rig.driver.read_mode())
        await rig.server.wait_command("api db")
        rig.server.connections[0].drop()
        with pytest.raises(EslLinkDown):
            await asyncio.wait_for(pending, 30)
        gate.set()


async def test_bgapi_result_comes_from_its_background_job_event() -> None:
    async with EslServer(PASSWORD) as srv:
        srv.script_api("originate", "+OK 2ba4e0a4-b5e2-4e2a-8d1c-0c1e5a0e1c00\n")
        hub = EslHub("127.0.0.1", srv.port, PASSWORD, events=("BACKGROUND_JOB",))
        await hub.start()
        try:
            await hub.wait_up(30)
            job = "job-1"
            reply = await hub.command(b"bgapi originate user/ana-p0 &park()\nJob-UUID: job-1\n\n")
            assert isinstance(reply, wire.CommandReply) and reply.ok
            command = await srv.wait_command("bgapi originate")
            assert command.get("Job-UUID") == job
            event = await asyncio.wait_for(hub.events.get(), 30)
            assert event.name == "BACKGROUND_JOB" and event.get("Job-UUID") == job
            assert event.body == b"+OK 2ba4e0a4-b5e2-4e2a-8d1c-0c1e5a0e1c00\n"
            assert "Content-Length" not in dict(event.headers)  # greenswitch's trap avoided
        finally:
            await hub.stop()


async def test_backline_run_picks_the_freeswitch_driver(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    """`_serve` with ``kind: freeswitch``: the controller logs in over ESL, mirrors its mode
    into mod_db and decides calls on its socket, until stopped."""
    import dataclasses

    from backline.app.serve import _serve
    from backline.core.connections import Connections, Secret, Storage
    from tests.harness.freeswitch_rig import freeswitch_pbx

    async with EslServer(PASSWORD) as srv:
        db: dict[str, str] = {}

        def db_api(arg: str | None) -> str:
            op, _, rest = (arg or "").partition("/")
            if op == "insert":
                key, _, value = rest.rpartition("/")
                db[key] = value
                return "+OK"
            return db.get(rest, "")

        srv.script_api("db", db_api)
        srv.script_api("show", "reg_user,realm,token,url,expires\n\n0 total.\n")
        monkeypatch.setenv("BACKLINE_TEST_ESL", PASSWORD)
        pbx = dataclasses.replace(freeswitch_pbx(srv.port),
                                  esl_password=Secret(env="BACKLINE_TEST_ESL"))
        d = dataclasses.replace(practice(), connections=Connections(
            Storage(f"sqlite:///{tmp_path / 'journal.db'}"), pbx=pbx))
        task = asyncio.create_task(_serve(d, start_pbx=False))
        await srv.wait_command("api db insert/backline/ack/normal", within=30)
        assert db == {"backline/mode": "normal", "backline/ack": "normal"}
        assert "ready:" in capsys.readouterr().out
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_journal_that_fails_leaves_the_caller_to_the_dialplans_fallback() -> None:
    """In an outage the journal is written before FreeSWITCH hears the decision: if it fails,
    nothing is executed and the session closes: `socket` returns and the rendered dialplan's
    next actions (announcement) answer the caller.  (In normal mode the call is journaled
    after its decision: tests/test_driver_scenarios.py, both drivers.)"""
    async def broken(attempt: object) -> bool:
        raise OSError("disk full")

    async with fs_rig(practice(), record=broken) as rig:
        await registered(rig, "ana-p0")
        rig.mode = Mode.OUTAGE
        conn, apps = await rig.call(inbound(TEAM))
        assert apps == []
        assert [c.command for c in conn.commands] == ["connect", "myevents", "linger"]
        assert rig.driver.calls.failures == 1
        _, apps = await rig.call(outbound("sam-p0", "911"))  # the next call is served
        assert ("bridge", "sofia/gateway/carrier/911") in apps


# -- fax ------------------------------------------------------------------------------------

FAX = "+13125550199"


class FaxDeskOnDisk:
    """The controller's fax intake over a real SQLite journal, spool and fax directory."""

    def __init__(self, tmp: Path, store: Path | None = None) -> None:
        self.journal = open_journal(f"sqlite:///{tmp / 'journal.db'}")
        self.spool = tmp / "spool"
        self.spool.mkdir()
        self.store = store or tmp / "fax"
        self.intake = FaxIntake(self.store, "America/Chicago", self.record,
                                self.journal.attempt, lambda: Mode.NORMAL, spool=self.spool)

    async def record(self, attempt: NewAttempt) -> bool:
        return self.journal.record_attempt(attempt)[1]


def file_start(path: str) -> bytes:
    return Path(path).read_bytes()[:5]


def files_in(directory: Path) -> list[Path]:
    return sorted(directory.iterdir())


def sends_a_fax(tiff: bytes, variables: dict[str, str]) -> AppEffect:
    """rxfax as mod_spandsp runs it: the TIFF lands where it was told, the results are set
    on the channel (phase E), whatever the outcome."""
    def rxfax(channel: Channel, arg: str | None) -> None:
        assert arg is not None
        Path(arg).write_bytes(tiff)
        channel.variables.update(variables)
    return rxfax


async def test_a_fax_is_received_over_t38_stored_as_pdf_and_journaled_once(
        tmp_path: Path) -> None:
    desk = FaxDeskOnDisk(tmp_path)
    async with fs_rig(practice(), faxes=desk.intake, fax_spool=str(desk.spool)) as rig:
        assert isinstance(rig.server, SwitchWithApps)
        rig.server.app_effects["rxfax"] = sends_a_fax(
            fax_tiff((letter(STANDARD, 1), letter(FINE, 2))),
            {"fax_success": "1", "fax_result_code": "0", "fax_result_text": "OK",
             "fax_document_transferred_pages": "2",
             "fax_remote_station_id": "ACME ${system(id)}\n"})
        channel = inbound(FAX, caller="+17205550141")
        _, apps = await rig.call(channel)
        assert apps == [("set", "fax_enable_t38=true"), ("set", "fax_enable_t38_request=true"),
                        ("answer", ""),
                        ("rxfax", f"{desk.spool}/fax-{channel.uuid}.tif"), ("hangup", "")]
        (attempt,) = desk.journal.attempts(limit=10)
        assert (attempt.key, attempt.kind.value, attempt.outcome, attempt.sender,
                attempt.recipient) == (f"fax:{channel.uuid}", "fax", Outcome.RECEIVED,
                                       "+17205550141", FAX)
        assert attempt.detail == "2 pages; station ACME ${system(id)}"  # data, never a command
        assert Path(attempt.file) == desk.store / f"fax-{channel.uuid}.pdf"
        assert file_start(attempt.file) == b"%PDF-"
        assert files_in(desk.spool) == [] and files_in(desk.store) == [Path(attempt.file)]
        assert rig.attempts == []  # journaled by the intake, once, not at the decision
    desk.journal.close()


async def test_a_fax_cut_short_keeps_its_pages_and_says_why(tmp_path: Path) -> None:
    desk = FaxDeskOnDisk(tmp_path)
    async with fs_rig(practice(), faxes=desk.intake, fax_spool=str(desk.spool)) as rig:
        assert isinstance(rig.server, SwitchWithApps)
        rig.server.app_effects["rxfax"] = sends_a_fax(
            fax_tiff((letter(STANDARD, 3),)),
            {"fax_success": "0", "fax_result_code": "49",
             "fax_result_text": "The call dropped prematurely",
             "fax_document_transferred_pages": "1"})
        await rig.call(inbound(FAX))
        (attempt,) = desk.journal.attempts(limit=10)
        assert attempt.outcome is Outcome.RECEIVED and file_start(attempt.file) == b"%PDF-"
        assert attempt.detail == ("1 page; the transmission failed "
                                  "(The call dropped prematurely (code 49))")
    desk.journal.close()


async def test_a_fax_that_cannot_be_stored_is_answered_then_refused_and_journaled(
        tmp_path: Path) -> None:
    not_a_directory = tmp_path / "taken"
    not_a_directory.write_text("a file where the fax directory should be")
    desk = FaxDeskOnDisk(tmp_path, store=not_a_directory)
    async with fs_rig(practice(), faxes=desk.intake, fax_spool=str(desk.spool),
                      record=desk.record) as rig:
        channel = inbound(FAX)
        _, apps = await rig.call(channel)
        # Answered, then hung up with cause 21 once the sender's fax session has begun: the
        # sending machine reports a failed fax instead of redialling a "busy" line at once.
        assert apps == [("answer", ""), ("sleep", "1000"), ("hangup", "CALL_REJECTED")]
        (attempt,) = desk.journal.attempts(limit=10)
        assert (attempt.key, attempt.outcome) == (f"fax:{channel.uuid}", Outcome.REJECTED)
        assert attempt.detail.startswith("refused (no-storage): the fax directory is not "
                                         "writable")
    desk.journal.close()


# -- the outage lamp (BLF) --------------------------------------------------------------------


def lamp_events(rig: FsRig) -> list[tuple[str | None, str | None, str | None]]:
    return [(c.get("from"), c.get("answer-state"), c.get("alt_event_type"))
            for c in rig.server.commands if c.command == "sendevent PRESENCE_IN"]


LAMPS = [f"{user}@{DOMAIN}" for user in names.LAMP_USERS]  # *28 and *29, as on Asterisk


async def test_the_lamp_is_lit_with_the_outage_and_put_out_when_it_ends() -> None:
    async with fs_rig(practice()) as rig:
        # Lit (off) at login from the controller's mode: FreeSWITCH forgets presence.
        await rig.server.wait_for(lambda: len(lamp_events(rig)) == len(LAMPS) or None)
        assert lamp_events(rig) == [(p, "terminated", "dialog") for p in LAMPS]
        await rig.driver.write_mode(Mode.OUTAGE)
        await rig.driver.write_mode(Mode.NORMAL, ack_only=True)  # a console switch agreed
        assert lamp_events(rig)[len(LAMPS):] == [(p, "confirmed", "dialog") for p in LAMPS] + \
            [(p, "terminated", "dialog") for p in LAMPS]
        lit = [c for c in rig.server.commands if c.get("answer-state") == "confirmed"]
        # What sofia_presence.c needs for a <dialog> in the NOTIFY (mod_valet_parking.c sends
        # the same for a parking lot's lamp): a unique-id, the channel and answer states.
        assert [(c.get("proto"), c.get("login"), c.get("event_type"), c.get("unique-id"),
                 c.get("channel-state")) for c in lit] == \
            [("sip", p, "presence", names.LAMP_DIALOG, "CS_ROUTING") for p in LAMPS]


async def test_a_desk_phone_on_star28_sees_the_lamp_lit_and_kept_lit_through_refreshes(
        ) -> None:
    """mod_sofia's presence rules (SofiaPresence, from sofia_presence.c) on the rendered
    profile: a phone subscribed to *28 gets a NOTIFY whose <dialog> is confirmed in an
    outage; every refresh fires a dialog probe that sofia answers with no dialog, and the
    driver's answer lights the lamp again; ending the outage puts it out."""
    from backline.render.freeswitch import sofia_xml
    from tests.harness.freeswitch_conf import params
    from tests.harness.freeswitch_rig import SofiaPresence

    async with fs_rig(practice()) as rig:
        rendered = ET.fromstring(sofia_xml(rig.driver.pbx))
        presence = SofiaPresence(rig.server, params(
            rendered, "configuration/profiles/profile/settings/param"))
        await rig.server.wait_for(lambda: len(lamp_events(rig)) == len(LAMPS) or None)

        def seen(count: int) -> list[str | None] | None:
            states = [n.state for n in presence.notifies if n.phone == "ana-p0"]
            return states if len(states) >= count else None

        call_id = presence.subscribe("ana-p0", names.ENGAGE_CODE)
        assert await rig.server.wait_for(lambda: seen(2)) == [None, "terminated"]
        rig.mode = Mode.OUTAGE
        await rig.driver.write_mode(Mode.OUTAGE)
        assert await rig.server.wait_for(lambda: seen(3)) == [None, "terminated", "confirmed"]
        presence.subscribe("ana-p0", names.ENGAGE_CODE, call_id)  # the phone's refresh
        assert (await rig.server.wait_for(lambda: seen(5)))[3:] == [None, "confirmed"]
        assert presence.lamp("ana-p0") == "confirmed"
        rig.mode = Mode.NORMAL
        await rig.driver.write_mode(Mode.NORMAL)
        assert (await rig.server.wait_for(lambda: seen(6)))[5:] == ["terminated"]
        assert presence.skipped == 0


async def test_a_desk_phone_watching_the_lamp_sees_the_presence_event() -> None:
    """What mod_sofia would hear: the PRESENCE_IN fired into the switch's event system."""
    async with fs_rig(practice()) as rig:
        await rig.server.wait_for(  # the login's, first
            lambda: len(lamp_events(rig)) == len(LAMPS) or None)
        watcher = EslHub("127.0.0.1", rig.server.port, PASSWORD, events=("PRESENCE_IN",))
        await watcher.start()
        try:
            await watcher.wait_up(30)
            await rig.driver.write_mode(Mode.OUTAGE)
            event = await asyncio.wait_for(watcher.events.get(), 30)
            assert (event.name, event.get("from"), event.get("answer-state")) == \
                ("PRESENCE_IN", LAMPS[0], "confirmed")
        finally:
            await watcher.stop()


# -- the fail-safe import (mod_cdr_csv) -------------------------------------------------------

AWAY_CALL = "0f8e3c52-5a1d-4d8e-9d33-2f6a1c0b7e11"
AWAY_FAX = "5b2f7e90-8c4a-4f1e-a6d2-93e0c1d4b8a2"
DECIDED = "9a1c4e77-3b2d-4c6f-8e15-7d0f2a9b6c34"


def cdr_line(uuid: str, epoch: int, route: str, number: str, kind: str, last_app: str,
             caller: str) -> str:
    """A row as mod_cdr_csv writes it with the rendered template: every value quoted."""
    values = [uuid, str(epoch), route, number, kind, last_app, "NORMAL_CLEARING", caller]
    return ",".join(f'"{v}"' for v in values) + "\n"


def write_away_record(cdr_file: Path, spool: Path) -> None:
    cdr_file.parent.mkdir(parents=True)
    cdr_file.write_text(
        cdr_line(AWAY_CALL, 1_790_000_000, "inbound", PRACTICE, "", "playback", "+17205550141")
        + cdr_line(AWAY_FAX, 1_790_000_060, "inbound", FAX, "fax", "rxfax", "+17205550142")
        + cdr_line(DECIDED, 1_790_000_120, "inbound", TEAM, "", "socket", "+17205550143")
        + cdr_line("2b6e1f0a-4c3d-4e5f-8a7b-9c0d1e2f3a4b", 1_790_000_130, "outbound",
                   "3035550123", "", "bridge", "sam-p0")  # a desk phone's call: no attempt
        + '"not-a-uuid","1790000140","inbound","+13125550111","","playback","x"\n'
        + '"truncated row"\n')
    spool.mkdir()
    (spool / f"fax-{AWAY_FAX}.tif").write_bytes(fax_tiff((letter(STANDARD, 7),)))


def freeswitch_practice(tmp: Path, esl_port: int) -> Directory:
    import dataclasses

    from backline.core.connections import Connections, Storage
    from tests.harness.freeswitch_rig import freeswitch_pbx

    pbx = dataclasses.replace(freeswitch_pbx(esl_port, str(tmp / "spool")),
                              fax_dir=str(tmp / "fax"),
                              cdr_file=str(tmp / "log" / "cdr-csv" / "Master.csv"))
    return dataclasses.replace(practice(), connections=Connections(
        Storage(f"sqlite:///{tmp / 'journal.db'}"), pbx=pbx))


async def test_calls_and_faxes_answered_while_away_are_imported_once_on_every_login(
        tmp_path: Path) -> None:
    d = freeswitch_practice(tmp_path, 0)
    write_away_record(tmp_path / "log" / "cdr-csv" / "Master.csv", tmp_path / "spool")
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")
    controller = Controller(d, journal)
    # Decided by the controller before it died: journaled then, under the same key.
    await controller.record_attempt(NewAttempt(
        key=f"call:{DECIDED}", at=controller.clock(), kind=AttemptKind.CALL, mode=Mode.NORMAL,
        sender="+17205550143", recipient=TEAM, outcome=Outcome.RANG))
    imports: asyncio.Queue[int] = asyncio.Queue()

    async def import_record() -> None:
        await imports.put(await controller.import_pbx_record())

    async with fs_rig(d, controller.conversations, record=controller.record_attempt,
                      mode=controller.mode, faxes=controller.faxes,
                      fax_spool=str(tmp_path / "spool"), import_record=import_record) as rig:
        assert await asyncio.wait_for(imports.get(), 30) == 2
        rig.server.connections[0].drop()  # FreeSWITCH restarts: logged in again, imported again
        assert await asyncio.wait_for(imports.get(), 30) == 0
    by_key = {a.key: a for a in journal.attempts(limit=10)}
    assert sorted(by_key) == [f"call:{AWAY_CALL}", f"call:{DECIDED}", f"fax:{AWAY_FAX}"]
    call = by_key[f"call:{AWAY_CALL}"]
    assert (call.outcome, call.sender, call.recipient, call.delivery) == \
        (Outcome.ANNOUNCED, "+17205550141", PRACTICE, Delivery.HELD)
    assert call.at == datetime.fromtimestamp(1_790_000_000, UTC)
    fax = by_key[f"fax:{AWAY_FAX}"]
    assert (fax.outcome, fax.sender, fax.recipient) == (Outcome.RECEIVED, "+17205550142", FAX)
    assert fax.detail == "1 page; received by the PBX while the controller was away"
    assert file_start(fax.file) == b"%PDF-"
    assert by_key[f"call:{DECIDED}"].outcome is Outcome.RANG  # not overwritten
    await controller.close()
    journal.close()


def test_the_rendered_cdr_template_writes_the_columns_the_import_reads() -> None:
    """mod_cdr_csv expands ${var} in the template; expanding it here as FreeSWITCH would gives
    a line the parser reads back into the same call."""
    from backline.pbx.freeswitch import cdr

    channel = {"uuid": AWAY_CALL, "start_epoch": "1790000000", names.ROUTE: names.INBOUND,
               names.NUMBER: PRACTICE, names.KIND: "", "last_app": "playback",
               "hangup_cause": "NORMAL_CLEARING", "caller_id_number": "+17205550141"}
    # A variable the channel does not hold expands to nothing (switch_channel_expand_variables).
    line = re.sub(r"\$\{([a-z_]+)\}", lambda m: channel.get(m.group(1), ""),
                  cdr.template("an-install-s-row-token"))
    (row,) = cdr.parse(line + "\n", "an-install-s-row-token")
    assert (row.uniqueid, row.caller, row.dialled, row.start) == \
        (AWAY_CALL, "+17205550141", PRACTICE, datetime.fromtimestamp(1_790_000_000, UTC))


async def test_a_sender_that_hangs_up_mid_fax_still_leaves_its_pages_stored(
        tmp_path: Path) -> None:
    desk = FaxDeskOnDisk(tmp_path)
    async with fs_rig(practice(), faxes=desk.intake, fax_spool=str(desk.spool)) as rig:
        assert isinstance(rig.server, SwitchWithApps)
        server = rig.server
        got_a_page = sends_a_fax(fax_tiff((letter(FINE, 4),)), {
            "fax_success": "0", "fax_result_code": "49",
            "fax_result_text": "The call dropped prematurely",
            "fax_document_transferred_pages": "1"})

        async def hangs_up(channel: Channel, arg: str | None) -> None:
            got_a_page(channel, arg)
            await server.hangup_channel(channel)  # the sender is gone: linger keeps us on

        server.app_effects["rxfax"] = hangs_up
        _, apps = await rig.call(inbound(FAX))
        assert ("answer", "") in apps and apps[apps.index(("answer", "")) + 1][0] == "rxfax"
        (attempt,) = desk.journal.attempts(limit=10)
        assert attempt.outcome is Outcome.RECEIVED and file_start(attempt.file) == b"%PDF-"
        assert "1 page" in attempt.detail and "dropped prematurely" in attempt.detail
    desk.journal.close()
