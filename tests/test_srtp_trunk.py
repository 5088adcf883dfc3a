"""SRTP to the carrier (``connections.pbx.trunk.srtp``, SDES inside the trunk's TLS), against
a second Asterisk playing the provider on the WAN (tests/harness/carrier_pbx.py) and a
baresip desk phone on the LAN (tests/harness/netns.py).  tshark on the WAN shows the media
between the practice and the provider; what each party says is a sequence of tones no other
party uses (tests/harness/tones.py).  Without ``srtp`` that media is plain:
tests/test_tls_phones.py::test_a_tls_srtp_phone_talks_both_ways_hears_the_announcement_and_the_lan_shows_no_clear_sip_or_audio
finds the phone's voice whole on the carrier's side."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.baresip import read_wav, write_wav
from tests.harness.carrier_pbx import ACCOUNT, SIP_PORT, SIP_TLS_PORT, start_carrier
from tests.harness.certs import make_ca
from tests.harness.netns import Topology
from tests.harness.practice_pbx import practice_pbx
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
from tests.test_emergency import ANA_LINE, user_part
from tests.test_tls_phones import (
    CALLER,
    DIRECT,
    PATIENT,
    PHONE,
    TLS_PORT,
    TRUNK_PASSWORD_ENV,
    account,
    capture,
    encrypted,
    phone_on_lan,
    until_sent,
)

pytestmark = [pytest.mark.asterisk,
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]


@pytest.fixture()
def net() -> Iterator[Topology]:
    with Topology() as topology:
        yield topology


def trunk(net: Topology, password: str, provider_ca: Path, env: pytest.MonkeyPatch) -> str:
    """The trunk's keys: the provider's account over TLS, SRTP on (its password in the
    environment until the test ends)."""
    env.setenv(TRUNK_PASSWORD_ENV, password)
    return (f", username: {ACCOUNT}, password_env: {TRUNK_PASSWORD_ENV}, "
            f"addresses: [{net.carrier}], tls: true, ca_file: {provider_ca}, srtp: true")


def provider(net: Topology, tmp_path: Path) -> tuple[Path, Path, Path]:
    """The provider's CA, certificate and key (for its address)."""
    ca = make_ca(tmp_path / "provider", "provider-ca")
    ca.server("provider", names=f"IP:{net.carrier}")
    return ca.cert, tmp_path / "provider" / "provider.pem", tmp_path / "provider" / "provider.key"


