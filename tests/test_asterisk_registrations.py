"""A login's desk phones registering, refreshing, unregistering and expiring on the real
Asterisk: the controller rings exactly the contacts Asterisk holds, each as its own phone.

The truth is Asterisk's CLI (``pjsip show contacts``) and which SIPp phone sent which
REGISTER; the controller's side is its ring set for a number sam is a member of.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from backline.core.connections import AsteriskPbx, HostPort
from backline.core.routing import ring_set
from backline.localpbx.ports import free_port
from backline.pbx.asterisk.driver import AsteriskDriver
from tests.harness.practice_pbx import AMI_ENV, PracticePbx, practice_pbx
from tests.harness.sipp import DeskPhoneMode, SippProcess, answering_phone, place_calls, register

pytestmark = pytest.mark.asterisk

SCHED = "+13125550102"  # team front-desk (sam, jo) and raj: sam's phones ring for it
SAM = ("sam-desk", "sam-exam", "sam-lab")  # devices.max_per_login is 2 in the test practice
_CONTACT_LINE = re.compile(r"^\s*Contact:\s+(?P<aor>[^/\s<]+)/(?P<uri>\S+)\s", re.MULTILINE)


@pytest.fixture()
async def pbx(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[PracticePbx]:
    name = "r-" + request.node.name[5:35].replace("[", "-").replace("]", "")
    async with practice_pbx(tmp_path, name, ring_seconds=5, quick_expiry=True) as p:
        yield p


@pytest.fixture()
def phones(tmp_path: Path) -> Iterator[dict[str, SippProcess]]:
    """sam's desk phones, not registered yet: sam-lab answers (and hangs up after 200 ms,
    which ends a call quickly), the others ring until the PBX cancels."""
    out = {phone: answering_phone(tmp_path, DeskPhoneMode.RING, name=phone)
           for phone in SAM if phone != "sam-lab"}
    out["sam-lab"] = answering_phone(tmp_path, DeskPhoneMode.ANSWER_AND_HANG_UP,
                                     name="sam-lab", talk_ms=200)
    try:
        yield out
    finally:
        for proc in out.values():
            proc.kill()


def contact(phone: SippProcess) -> str:
    """The Contact a phone registers (tests/harness/sipp/register.xml): its UAS port."""
    return f"sip:sam@127.0.0.1:{phone.port}"


async def send_register(p: PracticePbx, tmp: Path, phones: dict[str, SippProcess], phone: str,
                        expires: int) -> None:
    """One REGISTER from ``phone`` (0 unregisters); returns once Asterisk answered 200."""
    await asyncio.to_thread(register, ("127.0.0.1", p.ports.sip), tmp, phone, p.secret(phone),
                            contact_port=phones[phone].port, aor="sam", expires=expires)


def asterisk_holds(p: PracticePbx, phones: dict[str, SippProcess]) -> set[tuple[str, str]]:
    """sam's contacts as ``pjsip show contacts`` lists them, each with the phone whose
    REGISTER carried it."""
    by_contact = {contact(proc): phone for phone, proc in phones.items()}
    uris = {m["uri"] for m in _CONTACT_LINE.finditer(p.instance.cli("pjsip show contacts"))
            if m["aor"] == "sam"}
    return {(by_contact.get(uri, "?"), uri) for uri in uris}


def controller_rings(p: PracticePbx, driver: AsteriskDriver | None = None
                     ) -> set[tuple[str, str]]:
    """The (desk phone, contact) pairs of sam the controller would ring for SCHED now."""
    registrations = (driver or p.driver).registrations
    _, _, contacts = ring_set(p.controller.book, registrations, SCHED)
    return {(phone, uri) for phone, uri in contacts if phone in SAM}


async def agreed(p: PracticePbx, phones: dict[str, SippProcess], why: str,
                 driver: AsteriskDriver | None = None) -> None:
    """Wait (on the controller's registration changes) until it rings what Asterisk holds."""
    driver = driver or p.driver
    held = await asyncio.to_thread(asterisk_holds, p, phones)
    try:
        await driver.wait_registrations(lambda _: controller_rings(p, driver) == held,
                                        within=30)
    except TimeoutError:
        raise AssertionError(f"{why}: Asterisk holds {sorted(held)}, the controller rings "
                             f"{sorted(controller_rings(p, driver))}") from None


async def test_a_refreshed_phone_keeps_ringing_when_another_registers_past_the_limit(
        pbx: PracticePbx, phones: dict[str, SippProcess], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="backline.asterisk")
    # Asterisk drops the contact that expires soonest; each REGISTER asks for a longer expiry
    # than the one before, so that within one second its choice is still unambiguous.
    for phone, expires in (("sam-desk", 600), ("sam-exam", 1200), ("sam-desk", 1800),
                           ("sam-lab", 2400)):
        await send_register(pbx, tmp_path, phones, phone, expires)
        await agreed(pbx, phones, f"after {phone} registered for {expires} s")
    desk, exam, lab = (phones[p] for p in SAM)
    assert await asyncio.to_thread(asterisk_holds, pbx, phones) == {
        ("sam-desk", contact(desk)), ("sam-lab", contact(lab))}
    # The log names the phone each contact belongs to: sam-exam was dropped, not sam-desk.
    assert "desk phone sam-lab registered (login sam now holds 2 of 2)" in caplog.text
    assert "desk phone sam-exam is no longer registered" in caplog.text
    assert "desk phone sam-desk is no longer registered" not in caplog.text

    caller = place_calls(("127.0.0.1", pbx.ports.sip), tmp_path, SCHED, from_user="carrier",
                         timeout=40)
    await asyncio.to_thread(desk.wait_for_invites, 1, 30)
    await asyncio.to_thread(lab.wait_for_invites, 1, 30)
    assert (await asyncio.to_thread(caller.wait, 60)).ok, caller.describe()
    assert exam.invites() == []
    # Each contact was dialled through its own phone's endpoint (DialString: ENDPOINT/URI).
    dialled = {tuple(e["DialString"].split("/", 1)) for e in pbx.events.named("DialBegin")}
    assert dialled == {("sam-desk", contact(desk)), ("sam-lab", contact(lab))}


async def test_a_controller_started_later_rings_the_phones_already_registered(
        pbx: PracticePbx, phones: dict[str, SippProcess], tmp_path: Path) -> None:
    await send_register(pbx, tmp_path, phones, "sam-exam", 600)
    await send_register(pbx, tmp_path, phones, "sam-lab", 1200)
    await agreed(pbx, phones, "before")
    # A controller that logs in now (restarted, or back after a network blip) hears no event
    # about these contacts until the phones refresh, maybe an hour later: it learns them
    # from Asterisk's contact list at login.
    conf = pbx.directory.connections.pbx
    assert isinstance(conf, AsteriskPbx)
    later = AsteriskDriver(replace(conf, agi=HostPort("127.0.0.1", free_port())),
                           os.environ[AMI_ENV], pbx.controller.book,
                           pbx.controller.conversations, pbx.controller.mode,
                           pbx.controller.record_attempt)
    await later.start()
    try:
        await agreed(pbx, phones, "a controller started later", later)
        assert controller_rings(pbx, later) == {("sam-exam", contact(phones["sam-exam"])),
                                                ("sam-lab", contact(phones["sam-lab"]))}
    finally:
        await later.stop()


STEPS = 40


def lapsed(p: PracticePbx, uri: str) -> Callable[[dict[str, str]], bool]:
    """Matches Asterisk removing ``uri`` from now on (not a removal already seen)."""
    seen = len(p.events.seen)
    return lambda e: (e.get("ContactStatus") == "Removed" and e.get("URI") == uri
                      and any(e is later for later in p.events.seen[seen:]))


async def test_random_registrations_of_one_login_ring_what_asterisk_holds(
        pbx: PracticePbx, phones: dict[str, SippProcess], tmp_path: Path) -> None:
    # A seeded walk (BACKLINE_REGISTRATION_SEED picks another): register, refresh,
    # unregister and expire from three phones of one login limited to two registrations,
    # checked against Asterisk after every step.
    seed = int(os.environ.get("BACKLINE_REGISTRATION_SEED", "20261204"))
    rng = random.Random(seed)
    done: list[str] = []
    for _ in range(STEPS):
        held = {phone for phone, _ in await asyncio.to_thread(asterisk_holds, pbx, phones)}
        phone = rng.choice(SAM)
        action = rng.choice(["register", "register", "unregister", "expire"]
                            if phone in held else ["register", "register", "expire"])
        if action == "register":  # a first registration, or a refresh
            expires = rng.randrange(300, 3600)
            await send_register(pbx, tmp_path, phones, phone, expires)
            done.append(f"{phone} {'refresh' if phone in held else 'register'} {expires}")
        elif action == "unregister":
            await send_register(pbx, tmp_path, phones, phone, 0)
            done.append(f"{phone} unregister")
        else:  # registered for a second, then silent: Asterisk removes it when it lapses
            await send_register(pbx, tmp_path, phones, phone, 1)
            await pbx.events.wait_for(lapsed(pbx, contact(phones[phone])), within=30)
            done.append(f"{phone} expire")
        await agreed(pbx, phones, f"seed {seed}, after {done}")
        assert len(controller_rings(pbx)) <= 2
    assert {s.split()[1] for s in done} >= {"register", "refresh", "unregister", "expire"}, \
        f"seed {seed} did not try every kind of step: {done}"
