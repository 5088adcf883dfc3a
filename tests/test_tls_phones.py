"""Desk phones over TLS with SRTP (``connections.pbx.tls`` with a practice CA, and
``encryption: required``), on separate addresses (tests/harness/netns.py): baresip is the
desk phone on the LAN (tests/harness/baresip.py), trusting the CA ``backline render`` made;
SIPp is the carrier's caller on the WAN.  Audio is recognised by its content (sequences of
tones, tests/harness/tones.py), in what the phone recorded and in packets tshark captured on
each side of the PBX."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from backline.pbx.asterisk import dialplan_variables as v
from tests.harness.baresip import Account, Baresip, read_wav, start_baresip, write_wav
from tests.harness.carrier_pbx import ACCOUNT, SIP_PORT, SIP_TLS_PORT, start_carrier
from tests.harness.certs import make_ca
from tests.harness.netns import Namespace, Topology
from tests.harness.practice_pbx import PracticePbx, practice_pbx
from tests.harness.sipp import DeskPhoneMode, Host, SippProcess, answering_phone
from tests.harness.tones import (
    holds_sequence,
    rtp_frames_with_tones,
    tone_samples,
    tones_in,
    udp_payloads,
    ulaw_bytes,
)
from tests.harness.transfer_phone import talking_caller
from tests.test_asterisk_transfers import rtp

pytestmark = [pytest.mark.asterisk,
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]

DIRECT = "+13125550101"  # Dr. Lee's line: her desk phone rings
PATIENT = "+17205550141"
TLS_PORT = 5061
# What each party says: tones no other party uses (tests/harness/tones.py).
CALLER = [450, 700, 950, 1200, 1450, 1700, 1950, 2200]
PHONE = [500, 750, 1000, 1250, 1500, 1750, 2000, 2250]
ANNOUNCEMENT = [400, 650, 900, 1150, 1400, 1650, 1900, 2150]
# Packets each way before the call is hung up: two rounds of the 1.92 s sequences.
PACKETS = 200


@pytest.fixture()
def net() -> Iterator[Topology]:
    with Topology() as topology:
        yield topology


def encrypted(ca: Path) -> str:
    """``connections.pbx`` lines: TLS from a practice CA in ``ca``, SRTP required."""
    return (f"    tls: {{port: {TLS_PORT}, practice_ca: {ca}}}\n"
            "    encryption: required\n")


@asynccontextmanager
async def capture(ns: Namespace, pcap: Path) -> AsyncIterator[Path]:
    """tshark on ``ns``'s veth (``up0``) into ``pcap``, from when it says it is capturing
    until the block ends."""
    proc = await asyncio.create_subprocess_exec(
        *ns.argv("tshark", "-n", "-q", "-i", "up0", "-w", str(pcap)),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    said = b""
    while b"Capturing on" not in said:
        line = await asyncio.wait_for(proc.stderr.readline(), 20)
        if not line:
            raise AssertionError(f"tshark did not start: {said.decode(errors='replace')}")
        said += line
    try:
        yield pcap
    finally:
        proc.send_signal(signal.SIGINT)
        await proc.communicate()


async def until_sent(p: PracticePbx, channel: str, packets: int, within: float = 30) -> None:
    """Until Asterisk has sent ``packets`` RTP packets on ``channel``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (sent := await rtp(p, channel, "txcount")) < packets:
        if loop.time() > deadline:
            raise AssertionError(f"only {sent} packets sent on {channel}")
        await asyncio.sleep(0.1)  # a poll of Asterisk's counter, not a wait for time


def frames_with(pcap: Path, display_filter: str) -> int:
    done = subprocess.run(["tshark", "-n", "-r", str(pcap), "-Y", display_filter],
                          capture_output=True, text=True, check=True, timeout=120)
    return len(done.stdout.splitlines())


async def phone_on_lan(net: Topology, p: PracticePbx, folder: Path, ca: Path, says: Path,
                       *accounts: Account) -> Baresip:
    phone = await start_baresip(net.lan, folder, address=net.phone(0), ca=ca / "ca.pem",
                                says=says, accounts=list(accounts))
    try:
        for account in accounts:
            await phone.wait_registered(account)
    except BaseException:
        await phone.stop()  # its own session: it would outlive the test and the namespace
        raise
    return phone


