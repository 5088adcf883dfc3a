"""A registered desk phone that cannot do SRTP, under ``encryption: required``: rung through
its SRTP-only twin (backline/render/asterisk_srtp.py), it answers the offer 488 and never
rings.  The policy stands (the call is not offered in the clear); Backline says so, by the
phone's name: its log, /metrics, the status page and ``backline doctor``, until the phone
answers an encrypted call or the practice is reloaded.

On separate addresses (tests/harness/netns.py): the refusing phone is SIPp on the LAN behind
tests/harness/tls_edge.py (this SIPp has no TLS), the phone that takes SRTP is baresip, the
caller SIPp on the WAN; the real Asterisk between them."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from backline.app.controller import Controller
from backline.app.serve import asterisk_driver, asterisk_reloader
from backline.core.connections import AsteriskPbx
from backline.journal import open_journal
from backline.pbx.asterisk.driver import AsteriskDriver
from tests.harness.baresip import write_wav
from tests.harness.netns import Topology
from tests.harness.ports import listen_port
from tests.harness.practice_pbx import AMI_ENV, PracticePbx, practice_pbx
from tests.harness.sipp import (
    DeskPhoneMode,
    Host,
    SippProcess,
    answering_phone,
    place_calls,
    register,
)
from tests.harness.tls_edge import TlsEdge
from tests.harness.tones import tone_samples
from tests.test_doctor import doctor, verdicts
from tests.test_tls_phones import (
    DIRECT,
    PATIENT,
    PHONE,
    TLS_PORT,
    account,
    answered,
    encrypted,
    phone_on_lan,
)

pytestmark = [pytest.mark.asterisk,
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]

REFUSALS = b"backline_desk_phone_srtp_refusals_total"
REFUSING = b"backline_desk_phones_refusing_encryption"


@pytest.fixture()
def net() -> Iterator[Topology]:
    with Topology() as topology:
        yield topology


def twin_refused(e: dict[str, str]) -> bool:
    return e.get("Event") == "Hangup" and e.get("TechCause") == "488" \
        and e.get("Channel", "").startswith("PJSIP/ana-desk-SRTP-")


def refusals(p: PracticePbx) -> int:
    return len([e for e in p.events.seen if twin_refused(e)])


async def heard(p: PracticePbx) -> None:
    """Until the controller has read every event Asterisk sent before now (an answer on its
    own AMI session comes after them)."""
    await p.driver.ami.action({"Action": "Ping"}, within=30)


def metric(p: PracticePbx, name: bytes) -> float:
    return metric_of(p.controller, name)


def metric_of(controller: Controller, name: bytes) -> float:
    line = next(x for x in controller.metrics.render().splitlines() if x.startswith(name + b" "))
    return float(line.split()[1])


def encrypted_practice(net: Topology, tmp_path: Path, name: str,
                       status_port: int) -> AbstractAsyncContextManager[PracticePbx]:
    """The practice under ``encryption: required`` (its CA in tmp_path/practice-ca), its
    status site to listen on ``status_port``."""
    return practice_pbx(
        tmp_path, name, carrier_from_user=False, sip_host=net.pbx_lan,
        trunk_host=net.carrier, trunk_port=5060, pbx_extra=encrypted(tmp_path / "practice-ca"),
        connections_extra=f'  status: {{listen: "127.0.0.1:{status_port}"}}\n')


def patient_calls(net: Topology, p: PracticePbx, tmp_path: Path) -> SippProcess:
    """A patient on the WAN calls Dr. Lee's line, which rings her login's phones."""
    return place_calls((net.pbx_lan, p.ports.sip), tmp_path, DIRECT, from_user=PATIENT,
                       host=Host(net.carrier, net.wan.name))


@asynccontextmanager
async def refused_once(net: Topology, p: PracticePbx, tmp_path: Path,
                       ca: Path) -> AsyncIterator[list[SippProcess]]:
    """Dr. Lee's old phone: registered over TLS, but it answers an SRTP offer 488; a
    patient's call has rung it (heard), and the calls placed are ended on leaving."""
    at = Host(net.phone(1), net.lan.name)
    old = answering_phone(tmp_path, DeskPhoneMode.REJECT, name="ana-old", host=at,
                          reject_code=488, reject_reason="Not Acceptable Here",
                          transport="t1")
    edge = await TlsEdge(net.lan, at.address, old.port).start(
        (net.pbx_lan, TLS_PORT), ca / "ca.pem")
    callers: list[SippProcess] = []
    try:
        await asyncio.to_thread(register, (at.address, edge.port), tmp_path,
                                "ana-desk", p.secret("ana-desk"), aor="ana",
                                contact_port=old.port, host=at, transport="t1",
                                timeout=30)
        await p.driver.wait_registered({"ana"}, within=30)
        callers.append(patient_calls(net, p, tmp_path))
        await p.events.wait_for(twin_refused, within=30)
        await heard(p)
        yield callers
    finally:
        for caller in callers:
            caller.kill()
        await edge.close()
        old.kill()


