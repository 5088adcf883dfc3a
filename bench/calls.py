"""Calls per second through Asterisk, with the controller in the path and without it.

Two arms, each on its own fresh Asterisk from the repo's chroot running the test practice's
rendered configuration (tests/harness/practice_pbx.py):

- controller: the carrier context asks the controller over FastAGI, as in production (the
  controller runs in this process, FastAGI and AMI, and journals every call);
- static: the same files, but the carrier context's ``AGI(.../inbound)`` step replaced by
  ``Set()`` steps writing the very variables the controller would write for the number
  (computed by the same pure core for the same registrations, and checked against the
  controller's own decision), so the only difference between the arms is the controller.

Both get two changes to that configuration, the same in each: RTP bound to 127.0.0.1 (on the
wildcard address Asterisk sends DNS queries off the machine on every call, see
rtp_on_loopback()) and 2000 RTP ports instead of the test practice's 100 (widen_rtp_range()).

The load: a SIPp carrier calls Dr. Lee's direct line, whose ring set is two registered SIPp
desk phones: ana-desk answers at once, mia-desk rings until Asterisk cancels it.  The carrier
hangs up 100 ms after the answer, so each call is the set-up and tear-down of two legs and a
cancelled third, and no media.  Rates rise step by step, each step a bounded number of calls,
the two arms taking turns (so that other work on the machine hits both alike).  A step fails
on a failed call (SIPp's statistics: a timeout, an error response, or an answer by anything
but ana's phone) or if its answers arrive more than 5% slower than the target rate; an arm
stops at a rate that fails twice in a row, and the run when both have, or the rates or the
time budget run out.  Sustained = the rate of an arm's highest passing step.

Prints a table per arm, the ratio controller/static (goal >= 0.9), the FastAGI decision
latency p50/p99 over the controller arm's passing steps (goal: p99 under 5 ms; from the
request's last header line to the decision's first byte out: the controller's part), the whole
session's p99 too (the decision plus Asterisk's answer to it: "sess p99"), and the AMI events
per call that reached the controller.  Every SIPp and Asterisk process is ours, on
127.0.0.1, each bounded by its own timeout as well as by ours.
Run: .venv/bin/python -m bench.calls [--quick] [--keep] [--trace]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import re
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from backline.app.serve import controller_runner
from backline.core.connections import AsteriskPbx
from backline.core.decisions import InboundCall, RingDeskPhones
from backline.core.model import Directory
from backline.core.outage import Mode
from backline.core.ownership import OwnershipBook
from backline.core.registrations import Registrations
from backline.core.routing import route_inbound
from backline.localpbx.instance import AsteriskError, AsteriskInstance
from backline.localpbx.ports import LOOPBACK
from backline.pbx.asterisk.commands import inbound_variables, packed
from backline.pbx.asterisk.dialplan_variables import CARRIER_CONTEXT
from backline.pbx.ports import LinkDown
from bench.sipp_load import LoadResult, LoadSipp, carrier, desk_phone, finish, percentile
from tests.harness.practice_pbx import PracticePbx, practice_pbx
from tests.harness.sipp import SippError, register

GOAL_RATIO = 0.9
GOAL_P99_MS = 5.0
NUMBER = "+13125550101"  # Dr. Ana Lee's direct line; the nurses (mia) are its members
CARRIER_USER = "carrier"  # the test practice's trunk From user
ANSWERS = ("ana-desk", "ana")  # (desk phone, login): answers every call at once
RINGS = ("mia-desk", "mia")  # rings until Asterisk cancels it
RING_SECONDS = 20  # never reached: ana answers at once
REACHED = 0.95  # a step passes only if answers keep within 5% of the target rate
OPEN_SECONDS = 3.0  # calls open at once are capped at rate x this (SIPp -l)
BUSY_MACHINE = 0.25  # cores of other work during a step that make its figures suspect
DRAIN_SECONDS = 60.0  # longest wait for the controller to work off a step's AMI events


@dataclass(frozen=True, slots=True)
class Plan:
    rates: tuple[int, ...]
    step_seconds: float
    max_calls_per_step: int
    budget_seconds: float  # no new step starts after this (both arms together)

    def calls(self, rate: int) -> int:
        return max(2, min(self.max_calls_per_step, round(rate * self.step_seconds)))


# Steps of 10 cps where this 2-core machine's limits lie, so the ratio is not step-rounding.
FULL = Plan(rates=(5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 135, 150, 175, 200,
                   250, 300),
            step_seconds=6.0, max_calls_per_step=1800, budget_seconds=240.0)
QUICK = Plan(rates=(5, 10), step_seconds=3.0, max_calls_per_step=30, budget_seconds=60.0)


class BenchError(Exception):
    """The bench could not set up a fair comparison (e.g. the arms would ring differently)."""


class Climber(Protocol):
    """An arm as climb() moves it up the plan's rates."""

    name: str
    stopped_by: str
    next_rate: int  # index into the plan's rates
    failed_once: bool  # the step at next_rate failed once already


