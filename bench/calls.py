"""Calls per second through Asterisk at its ceiling, with the controller in the path and without.

Two arms, each on its own fresh Asterisk from the repo's chroot running the test practice's
rendered configuration (tests/harness/practice_pbx.py):

- controller (the subject): the carrier context asks the controller over FastAGI, as in
  production (the controller runs in this process, FastAGI and AMI, and journals every call);
- static (the reference): the same files, but the carrier context's ``AGI(.../inbound)`` step
  replaced by ``Set()`` steps writing the very variables the controller would write for the
  number (computed by the same pure core for the same registrations, and checked against the
  controller's own decision), so the only difference between the arms is the controller.

Both get the same two changes (bench/pbx_setup.py): RTP bound to 127.0.0.1, and thousands of
RTP ports instead of the test practice's 100.

The load: a SIPp carrier calls Dr. Lee's direct line, whose ring set is two registered SIPp
desk phones: ana-desk answers at once, mia-desk rings until Asterisk cancels it.  The carrier
hangs up 100 ms after the answer, so each call is the set-up and tear-down of two legs and a
cancelled third, and no media.  A step is clean without a failed call (SIPp's statistics: a
timeout, an error response, or an answer by anything but ana's phone), without a SIP
retransmission (SIPp's own count), and with answers within 5% of the target rate.  The rates
are searched by bench/ceiling.py: the static arm doubled then bisected to its ceiling, the
controller arm measured at and just below it.

Prints every step (arm, phase, CPU split: Asterisk, the controller's process, the carrier
SIPp, the desk-phone SIPps, other work), the static arm's ceiling, the ratio at saturation
controller/static (goal >= 0.9), who ran out of CPU first on each arm, the FastAGI decision
latency p50/p99 over the controller arm's clean steps (goal: p99 under 5 ms; from the
request's last header line to the decision's first byte out), the whole session's p99 (the
decision plus Asterisk's answer to it: "sess p99"), and the AMI events per call that reached
the controller.  Every SIPp and Asterisk process is ours, on 127.0.0.1, each bounded by its
own timeout as well as by ours.
Run: .venv/bin/python -m bench.calls [--quick] [--keep] [--trace]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from backline.app.serve import controller_runner
from backline.core.decisions import InboundCall
from backline.core.routing import route_inbound
from backline.localpbx.instance import AsteriskError
from backline.localpbx.ports import LOOPBACK
from backline.pbx.asterisk.commands import inbound_variables
from backline.pbx.ports import LinkDown
from bench import ceiling
from bench.ceiling import Ceiling, Meter, Plan, Split, find_ceiling
from bench.pbx_setup import (
    ANSWERS,
    CARRIER_USER,
    RINGS,
    BenchError,
    bind_rtp_to_loopback,
    keep_log,
    widen_rtp_range,
)
from bench.sipp_load import LoadResult, LoadSipp, carrier, desk_phone, finish, percentile
from bench.static_arm import NUMBER, answerer, make_static, ring_variables
from tests.harness.practice_pbx import PracticePbx, practice_pbx
from tests.harness.sipp import SippError, register

GOAL_RATIO = 0.9
GOAL_P99_MS = 5.0
RING_SECONDS = 20  # never reached: ana answers at once
REACHED = 0.95  # a step is clean only if answers keep within 5% of the target rate
OPEN_SECONDS = 3.0  # calls open at once are capped at rate x this (SIPp -l)
BUSY_MACHINE = 0.25  # cores of other work during a step that make its figures suspect
DRAIN_SECONDS = 60.0  # longest wait for the controller to work off a step's AMI events

FULL = Plan(first=25, top=1600, step_seconds=6.0, max_calls_per_step=4000,
            budget_seconds=300.0)
SHORT = Plan(first=25, top=1600, step_seconds=4.0, max_calls_per_step=3000,
             budget_seconds=200.0, resolution=0.2)  # python -m bench
QUICK = Plan(first=5, top=10, step_seconds=2.0, max_calls_per_step=20, budget_seconds=60.0)


@dataclass(frozen=True, slots=True)
class Step:
    rate: int
    calls: int
    load: LoadResult
    split: Split
    decisions_ms: tuple[float, ...]  # FastAGI decision latencies (controller arm only)
    sessions_ms: tuple[float, ...]  # the same sessions with Asterisk's answer to the decision
    workdir: Path  # the carrier's SIPp logs

    @property
    def passed(self) -> bool:
        """Clean: every call answered by ana's phone, nothing retransmitted, the rate held."""
        r = self.load
        return (r.returncode == 0 and r.failed == 0 and r.successful == self.calls
                and r.retransmissions == 0 and r.answered_cps >= REACHED * self.rate)


