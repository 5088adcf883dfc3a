"""Calls per second answered with the outage announcement, with the controller up and killed.

The fail-safe: when the controller cannot be reached, the dialplan's ``AGI()``
fails and the PBX answers on its own with the announcement.  This measures what that costs:
two arms, each on its own fresh Asterisk from the repo's chroot running the test practice
(tests/harness/practice_pbx.py) with the outage engaged from the CLI, and ``backline run`` (the
controller as ops run it, a process of its own) started against it:

- up: the controller stays up; every call asks it over FastAGI, it decides "announce" and
  journals the call (fsynced) before answering the PBX;
- killed: the controller is SIGKILLed once the PBX shows the outage; its FastAGI port then
  refuses, ``AGI()`` fails at once and the dialplan's fail-safe answers alone.

Both arms' Asterisk get the changes bench.calls makes (bench/pbx_setup.py: RTP on 127.0.0.1,
thousands of RTP ports), and the announcement is re-rendered short (SHORT_ANNOUNCEMENT, with the
renderer `backline render` uses), so that each call holds a channel for about three seconds.

The load: a SIPp carrier calls the practice's main line.  Each call must be answered and then
hung up *by the PBX* after the whole announcement: SIPp waits for Asterisk's BYE (or fails
the call), and a step is not clean if any call's answer-to-BYE time is shorter than the
recording (the dialplan hangs up only once ``Playback()`` returns, and a Playback that cannot
play returns at once), if a call failed or a SIP message was retransmitted (SIPp's own
counts), or if answers arrive more than 5% slower than the target rate.  The rates are searched
by bench/ceiling.py: the killed arm (the fail-safe dialplan: the reference) doubled then
bisected to its ceiling, the up arm measured at and just below it.

Prints every step with its CPU split (Asterisk, the controller's process, the carrier SIPp,
other work), the killed arm's ceiling, the ratio at saturation up/killed (goal >= 0.9: the
controller in the path costs no noticeable capacity), who ran out of CPU first on each arm, and
how many calls each arm's journal holds (up: every call; killed: none, until a controller
returns and imports the CDR).
Run: .venv/bin/python -m bench.outage [--quick] [--keep] [--trace]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import re
import shutil
import sys
import tempfile
import time
import wave
from dataclasses import dataclass
from pathlib import Path

from backline.core.model import Announcement
from backline.localpbx.announcement import render_announcement
from backline.localpbx.instance import AsteriskError, AsteriskInstance
from backline.localpbx.ports import LOOPBACK
from bench import ceiling
from bench.calls import BUSY_MACHINE, REACHED
from bench.ceiling import Ceiling, Meter, Plan, Probe, Split, find_ceiling
from bench.controller_process import ControllerProcess, agi_refuses, backline
from bench.pbx_setup import BenchError, bind_rtp_to_loopback, keep_log, widen_rtp_range
from bench.sipp_load import (
    RECV_TIMEOUT_MS,
    LoadResult,
    LoadSipp,
    finish,
    step_timeout,
)
from tests.harness.practice_pbx import PracticePbx, practice_pbx
from tests.harness.sipp import SippError, free_media_port, free_udp_port

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = Path(__file__).with_name("sipp") / "outage_caller.xml"
GOAL_RATIO = 0.9
NUMBER = "+13125550100"  # the test practice's main line
CARRIER_USER = "carrier"  # the test practice's trunk From user
SHORT_ANNOUNCEMENT = "Outage. Please call back later."
PLAYED_SLACK = 0.25  # s: answer to BYE at least the recording's length minus this
OPEN_SLACK = 3.0  # calls open at once are capped at rate x (announcement + this)

FULL = Plan(first=25, top=1600, step_seconds=5.0, max_calls_per_step=4000,
            budget_seconds=300.0)
SHORT = Plan(first=25, top=1600, step_seconds=4.0, max_calls_per_step=3000,
             budget_seconds=200.0, resolution=0.2)  # python -m bench
QUICK = Plan(first=5, top=10, step_seconds=2.0, max_calls_per_step=20, budget_seconds=60.0)


# ----- results: pure


_CALL_LINE = re.compile(r"call (\d+(?:\.\d+)?) (\d+(?:\.\d+)?) (\d+(?:\.\d+)?) "
                        r"(\d+(?:\.\d+)?) (\d+(?:\.\d+)?) (\d+(?:\.\d+)?)")


def held_seconds(call_log: str) -> list[float]:
    """Per call of the outage caller's log: seconds from the PBX's answer to its BYE."""
    out = []
    for line in call_log.splitlines():
        found = _CALL_LINE.search(line)
        if found:
            _, _, s1, us1, s2, us2 = (float(g) for g in found.groups())
            out.append((s2 + us2 / 1e6) - (s1 + us1 / 1e6))
    return out


@dataclass(frozen=True, slots=True)
class Step:
    rate: int
    calls: int
    load: LoadResult
    split: Split
    held: tuple[float, ...]  # answer to BYE, per successful call
    announcement: float  # the recording's length, s
    workdir: Path

    @property
    def short(self) -> int:
        """Calls hung up before the whole announcement could have played."""
        return sum(1 for h in self.held if h < self.announcement - PLAYED_SLACK)

    @property
    def passed(self) -> bool:
        r = self.load
        return (r.returncode == 0 and r.failed == 0 and r.successful == self.calls
                and r.retransmissions == 0
                and len(self.held) == self.calls and self.short == 0
                and r.answered_cps >= REACHED * self.rate)


@dataclass(frozen=True, slots=True)
class Result:
    found: Ceiling[Step]
    journaled: dict[str, int]  # calls to NUMBER in each arm's journal at the end

    def answered(self, arm: str) -> int:
        return sum(p.step.load.successful for p in self.found.probes if p.arm == arm)

    @property
    def announcement(self) -> float:
        return next((p.step.announcement for p in self.found.probes), math.nan)


# ----- one arm's rig


def short_announcement(instance: AsteriskInstance) -> float:
    """Re-render the instance's announcement from SHORT_ANNOUNCEMENT (Playback opens the file
    on each call: no reload needed); return its length in seconds."""
    wav = instance.host_path(instance.dir("lib") / "sounds" / "announcement.wav")
    render_announcement(Announcement(text=SHORT_ANNOUNCEMENT), wav, ROOT)
    with wave.open(str(wav)) as w:
        return float(w.getnframes()) / float(w.getframerate())


@dataclass
class Rig:
    name: str
    work: Path
    pbx: PracticePbx
    controller: ControllerProcess
    announcement: float


async def start_rig(stack: contextlib.AsyncExitStack, work: Path, *, kill: bool,
                    tree: Path = ROOT, name: str = "") -> Rig:
    """A fresh Asterisk running the test practice with the outage engaged through
    ``backline run`` (from ``tree``); with ``kill`` that controller is then SIGKILLed.  Undone
    by ``stack``."""
    name = name or ("killed" if kill else "up")
    await asyncio.to_thread(work.mkdir)
    pbx = await stack.enter_async_context(practice_pbx(
        work, f"bench-outage-{name}", controller_in_process=False, observe=False))
    stack.callback(keep_log, pbx.instance, work / "asterisk-messages.log")
    await asyncio.to_thread(bind_rtp_to_loopback, pbx.instance)
    await asyncio.to_thread(widen_rtp_range, pbx.instance)
    length = await asyncio.to_thread(short_announcement, pbx.instance)
    controller = ControllerProcess(pbx.config_path, work / "controller.log", tree)
    stack.callback(controller.stop)
    await asyncio.to_thread(controller.wait_for, "ready")
    await asyncio.to_thread(backline, pbx.config_path, "outage", "engage", "--no-wait", "--reason",
                            "bench", "--by", "bench")
    await asyncio.to_thread(controller.wait_for, "the PBX now shows mode outage", 10)
    shown = await asyncio.to_thread(pbx.instance.cli, "database get backline mode")
    if "outage" not in shown:
        raise BenchError(f"the PBX does not show the outage: {shown.strip()}")
    if kill:
        await asyncio.to_thread(controller.kill)
        if not await asyncio.to_thread(agi_refuses, pbx.ports.agi):
            raise BenchError("something still answers on the killed controller's FastAGI port")
    return Rig(name, work, pbx, controller, length)


# ----- one step


def outage_carrier(pbx: tuple[str, int], workdir: Path, *, rate: float, calls: int,
                   max_open: int, trace: bool) -> LoadSipp:
    """A started carrier placing CALLS calls to NUMBER at RATE a second, each waiting for
    the PBX's BYE (bench/sipp/outage_caller.xml); wait for it with bench.sipp_load.finish."""
    port = free_udp_port()
    args = [
        "-i", LOOPBACK, "-mi", LOOPBACK, "-p", str(port), "-mp", str(free_media_port()),
        "-cp", str(free_udp_port()), "-t", "u1",
        "-aa",
        "-s", NUMBER,
        "-key", "from_user", CARRIER_USER,
        "-r", f"{rate:g}", "-rp", "1000",
        "-m", str(calls),
        "-l", str(max_open),
        "-recv_timeout", str(RECV_TIMEOUT_MS),
        "-timeout", f"{step_timeout(rate, calls):g}s", "-timeout_error",
        f"{pbx[0]}:{pbx[1]}",
    ]  # fmt: skip
    name = f"carrier-{rate:g}cps"
    return LoadSipp(name, workdir / f"{name}-{port}", SCENARIO.read_text(), args, port=port,
                    trace=trace).start()


