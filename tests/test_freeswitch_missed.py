"""Missed calls on FreeSWITCH, over the Event Socket's wire format only (no FreeSWITCH runs
here): a call the controller sent to ring a number's desk phones ends, and its
CHANNEL_HANGUP_COMPLETE on the call's own socket says whether a desk phone took it
(``originate_disposition``) and whether the voicemail kept a message (``voicemail_message_len``);
one nobody took that left no message is one inbox item for the number's members, once.

What the scripted switch does to the caller's channel is FreeSWITCH's (the source read:
signalwire/freeswitch): ``bridge`` leaves ``originate_disposition`` and ``DIALSTATUS`` as
switch_ivr_originate.c sets them on its way out (``call accepted``/``ANSWER`` when a desk
phone answered, ``NO_ANSWER``/``NOANSWER`` once ``call_timeout`` passed,
``ORIGINATOR_CANCEL``/``CANCEL`` when the caller hung up while they rang); ``voicemail``
(mod_voicemail.c, voicemail_leave_main) keeps a message through deliver_vm (the
``vm::maintenance`` event, then ``voicemail_message_len`` on the channel), or deletes a
recording under ``min-record-len`` and keeps nothing.  A caller who hangs up during an
application is gone at once (CHANNEL_HANGUP) while the application finishes;
CHANNEL_HANGUP_COMPLETE comes after it returned (tests/harness/freeswitch_rig.py).
"""

from __future__ import annotations

import asyncio
import logging
import uuid as uuidlib
from collections.abc import Callable
from pathlib import Path

import pytest

from backline.core.records import AttemptKind, Outcome
from backline.pbx.freeswitch import names
from tests.harness.eslserver import Channel
from tests.harness.freeswitch_rig import DOMAIN, FsRig, SwitchWithApps
from tests.harness.inbox_server import InboxServer
from tests.test_freeswitch_voicemail import (
    OTHER,
    PATIENT,
    SECONDS,
    TEAM,
    Left,
    controller_on,
    fire_left,
    practice,
    recording,
)

# How each scripted application ends, per call (by uuid): effects on the caller's channel.
Effect = Callable[[FsRig, Channel], None]


def rings_out(rig: FsRig, channel: Channel) -> None:
    """Nobody answers within ``call_timeout``: the bridge fails, the call goes on."""
    channel.variables.update(originate_disposition="NO_ANSWER", DIALSTATUS="NOANSWER")


def cancels_while_ringing(rig: FsRig, channel: Channel) -> None:
    """The caller hangs up while the desk phones ring."""
    rig.server.hang_up(channel, "ORIGINATOR_CANCEL")
    channel.variables.update(originate_disposition="ORIGINATOR_CANCEL", DIALSTATUS="CANCEL")


def answered(rig: FsRig, channel: Channel) -> None:
    """A desk phone answers; when it hangs up, hangup_after_bridge ends the call."""
    channel.variables.update(originate_disposition="call accepted", DIALSTATUS="ANSWER")
    rig.server.hang_up(channel)


def hangs_up_in_greeting(rig: FsRig, channel: Channel) -> None:
    rig.server.hang_up(channel)


def hangs_up_at_the_beep(rig: FsRig, channel: Channel) -> None:
    """Hung up as the recording started (under a second, min-record-len): deleted, nothing
    kept."""
    rig.server.hang_up(channel)


def leaves_a_message(storage: Path) -> Effect:
    """The caller speaks, then hangs up (CHANNEL_HANGUP: nothing kept yet); deliver_vm
    keeps the message (its event, VM-UUID the call's uuid) and voicemail_leave_main sets
    ``voicemail_message_len`` (``HH:MM:SS``) before the application returns."""
    def leave(rig: FsRig, channel: Channel) -> None:
        path = storage / "voicemail" / names.VOICEMAIL_PROFILE / DOMAIN / TEAM[-10:] / \
            f"msg_{uuidlib.uuid4()}.wav"
        left = Left(channel, TEAM[-10:], path, recording(path))
        rig.server.hang_up(channel)
        fire_left(rig, left)
        channel.variables.update(voicemail_account=left.box, voicemail_domain=DOMAIN,
                                 voicemail_file_path=str(path),
                                 voicemail_message_len=f"00:00:{SECONDS:02d}")
    return leave


class Script:
    """The ending of each call, by uuid, applied when its application runs."""

    def __init__(self, rig: FsRig) -> None:
        self.rig = rig
        self.endings: dict[str, dict[str, Effect]] = {}
        server = rig.server
        assert isinstance(server, SwitchWithApps)
        for app in ("bridge", "voicemail"):
            server.app_effects[app] = self._effect(app)

    def _effect(self, app: str) -> Callable[[Channel, str | None], None]:
        def run(channel: Channel, arg: str | None) -> None:
            effect = self.endings.get(channel.uuid, {}).get(app)
            if effect is not None:
                effect(self.rig, channel)
        return run

    async def call(self, channel: Channel, **endings: Effect) -> list[str]:
        """Place ``channel``'s call, ending as ``endings`` say (per application); return the
        applications run; wait for the work the call's end started."""
        self.endings[channel.uuid] = endings
        _, apps = await self.rig.call(channel)
        await self.rig.driver.stop_after()
        return [app for app, _ in apps]


def carrier_call(to: str = TEAM, caller: str = PATIENT, uuid: str | None = None) -> Channel:
    return Channel(uuid=uuid or str(uuidlib.uuid4()), caller_id_number=caller,
                   caller_id_name="Bob Caller", destination_number=to,
                   context=names.CARRIER_CONTEXT,
                   variables={names.ROUTE: names.INBOUND, names.NUMBER: to})


