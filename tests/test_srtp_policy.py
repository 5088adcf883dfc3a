"""``encryption: required`` against desk phones that cannot keep it, on separate addresses
(tests/harness/netns.py): baresip phones on the LAN over TLS, one without SRTP; a SIPp
carrier on the WAN.  A plain-RTP offer to 911 is taken and sent to the carrier with the
callback number (DESIGN.md section 12: an emergency call never waits on the practice's
policy); any other plain-RTP call is refused; an SRTP call goes through sealed."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backline.localpbx.instance_files import LOG_FILE
from tests.harness.baresip import Baresip, start_baresip, write_wav
from tests.harness.netns import Topology
from tests.harness.practice_pbx import PracticePbx, practice_pbx
from tests.harness.sipp import DeskPhoneMode, Host, SippProcess, answering_phone
from tests.harness.tones import rtp_frames_with_tones, tone_samples, udp_payloads
from tests.test_asterisk_transfers import rtp
from tests.test_emergency import MAIN, assert_presents
from tests.test_tls_phones import (
    CALLER,
    PATIENT,
    PHONE,
    TLS_PORT,
    account,
    capture,
    encrypted,
    frames_with,
    phone_on_lan,
    until_sent,
)

pytestmark = [pytest.mark.asterisk,
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]



@pytest.fixture()
def net() -> Iterator[Topology]:
    with Topology() as topology:
        yield topology


def tls_uri(net: Topology, user: str) -> str:
    return f"sip:{user}@{net.pbx_lan}:{TLS_PORT};transport=tls"


async def refused_call(phone: Baresip, uri: str) -> str:
    """Dial ``uri`` and return how the call ended (the phone's CALL_CLOSED reason)."""
    since = len(phone.events)
    await phone.command("dial", uri)
    closed = await phone.wait_event("CALL_CLOSED", since=since)
    assert not [e for e in phone.events[since:] if e.get("type") == "CALL_ESTABLISHED"]
    return str(closed.get("param"))


def test_a_phone_without_srtp_reaches_911_with_its_callback_number_and_nothing_else(
        net: Topology, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ca = tmp_path / "practice-ca"
    # Dr. Patel's phone (no SRTP) says PHONE's tones, Dr. Lee's (SRTP) CALLER's.
    raj_says = write_wav(tmp_path / "raj.wav", tone_samples(PHONE) * 10)
    ana_says = write_wav(tmp_path / "ana.wav", tone_samples(CALLER) * 10)

    async def body() -> None:
        async with practice_pbx(tmp_path, "tls-911", carrier_from_user=False,
                                sip_host=net.pbx_lan, trunk_host=net.carrier,
                                trunk_port=5060, pbx_extra=encrypted(ca)) as p, \
                capture(net.lan, tmp_path / "lan.pcap"):
            carrier = answering_phone(tmp_path, DeskPhoneMode.ANSWER_AND_HANG_UP,
                                      name="carrier", port=5060, talk_ms=4000,
                                      host=Host(net.carrier, net.wan.name))
            raj = await phone_on_lan(net, p, tmp_path / "raj", ca, raj_says,
                                     account(p, net, "raj", srtp=False))
            ana: Baresip | None = None
            try:
                ana = await start_baresip(net.lan, tmp_path / "ana", address=net.phone(1),
                                          ca=ca / "ca.pem", says=ana_says,
                                          accounts=[account(p, net, "ana")])
                await ana.wait_registered(account(p, net, "ana"))
                await p.driver.wait_registered({"ana", "raj"}, within=30)
                await calls(net, raj, ana, carrier)
                # Each refusal logged and counted, with the phone's name and what it lacked,
                # never the number it dialled.
                await p.driver.ami.action({"Action": "Ping"}, within=30)  # its events read
                assert b"backline_desk_calls_unencrypted_refused_total 2.0" in \
                    p.controller.metrics.render()
                told = [r.getMessage() for r in caplog.records if "refused (encryption" in
                        r.getMessage()]
                assert told == ["desk phone raj-desk: a call without SRTP refused "
                                "(encryption: required)"] * 2
                assert not [r for r in caplog.records if PATIENT in r.getMessage()]
                pbx_log = p.instance.host_path(p.instance.dir("log") / LOG_FILE).read_text()
                warned = [line for line in pbx_log.splitlines()
                          if "] WARNING[" in line and "call refused" in line]
                assert len(warned) == 2 and not [w for w in warned if PATIENT in w], warned
            finally:
                await raj.stop()
                if ana is not None:
                    await ana.stop()
                carrier.kill()
    net.pbx.run(body)

    lan = tmp_path / "lan.pcap"
    # SIP only inside TLS, the 911 call's included.
    assert frames_with(lan, 'frame contains "SIP/2.0"') == 0
    assert frames_with(lan, "sip") == 0
    media = udp_payloads(lan)
    # The 911 call's audio crossed the LAN as the phone offered it, in the clear (the one
    # call plain RTP is taken for); Dr. Lee's call's audio did not, it was SRTP.
    assert rtp_frames_with_tones(media, PHONE)
    assert rtp_frames_with_tones(media, CALLER) == []


async def calls(net: Topology, raj: Baresip, ana: Baresip, carrier: SippProcess) -> None:
    wait_for_invites = carrier.wait_for_invites
    # 911 from the phone without SRTP: taken, and out to the carrier with the callback
    # number and the practice's name.
    since = len(raj.events)
    await raj.command("dial", tls_uri(net, "911"))
    await raj.wait_event("CALL_ESTABLISHED", since=since, within=30)
    (invite,) = await asyncio.to_thread(wait_for_invites, 1, 30)
    assert_presents(invite, MAIN)
    await raj.wait_event("CALL_CLOSED", since=since, within=30)  # the carrier hung up
    # So is 933, another of the practice's emergency numbers.
    since = len(raj.events)
    await raj.command("dial", tls_uri(net, "933"))
    await raj.wait_event("CALL_ESTABLISHED", since=since, within=30)
    invites = await asyncio.to_thread(wait_for_invites, 2, 30)
    assert_presents(invites[1], MAIN, "933")
    await raj.wait_event("CALL_CLOSED", since=since, within=30)

    # Anything else from it is refused (488), and never reaches the carrier.
    assert "488" in await refused_call(raj, tls_uri(net, PATIENT))
    assert "488" in await refused_call(raj, tls_uri(net, "101"))

    # Dr. Lee's SRTP phone calls out as ever, with the main line's caller ID.
    since = len(ana.events)
    await ana.command("dial", tls_uri(net, PATIENT))
    await ana.wait_event("CALL_ESTABLISHED", since=since, within=30)
    invites = await asyncio.to_thread(wait_for_invites, 3, 30)
    assert len(invites) == 3
    assert invites[2].start_line.startswith(f"INVITE sip:{PATIENT}@"), invites[2].start_line
    assert MAIN in (invites[2].header("P-Asserted-Identity") or "")
    await ana.wait_event("CALL_CLOSED", since=since, within=30)


def test_a_lobby_phone_left_optional_calls_out_and_rings_a_phone_that_must_use_srtp(
        net: Topology, tmp_path: Path) -> None:
    ca = tmp_path / "practice-ca"
    raj_says = write_wav(tmp_path / "raj.wav", tone_samples(PHONE) * 10)
    ana_says = write_wav(tmp_path / "ana.wav", tone_samples(CALLER) * 10)

    ports: dict[str, int] = {}  # each leg's phone's RTP port, as Asterisk sends to it

    async def body() -> None:
        # The practice requires SRTP; Dr. Patel's phone (no SRTP) is allowed plain RTP.
        async with practice_pbx(tmp_path, "tls-lobby", carrier_from_user=False,
                                sip_host=net.pbx_lan, trunk_host=net.carrier,
                                trunk_port=5060, pbx_extra=encrypted(ca),
                                phone_keys={"raj-desk": "encryption: optional"}) as p, \
                capture(net.lan, tmp_path / "lan.pcap"):
            carrier = answering_phone(tmp_path, DeskPhoneMode.ANSWER_AND_HANG_UP,
                                      name="carrier", port=5060, talk_ms=2000,
                                      host=Host(net.carrier, net.wan.name))
            raj = await phone_on_lan(net, p, tmp_path / "raj", ca, raj_says,
                                     account(p, net, "raj", srtp=False))
            ana: Baresip | None = None
            try:
                ana = await start_baresip(net.lan, tmp_path / "ana", address=net.phone(1),
                                          ca=ca / "ca.pem", says=ana_says,
                                          accounts=[account(p, net, "ana")])
                await ana.wait_registered(account(p, net, "ana"))
                await p.driver.wait_registered({"ana", "raj"}, within=30)
                # Out to a patient, plain RTP: taken.
                since = len(raj.events)
                await raj.command("dial", tls_uri(net, PATIENT))
                await raj.wait_event("CALL_ESTABLISHED", since=since, within=30)
                (invite,) = await asyncio.to_thread(carrier.wait_for_invites, 1, 30)
                assert invite.start_line.startswith(f"INVITE sip:{PATIENT}@")
                await raj.wait_event("CALL_CLOSED", since=since, within=30)
                # To Dr. Lee (extension 101): her phone, which must use SRTP, rings through
                # its SRTP-only twin and talks.
                since = len(raj.events)
                await raj.command("dial", tls_uri(net, "101"))
                await ana.wait_event("CALL_INCOMING", within=30)
                await ana.command("accept")
                answered = await p.events.wait_for(
                    lambda e: e.get("Event") == "DialEnd" and e.get("DialStatus") == "ANSWER"
                    and e.get("DestChannel", "").startswith("PJSIP/ana-desk-"), within=30)
                assert answered["DestChannel"].startswith("PJSIP/ana-desk-SRTP-")
                # Each phone has said something and been sent some of the other's words.
                lobby, sealed = answered["Channel"], answered["DestChannel"]
                await until_sent(p, sealed, 100)
                await until_received(p, sealed, 50)
                await until_sent(p, lobby, await rtp(p, lobby, "txcount") + 50)
                for leg, channel in (("lobby", lobby), ("sealed", sealed)):
                    reply: Any = await p.driver.ami.action({
                        "Action": "Getvar", "Channel": channel,
                        "Variable": "CHANNEL(rtp,dest)"}, within=30)
                    ports[leg] = int(str(reply.get("Value")).rpartition(":")[2])
                await ana.command("hangup")
                await raj.wait_event("CALL_CLOSED", since=since, within=30)
            finally:
                await raj.stop()
                if ana is not None:
                    await ana.stop()
                carrier.kill()
    net.pbx.run(body)

    # On the LAN, the lobby phone's leg is plain as it offered (both voices audible there);
    # Dr. Lee's leg is SRTP: neither voice can be heard on it.
    lan = tmp_path / "lan.pcap"
    lobby_leg = payloads_of(lan, ports["lobby"])
    assert rtp_frames_with_tones(lobby_leg, PHONE)
    assert rtp_frames_with_tones(lobby_leg, CALLER)
    sealed_leg = payloads_of(lan, ports["sealed"])
    assert len(sealed_leg) >= 100
    assert rtp_frames_with_tones(sealed_leg, PHONE + CALLER) == []


async def until_received(p: PracticePbx, channel: str, packets: int,
                         within: float = 30) -> None:
    """Until Asterisk has received ``packets`` RTP packets on ``channel``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (got := await rtp(p, channel, "rxcount")) < packets:
        if loop.time() > deadline:
            raise AssertionError(f"only {got} packets received on {channel}")
        await asyncio.sleep(0.1)  # a poll of Asterisk's counter, not a wait for time


def payloads_of(pcap: Path, port: int) -> list[bytes]:
    """The UDP payloads to or from ``port`` in ``pcap`` (tshark)."""
    done = subprocess.run(["tshark", "-n", "-r", str(pcap), "-Y", f"udp.port == {port}",
                           "-T", "fields", "-e", "udp.payload"],
                          capture_output=True, text=True, check=True, timeout=120)
    return [bytes.fromhex(line.replace(":", "")) for line in done.stdout.split()]


def test_a_parked_call_nobody_took_rings_back_the_parker_through_its_srtp_twin(
        net: Topology, tmp_path: Path) -> None:
    """A call parked by a phone that must use SRTP comes back to that phone (res_parking's
    comeback context, PARKER naming the phone's own endpoint, as when it parked from a call
    it placed): it rings through the SRTP-only twin, which the phone accepts; the phone's
    own endpoint would offer SRTP in plain RTP/AVP, which it refuses."""
    ca = tmp_path / "practice-ca"
    says = write_wav(tmp_path / "ana.wav", tone_samples(CALLER) * 3)

    async def body() -> None:
        async with practice_pbx(tmp_path, "tls-park", carrier_from_user=False,
                                sip_host=net.pbx_lan, trunk_host=net.carrier,
                                trunk_port=5060, pbx_extra=encrypted(ca),
                                park='park: {extension: "700", slots: "701-703"}\n') as p:
            ana = await phone_on_lan(net, p, tmp_path / "ana", ca, says, account(p, net, "ana"))
            try:
                await p.driver.wait_registered({"ana"}, within=30)
                await p.driver.ami.action({
                    "Action": "Originate", "Channel": "Local/s@backline-refuse",
                    "Context": "backline-park-timeout", "Exten": "PJSIP_ana-desk",
                    "Priority": "1", "Variable": "PARKER=PJSIP/ana-desk",
                    "Async": "true"}, within=30)
                await ana.wait_event("CALL_INCOMING", within=30)
                await ana.command("accept")
                answered = await p.events.wait_for(
                    lambda e: e.get("Event") == "DialEnd" and e.get("DialStatus") == "ANSWER"
                    and e.get("DestChannel", "").startswith("PJSIP/"), within=30)
                assert answered["DestChannel"].startswith("PJSIP/ana-desk-SRTP-")
                await ana.command("hangup")
            finally:
                await ana.stop()
    net.pbx.run(body)