async def run_step(rig: Rig, rate: int, calls: int, trace: bool) -> Step:
    meter = Meter(rig.pbx.instance.pid, rig.controller.pid)
    proc = await asyncio.to_thread(
        outage_carrier, (LOOPBACK, rig.pbx.ports.sip), rig.work, rate=rate, calls=calls,
        max_open=max(20, math.ceil(rate * (rig.announcement + OPEN_SLACK))), trace=trace)
    load = await asyncio.to_thread(finish, proc, calls / rate + 60)
    split = meter.split(load.sipp_cpu)
    return Step(rate, calls, load, split, tuple(held_seconds(proc.call_log())),
                rig.announcement, proc.workdir)


def journaled(pbx: PracticePbx) -> int:
    return sum(1 for a in pbx.controller.journal.attempts(limit=1_000_000)
               if a.recipient == NUMBER)


async def settled_journal(rig: Rig, expected: int, within: float = 30.0) -> int:
    """The calls the arm's journal holds, once it holds ``expected`` or ``within`` s passed
    (the controller journals a call just after answering the PBX: the last may lag)."""
    deadline = time.monotonic() + within
    while True:
        count = await asyncio.to_thread(journaled, rig.pbx)
        if count >= expected or time.monotonic() > deadline:
            return count
        await asyncio.sleep(0.5)  # a bench's last look, not a test's wait