async def refused_again(net: Topology, p: PracticePbx, tmp_path: Path, driver: AsteriskDriver,
                        callers: list[SippProcess]) -> None:
    """With both of the login's phones in the ring set, the next patient's call: the old
    phone refuses it too (the phone that takes SRTP rings)."""
    await driver.wait_registrations(lambda r: len(r.live_registrations("ana")) == 2, within=30)
    callers.append(patient_calls(net, p, tmp_path))
    await p.events.wait_for(lambda _: refusals(p) == 2, within=30)


async def where_ops_look(p: PracticePbx, status_port: int) -> tuple[object, str]:
    """The desk phones /status.json names as refusing encryption, and doctor's verdict."""
    async with ClientSession(f"http://127.0.0.1:{status_port}") as http, \
            http.get("/status.json") as got:
        listed = (await got.json())["desk_phones_refusing_encryption"]
    found = verdicts(await asyncio.to_thread(doctor, p.config_path, "--json"))
    return listed, found["desk phones' encryption"]


def kept(p: PracticePbx) -> list[str]:
    """The desk phones a controller started now would name (the journal's list)."""
    journal = open_journal(p.directory.connections.storage.url)
    try:
        return Controller(p.directory, journal).refusing_encryption.names()
    finally:
        journal.close()


def test_a_registered_phone_refusing_srtp_is_named_until_it_answers_encrypted_or_a_reload(
        net: Topology, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ca = tmp_path / "practice-ca"
    # Not a kernel-chosen port: the controller's AMI and FastAGI connections in the PBX's
    # namespace take theirs from the same ephemeral range before the status site binds.
    status_port = listen_port()
    says = write_wav(tmp_path / "ana.wav", tone_samples(PHONE) * 3)

    async def body() -> None:
        async with encrypted_practice(net, tmp_path, "tls-488", status_port) as p:
            runner = web.AppRunner(p.controller.status_app())
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", status_port).start()
            try:
                async with refused_once(net, p, tmp_path, ca) as callers:
                    told = [r.getMessage() for r in caplog.records
                            if r.name == "backline.asterisk" and "refused the encrypted" in
                            r.getMessage()]
                    assert told == ["desk phone ana-desk refused the encrypted call it was rung "
                                    "with (SIP 488) and does not ring (encryption: required); "
                                    "fix: configure SRTP (SDES, over TLS) on that phone, or mark "
                                    "it `encryption: optional` in its desk_phones entry"], told
                    assert metric(p, REFUSALS) == 1.0 and metric(p, REFUSING) == 1.0
                    listed, verdict = await where_ops_look(p, status_port)
                    assert listed == ["ana-desk"]
                    async with ClientSession(f"http://127.0.0.1:{status_port}") as http, \
                            http.get("/status") as got:
                        page = await got.text()
                        assert "refused the encrypted call" in page and "ana-desk" in page
                    assert verdict.startswith(
                        "warn: ana-desk: refused the encrypted (SRTP) call they were rung with, "
                        "so they do not ring; fix: configure SRTP"), verdict

                    # A reload clears the list (the phone's encryption may have changed) ...
                    result = await asterisk_reloader(p.controller, p.driver, None).reload()
                    assert result.applied, result
                    assert p.controller.refusing_encryption.names() == []
                    assert metric(p, REFUSING) == 0.0
                    await p.controller.refusing_encryption.written()
                    assert kept(p) == []  # nor would a restart name it

                    # ... and the next ring names it again; the same phone (its login) now also
                    # on a phone that takes SRTP, which answers: named no more.
                    phone = await phone_on_lan(net, p, tmp_path / "ana", ca, says,
                                               account(p, net, "ana"))
                    try:
                        await refused_again(net, p, tmp_path, p.driver, callers)
                        await heard(p)
                        assert p.controller.refusing_encryption.names() == ["ana-desk"]
                        await answered(p, phone, "PJSIP/ana-desk-SRTP-")
                        await heard(p)
                        assert p.controller.refusing_encryption.names() == []
                        assert metric(p, REFUSALS) == 2.0 and metric(p, REFUSING) == 0.0
                        await phone.command("hangup")
                    finally:
                        await phone.stop()
                    assert not [r for r in caplog.records if PATIENT in r.getMessage()]
            finally:
                await runner.cleanup()
    net.pbx.run(body)


def test_a_phone_refusing_srtp_is_still_named_after_a_controller_restart_until_it_answers_encrypted(
        net: Topology, tmp_path: Path) -> None:
    # Held in memory alone, the list emptied at every restart (an upgrade, a crash) until
    # the phone was rung again: ops lost the warning while the phone still did not ring.
    ca = tmp_path / "practice-ca"
    status_port = listen_port()  # not kernel-chosen: see the test above
    says = write_wav(tmp_path / "ana.wav", tone_samples(PHONE) * 3)

    async def body() -> None:
        async with encrypted_practice(net, tmp_path, "tls-488-restart", status_port) as p:
            config = p.directory.connections.pbx
            assert isinstance(config, AsteriskPbx)
            back: Controller | None = None
            driver: AsteriskDriver | None = None
            runner: web.AppRunner | None = None
            try:
                async with refused_once(net, p, tmp_path, ca) as callers:
                    assert p.controller.refusing_encryption.names() == ["ana-desk"]

                    # The controller stops as SIGTERM stops it; a new one starts on the journal.
                    await p.driver.stop()
                    await p.controller.close()
                    back = Controller(p.directory,
                                      open_journal(p.directory.connections.storage.url))
                    driver = asterisk_driver(back, config, os.environ[AMI_ENV])
                    back.attach(driver)
                    await driver.start()
                    runner = web.AppRunner(back.status_app())
                    await runner.setup()
                    await web.TCPSite(runner, "127.0.0.1", status_port).start()
                    # Nobody rang the phone since: still named, everywhere ops look.
                    assert back.refusing_encryption.names() == ["ana-desk"]
                    assert metric_of(back, REFUSING) == 1.0
                    listed, verdict = await where_ops_look(p, status_port)
                    assert listed == ["ana-desk"]
                    assert verdict.startswith("warn: ana-desk: refused"), verdict

                    # The login's phone that takes SRTP answers the next call: named no more,
                    # and a restart after that names nobody either.
                    phone = await phone_on_lan(net, p, tmp_path / "ana", ca, says,
                                               account(p, net, "ana"))
                    try:
                        await refused_again(net, p, tmp_path, driver, callers)
                        await answered(p, phone, "PJSIP/ana-desk-SRTP-")
                        await driver.ami.action({"Action": "Ping"}, within=30)  # heard it
                        assert back.refusing_encryption.names() == []
                        await phone.command("hangup")
                    finally:
                        await phone.stop()
                    await back.refusing_encryption.written()
                    assert kept(p) == []
            finally:
                if runner is not None:
                    await runner.cleanup()
                if driver is not None:
                    await driver.stop()
                if back is not None:
                    await back.close()
                    back.journal.close()
    net.pbx.run(body)
