"""The SIP edge on separate addresses (tests/harness/netns.py): the carrier on a WAN, the
PBX host between, desk phones on the practice LAN.  Asterisk and the controller run in the
PBX's namespace, SIPp phones and callers in theirs; the audio each leg carried is counted by
Asterisk (its RTP statistics on each channel), as in test_asterisk_transfers."""

from __future__ import annotations

import asyncio
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.baresip import Account, read_wav, start_baresip, write_wav
from tests.harness.carrier_pbx import ACCOUNT, security_events, start_carrier
from tests.harness.carrier_pbx import SIP_PORT as CARRIER_SIP
from tests.harness.netns import Topology
from tests.harness.practice_pbx import PracticePbx, practice_pbx
from tests.harness.sipp import (
    DeskPhoneMode,
    Host,
    SippError,
    SippProcess,
    answering_phone,
    place_calls,
    register,
)
from tests.harness.transfer_phone import talking_caller, talking_phone, tone_file
from tests.test_asterisk_transfers import until_heard

pytestmark = [pytest.mark.asterisk,
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]

DIRECT = "+13125550101"  # Dr. Lee's line: her desk phone rings
MAIN = "+13125550100"  # the practice's main line: what her calls out present by default
PATIENT = "+17205550141"


@pytest.fixture()
def net() -> Iterator[Topology]:
    with Topology() as topology:
        yield topology


def sip(t: Topology, p: PracticePbx) -> tuple[str, int]:
    return (t.pbx_lan, p.ports.sip)


def lan(t: Topology) -> str:
    """``connections.pbx.lan``: desk phones only from the practice's LAN."""
    return f"    lan: [{t.addresses.lan_net}]\n"


def test_a_carrier_call_on_the_wan_rings_a_desk_phone_on_the_lan_with_audio_both_ways(
        net: Topology, tmp_path: Path) -> None:
    async def body() -> None:
        tone = tone_file(tmp_path / "tone.ulaw")
        async with practice_pbx(tmp_path, "edge-addr", carrier_from_user=False,
                                sip_host=net.pbx_lan, trunk_host=net.carrier,
                                trunk_port=5060) as p:
            phone = await asyncio.to_thread(
                talking_phone, sip(net, p), tmp_path, "ana-desk", p.secret("ana-desk"),
                aor="ana", audio=tone, host=Host(net.phone(0), net.lan.name))
            caller = None
            try:
                await p.driver.wait_registered({"ana"}, within=30)
                caller = talking_caller(sip(net, p), tmp_path, DIRECT, from_user=PATIENT,
                                        audio=tone, host=Host(net.carrier, net.wan.name))
                answered = await p.events.wait_for(
                    lambda e: e.get("Event") == "DialEnd" and e.get("DialStatus") == "ANSWER",
                    within=30)
                assert answered["DestChannel"].startswith("PJSIP/ana-desk-")
                await until_heard(p, answered["Channel"], answered["DestChannel"])
            finally:
                phone.kill()
                if caller is not None:
                    caller.kill()
    net.pbx.run(body)


TRUNK_PASSWORD_ENV = "BACKLINE_TEST_TRUNK_PASSWORD"