class Climbed(Protocol):
    @property
    def passed(self) -> bool: ...

    @property
    def workdir(self) -> Path: ...


C = TypeVar("C", bound=Climber)
S = TypeVar("S", bound=Climbed)


async def climb(rigs: Sequence[C], plan: Plan,
                step: Callable[[C, int, int], Awaitable[S]]) -> dict[str, list[S]]:
    """Both arms in rounds, one step each a round (which goes first alternates), each arm
    rising through the plan's rates until a rate fails twice in a row, or the rates or the
    time budget run out; returns each arm's steps by name (also kept on the arms by
    ``step``'s caller if it wishes).

    The second try is there because the machine is shared: another job's burst can fail one
    step of one arm, and a single failure would then decide the ratio.
    """
    steps: dict[str, list[S]] = {r.name: [] for r in rigs}
    started = time.monotonic()
    for turn in itertools.count():
        active = [r for r in rigs if not r.stopped_by]
        if not active:
            break
        for rig in active if turn % 2 == 0 else active[::-1]:
            if rig.next_rate == len(plan.rates):
                rig.stopped_by = "the plan's top rate passed"
                continue
            rate = plan.rates[rig.next_rate]
            calls = plan.calls(rate)
            if time.monotonic() - started + calls / rate > plan.budget_seconds:
                rig.stopped_by = f"time budget ({plan.budget_seconds:g} s) spent"
                continue
            done = await step(rig, rate, calls)
            steps[rig.name].append(done)
            print(f"  {rig.name:<10} {rate:>4} cps: "
                  f"{'passed' if done.passed else 'did not pass'}", file=sys.stderr, flush=True)
            if done.passed:
                rig.next_rate += 1
                rig.failed_once = False
            elif not rig.failed_once:
                rig.failed_once = True
            else:
                rig.stopped_by = f"{rate} cps did not pass twice: logs in {done.workdir.name}"
    return steps


@dataclass(frozen=True, slots=True)
class CpuShares:
    """CPU used over a step, in cores (1.0 = one core busy the whole step)."""

    asterisk: float  # the arm's Asterisk
    python: float  # this process: the controller (controller arm) and the bench
    sipp: float  # the carrier and the arm's two desk phones
    other: float  # everything else on the machine: the other arm's idle Asterisk, other jobs


@dataclass(frozen=True, slots=True)
class Step:
    rate: int
    calls: int
    load: LoadResult
    cpu: CpuShares
    decisions_ms: tuple[float, ...]  # FastAGI decision latencies (controller arm only)
    sessions_ms: tuple[float, ...]  # the same sessions with Asterisk's answer to the decision
    workdir: Path  # the carrier's SIPp logs

    @property
    def passed(self) -> bool:
        r = self.load
        return (r.returncode == 0 and r.failed == 0 and r.successful == self.calls
                and r.answered_cps >= REACHED * self.rate)


@dataclass(frozen=True, slots=True)
class Arm:
    name: str
    steps: tuple[Step, ...]
    stopped_by: str
    ami_events: Mapping[str, int]  # by event name, over the steps (controller arm only)
    phones_failed: tuple[int, int]  # the desk phones' own failed calls (-1: did not stop)

    @property
    def top_step(self) -> Step | None:
        """The highest-rate step that passed (its rate was reached without failed calls)."""
        passed = [s for s in self.steps if s.passed]
        return max(passed, key=lambda s: s.rate) if passed else None

    @property
    def sustained(self) -> int:
        """Calls per second sustained: the rate of the top passing step (0 if none)."""
        top = self.top_step
        return top.rate if top else 0

    @property
    def decisions_ms(self) -> list[float]:
        return [d for s in self.steps if s.passed for d in s.decisions_ms]

    @property
    def sessions_ms(self) -> list[float]:
        return [d for s in self.steps if s.passed for d in s.sessions_ms]

    @property
    def calls_placed(self) -> int:
        return sum(s.load.created for s in self.steps)