async def answered(p: PracticePbx, phone: Baresip, leg: str) -> dict[str, str]:
    """``phone`` takes the call ringing it: Asterisk's ``DialEnd`` for that answer, whose leg
    to the phone is named ``leg``... (the call's two legs, for waiting on their audio)."""
    await phone.wait_event("CALL_INCOMING", within=30)
    await phone.command("accept")
    end = await p.events.wait_for(
        lambda e: e.get("Event") == "DialEnd" and e.get("DialStatus") == "ANSWER", within=30)
    assert end["DestChannel"].startswith(leg), end
    return end


def trusts(net: Topology, ca: Path) -> subprocess.CompletedProcess[str]:
    """A TLS client on the LAN that verifies the PBX's certificate against ``ca`` and the
    PBX's address (as a phone set to trust only that CA does)."""
    return subprocess.run(
        net.lan.argv("openssl", "s_client", "-brief", "-connect", f"{net.pbx_lan}:{TLS_PORT}",
                     "-CAfile", str(ca), "-verify_return_error", "-verify_ip", net.pbx_lan),
        input="", capture_output=True, text=True, timeout=30, check=False)


def account(p: PracticePbx, net: Topology, login: str, *, srtp: bool = True) -> Account:
    desk = f"{login}-desk"
    return Account(login, desk, p.secret(desk), f"{net.pbx_lan}:{TLS_PORT}", srtp=srtp)


def test_a_tls_srtp_phone_talks_both_ways_hears_the_announcement_and_the_lan_shows_no_clear_sip_or_audio(  # noqa: E501
        net: Topology, tmp_path: Path) -> None:
    ca = tmp_path / "practice-ca"
    says = write_wav(tmp_path / "phone.wav", tone_samples(PHONE) * 10)
    caller_audio = tmp_path / "caller.ulaw"
    caller_audio.write_bytes(ulaw_bytes(tone_samples(CALLER)))

    async def body() -> None:
        async with practice_pbx(tmp_path, "tls", carrier_from_user=False,
                                sip_host=net.pbx_lan, trunk_host=net.carrier,
                                trunk_port=5060, pbx_extra=encrypted(ca)) as p, \
                capture(net.lan, tmp_path / "lan.pcap"), \
                capture(net.wan, tmp_path / "wan.pcap"):
            phone = await phone_on_lan(net, p, tmp_path / "ana", ca, says, account(p, net, "ana"))
            caller = None
            try:
                await p.driver.wait_registered({"ana"}, within=30)
                # baresip 1.0 does not check the certificate it is given; a phone that does
                # (openssl here) finds it signed by the practice CA, for the PBX's address.
                trusted = await asyncio.to_thread(trusts, net, ca / "ca.pem")
                assert trusted.returncode == 0 and "Verification: OK" in trusted.stderr, \
                    trusted.stderr
                # A patient calls Dr. Lee's line: her TLS phone rings, she answers.
                caller = talking_caller((net.pbx_lan, p.ports.sip), tmp_path, DIRECT,
                                        from_user=PATIENT, audio=caller_audio,
                                        host=Host(net.carrier, net.wan.name))
                call = await answered(p, phone, "PJSIP/ana-desk-")
                await until_sent(p, call["DestChannel"], PACKETS)
                await until_sent(p, call["Channel"], PACKETS)
                await phone.command("hangup")
                await phone.wait_event("CALL_CLOSED")

                # The outage announcement, played to her phone as a caller hears it (the
                # announcement's context): the recording is one the test can recognise.
                wav = p.instance.host_path(p.instance.dir("lib") / "sounds" / "announcement.wav")
                write_wav(wav, tone_samples(ANNOUNCEMENT))
                since = len(phone.events)
                # Rung as Backline rings her phone: through its SRTP-only twin (its own
                # endpoint takes plain offers, for 911, and so offers SRTP optimistically).
                await p.driver.ami.action({
                    "Action": "Originate", "Channel": f"PJSIP/ana-desk{v.SRTP_TWIN}",
                    "Context": v.context(v.ANNOUNCE), "Exten": "s", "Priority": "1",
                    "Async": "true"}, within=30)
                await phone.wait_event("CALL_INCOMING", since=since)
                await phone.command("accept")
                await phone.wait_event("CALL_ESTABLISHED", since=since)
                # Asterisk hangs up once the announcement has played.
                await phone.wait_event("CALL_CLOSED", since=since, within=30)
            finally:
                await phone.stop()
                if caller is not None:
                    caller.kill()
    net.pbx.run(body)

    # What the phone heard: the caller, then the announcement, each whole and in order.
    heard = [read_wav(f) for f in sorted((tmp_path / "ana").glob("sound/dump-*-dec.wav"))]
    assert len(heard) == 2
    call, announcement = heard
    assert holds_sequence(tones_in(call, CALLER), CALLER), tones_in(call, CALLER)
    assert holds_sequence(tones_in(announcement, ANNOUNCEMENT), ANNOUNCEMENT)
    # What the caller was sent, in the clear on the carrier's side (plain RTP there, as
    # carriers take it): the phone's voice, whole, so the audio went both ways.
    wan = rtp_frames_with_tones(udp_payloads(tmp_path / "wan.pcap"), PHONE)
    assert holds_sequence([f for i, f in enumerate(wan) if i == 0 or wan[i - 1] != f], PHONE)
    # The LAN: SIP only inside TLS, and media that no listener can hear.
    lan = tmp_path / "lan.pcap"
    assert frames_with(lan, 'frame contains "SIP/2.0"') == 0
    assert frames_with(lan, "sip") == 0
    assert frames_with(lan, f"tls.handshake.type == 1 && tcp.dstport == {TLS_PORT}") >= 1
    lan_media = udp_payloads(lan)
    assert len(lan_media) >= 2 * PACKETS  # the calls' media crossed the LAN ...
    assert rtp_frames_with_tones(lan_media, CALLER + PHONE + ANNOUNCEMENT) == []  # ... sealed