async def registered(rig: FsRig) -> None:
    for phone in ("ana-p0", "sam-p0", "jo-p0", "mia-p0"):
        rig.register(phone)
    await rig.driver.wait_registered({"ana", "sam", "jo", "mia"}, 30)


async def test_a_call_rung_and_unanswered_that_left_no_message_is_one_missed_call_for_members(
        tmp_path: Path, inbox: InboxServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    d = practice(tmp_path, inbox.url)
    async with controller_on(d) as (controller, rig):
        await registered(rig)
        script = Script(rig)
        greeting, cancelled, beep = carrier_call(), carrier_call(OTHER), carrier_call()
        assert "voicemail" in await script.call(greeting, bridge=rings_out,
                                                voicemail=hangs_up_in_greeting)
        await script.call(cancelled, bridge=cancels_while_ringing)
        await script.call(beep, bridge=rings_out, voicemail=hangs_up_at_the_beep)
        await inbox.wait_for(3, within=30)
        assert controller.inbox is not None
        await controller.inbox.drained(within=30)
        missed = [a for a in controller.journal.attempts() if a.outcome is Outcome.MISSED]
    assert sorted(a.key for a in missed) == sorted(
        f"missed:{c.uuid}" for c in (greeting, cancelled, beep))
    docs = inbox.items()
    assert [(doc["kind"], doc["outcome"], doc["from"], doc["to"]) for doc in docs] == [
        ("call", "missed", PATIENT, TEAM), ("call", "missed", PATIENT, OTHER),
        ("call", "missed", PATIENT, TEAM)]
    # Only the number's members: front-desk's active members and ana on TEAM (never lee,
    # deactivated, or mia); mia alone on hers.
    assert [doc["notify"] for doc in docs] == [
        {"users": ["ana", "jo", "sam"]}, {"users": ["mia"]}, {"users": ["ana", "jo", "sam"]}]
    assert not any("file" in doc for doc in docs)
    assert inbox.tries() == 3
    assert not [r for r in caplog.records if "7205550141" in r.getMessage()]


async def test_a_call_that_left_a_message_is_the_message_only_and_an_answered_one_nothing(
        tmp_path: Path, inbox: InboxServer) -> None:
    """The caller hangs up while recording: CHANNEL_HANGUP comes before the message is kept
    (no ``voicemail_message_len`` on it yet), CHANNEL_HANGUP_COMPLETE after; read from the
    first, the call would be a missed call besides its message."""
    d = practice(tmp_path, inbox.url)
    async with controller_on(d) as (controller, rig):
        await registered(rig)
        script = Script(rig)
        message, taken = carrier_call(), carrier_call(caller="+17205550146")
        await script.call(message, bridge=rings_out,
                          voicemail=leaves_a_message(tmp_path / "freeswitch-storage"))
        await script.call(taken, bridge=answered)
        await inbox.wait_for(1, within=30)
        assert controller.inbox is not None
        await controller.inbox.drained(within=30)
        journal = controller.journal
        assert not [a for a in journal.attempts() if a.outcome is Outcome.MISSED]
        assert [a.key for a in journal.attempts() if a.kind is AttemptKind.VOICEMAIL] == [
            f"voicemail:{message.uuid}"]
    [doc] = inbox.items()
    assert (doc["kind"], doc["from"], doc["to"]) == ("voicemail", PATIENT, TEAM)
    assert inbox.tries() == 1


async def test_a_repeated_hangup_a_reconnect_and_a_restart_file_a_missed_call_once(
        tmp_path: Path, inbox: InboxServer) -> None:
    d = practice(tmp_path, inbox.url)
    call = carrier_call()
    logins: asyncio.Queue[int] = asyncio.Queue()
    async with controller_on(d, logins=logins) as (controller, rig):
        await asyncio.wait_for(logins.get(), 30)
        await registered(rig)
        script = Script(rig)
        await script.call(call, bridge=rings_out, voicemail=hangs_up_in_greeting)
        await inbox.wait_for(1, within=30)
        # The same call handed to the socket again (a call sent back through the dialplan
        # keeps its uuid) hangs up again: its hangup is told twice.
        await script.call(carrier_call(uuid=call.uuid), bridge=rings_out,
                          voicemail=hangs_up_in_greeting)
        rig.server.connections[0].drop()  # the inbound link drops; the driver logs in again
        await asyncio.wait_for(logins.get(), 30)  # and its imports are done
        assert controller.inbox is not None
        await controller.inbox.drained(within=30)
    # A restart: a new controller on the same journal hears the same hangup again, then a
    # new call's.
    async with controller_on(d) as (controller, rig):
        await registered(rig)
        script = Script(rig)
        later = carrier_call(caller="+17205550147")
        await script.call(carrier_call(uuid=call.uuid), bridge=rings_out,
                          voicemail=hangs_up_in_greeting)
        await script.call(later, bridge=rings_out, voicemail=hangs_up_in_greeting)
        await inbox.wait_for(2, within=30)
        assert controller.inbox is not None
        await controller.inbox.drained(within=30)
        keys = [a.key for a in controller.journal.attempts() if a.outcome is Outcome.MISSED]
    assert sorted(keys) == sorted([f"missed:{call.uuid}", f"missed:{later.uuid}"])
    assert [(doc["outcome"], doc["from"]) for doc in inbox.items()] == [
        ("missed", PATIENT), ("missed", "+17205550147")]
    assert inbox.tries() == 2