# ----- the static dialplan and the ring set: pure


def contact(login: str, port: int) -> str:
    """The Contact a harness registration gives Asterisk (tests/harness/sipp/register.xml)."""
    return f"sip:{login}@{LOOPBACK}:{port}"


def ring_variables(directory: Directory, phones: Sequence[tuple[str, str, int]]
                   ) -> list[tuple[str, str]]:
    """The variables the controller sets for a call to NUMBER when PHONES are registered.

    PHONES: (desk phone, login, contact port), in registration order.  Raises BenchError
    unless the decision is to ring desk phones.
    """
    book = OwnershipBook(directory)
    registrations = Registrations(book, directory.max_per_login)
    for at, (phone, login, port) in enumerate(phones):
        registrations.register(phone, contact(login, port), float(at))
    pbx = directory.connections.pbx
    assert isinstance(pbx, AsteriskPbx)
    decision = route_inbound(book, registrations, InboundCall(NUMBER, CARRIER_USER),
                             Mode.NORMAL, pbx.ring_seconds)
    if not isinstance(decision, RingDeskPhones):
        raise BenchError(f"a call to {NUMBER} would not ring desk phones: {decision}")
    return inbound_variables(decision, book)


# The carrier context's one question to the controller (with its arguments, whatever they are).
AGI_STEP = re.compile(r"^ same => n,AGI\(\$\{BACKLINE_AGI\}/inbound[,)].*\n", re.MULTILINE)
# What a Set() value in extensions.conf may hold without quoting: no ';' (a comment), ','
# (an argument separator), '$' or '[' (expressions), no spaces.
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_/:@.&+*#=^-]*")


def static_dialplan(extensions_conf: str, variables: Sequence[tuple[str, str]]) -> str:
    """The rendered extensions.conf with the carrier context's AGI step replaced by a
    ``Set()`` of VARIABLES, packed as the controller sends them, and AGISTATUS=SUCCESS so the
    next step takes the decision.

    Raises BenchError if the carrier context does not have exactly one such AGI step, or a
    value could not be written plainly.
    """
    head, sep, rest = extensions_conf.partition(f"[{CARRIER_CONTEXT}]\n")
    context, sep2, tail = rest.partition("\n[")
    if not sep or len(AGI_STEP.findall(context)) != 1:
        raise BenchError(f"no single `AGI(${{BACKLINE_AGI}}/inbound...)` in [{CARRIER_CONTEXT}]")
    name, value = packed(list(variables))  # the one variable the controller would set
    if not _PLAIN_VALUE.fullmatch(value) or not re.fullmatch(r"[A-Z_]+", name):
        raise BenchError(f"cannot write {name}={value!r} into a static dialplan")
    sets = f" same => n,Set({name}={value})\n"
    sets += " same => n,Set(AGISTATUS=SUCCESS)\n"
    context = AGI_STEP.sub(lambda _: sets, context)
    return head + sep + context + sep2 + tail


# ----- the rendered configuration, changed in the running instance


ENDPOINT_LINE = "type=endpoint\n"
LOOPBACK_RTP = f"media_address={LOOPBACK}\nbind_rtp_to_media_address=yes\n"


def rtp_on_loopback(pjsip_conf: str) -> str:
    """Every endpoint's RTP bound to the loopback address instead of the wildcard.

    With RTP on 0.0.0.0, Asterisk looks up its own hostname, then A.ROOT-SERVERS.NET, for
    each RTP session's RTCP (acl.c ast_find_ourip): six DNS queries a call here, since the
    chroot has no /etc/hosts.  They leave the machine, and one lost query stalls the PJSIP
    thread for the resolver's 5 s timeout, which is what the bench would then measure.
    Raises BenchError if there is no endpoint to change.
    """
    if ENDPOINT_LINE not in pjsip_conf:
        raise BenchError("pjsip.conf has no endpoint")
    return pjsip_conf.replace(ENDPOINT_LINE, ENDPOINT_LINE + LOOPBACK_RTP)