def test_with_srtp_to_the_carrier_the_wan_carries_no_audible_rtp_and_both_sides_hear(
        net: Topology, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = tmp_path / "practice-ca"
    says = write_wav(tmp_path / "phone.wav", tone_samples(PHONE) * 10)
    caller_audio = tmp_path / "caller.ulaw"
    caller_audio.write_bytes(ulaw_bytes(tone_samples(CALLER) * 3))
    provider_ca, cert, key = provider(net, tmp_path)

    async def body() -> None:
        carrier = await asyncio.to_thread(start_carrier, net, TLS_PORT, registered=False,
                                          tls=(cert, key), srtp=True)
        procs: list[SippProcess] = []
        try:
            async with practice_pbx(tmp_path, "srtp-trunk", carrier_from_user=False,
                                    sip_host=net.pbx_lan, trunk_host=net.carrier,
                                    trunk_port=SIP_TLS_PORT,
                                    trunk_extra=trunk(net, carrier.password, provider_ca,
                                                      monkeypatch),
                                    pbx_extra=encrypted(ca)) as p, \
                    capture(net.wan, tmp_path / "wan.pcap"):
                phone = await phone_on_lan(net, p, tmp_path / "ana", ca, says,
                                           account(p, net, "ana"))
                try:
                    await p.driver.wait_registered({"ana"}, within=30)
                    # In: a patient calls Dr. Lee's line through the provider; she answers.
                    procs.append(talking_caller((net.carrier, SIP_PORT), tmp_path, DIRECT,
                                                from_user=PATIENT, audio=caller_audio,
                                                host=Host(net.pstn, net.wan.name)))
                    await phone.wait_event("CALL_INCOMING", within=30)
                    await phone.command("accept")
                    answered = await p.events.wait_for(
                        lambda e: e.get("Event") == "DialEnd"
                        and e.get("DialStatus") == "ANSWER", within=30)
                    # Both ways, a whole round of each side's tones and more.
                    await until_sent(p, answered["Channel"], 150)
                    await until_sent(p, answered["DestChannel"], 150)
                    await phone.command("hangup")
                    await phone.wait_event("CALL_CLOSED")
                finally:
                    await phone.stop()
        finally:
            for proc in procs:
                proc.kill()
            await asyncio.to_thread(carrier.stop)
    net.pbx.run(body)

    # She heard the patient, whole: the SRTP both ways was keyed and decrypted.
    (heard,) = [read_wav(f) for f in (tmp_path / "ana").glob("sound/dump-*-dec.wav")]
    assert holds_sequence(tones_in(heard, CALLER), CALLER), tones_in(heard, CALLER)
    # Between the practice and the provider: the call's media crossed the WAN, and nobody
    # listening there hears either voice.
    wan = udp_payloads(tmp_path / "wan.pcap")
    assert len(wan) >= 150  # what Asterisk sent the provider, at least
    assert rtp_frames_with_tones(wan, CALLER + PHONE) == []


def test_a_911_call_goes_out_in_the_clear_when_the_carrier_will_not_take_srtp(
        net: Topology, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = tmp_path / "practice-ca"
    says = write_wav(tmp_path / "phone.wav", tone_samples(PHONE) * 5)
    provider_ca, cert, key = provider(net, tmp_path)

    async def body() -> None:
        # The practice asks for SRTP; this provider's account takes plain RTP only.
        carrier = await asyncio.to_thread(start_carrier, net, TLS_PORT, registered=False,
                                          tls=(cert, key), srtp=False)
        pstn = answering_phone(tmp_path, DeskPhoneMode.ANSWER_AND_HANG_UP, name="pstn",
                               port=carrier.pstn_port, talk_ms=500,
                               host=Host(net.pstn, net.wan.name))
        try:
            async with practice_pbx(tmp_path, "srtp-911", carrier_from_user=False,
                                    sip_host=net.pbx_lan, trunk_host=net.carrier,
                                    trunk_port=SIP_TLS_PORT,
                                    trunk_extra=trunk(net, carrier.password, provider_ca,
                                                      monkeypatch),
                                    pbx_extra=encrypted(ca)) as p:
                phone = await phone_on_lan(net, p, tmp_path / "ana", ca, says,
                                           account(p, net, "ana"))
                try:
                    await p.driver.wait_registered({"ana"}, within=30)
                    # An ordinary call fails: the provider refuses the SRTP offer.
                    since = len(phone.events)
                    await phone.command(
                        "dial", f"sip:{PATIENT}@{net.pbx_lan}:{TLS_PORT};transport=tls")
                    await phone.wait_event("CALL_CLOSED", since=since, within=30)
                    assert not [e for e in phone.events[since:]
                                if e.get("type") == "CALL_ESTABLISHED"]
                    assert pstn.invites() == []
                    # 911 goes out all the same, plain, with the callback number.
                    since = len(phone.events)
                    await phone.command(
                        "dial", f"sip:911@{net.pbx_lan}:{TLS_PORT};transport=tls")
                    await phone.wait_event("CALL_ESTABLISHED", since=since, within=30)
                    (invite,) = await asyncio.to_thread(pstn.wait_for_invites, 1, 15)
                    assert invite.start_line.startswith("INVITE sip:911@")
                    assert user_part(invite.header("From") or "") == ANA_LINE
                    await phone.wait_event("CALL_CLOSED", since=since, within=30)
                finally:
                    await phone.stop()
        finally:
            pstn.kill()
            await asyncio.to_thread(carrier.stop)
    net.pbx.run(body)