def test_unencrypted_offers_and_keys_over_plain_sip_are_refused_when_encryption_is_required(
        net: Topology, tmp_path: Path) -> None:
    ca = tmp_path / "practice-ca"
    says = write_wav(tmp_path / "phone.wav", tone_samples(PHONE))

    async def body() -> None:
        async with practice_pbx(tmp_path, "tls-refuse", carrier_from_user=False,
                                sip_host=net.pbx_lan, trunk_host=net.carrier,
                                trunk_port=5060, pbx_extra=encrypted(ca)) as p:
            # Dr. Patel's phone left without SRTP: it registers (over TLS), but its call to
            # Dr. Lee (extension 101) offers plain RTP.
            # (baresip dials from its first account.)
            phone = await phone_on_lan(net, p, tmp_path / "phones", ca, says,
                                       account(p, net, "raj", srtp=False),
                                       account(p, net, "ana"))
            try:
                await p.driver.wait_registered({"ana", "raj"}, within=30)
                since = len(phone.events)
                await phone.command("dial", f"sip:101@{net.pbx_lan}:{TLS_PORT};transport=tls")
                closed = await phone.wait_event(
                    "CALL_CLOSED", since=since,
                    match=lambda e: str(e.get("accountaor")).startswith("sip:raj@"))
                assert "488" in str(closed.get("param")), closed
                assert not [e for e in phone.events[since:] if e.get("type") == "CALL_INCOMING"]

                # Jo's phone offers SRTP, but over plain SIP (UDP): its key crosses the LAN
                # readable, so the call is refused as well, and Dr. Lee is never rung.
                jo = Account("jo", "jo-desk", p.secret("jo-desk"),
                             f"{net.pbx_lan}:{p.ports.sip}", transport="udp")
                plain = await start_baresip(net.lan, tmp_path / "jo", address=net.phone(1),
                                            ca=ca / "ca.pem", says=says, accounts=[jo])
                try:
                    await plain.wait_registered(jo)
                    await p.driver.wait_registered({"jo"}, within=30)
                    await plain.command("dial", f"sip:101@{net.pbx_lan}:{p.ports.sip}")
                    closed = await plain.wait_event("CALL_CLOSED")
                    assert "488" in str(closed.get("param")), closed
                finally:
                    await plain.stop()
                assert not [e for e in phone.events[since:] if e.get("type") == "CALL_INCOMING"]
            finally:
                await phone.stop()
    net.pbx.run(body)