def bind_rtp_to_loopback(instance: AsteriskInstance) -> None:
    """rtp_on_loopback() on the running instance's pjsip.conf, reloaded; raise BenchError
    unless Asterisk then shows the setting on the endpoints."""
    path = instance.host_path(instance.dir("etc")) / "pjsip.conf"
    path.write_text(rtp_on_loopback(path.read_text()))
    instance.cli("module reload res_pjsip.so")
    for phone in (ANSWERS[0], RINGS[0], CARRIER_USER):
        shown = instance.cli(f"pjsip show endpoint {phone}")
        if not re.search(r"bind_rtp_to_media_address\s*:\s*true", shown):
            raise BenchError(f"endpoint {phone}: RTP still on the wildcard address")


RTP_PORTS = 2000  # 1000 RTP sessions: 333 calls of three legs open at once


def widen_rtp_range(instance: AsteriskInstance) -> None:
    """Give the running instance RTP_PORTS RTP ports from its own start, and reload.

    The test practice has 100 (tests/harness/practice_pbx.py): 50 RTP sessions, so 16 calls of
    three legs at once, reached near 80 calls a second; past that Asterisk refuses calls for
    want of a port, and the bench would measure the port range.  Raises BenchError unless
    Asterisk then reports the new range.
    """
    start = instance.ports.rtp_start
    end = start + RTP_PORTS
    if end >= 32768:  # keep below the kernel's ephemeral range, as localpbx/ports.py does
        raise BenchError(f"RTP range {start}-{end} would reach the ephemeral ports")
    path = instance.host_path(instance.dir("etc")) / "rtp.conf"
    path.write_text(f"[general]\nrtpstart = {start}\nrtpend = {end}\n")
    instance.cli("module reload res_rtp_asterisk.so")
    shown = instance.cli("rtp show settings")
    if not re.search(rf"Port end:\s*{end}\b", shown):
        raise BenchError(f"the RTP range did not change:\n{shown}")


def make_static(instance: AsteriskInstance, variables: Sequence[tuple[str, str]]) -> None:
    """Rewrite the running instance's extensions.conf by static_dialplan() and reload it;
    raise BenchError unless Asterisk's carrier context then has no AGI step left."""
    path = instance.host_path(instance.dir("etc")) / "extensions.conf"
    path.write_text(static_dialplan(path.read_text(), variables))
    instance.cli("dialplan reload")
    shown = instance.cli(f"dialplan show {CARRIER_CONTEXT}")
    if "AGI(" in shown or "Set(BACKLINE_DECISION=" not in shown:
        raise BenchError(f"the static dialplan did not load:\n{shown}")


# ----- one arm's rig: an Asterisk, its desk phones, and (controller arm) the controller


@dataclass
class DeskPhones:
    answers: LoadSipp
    rings: LoadSipp

    def ports(self) -> list[tuple[str, str, int]]:
        return [(*ANSWERS, self.answers.port), (*RINGS, self.rings.port)]

    def stop(self) -> tuple[int, int]:
        """Stop both (SIGUSR1: finish open calls); their failed-call counts (-1: killed)."""
        failed = []
        for proc in (self.answers, self.rings):
            try:
                failed.append(proc.stop().failed)
            except SippError:
                proc.kill()
                failed.append(-1)
        return failed[0], failed[1]


def start_desk_phones(work: Path, trace: bool) -> DeskPhones:
    answers = desk_phone(work, "answers", answers=True, lifetime=900, trace=trace)
    try:
        rings = desk_phone(work, "rings", answers=False, lifetime=900, trace=trace)
    except SippError:
        answers.kill()
        raise
    return DeskPhones(answers, rings)