@dataclass(frozen=True, slots=True)
class Result:
    found: Ceiling[Step]
    ami_events: Mapping[str, int]  # by event name, over the steps (controller arm only)
    phones_failed: Mapping[str, tuple[int, int]]  # per arm, the desk phones' own failed calls

    @property
    def decisions_ms(self) -> list[float]:
        return [d for p in self.found.probes if p.step.passed for d in p.step.decisions_ms]

    @property
    def sessions_ms(self) -> list[float]:
        return [d for p in self.found.probes if p.step.passed for d in p.step.sessions_ms]

    @property
    def controller_calls(self) -> int:
        return sum(p.step.load.created for p in self.found.probes if p.arm == "controller")


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
    phones_failed: tuple[int, int] = (0, 0)


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



async def stop_phones(rig: Rig) -> None:
    rig.phones_failed = await asyncio.to_thread(rig.phones.stop)


# ----- one step


async def run_step(rig: Rig, rate: int, calls: int, trace: bool) -> Step:
    """CALLS calls at RATE through RIG's Asterisk; waits for the carrier to exit by itself
    (SIPp's -timeout bounds it), then, on the controller arm, for its AMI backlog."""
    latencies = rig.pbx.driver.latencies if rig.watch else None
    sessions = rig.pbx.driver.round_trips if rig.watch else None
    seen = len(latencies) if latencies is not None else 0
    meter = Meter(rig.pbx.instance.pid, os.getpid() if rig.watch else None,
                  (rig.phones.answers.pid, rig.phones.rings.pid))
    proc = await asyncio.to_thread(
        carrier, (LOOPBACK, rig.pbx.ports.sip), rig.work, NUMBER, from_user=CARRIER_USER,
        answerer=rig.answerer, rate=rate, calls=calls,
        max_open=max(20, math.ceil(rate * OPEN_SECONDS)), trace=trace)
    load = await asyncio.to_thread(finish, proc, calls / rate + 60)
    split = meter.split(load.sipp_cpu)
    decisions = tuple(1000 * d for d in latencies[seen:]) if latencies is not None else ()
    whole = tuple(1000 * d for d in sessions[seen:]) if sessions is not None else ()
    step = Step(rate, calls, load, split, decisions, whole, proc.workdir)
    if rig.watch:
        await rig.watch.drained()
    return step


async def run(plan: Plan, work: Path, trace: bool) -> Result:
    """The static arm's ceiling and the controller arm at it, by bench.ceiling."""
    async with contextlib.AsyncExitStack() as stack:
        subject = await start_rig(stack, work / "controller", trace, controller=True)
        reference = await start_rig(stack, work / "static", trace, controller=False)
        found = await find_ceiling(reference, subject, plan,
                                   lambda rig, rate, calls: run_step(rig, rate, calls, trace))
        events = dict(subject.watch.counts) if subject.watch else {}
    return Result(found, events, {r.name: r.phones_failed for r in (subject, reference)})


# ----- output