async def run(plan: Plan, work: Path, trace: bool) -> Result:
    """The killed arm's ceiling and the up arm at it (bench.ceiling), then each journal's
    count."""
    async with contextlib.AsyncExitStack() as stack:
        up = await start_rig(stack, work / "up", kill=False)
        killed = await start_rig(stack, work / "killed", kill=True)
        found = await find_ceiling(killed, up, plan,
                                   lambda rig, rate, calls: run_step(rig, rate, calls, trace))
        answered = sum(p.step.load.successful for p in found.probes if p.arm == "up")
        journaled = {"up": await settled_journal(up, answered),
                     "killed": await settled_journal(killed, 0, within=0.0)}
        return Result(found, journaled)


# ----- output


HEADER = (f"{'arm':<7} {'phase':<17} {'target':>6} {'calls':>6} {'failed':>6} {'retrans':>7} "
          f"{'answered':>8} {'setup p50':>9} {'setup p99':>9} {'held min':>8} {'short':>5} "
          f"{ceiling.cpu_columns()}  clean")


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}ms"


def row(probe: Probe[Step]) -> str:
    step = probe.step
    r = step.load
    held = f"{min(step.held):.2f}s" if step.held else "-"
    return (f"{probe.arm:<7} {probe.phase:<17} {step.rate:>6} {step.calls:>6} {r.failed:>6} "
            f"{r.retransmissions:>7} {r.answered_cps:>8.1f} {_ms(r.setup_p50_ms):>9} "
            f"{_ms(r.setup_p99_ms):>9} {held:>8} {step.short:>5} "
            f"{ceiling.cpu_row(step.split)}  {'yes' if step.passed else 'NO'}")


def table(result: Result) -> list[str]:
    return ["up: the controller decides \"announce\" over FastAGI and journals each call; "
            "killed: it is SIGKILLed, the dialplan's fail-safe answers alone",
            HEADER, *(row(p) for p in result.found.probes)]


def summary(result: Result) -> list[str]:
    found = result.found
    out = [f"announcement: {result.announcement:.2f} s (\"{SHORT_ANNOUNCEMENT}\"); each call "
           "held until the PBX hung up after it"]
    out += ceiling.summary(found, reference="killed (fail-safe)", subject="up",
                           goal=GOAL_RATIO)
    out.append(f"journal: up arm {result.journaled['up']} of {result.answered('up')} answered "
               f"calls (the controller decided each); killed arm "
               f"{result.journaled['killed']} of {result.answered('killed')} (nobody to "
               "journal them until a controller returns and imports the CDR)")
    busy = [p for p in found.probes if p.step.split.other >= BUSY_MACHINE]
    if busy:
        out.append(f"  warning: other work took {BUSY_MACHINE:.0%} of a core or more during "
                   f"{len(busy)} of {len(found.probes)} steps (\"other\"): the limits are "
                   "then the shared machine's; rerun when it is quiet")
    return out


def measure(plan: Plan, trace: bool = False, keep: bool = False) -> Result:
    """Both arms by ``plan``, in a work directory of its own (removed unless ``keep``);
    raises BenchError, SippError or AsteriskError if the comparison could not be made."""
    work = Path(tempfile.mkdtemp(prefix="backline-bench-outage-"))
    try:
        return asyncio.run(run(plan, work, trace))
    finally:
        if keep:
            print(f"SIPp, Asterisk and controller logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.outage", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a short smoke run: two low rates, a few calls each")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (SIPp, Asterisk and controller logs)")
    parser.add_argument("--trace", action="store_true",
                        help="SIPp logs every SIP message too (costs CPU at high rates)")
    args = parser.parse_args(argv)
    begun = time.monotonic()
    try:
        result = measure(QUICK if args.quick else FULL, args.trace, args.keep)
    except (BenchError, SippError, AsteriskError) as exc:
        print(f"bench.outage: {exc}", file=sys.stderr)
        return 1
    for line in [*table(result), "", *summary(result)]:
        print(line)
    print(f"took {time.monotonic() - begun:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