class AmiWatch:
    """What the controller's AMI link receives: a tally of events by name, and a barrier.

    The barrier changes a custom device state of its own and waits for the DeviceStateChange
    event.  Like the call events it goes through Asterisk's manager topic, one queue in
    publishing order, so when it arrives every event of the step before it has reached the
    controller and been parsed, and the next step (either arm's) does not pay for a backlog;
    at the limit that backlog is thousands of events.  (A UserEvent would not do: Asterisk
    writes it to the sessions directly, ahead of what is still queued.)  One more handler on
    the link costs a dict increment per event, against tens of microseconds of parsing each.
    """

    def __init__(self, pbx: PracticePbx) -> None:
        self.counts: Counter[str] = Counter()
        self._ami = pbx.driver.ami
        self._waiting: dict[str, asyncio.Event] = {}
        self._filtered = False
        self._ami.on_event("*", self._record)

    def _record(self, event: Mapping[str, str]) -> None:
        name = event.get("Event", "?")
        self.counts[name] += 1
        if name == "DeviceStateChange" and (done := self._waiting.get(event.get("Device", ""))):
            done.set()

    async def drained(self, within: float = DRAIN_SECONDS) -> None:
        device = f"Custom:backline-bench-{os.urandom(6).hex()}"  # new each time: a change
        done = self._waiting[device] = asyncio.Event()
        try:
            if not self._filtered:
                # The controller's session asks only for the events it uses; the barrier
                # needs its own DeviceStateChange too, and no other (a filter matches the
                # event's text: only the barrier's device names this prefix).
                await self._ami.action({"Action": "Filter", "Operation": "Add",
                                        "Filter": "Device: Custom:backline-bench-"},
                                       within=within)
                self._filtered = True
            await self._ami.action({"Action": "Command",
                                    "Command": f"devstate change {device} INUSE"}, within=within)
            await asyncio.wait_for(done.wait(), within)
        except (TimeoutError, LinkDown) as exc:
            raise BenchError(f"the controller's AMI link did not drain in {within:g} s") from exc
        finally:
            del self._waiting[device]


@dataclass
class Rig:
    name: str
    work: Path
    pbx: PracticePbx
    phones: DeskPhones
    answerer: str
    watch: AmiWatch | None  # controller arm only
    stopped_by: str = ""
    phones_failed: tuple[int, int] = (0, 0)
    next_rate: int = 0  # index into the plan's rates
    failed_once: bool = False  # the step at next_rate failed once already


async def start_rig(stack: contextlib.AsyncExitStack, work: Path, trace: bool, *,
                    controller: bool) -> Rig:
    """A fresh Asterisk running the test practice (tests/harness/practice_pbx.py), RTP on
    loopback, desk phones registered; with ``controller`` the controller in this process,
    without it a static dialplan.  Everything is undone by ``stack``."""
    name = "controller" if controller else "static"
    await asyncio.to_thread(work.mkdir)
    pbx = await stack.enter_async_context(practice_pbx(
        work, f"bench-{name}", RING_SECONDS, controller_in_process=controller, observe=False))
    # Runs before practice_pbx removes the instance tree: keep Asterisk's log with SIPp's.
    stack.callback(keep_log, pbx.instance, work / "asterisk-messages.log")
    await asyncio.to_thread(bind_rtp_to_loopback, pbx.instance)
    await asyncio.to_thread(widen_rtp_range, pbx.instance)
    phones = await asyncio.to_thread(start_desk_phones, work, trace)
    rig = Rig(name, work, pbx, phones, answerer(pbx.directory), None)
    stack.push_async_callback(stop_phones, rig)
    sip = (LOOPBACK, pbx.ports.sip)
    for phone, login, port in phones.ports():
        # register() returns on Asterisk's 200: the contact is stored by then.
        await asyncio.to_thread(register, sip, work, phone, pbx.secrets[phone],
                                contact_port=port, aor=login)
    variables = ring_variables(pbx.directory, phones.ports())
    if controller:
        await pbx.driver.wait_registered({ANSWERS[1], RINGS[1]}, within=10)
        # The static arm rings by ring_variables(): check that it says what the controller
        # decides, so both arms ring the same set the same way.
        decided = route_inbound(pbx.controller.book, pbx.driver.registrations,
                                InboundCall(NUMBER, CARRIER_USER), pbx.controller.mode(),
                                RING_SECONDS)
        if inbound_variables(decided, pbx.controller.book) != variables:
            raise BenchError(f"the controller decides {decided}, not the static arm's "
                             f"{variables}")
        rig.watch = AmiWatch(pbx)
        await rig.watch.drained()
        rig.watch.counts.clear()
        pbx.driver.latencies.clear()
    else:
        await asyncio.to_thread(make_static, pbx.instance, variables)
    return rig


def keep_log(instance: AsteriskInstance, to: Path) -> None:
    with contextlib.suppress(OSError):
        shutil.copy(instance.log_path, to)


async def stop_phones(rig: Rig) -> None:
    rig.phones_failed = await asyncio.to_thread(rig.phones.stop)