# CPU columns: % of one core over the step; "other" is everything on the machine but the arm.
HEADER = (f"{'arm':<10} {'phase':<17} {'target':>6} {'calls':>6} {'failed':>6} "
          f"{'retrans':>7} {'answered':>8} {'setup p50':>9} {'setup p99':>9} "
          f"{ceiling.cpu_columns()} {'agi p99':>8} {'sess p99':>8}  clean")


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}ms"


def row(probe: ceiling.Probe[Step]) -> str:
    step = probe.step
    r = step.load
    agi99 = percentile(list(step.decisions_ms), 99)
    session99 = percentile(list(step.sessions_ms), 99)
    return (f"{probe.arm:<10} {probe.phase:<17} {step.rate:>6} {step.calls:>6} {r.failed:>6} "
            f"{r.retransmissions:>7} {r.answered_cps:>8.1f} {_ms(r.setup_p50_ms):>9} "
            f"{_ms(r.setup_p99_ms):>9} {ceiling.cpu_row(step.split)} {_ms(agi99):>8} "
            f"{_ms(session99):>8}  {'yes' if step.passed else 'NO'}")


def table(result: Result) -> list[str]:
    out = ["controller: FastAGI decision per call, journal, AMI; static: the same ring set by "
           "Set() instead of AGI", HEADER, *(row(p) for p in result.found.probes)]
    for arm, failed in result.phones_failed.items():
        if failed != (0, 0):
            out.append(f"  {arm}: desk phones' own failed calls: ana-desk {failed[0]}, "
                       f"mia-desk {failed[1]} (-1: did not stop)")
    return out


def summary(result: Result) -> list[str]:
    found = result.found
    out = ceiling.summary(found, reference="static", subject="controller", goal=GOAL_RATIO)
    d = result.decisions_ms
    if d:
        p50, p99 = percentile(d, 50), percentile(d, 99)
        verdict = "meets" if p99 < GOAL_P99_MS else "MISSES"
        out.append(f"FastAGI decision latency over {len(d)} decisions in clean steps: "
                   f"p50 {p50:.2f} ms, p99 {p99:.2f} ms ({verdict} the p99 < {GOAL_P99_MS:g} "
                   "ms goal)")
        w = result.sessions_ms
        out.append(f"  the whole FastAGI session (the decision and Asterisk's answer to it): "
                   f"p50 {percentile(w, 50):.2f} ms, p99 {percentile(w, 99):.2f} ms")
    busy = [p for p in found.probes if p.step.split.other >= BUSY_MACHINE]
    if busy:
        out.append(f"  warning: other work took {BUSY_MACHINE:.0%} of a core or more during "
                   f"{len(busy)} of {len(found.probes)} steps (\"other\"): the limits are "
                   "then the shared machine's; rerun when it is quiet")
    if result.ami_events and result.controller_calls:
        n = result.controller_calls
        per_call = sum(result.ami_events.values()) / n
        top = sorted(result.ami_events.items(), key=lambda kv: -kv[1])[:5]
        names = ", ".join(f"{name} {count / n:.0f}" for name, count in top)
        out.append(f"AMI events reaching the controller: {per_call:.0f} per call ({names})")
    return out


def measure(plan: Plan, trace: bool = False, keep: bool = False) -> Result:
    """Both arms by ``plan``, in a work directory of its own (removed unless ``keep``);
    raises BenchError, SippError or AsteriskError if the comparison could not be made."""
    work = Path(tempfile.mkdtemp(prefix="backline-bench-calls-"))
    try:
        with controller_runner() as runner:  # the controller's own loop, as in production
            return runner.run(run(plan, work, trace))
    finally:
        if keep:
            print(f"SIPp and Asterisk logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


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
    begun = time.monotonic()
    try:
        result = measure(QUICK if args.quick else FULL, args.trace, args.keep)
    except (BenchError, SippError, AsteriskError) as exc:
        print(f"bench.calls: {exc}", file=sys.stderr)
        return 1
    for line in [*table(result), "", *summary(result)]:
        print(line)
    print(f"took {time.monotonic() - begun:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