async def carrier_calls_and_is_called(net: Topology, tmp: Path, env: pytest.MonkeyPatch, *,
                                      registered: bool, did_form: str) -> None:
    """Against the provider (tests/harness/carrier_pbx.py): a PSTN caller's call to Dr. Lee's
    line rings her desk phone on the LAN, audio both ways; her call out reaches the PSTN
    through the provider's digest challenge, with the main line's caller ID."""
    tone = tone_file(tmp / "tone.ulaw")
    sip_port = net.pbx.free_port(net.pbx_lan)
    carrier = await asyncio.to_thread(start_carrier, net, sip_port, registered=registered,
                                      did_form=did_form)
    env.setenv(TRUNK_PASSWORD_ENV, carrier.password)  # restored after the test
    trunk = (f", username: {ACCOUNT}, password_env: {TRUNK_PASSWORD_ENV}"
             + (", register: true" if registered else
                f", addresses: [{net.carrier}, {net.carrier_2}/32]"))
    procs: list[SippProcess] = []
    try:
        async with practice_pbx(tmp, "edge-trunk", carrier_from_user=False,
                                sip_host=net.pbx_lan, trunk_host=net.carrier,
                                trunk_port=CARRIER_SIP, trunk_extra=trunk,
                                sip_port=sip_port, pbx_extra=lan(net),
                                sip_extra=f", public_address: {net.pbx_wan}" if net.nat
                                else "") as p:
            phones = Host(net.phone(0), net.lan.name)
            procs.append(await asyncio.to_thread(
                talking_phone, sip(net, p), tmp, "ana-desk", p.secret("ana-desk"),
                aor="ana", audio=tone, host=phones))
            await p.driver.wait_registered({"ana"}, within=30)
            if registered:  # the provider knows where we are only from our REGISTER
                await until_registered(p)
            procs.append(talking_caller((net.carrier, CARRIER_SIP), tmp, DIRECT,
                                        from_user=PATIENT, audio=tone,
                                        host=Host(net.pstn, net.wan.name)))
            answered = await p.events.wait_for(
                lambda e: e.get("Event") == "DialEnd" and e.get("DialStatus") == "ANSWER",
                within=30)
            assert answered["DestChannel"].startswith("PJSIP/ana-desk-")
            await until_heard(p, answered["Channel"], answered["DestChannel"])
            await p.driver.ami.action({"Action": "Hangup", "Channel": answered["Channel"]},
                                      within=30)
            if not registered:
                # From the carrier's second address, with the number (11 digits) in To
                # alone: the Request-URI names no user.
                # (behind the router, the practice is its public address)
                public = (net.pbx_wan if net.nat else net.pbx_lan, p.ports.sip)
                procs.append(place_calls(public, tmp, DIRECT[1:], from_user=PATIENT,
                                         number_in_to_only=True, timeout=20,
                                         host=Host(net.carrier_2, net.wan.name)))
                again = await p.events.wait_for(
                    lambda e: e.get("Event") == "DialEnd" and e.get("DialStatus") == "ANSWER"
                    and e.get("Uniqueid") != answered["Uniqueid"], within=30)
                assert again["DestChannel"].startswith("PJSIP/ana-desk-")
                await p.driver.ami.action({"Action": "Hangup", "Channel": again["Channel"]},
                                          within=30)
                assert (await asyncio.to_thread(procs[-1].wait, 60)).ok, procs[-1].describe()

            # Out: the provider challenges our INVITE; answered, the call reaches the PSTN
            # from the main line (Dr. Lee's default), with its caller ID.
            pstn = answering_phone(tmp, DeskPhoneMode.ANSWER_AND_HANG_UP, name="pstn",
                                   port=carrier.pstn_port, talk_ms=200,
                                   host=Host(net.pstn, net.wan.name))
            procs.append(pstn)
            # (the registration's own challenge, when there is one, logged first)
            before = challenged(await asyncio.to_thread(
                carrier.wait_for_log, lambda log: len(challenged(log)) >= int(registered)))
            out = place_calls(sip(net, p), tmp, PATIENT, from_user="ana-desk",
                              password=p.secret("ana-desk"), timeout=20, host=phones)
            procs.append(out)
            assert (await asyncio.to_thread(out.wait, 30)).ok, out.describe()
            (invite,) = await asyncio.to_thread(pstn.wait_for_invites, 1, 30)
            assert invite.start_line.startswith(f"INVITE sip:{PATIENT}@")
            assert MAIN in (invite.header("From") or ""), invite.header("From")
            assert "Test Main" in (invite.header("From") or "")
            # One more dialog was challenged and then authenticated: our INVITE's.
            log = await asyncio.to_thread(
                carrier.wait_for_log, lambda log: len(challenged(log)) > len(before))
            assert len(challenged(log)) == len(before) + 1, log
    finally:
        for proc in procs:
            proc.kill()
        await asyncio.to_thread(carrier.stop)


def challenged(log: str) -> set[str]:
    """The dialogs (Call-IDs) of the practice's account the provider challenged and then
    accepted the answer of."""
    def sessions(event: str) -> set[str]:
        return {m.group(1) for line in security_events(log, event)
                if 'AccountID="practice"' in line
                for m in [re.search(r'SessionID="([^"]+)"', line)] if m}
    return sessions("ChallengeSent") & sessions("SuccessfulAuth")