def answerer(directory: Directory) -> str:
    """The extension of the answering phone's user: what the answer's PAI must name."""
    user = next(u for u in directory.users if u.id == ANSWERS[1])
    if not user.extension:
        raise BenchError(f"{ANSWERS[1]} has no extension to recognise the answer by")
    return user.extension


# ----- one step


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of process PID so far (all its threads); 0.0 if gone."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class CpuSample:
    """CPU seconds used so far, at one instant, by the processes a step involves."""

    wall: float
    asterisk: float
    python: float
    phones: float
    children: float  # reaped children of this process: the carrier once it has exited
    machine: float  # all CPUs, busy (not idle or waiting on I/O)

    @classmethod
    def now(cls, asterisk_pid: int | None, phone_pids: Sequence[int | None]) -> CpuSample:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        with open("/proc/stat") as stat:
            ticks = [int(t) for t in stat.readline().split()[1:]]
        busy = sum(ticks[:8]) - ticks[3] - ticks[4]  # guest time is already in user
        return cls(time.monotonic(), cpu_seconds(asterisk_pid), time.process_time(),
                   sum(cpu_seconds(p) for p in phone_pids),
                   children.ru_utime + children.ru_stime, busy / os.sysconf("SC_CLK_TCK"))

    def shares_since(self, start: CpuSample) -> CpuShares:
        wall = max(self.wall - start.wall, 1e-9)
        asterisk = (self.asterisk - start.asterisk) / wall
        python = (self.python - start.python) / wall
        sipp = (self.phones - start.phones + self.children - start.children) / wall
        machine = (self.machine - start.machine) / wall
        return CpuShares(asterisk, python, sipp,
                         max(0.0, machine - asterisk - python - sipp))


async def run_step(rig: Rig, rate: int, calls: int, trace: bool) -> Step:
    """CALLS calls at RATE through RIG's Asterisk; waits for the carrier to exit by itself
    (SIPp's -timeout bounds it), then, on the controller arm, for its AMI backlog."""
    latencies = rig.pbx.driver.latencies if rig.watch else None
    sessions = rig.pbx.driver.round_trips if rig.watch else None
    seen = len(latencies) if latencies is not None else 0
    pids = (rig.pbx.instance.pid, (rig.phones.answers.pid, rig.phones.rings.pid))
    before = CpuSample.now(*pids)
    proc = await asyncio.to_thread(
        carrier, (LOOPBACK, rig.pbx.ports.sip), rig.work, NUMBER, from_user=CARRIER_USER,
        answerer=rig.answerer, rate=rate, calls=calls,
        max_open=max(20, math.ceil(rate * OPEN_SECONDS)), trace=trace)
    load = await asyncio.to_thread(finish, proc, calls / rate + 60)
    cpu = CpuSample.now(*pids).shares_since(before)
    decisions = tuple(1000 * d for d in latencies[seen:]) if latencies is not None else ()
    whole = tuple(1000 * d for d in sessions[seen:]) if sessions is not None else ()
    step = Step(rate, calls, load, cpu, decisions, whole, proc.workdir)
    if rig.watch:
        await rig.watch.drained()
    return step


async def run(plan: Plan, work: Path, trace: bool) -> list[Arm]:
    """Both arms up the plan's rates by climb()."""
    async with contextlib.AsyncExitStack() as stack:
        rigs = [await start_rig(stack, work / "controller", trace, controller=True),
                await start_rig(stack, work / "static", trace, controller=False)]
        steps = await climb(rigs, plan,
                            lambda rig, rate, calls: run_step(rig, rate, calls, trace))
    return [Arm(r.name, tuple(steps[r.name]), r.stopped_by,
                dict(r.watch.counts) if r.watch else {}, r.phones_failed) for r in rigs]


# ----- output


# CPU columns: % of one core over the step; "other" is everything on the machine but the arm.
HEADER = (f"{'target':>6} {'calls':>6} {'failed':>6} {'offered':>8} {'answered':>8} "
          f"{'setup p50':>9} {'setup p99':>9} {'retrans':>7} {'ast':>5} {'py':>5} "
          f"{'sipp':>5} {'other':>5} {'agi p50':>8} {'agi p99':>8} {'sess p99':>8}  pass")


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}ms"


