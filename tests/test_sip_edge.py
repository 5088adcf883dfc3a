"""The SIP edge on separate addresses (tests/harness/netns.py): the carrier on a WAN, the
PBX host between, desk phones on the practice LAN.  Asterisk and the controller run in the
PBX's namespace, SIPp phones and callers in theirs; the audio each leg carried is counted by
Asterisk (its RTP statistics on each channel), as in test_asterisk_transfers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.netns import Topology
from tests.harness.practice_pbx import PracticePbx, practice_pbx
from tests.harness.sipp import Host
from tests.harness.transfer_phone import talking_caller, talking_phone, tone_file
from tests.test_asterisk_transfers import until_heard

pytestmark = [pytest.mark.asterisk,
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]

DIRECT = "+13125550101"  # Dr. Lee's line: her desk phone rings
PATIENT = "+17205550141"


@pytest.fixture()
def net() -> Iterator[Topology]:
    with Topology() as topology:
        yield topology


def sip(t: Topology, p: PracticePbx) -> tuple[str, int]:
    return (t.pbx_lan, p.ports.sip)


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
                await p.driver.wait_registered({"ana"}, within=10)
                caller = talking_caller(sip(net, p), tmp_path, DIRECT, from_user=PATIENT,
                                        audio=tone, host=Host(net.carrier, net.wan.name))
                answered = await p.events.wait_for(
                    lambda e: e.get("Event") == "DialEnd" and e.get("DialStatus") == "ANSWER",
                    within=20)
                assert answered["DestChannel"].startswith("PJSIP/ana-desk-")
                await until_heard(p, answered["Channel"], answered["DestChannel"])
            finally:
                phone.kill()
                if caller is not None:
                    caller.kill()
    net.pbx.run(body)