async def until_registered(p: PracticePbx, within: float = 30) -> None:
    """Until Asterisk says our registration to the carrier is accepted."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        text = await asyncio.to_thread(p.instance.cli, "pjsip show registrations")
        if " Registered" in text:
            return
        if loop.time() > deadline:
            raise AssertionError(f"not registered to the carrier: {text}")
        await asyncio.sleep(0.2)  # a poll of Asterisk's state, not a wait for time


def test_registration_trunk_calls_both_ways_through_the_carriers_digest(
        net: Topology, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The provider sends the number as 1NXXNXXXXXX in the Request-URI of our contact.
    net.pbx.run(lambda: carrier_calls_and_is_called(net, tmp_path, monkeypatch, registered=True,
                                                    did_form="${EXTEN:1}"))


def test_address_trunk_calls_both_ways_through_the_carriers_digest(
        net: Topology, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The provider sends the number as NXXNXXXXXX (ten digits).
    net.pbx.run(lambda: carrier_calls_and_is_called(net, tmp_path, monkeypatch, registered=False,
                                                    did_form="${EXTEN:2}"))


def refused(detail: str) -> list[str]:
    """The final responses a SIPp's account of its run (SippProcess.describe) received."""
    return re.findall(r"received +SIP/2\.0 ([1-9][0-9][0-9])", detail)


def test_outside_the_lan_and_the_carrier_a_register_or_an_invite_is_refused(
        net: Topology, tmp_path: Path) -> None:
    async def body() -> None:
        async with practice_pbx(tmp_path, "edge-acl", carrier_from_user=False,
                                sip_host=net.pbx_lan, trunk_host=net.carrier,
                                trunk_port=CARRIER_SIP, pbx_extra=lan(net)) as p:
            stranger = Host(net.stranger, net.wan.name)
            # Dr. Lee's own credentials, from the internet: refused before any challenge.
            with pytest.raises(SippError) as caught:
                await asyncio.to_thread(register, sip(net, p), tmp_path, "ana-desk",
                                        p.secret("ana-desk"), contact_port=5060,
                                        aor="ana", host=stranger)
            assert set(refused(caught.value.detail)) == {"403"}, caught.value.detail
            # The same from the carrier's address: a desk phone is not the carrier.
            with pytest.raises(SippError) as caught:
                await asyncio.to_thread(register, sip(net, p), tmp_path, "ana-desk",
                                        p.secret("ana-desk"), contact_port=5060,
                                        aor="ana", host=Host(net.carrier, net.wan.name))
            # (the desk phone's own rule answers its credentials as if they were wrong)
            assert "200" not in refused(caught.value.detail), caught.value.detail
            # A call to Dr. Lee's line from the internet, as if from the carrier.
            call = place_calls(sip(net, p), tmp_path, DIRECT, from_user=PATIENT,
                               timeout=30, host=stranger)  # ends at the 403
            assert not (await asyncio.to_thread(call.wait, 60)).ok
            assert set(refused(call.describe())) == {"403"}, call.describe()
            # From the LAN the desk phone registers; nothing of the stranger's reached the
            # controller.
            await asyncio.to_thread(register, sip(net, p), tmp_path, "ana-desk",
                                    p.secret("ana-desk"), contact_port=5060, aor="ana",
                                    host=Host(net.phone(0), net.lan.name))
            await p.driver.wait_registered({"ana"}, within=30)
            assert p.controller.journal.attempts() == []
    net.pbx.run(body)


@pytest.fixture()
def behind_nat() -> Iterator[Topology]:
    with Topology(nat=True) as topology:
        yield topology