def row(step: Step) -> str:
    r, c = step.load, step.cpu
    agi50 = percentile(list(step.decisions_ms), 50)
    agi99 = percentile(list(step.decisions_ms), 99)
    session99 = percentile(list(step.sessions_ms), 99)
    return (f"{step.rate:>6} {step.calls:>6} {r.failed:>6} {r.offered_cps:>8.1f} "
            f"{r.answered_cps:>8.1f} {_ms(r.setup_p50_ms):>9} {_ms(r.setup_p99_ms):>9} "
            f"{r.retransmissions:>7} {c.asterisk:>5.0%} {c.python:>5.0%} {c.sipp:>5.0%} "
            f"{c.other:>5.0%} {_ms(agi50):>8} {_ms(agi99):>8} {_ms(session99):>8}  "
            f"{'yes' if step.passed else 'NO'}")


TITLES = {"controller": "controller in the path (FastAGI decision per call, journal, AMI)",
          "static": "static dialplan (same ring set, Set() instead of AGI)"}


def table(arm: Arm) -> list[str]:
    out = [TITLES[arm.name], HEADER, *(row(s) for s in arm.steps)]
    if arm.phones_failed != (0, 0):
        out.append(f"  desk phones' own failed calls: ana-desk {arm.phones_failed[0]}, "
                   f"mia-desk {arm.phones_failed[1]} (-1: did not stop)")
    return out


def summary(ctl: Arm, static: Arm) -> list[str]:
    out = [f"{arm.name}: sustained {arm.sustained} cps without failed calls (answers at "
           f"{arm.top_step.load.answered_cps if arm.top_step else 0:.1f}/s; stopped: "
           f"{arm.stopped_by})" for arm in (ctl, static)]
    if static.sustained > 0:
        ratio = ctl.sustained / static.sustained
        verdict = "meets" if ratio >= GOAL_RATIO else "MISSES"
        out.append(f"ratio controller/static: {ratio:.2f} ({verdict} the >= {GOAL_RATIO} goal)")
        if any(a.stopped_by.startswith("the plan's top") for a in (ctl, static)):
            out.append("  (an arm passed every rate: its limit lies above the plan's top rate)")
    else:
        out.append("ratio controller/static: - (the static arm sustained nothing)")
    d = ctl.decisions_ms
    if d:
        p50, p99 = percentile(d, 50), percentile(d, 99)
        verdict = "meets" if p99 < GOAL_P99_MS else "MISSES"
        out.append(f"FastAGI decision latency over {len(d)} decisions in passing steps: "
                   f"p50 {p50:.2f} ms, p99 {p99:.2f} ms ({verdict} the p99 < {GOAL_P99_MS:g} "
                   "ms goal)")
        w = ctl.sessions_ms
        out.append(f"  the whole FastAGI session (the decision and Asterisk's answer to it): "
                   f"p50 {percentile(w, 50):.2f} ms, p99 {percentile(w, 99):.2f} ms")
    busy = [s for a in (ctl, static) for s in a.steps if s.cpu.other >= BUSY_MACHINE]
    if busy:
        out.append(f"  warning: other work took {BUSY_MACHINE:.0%} of a core or more during "
                   f"{len(busy)} of {len(ctl.steps) + len(static.steps)} steps (\"other\"): "
                   "the limits are then the shared machine's; rerun when it is quiet")
    if ctl.ami_events and ctl.calls_placed:
        per_call = sum(ctl.ami_events.values()) / ctl.calls_placed
        top = sorted(ctl.ami_events.items(), key=lambda kv: -kv[1])[:5]
        names = ", ".join(f"{name} {n / ctl.calls_placed:.0f}" for name, n in top)
        out.append(f"AMI events reaching the controller: {per_call:.0f} per call ({names})")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.calls", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a short smoke run: two low rates, a few calls each")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (SIPp logs and statistics, Asterisk logs)")
    parser.add_argument("--trace", action="store_true",
                        help="SIPp logs every SIP message too (costs CPU at high rates)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    work = Path(tempfile.mkdtemp(prefix="backline-bench-calls-"))
    begun = time.monotonic()
    try:
        with controller_runner() as runner:  # the controller's own loop, as in production
            ctl, static = runner.run(run(plan, work, args.trace))
    except (BenchError, SippError, AsteriskError) as exc:
        print(f"bench.calls: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"SIPp and Asterisk logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    for line in [*table(ctl), "", *table(static), "", *summary(ctl, static)]:
        print(line)
    print(f"took {time.monotonic() - begun:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