TRUNK_PASSWORD_ENV = "BACKLINE_TEST_TRUNK_PASSWORD"


def test_with_tls_to_the_carrier_calls_go_both_ways_and_the_wan_shows_no_clear_sip(
        net: Topology, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = tmp_path / "practice-ca"
    says = write_wav(tmp_path / "phone.wav", tone_samples(PHONE) * 5)
    caller_audio = tmp_path / "caller.ulaw"
    caller_audio.write_bytes(ulaw_bytes(tone_samples(CALLER)))
    # The provider's certificate, from a CA of its own (a public one, for a real provider):
    # the practice verifies it against that CA and the provider's address.
    provider_ca = make_ca(tmp_path / "provider", "provider-ca")
    provider_ca.server("provider", names=f"IP:{net.carrier}")

    async def body() -> None:
        carrier = await asyncio.to_thread(
            start_carrier, net, TLS_PORT, registered=False,
            tls=(tmp_path / "provider" / "provider.pem", tmp_path / "provider" / "provider.key"))
        monkeypatch.setenv(TRUNK_PASSWORD_ENV, carrier.password)
        trunk = (f", username: {ACCOUNT}, password_env: {TRUNK_PASSWORD_ENV}, "
                 f"addresses: [{net.carrier}], tls: true, ca_file: {provider_ca.cert}")
        procs: list[SippProcess] = []
        try:
            async with practice_pbx(tmp_path, "tls-trunk", carrier_from_user=False,
                                    sip_host=net.pbx_lan, trunk_host=net.carrier,
                                    trunk_port=SIP_TLS_PORT, trunk_extra=trunk,
                                    pbx_extra=encrypted(ca)) as p, \
                    capture(net.wan, tmp_path / "wan.pcap"):
                phone = await phone_on_lan(net, p, tmp_path / "ana", ca, says,
                                           account(p, net, "ana"))
                try:
                    await p.driver.wait_registered({"ana"}, within=30)
                    # In: a patient on the telephone network calls Dr. Lee's line; the
                    # provider brings it over TLS and her phone rings.
                    procs.append(talking_caller((net.carrier, SIP_PORT), tmp_path, DIRECT,
                                                from_user=PATIENT, audio=caller_audio,
                                                host=Host(net.pstn, net.wan.name)))
                    call = await answered(p, phone, "PJSIP/ana-desk-")
                    await until_sent(p, call["DestChannel"], PACKETS // 4)
                    await phone.command("hangup")
                    await phone.wait_event("CALL_CLOSED")
                    # Out: she calls the patient back; over TLS through the provider's
                    # challenge, answered on the telephone network.
                    pstn = answering_phone(tmp_path, DeskPhoneMode.ANSWER_AND_HANG_UP,
                                           name="pstn", port=carrier.pstn_port, talk_ms=200,
                                           host=Host(net.pstn, net.wan.name))
                    procs.append(pstn)
                    since = len(phone.events)
                    await phone.command(
                        "dial", f"sip:{PATIENT}@{net.pbx_lan}:{TLS_PORT};transport=tls")
                    await phone.wait_event("CALL_ESTABLISHED", since=since, within=30)
                    (invite,) = await asyncio.to_thread(pstn.wait_for_invites, 1, 30)
                    assert invite.start_line.startswith(f"INVITE sip:{PATIENT}@")
                    await phone.wait_event("CALL_CLOSED", since=since, within=30)
                finally:
                    await phone.stop()
        finally:
            for proc in procs:
                proc.kill()
            await asyncio.to_thread(carrier.stop)
    net.pbx.run(body)

    # Between the practice and the provider: SIP only inside TLS, both ways.
    wan = tmp_path / "wan.pcap"
    assert frames_with(wan, 'frame contains "SIP/2.0"') == 0
    assert frames_with(wan, f"tls.handshake.type == 1 && tcp.dstport == {SIP_TLS_PORT}") >= 1
    assert frames_with(wan, f"tls.handshake.type == 1 && tcp.dstport == {TLS_PORT}") >= 1