def test_behind_the_practices_nat_the_carrier_reaches_the_pbx_at_its_public_address(
        behind_nat: Topology, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The PBX on the LAN behind a masquerading router (tests/harness/netns.py): the carrier
    # sees only the router's address, which the PBX's signalling and SDP must carry.
    behind_nat.pbx.run(lambda: carrier_calls_and_is_called(
        behind_nat, tmp_path, monkeypatch, registered=False, did_form="${EXTEN}"))


@pytest.fixture()
def branch() -> Iterator[Topology]:
    with Topology(branch=True) as topology:
        yield topology


def test_a_desk_phone_behind_a_nat_of_its_own_registers_rings_and_talks_both_ways(
        branch: Topology, tmp_path: Path) -> None:
    # baresip (one socket, as desk phones are) in a branch office behind a masquerading
    # router (tests/harness/netns.py): its Contact names a private address the PBX has no
    # route to; the PBX must answer it where its REGISTER came from.
    net = branch
    tone = tone_file(tmp_path / "caller.ulaw")
    says = write_wav(tmp_path / "phone.wav",
                     [int(8000 * math.sin(2 * math.pi * 600 * i / 8000)) for i in range(16000)])
    folder = tmp_path / "ana"

    async def body() -> None:
        extra = (f"    lan: [{net.addresses.lan_net}, {net.site_net}]\n"
                 "    desk_phones_behind_nat: true\n")
        async with practice_pbx(tmp_path, "edge-natphone", carrier_from_user=False,
                                sip_host=net.pbx_lan, trunk_host=net.carrier,
                                trunk_port=CARRIER_SIP, pbx_extra=extra) as p:
            ana = Account("ana", "ana-desk", p.secret("ana-desk"),
                          f"{net.pbx_lan}:{p.ports.sip}", srtp=False, transport="udp")
            phone = await start_baresip(net.home, folder, address=net.home_phone(0), ca=None,
                                        says=says, accounts=[ana])
            caller = None
            try:
                await phone.wait_registered(ana)
                await p.driver.wait_registered({"ana"}, within=30)
                caller = talking_caller(sip(net, p), tmp_path, DIRECT, from_user=PATIENT,
                                        audio=tone, host=Host(net.carrier, net.wan.name))
                await phone.wait_event("CALL_INCOMING", within=30)
                await phone.command("accept")
                answered = await p.events.wait_for(
                    lambda e: e.get("Event") == "DialEnd" and e.get("DialStatus") == "ANSWER",
                    within=30)
                assert answered["DestChannel"].startswith("PJSIP/ana-desk-")
                await until_heard(p, answered["Channel"], answered["DestChannel"])
                await phone.command("hangup")
                await phone.wait_event("CALL_CLOSED")
            finally:
                await phone.stop()
                if caller is not None:
                    caller.kill()
    net.pbx.run(body)
    # What the phone heard, through its NAT: the caller's tone (at least a fifth of a
    # second of it), not silence.
    (heard,) = [read_wav(f) for f in folder.glob("sound/dump-*-dec.wav")]
    loud = sum(1 for s in heard if abs(s) > 2000)
    assert loud > 1600, (loud, max(map(abs, heard), default=0))


def test_with_geolocation_a_911_call_answers_the_carriers_digest_challenge(
        net: Topology, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """911 goes out through the carrier's outbound-only twin when the location is sent
    (trunk.geolocation): that twin answers the provider's challenge as the trunk does, or a
    provider that authenticates our INVITEs would never see the call."""
    async def body() -> None:
        sip_port = net.pbx.free_port(net.pbx_lan)
        carrier = await asyncio.to_thread(start_carrier, net, sip_port, registered=False)
        monkeypatch.setenv(TRUNK_PASSWORD_ENV, carrier.password)
        trunk = (f", username: {ACCOUNT}, password_env: {TRUNK_PASSWORD_ENV}, "
                 f"addresses: [{net.carrier}], geolocation: true")
        pstn = answering_phone(tmp_path, DeskPhoneMode.ANSWER_AND_HANG_UP, name="pstn",
                               port=carrier.pstn_port, talk_ms=200,
                               host=Host(net.pstn, net.wan.name))
        try:
            async with practice_pbx(tmp_path, "edge-911", carrier_from_user=False,
                                    sip_host=net.pbx_lan, trunk_host=net.carrier,
                                    trunk_port=CARRIER_SIP, trunk_extra=trunk,
                                    sip_port=sip_port, pbx_extra=lan(net)) as p:
                out = place_calls(sip(net, p), tmp_path, "911", from_user="ana-desk",
                                  password=p.secret("ana-desk"), timeout=20,
                                  host=Host(net.phone(0), net.lan.name))
                assert (await asyncio.to_thread(out.wait, 30)).ok, out.describe()
                (invite,) = await asyncio.to_thread(pstn.wait_for_invites, 1, 30)
                assert invite.start_line.startswith("INVITE sip:911@")
                assert DIRECT in (invite.header("From") or "")  # Dr. Lee's callback number
        finally:
            pstn.kill()
            await asyncio.to_thread(carrier.stop)
    net.pbx.run(body)
