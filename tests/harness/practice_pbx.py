"""A practice on the real Asterisk: rendered config, a started instance, and the controller.

The controller runs in the test's event loop so tests can look at its state; Asterisk runs
in the chroot from ``backline.localpbx.pbxroot``, on loopback ports of its own, so tests run
side by side.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from backline.app import config
from backline.app.controller import Controller
from backline.app.serve import asterisk_driver
from backline.core.addresses import is_loopback
from backline.core.connections import AsteriskPbx
from backline.core.model import Directory
from backline.journal import open_journal
from backline.localpbx.asterisk import LocalPbx, prepare
from backline.localpbx.instance import AsteriskInstance
from backline.localpbx.pbxroot import ensure_root
from backline.pbx.asterisk.ami import AmiLink
from backline.pbx.asterisk.driver import AsteriskDriver
from backline.render.asterisk import QUIET_EVENTS
from tests.harness.ports import listen_port

START_WITHIN = 60.0
"""Seconds Asterisk may take to start and the AMI logins to succeed: each returns as soon as
it has, so this only bounds a hang (the defaults, 10-20 s, a loaded 2-core machine can miss)."""

AMI_ENV = "BACKLINE_TEST_AMI_SECRET"
PIN_ENV = "BACKLINE_TEST_OUTAGE_PIN"
OUTAGE_PIN = "2468"

# A test practice: two teams, a practice-owned main line, a doctor's direct line with a team
# as extra members, a team line with an extra user, a fax line; one deactivated user.
PRACTICE = """\
practice: {{name: Test Family Medicine, timezone: America/Chicago}}
devices: {{max_per_login: 2}}
users:
  - {{id: ana, name: Dr. Ana Lee, email: ana@t.example, admin: true, extension: "101",
     desk_phones: [ana-desk], location: exam, emergency_callback: "+13125550101"}}
  - {{id: raj, name: Dr. Raj Patel, email: raj@t.example, extension: "102",
     desk_phones: [raj-desk]}}
  - {{id: sam, name: Sam Ortiz, email: sam@t.example, extension: "111",
     desk_phones: [sam-desk, {{name: sam-exam, location: annex,
                              emergency_callback: "+13125550102"}}, sam-lab]}}
  - {{id: jo, name: Jo Kim, email: jo@t.example, extension: "112", desk_phones: [jo-desk]}}
  - {{id: mia, name: Mia Chen, email: mia@t.example, extension: "121",
     desk_phones: [mia-desk]}}
  - {{id: pat, name: Pat Quinn, email: pat@t.example, active: false, extension: "122",
     desk_phones: [pat-desk]}}
{emergency}{hours}{park}teams:
  - {{id: front-desk, name: Front Desk, members: [sam, jo, pat], extension: "200"}}
  - {{id: nurses, name: Nursing, members: [mia, pat], extension: "300"}}
numbers:
  - {{number: "+13125550100", carries: [voice], owner: practice, caller_id_name: Test Main}}
  - {{number: "+13125550101", carries: [voice], owner: "user:ana", members: ["team:nurses"],
     caller_id_name: Dr Ana Lee}}
  - {{number: "+13125550102", carries: [voice], owner: "team:front-desk",
     members: ["user:raj"], caller_id_name: Test Sched}}
  - {{number: "+13125550109", carries: [fax], owner: "team:front-desk"}}
backup:
  pin_env: {pin_env}
  announcement: {{text: "Our phone system is experiencing an outage. If this is an emergency,
    hang up and dial 9 1 1. Otherwise, please try again later."}}
connections:
  pbx:
    kind: asterisk
{node_line}    ami: {{host: 127.0.0.1, port: {ami}, username: backline, secret_env: {ami_env}}}
    agi: {{host: 127.0.0.1, port: {agi}}}
    sip: {{host: {sip_host}, port: {sip}{sip_extra}}}
    trunk: {{host: {trunk_host}, port: {trunk}{trunk_user}{trunk_extra}}}
{pbx_extra}    rtp: {{start: {rtp}, end: {rtp_end}}}
    udptl: {{start: {udptl}, end: {udptl_end}}}
    ring_seconds: {ring_seconds}
    secrets_file: {secrets}
    fax_dir: {fax_dir}
{cdr_line}  storage: {{url: "{storage}"}}
{connections_extra}"""

# Three locations; a desk phone presents the main line on a 911 call unless it (sam-exam) or
# its user (ana) names another callback number.  Tests of the notice add ``notify``.
LOCATIONS = """\
locations:
  - {id: front, address: 1200 W Maple St, city: Chicago, state: IL, zip: "60607",
     where: "Floor 1, front desk"}
  - {id: exam, address: 1200 W Maple St, city: Chicago, state: IL, zip: "60607",
     where: "Floor 2, Exam room 2"}
  - {id: annex, address: 45 Oak Ave, city: Evanston, state: IL, zip: "60201",
     where: "Suite 300"}
"""
EMERGENCY = LOCATIONS + 'emergency: {callback: "+13125550100", location: front}\n'


def emergency_with_notice(notify: str) -> str:
    """The test practice's emergency section with ``notify: {...}`` (YAML flow text)."""
    return LOCATIONS + ('emergency: {callback: "+13125550100", location: front, '
                        f"notify: {notify}}}\n")


@dataclass(frozen=True)
class PracticePorts:
    sip: int
    ami: int
    agi: int
    trunk: int
    rtp: int
    udptl: int

    @classmethod
    def free(cls) -> PracticePorts:
        return cls(sip=listen_port(), ami=listen_port(), agi=listen_port(),
                   trunk=listen_port(),
                   rtp=random.randrange(20000, 29000, 2), udptl=random.randrange(30000, 31900, 2))


def write_practice(tmp: Path, ports: PracticePorts, ring_seconds: int, cdr_file: Path | None,
                   *, node: str = "", storage_url: str = "", carrier_from_user: bool = True,
                   emergency: str = EMERGENCY, trunk_extra: str = "",
                   connections_extra: str = "", hours: str = "", sip_host: str = "127.0.0.1",
                   sip_extra: str = "", trunk_host: str = "127.0.0.1", pbx_extra: str = "",
                   park: str = "", number_keys: Mapping[str, str] | None = None,
                   user_keys: Mapping[str, str] | None = None,
                   phone_keys: Mapping[str, str] | None = None) -> Path:
    """The practice YAML; ``node`` names the PBX node, ``storage_url`` a shared journal
    (default: an SQLite file of its own).  ``carrier_from_user=False`` leaves out the trunk's
    ``from_user``, as config/example.yaml does: the carrier is then recognised by its
    address, which on loopback is every desk phone's address too.  ``emergency``: its
    locations and emergency section; ``trunk_extra``: more trunk keys (``, key: value``);
    ``connections_extra``: more connections (indented by two); ``hours``: an ``hours:``
    section (YAML text, at the top level); ``sip_host`` and ``trunk_host``: where SIP listens
    and the carrier is (loopback unless a test puts them on separate addresses,
    tests/harness/netns.py); ``sip_extra``: more ``sip`` keys (``, key: value``);
    ``pbx_extra``: more ``connections.pbx`` keys (whole lines, indented by four);
    ``park``: a ``park:`` section (YAML text, at the top level); ``number_keys`` and
    ``user_keys``: more keys of a number or a user (its E.164 number or id to YAML flow
    text, ``key: value, ...``); ``phone_keys``: keys of a desk phone listed by name alone
    (its name to YAML flow text).  Without ``cdr_file``
    the controller asks Asterisk where its call record is, as
    `backline up` configs do.  SIP or the carrier off loopback in plain SIP (these tests'
    namespaces) is opted into as an operator would, ``insecure_cleartext: true``
    (docs/security.md): not where every phone's media is required SRTP, nor for a carrier
    over TLS with SRTP (TLS alone leaves the calls' audio plain: carrier media)."""
    path = tmp / "practice.yaml"
    if not is_loopback(sip_host) and not ("encryption: required" in pbx_extra and not any(
            "encryption: optional" in k for k in (phone_keys or {}).values())):
        pbx_extra += "    insecure_cleartext: true\n"
    if not is_loopback(trunk_host) and not ("tls: true" in trunk_extra
                                            and "srtp: true" in trunk_extra):
        trunk_extra += ", insecure_cleartext: true"
    path.write_text(PRACTICE.format(
        emergency=emergency, trunk_extra=trunk_extra, connections_extra=connections_extra,
        hours=hours, sip_host=sip_host, sip_extra=sip_extra, trunk_host=trunk_host,
        pbx_extra=pbx_extra, park=park,
        node_line=f"    node: {node}\n" if node else "",
        trunk_user=", from_user: carrier" if carrier_from_user else "",
        storage=storage_url or f"sqlite://{tmp / 'journal.db'}",
        ami=ports.ami, agi=ports.agi, sip=ports.sip, trunk=ports.trunk, rtp=ports.rtp,
        rtp_end=ports.rtp + 100, udptl=ports.udptl, udptl_end=ports.udptl + 20,
        ring_seconds=ring_seconds, secrets=tmp / "secrets.json", journal=tmp / "journal.db",
        ami_env=AMI_ENV, pin_env=PIN_ENV, fax_dir=tmp / "fax",
        cdr_line=f"    cdr_file: {cdr_file}\n" if cdr_file is not None else ""))
    text = path.read_text()
    anchors = [(f'{{number: "{n}"', k) for n, k in (number_keys or {}).items()] + \
        [(f"{{id: {u},", k) for u, k in (user_keys or {}).items()]
    for anchor, keys in anchors:
        at = text.index(anchor)
        end = text.index("}\n", at)
        text = text[:end] + f", {keys}" + text[end:]
    for phone, keys in (phone_keys or {}).items():
        text = re.sub(rf"(?<=[\[ ]){phone}(?=[],])", f"{{name: {phone}, {keys}}}", text,
                      count=1)
    path.write_text(text)
    return path


class AmiEvents:
    """AMI events as the controller's link sees them, for tests to wait on and inspect."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self._changed = asyncio.Event()

    def record(self, event: Mapping[str, str]) -> None:
        # No time of our own: when a loaded test process read an event says nothing; the
        # event's own time, Asterisk's, is its "Timestamp" (see hear_newexten).
        self.seen.append(dict(event))
        self._changed.set()
        self._changed = asyncio.Event()

    def named(self, name: str) -> list[dict[str, str]]:
        return [e for e in self.seen if e.get("Event") == name]

    async def wait_for(self, predicate: Callable[[dict[str, str]], bool],
                       within: float = 30.0) -> dict[str, str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            changed = self._changed
            for e in self.seen:
                if predicate(e):
                    return e
            try:
                await asyncio.wait_for(changed.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise AssertionError("no such AMI event within "
                                     f"{within}s; saw {len(self.seen)} events") from None


@dataclass
class PracticePbx:
    directory: Directory
    ports: PracticePorts
    instance: AsteriskInstance
    controller: Controller
    driver: AsteriskDriver
    secrets: dict[str, str]
    config_path: Path
    events: AmiEvents

    def secret(self, desk_phone: str) -> str:
        return self.secrets[desk_phone]


def hear_newexten(local: LocalPbx, files: dict[str, str] | None = None) -> dict[str, str]:
    """Let Asterisk raise Newexten again (the rendered manager.conf disables it), and stamp
    each event with Asterisk's own time (``Timestamp``): a test that measures how long a step
    lasted reads the PBX's clock, not when a loaded test process got round to reading it."""
    files = dict(files or {f.name: f.text for f in local.files})
    text = files["manager.conf"]
    kept = ",".join(e for e in QUIET_EVENTS if e != "Newexten")
    heard = text.replace(f"disabledevents={','.join(QUIET_EVENTS)}", f"disabledevents={kept}")
    if heard == text:
        raise RuntimeError("manager.conf has no disabledevents line to change")
    files["manager.conf"] = heard.replace("[general]\n", "[general]\ntimestampevents=yes\n", 1)
    if files["manager.conf"] == heard:
        raise RuntimeError("manager.conf has no [general] section to stamp events in")
    local.instance.set_files(files)
    return files


def expire_quickly(local: LocalPbx, files: dict[str, str] | None = None) -> dict[str, str]:
    """Let desk phones register for as little as a second, and Asterisk remove an expired
    registration within a second (the rendered pjsip.conf keeps Asterisk's 60 s and 30 s):
    tests watch registrations expire without waiting minutes."""
    files = dict(files or {f.name: f.text for f in local.files})
    text = files["pjsip.conf"]
    for anchor, line in (("type=global\n", "contact_expiration_check_interval=1\n"),
                         ("type=aor\nmax_contacts=", "minimum_expiration=1\n")):
        if anchor not in text:
            raise RuntimeError(f"pjsip.conf has no {anchor!r} to change")
        head, tail = anchor.split("\n", 1)
        text = text.replace(anchor, f"{head}\n{line}{tail}", 1)
    files["pjsip.conf"] = text
    local.instance.set_files(files)
    return files


@asynccontextmanager
async def practice_pbx(tmp: Path, name: str, ring_seconds: int = 6, *,
                       controller_in_process: bool = True, node: str = "",
                       storage_url: str = "", observe: bool = True,
                       carrier_from_user: bool = True, emergency: str = EMERGENCY,
                       trunk_extra: str = "", connections_extra: str = "",
                       quick_expiry: bool = False, hours: str = "",
                       clock: Callable[[], datetime] | None = None,
                       sip_host: str = "127.0.0.1", sip_extra: str = "",
                       trunk_host: str = "127.0.0.1", trunk_port: int | None = None,
                       pbx_extra: str = "", sip_port: int | None = None, park: str = "",
                       number_keys: Mapping[str, str] | None = None,
                       user_keys: Mapping[str, str] | None = None,
                       phone_keys: Mapping[str, str] | None = None,
                       ) -> AsyncIterator[PracticePbx]:
    """Asterisk running the test practice, and the controller in this event loop (or, with
    ``controller_in_process=False``, not started: the test runs ``backline run`` itself).

    ``observe=False`` leaves out the tests' own AMI session (``PracticePbx.events`` stays
    empty): benchmarks measure the controller's process, not this watcher's parsing.
    ``carrier_from_user=False``: the carrier is recognised by address (see write_practice).
    ``quick_expiry`` lets registrations expire within seconds (``expire_quickly``).
    ``hours``: the practice's ``hours:`` section; ``park``: its ``park:`` section;
    ``number_keys``, ``user_keys``, ``phone_keys``: more keys of a number, a user or a desk
    phone (see write_practice);
    ``clock``: the controller's clock.
    ``sip_host``, ``sip_port``, ``sip_extra``, ``trunk_host``, ``trunk_port`` and
    ``pbx_extra``: see
    write_practice (a test on separate addresses runs this inside the PBX's namespace:
    tests/harness/netns.py)."""
    # Restored when the practice ends: the next test in this worker must not inherit them
    # (tests/test_hygiene.py). A secret the test set itself (test_crash_restart) is kept.
    with pytest.MonkeyPatch.context() as env:
        if AMI_ENV not in os.environ:
            env.setenv(AMI_ENV, "test-" + os.urandom(9).hex())
        env.setenv(PIN_ENV, OUTAGE_PIN)
        ports = PracticePorts.free()
        if trunk_port is not None:
            ports = dataclasses.replace(ports, trunk=trunk_port)
        if sip_port is not None:
            ports = dataclasses.replace(ports, sip=sip_port)
        root = await asyncio.to_thread(ensure_root)
        # A fresh tree every time: Asterisk keeps registrations in its astdb across restarts.
        name = f"{name}-{os.urandom(3).hex()}"
        cdr_file = root / "srv" / f"backline-{name}" / "log" / "cdr-csv" / "Master.csv"
        path = write_practice(tmp, ports, ring_seconds, cdr_file, node=node,
                              storage_url=storage_url, carrier_from_user=carrier_from_user,
                              emergency=emergency, trunk_extra=trunk_extra,
                              connections_extra=connections_extra, hours=hours,
                              sip_host=sip_host, sip_extra=sip_extra, trunk_host=trunk_host,
                              pbx_extra=pbx_extra, park=park, number_keys=number_keys,
                              user_keys=user_keys, phone_keys=phone_keys)
        directory = config.load(path).directory
        local = await asyncio.to_thread(prepare, directory, name, root=root)
        files = None
        if observe:  # the tests follow each call's dialplan steps, which production leaves out
            files = hear_newexten(local)
        if quick_expiry:
            expire_quickly(local, files)
        secrets = json.loads((tmp / "secrets.json").read_text())
        journal = open_journal(directory.connections.storage.url)
        controller = Controller(directory, journal, clock=clock)
        pbx = directory.connections.pbx
        assert isinstance(pbx, AsteriskPbx)
        driver = asterisk_driver(controller, pbx, os.environ[AMI_ENV])
        # The tests watch Asterisk on an AMI session of their own: the controller's session asks
        # only for the events the controller uses.
        events = AmiEvents()
        observed = ("DialBegin", "DialEnd", "Newexten", "ContactStatus", "Hangup", "HangupRequest")

        async def only_observed() -> None:
            # Asked of Asterisk at every login: unfiltered, a call sends some 120 events (VarSet
            # above all) that this process would parse only to drop, on the controller's loop.
            for event_name in observed:
                await observer.action({"Action": "Filter", "Operation": "Add",
                                       "Filter": f"Event: {event_name}"}, within=30)

        observer = AmiLink(pbx.ami.host, pbx.ami.port, pbx.ami_username, os.environ[AMI_ENV],
                           on_login=only_observed)
        for event_name in observed:
            observer.on_event(event_name, events.record)
        await asyncio.to_thread(local.instance.start, START_WITHIN)
        if observe:
            await observer.connect(within=START_WITHIN)
        stop = asyncio.Event()
        controller.attach(driver)
        # Not started, it keeps no mode: its rounds would report it to the journal as a
        # running controller whose PBX link is down, which `backline outage engage` then
        # waits for in vain beside the test's `backline run`.
        watcher = asyncio.create_task(controller.keep_mode(stop)) if controller_in_process \
            else None
        try:
            if controller_in_process:
                await driver.start(ami_within=START_WITHIN)
            yield PracticePbx(directory, ports, local.instance, controller, driver, secrets, path,
                              events)
        finally:
            stop.set()
            if watcher is not None:
                await watcher
            await driver.stop()
            if observe:
                observer.close()
            await asyncio.to_thread(local.instance.stop)
            await asyncio.to_thread(local.instance.remove)
            journal.close()
