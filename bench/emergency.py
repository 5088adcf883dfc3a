"""911 through Backline's rendered dialplan against a dialplan that dials directly.

One fresh Asterisk from the repo's chroot runs the test practice (tests/harness/practice_pbx.py)
with the controller connected, as in production.  Its desk context gets two more extensions,
DIRECT and CONTROL, that do nothing but ``Dial(PJSIP/911@<carrier>)``: the least a PBX can do
with a 911.  Backline's own ``911`` (backline/render/asterisk_desk_dialplan.py) also presents
the callback number and name, and never waits on the controller.

The load: a SIPp desk phone dials, one call at a time, 911, DIRECT and CONTROL in a shuffled
order, each block of three holding each once (so all arms meet the machine's other work
alike); a SIPp carrier on the trunk answers each at once.  The figure is the time from the
phone's INVITE (the one with credentials, which the PBX routes) leaving the phone to
Asterisk's INVITE leaving for the carrier, both as the kernel stamped them on the loopback
interface (bench/wire.py): what Asterisk took, not when the carrier's SIPp got to read it on
the shared cores (also printed, as the two SIPps timed it).  Each INVITE the carrier got
belongs to the last call the phone placed; its From checks the arm (the callback number
through Backline, the extension when dialled directly).

Prints p50/p90/p99/max per arm; the difference of the medians, Backline minus DIRECT (A/B),
and CONTROL minus DIRECT (A/A: the same dialplan against itself, what noise alone gives on
this machine in this run), each with a 95% bootstrap interval; the load average and how busy
the machine's cores were.  The goal is no difference beyond noise: the A/B interval holds
zero, or the A/B difference is no larger than the A/A interval reaches.
Run: .venv/bin/python -m bench.emergency [--quick] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import logging
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from backline.core.connections import AsteriskPbx
from backline.localpbx.instance import AsteriskError, AsteriskInstance
from backline.localpbx.ports import LOOPBACK
from backline.pbx.asterisk.dialplan_variables import DESK_CONTEXT
from backline.render.asterisk_pjsip import emergency_endpoint
from bench.pbx_setup import BenchError, bind_rtp_to_loopback, keep_log, widen_rtp_range
from bench.sipp_load import LoadSipp
from bench.wire import Capture, CaptureError, Invite
from tests.harness.practice_pbx import PracticePbx, practice_pbx
from tests.harness.sipp import SippError, free_media_port, free_udp_port

SCENARIOS = Path(__file__).with_name("sipp")
PHONE = "raj-desk"  # presents the practice's main line as its callback number
BACKLINE, DIRECT, CONTROL = "911", "9911", "9912"
ARMS = {BACKLINE: "backline", DIRECT: "direct", CONTROL: "control"}
RESAMPLES = 2000
ORDER_SEED = 911


@dataclass(frozen=True, slots=True)
class Plan:
    calls_per_arm: int
    rate: float  # calls a second, one open at a time


FULL = Plan(calls_per_arm=1000, rate=20)
SHORT = Plan(calls_per_arm=300, rate=20)  # python -m bench
QUICK = Plan(calls_per_arm=20, rate=10)


# ----- results: pure


_TIME = r"(\d+)(?:\.0+)? (\d+)(?:\.0+)?"  # SIPp prints its variables as 1796431433.000000
_PHONE_LINE = re.compile(rf"call (\d+) {_TIME}")
_CARRIER_LINE = re.compile(rf"invite sip:(\S*) {_TIME}")


def dial_order(calls_per_arm: int, seed: int = ORDER_SEED) -> list[str]:
    """What the phone dials, call by call: blocks of one call per arm, each block shuffled
    (seeded: the same order every run), so no arm always follows the same one."""
    rng = random.Random(seed)
    order: list[str] = []
    for _ in range(calls_per_arm):
        block = list(ARMS)
        rng.shuffle(block)
        order += block
    return order


def phone_sends(log: str) -> list[tuple[float, str]]:
    """(wall-clock second, arm) of each routed INVITE the phone sent, in time order."""
    return sorted((int(s) + int(us) / 1e6, ARMS[dialled])
                  for dialled, s, us in _PHONE_LINE.findall(log) if dialled in ARMS)


def carrier_receipts(log: str) -> list[tuple[float, str]]:
    """(wall-clock second, From user) of each INVITE the carrier got, in time order."""
    return sorted((int(s) + int(us) / 1e6, user) for user, s, us in _CARRIER_LINE.findall(log))


def delays_ms(sent: list[tuple[float, str]], received: list[tuple[float, str]]
              ) -> dict[str, list[float]]:
    """Per arm, INVITE out to INVITE in, call by call: one call is open at a time, so an
    INVITE the carrier got belongs to the last one the phone sent before it (a call that
    failed on the way has none).  BenchError if an INVITE arrived before any was sent, or
    its From is not the arm's: the callback number (+ and digits) through Backline, the
    extension when dialled directly."""
    times = [at for at, _ in sent]
    out: dict[str, list[float]] = {arm: [] for arm in ARMS.values()}
    for at, user in received:
        i = bisect.bisect_right(times, at)
        if i == 0:
            raise BenchError("the carrier got an INVITE before the phone sent one")
        begun, arm = sent[i - 1]
        if user.startswith("+") != (arm == "backline"):
            raise BenchError(f"the carrier got From {user or '(none)'} on a call of the "
                             f"{arm} arm")
        out[arm].append(1000 * (at - begun))
    return out


def median_difference(a: list[float], b: list[float], seed: int = 17
                      ) -> tuple[float, float, float]:
    """median(a) - median(b) and its 95% bootstrap interval (RESAMPLES resamples)."""
    rng = random.Random(seed)
    diffs = sorted(statistics.median(rng.choices(a, k=len(a)))
                   - statistics.median(rng.choices(b, k=len(b))) for _ in range(RESAMPLES))
    return (statistics.median(a) - statistics.median(b), diffs[int(0.025 * RESAMPLES)],
            diffs[int(0.975 * RESAMPLES) - 1])


def within_noise(ab: tuple[float, float, float], aa: tuple[float, float, float]) -> bool:
    """The goal: the A/B interval holds zero, or the A/B difference is no larger than the
    A/A interval reaches on either side (what the same dialplan against itself gave)."""
    diff, low, high = ab
    _, aa_low, aa_high = aa
    return low <= 0 <= high or abs(diff) <= max(abs(aa_low), abs(aa_high))


@dataclass(frozen=True, slots=True)
class Machine:
    """The machine around a run: load average at its start and end, and how many of its
    cores were busy on average meanwhile (every process, the bench's own included)."""

    cores: int
    load_before: float
    load_after: float
    busy_cores: float


def wire_sends(invites: list[Invite], pbx_port: int) -> list[tuple[float, str]]:
    """(kernel stamp, arm) of each routed INVITE the phone sent the PBX, in time order."""
    return [(i.at, ARMS[i.dialled]) for i in invites
            if i.to_port == pbx_port and i.credentials and i.dialled in ARMS]


def wire_receipts(invites: list[Invite], carrier_port: int) -> list[tuple[float, str]]:
    """(kernel stamp, From user) of each INVITE the PBX sent the carrier, in time order."""
    return [(i.at, i.from_user) for i in invites if i.to_port == carrier_port]


@dataclass(frozen=True, slots=True)
class Result:
    backline_ms: list[float]  # on the wire (bench/wire.py)
    direct_ms: list[float]
    control_ms: list[float]  # the direct dial again: the A/A control
    failed: int  # calls the phone's SIPp counted as failed
    unmatched: int  # INVITEs sent that never reached the carrier
    machine: Machine
    read_ms: dict[str, list[float]] = field(default_factory=dict)  # as the SIPps timed them

    @property
    def difference(self) -> tuple[float, float, float]:
        """A/B: Backline minus the direct dial (median, 95% interval)."""
        return median_difference(self.backline_ms, self.direct_ms)

    @property
    def noise(self) -> tuple[float, float, float]:
        """A/A: the direct dial minus itself (median, 95% interval)."""
        return median_difference(self.control_ms, self.direct_ms)

    @property
    def meets(self) -> bool:
        return within_noise(self.difference, self.noise)


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile (1..99), within the values (statistics' inclusive method: a few
    hundred calls do not say what lies beyond their maximum); nan if empty."""
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# ----- the run


def add_direct_dial(instance: AsteriskInstance, carrier: str) -> None:
    """DIRECT and CONTROL in the desk context: each Dials the carrier with 911, nothing
    else; BenchError unless Asterisk then shows them."""
    path = instance.host_path(instance.dir("etc")) / "extensions.conf"
    text = path.read_text()
    head = f"[{DESK_CONTEXT}]\n"
    if text.count(head) != 1:
        raise BenchError(f"no single [{DESK_CONTEXT}] in extensions.conf")
    direct = "".join(f"exten => {e},1,Dial(PJSIP/{BACKLINE}@{carrier})\n"
                     " same => n,Hangup()\n" for e in (DIRECT, CONTROL))
    path.write_text(text.replace(head, head + direct))
    instance.cli("dialplan reload")
    for e in (DIRECT, CONTROL):
        shown = instance.cli(f"dialplan show {e}@{DESK_CONTEXT}")
        if f"Dial(PJSIP/{BACKLINE}@{carrier})" not in shown:
            raise BenchError(f"the direct dial did not load:\n{shown}")


def _args(port: int) -> list[str]:
    return ["-i", LOOPBACK, "-mi", LOOPBACK, "-p", str(port), "-mp", str(free_media_port()),
            "-cp", str(free_udp_port()), "-t", "u1", "-aa"]


def start_carrier(work: Path, port: int, calls: int) -> LoadSipp:
    args = [*_args(port), "-m", str(calls), "-timeout", f"{calls + 120}s"]
    return LoadSipp("carrier-911", work / "carrier", (SCENARIOS / "emergency_carrier.xml")
                    .read_text(), args, port=port).start()


def start_phone(work: Path, pbx: PracticePbx, plan: Plan) -> LoadSipp:
    order = dial_order(plan.calls_per_arm)
    inf = work / "dialled.csv"
    inf.parent.mkdir(parents=True, exist_ok=True)
    inf.write_text("SEQUENTIAL\n" + "".join(f"{dialled};{PHONE}\n" for dialled in order))
    port = free_udp_port()
    args = [*_args(port), "-inf", str(inf), "-au", PHONE, "-ap", pbx.secret(PHONE),
            "-s", BACKLINE, "-m", str(len(order)), "-l", "1", "-r", f"{plan.rate:g}",
            "-recv_timeout", "8000",
            "-timeout", f"{len(order) / plan.rate + 60:g}s", "-timeout_error",
            f"{LOOPBACK}:{pbx.ports.sip}"]
    return LoadSipp(f"phone-{PHONE}", work / "phone", (SCENARIOS / "emergency_phone.xml")
                    .read_text(), args, port=port).start()


def _cpu_times() -> tuple[int, int]:
    """(busy, total) clock ticks of all the machine's cores since boot (/proc/stat)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle, iowait
    return sum(fields) - idle, sum(fields)


async def run(plan: Plan, work: Path) -> Result:
    async with contextlib.AsyncExitStack() as stack:
        await asyncio.to_thread(work.mkdir, exist_ok=True)
        pbx = await stack.enter_async_context(practice_pbx(work, "bench-911", observe=False))
        stack.callback(keep_log, pbx.instance, work / "asterisk-messages.log")
        settings = pbx.directory.connections.pbx
        assert isinstance(settings, AsteriskPbx)
        # As bench.calls: RTP on loopback, and ports enough that no other Asterisk on the
        # machine holding some of them makes a call fail.
        await asyncio.to_thread(bind_rtp_to_loopback, pbx.instance)
        await asyncio.to_thread(widen_rtp_range, pbx.instance)
        await asyncio.to_thread(add_direct_dial, pbx.instance, emergency_endpoint(settings))
        calls = len(ARMS) * plan.calls_per_arm
        far = await asyncio.to_thread(start_carrier, work, pbx.ports.trunk, calls)
        stack.callback(far.kill)
        ports = (pbx.ports.sip, pbx.ports.trunk)
        wire = Capture(work / "invites.pcap", ports)
        await asyncio.to_thread(wire.start)
        stack.callback(wire.kill)
        load_before, (busy, total) = os.getloadavg()[0], _cpu_times()
        phone = await asyncio.to_thread(start_phone, work, pbx, plan)
        stack.callback(phone.kill)
        result = await asyncio.to_thread(phone.wait, calls / plan.rate + 90)
        busy_after, total_after = _cpu_times()
        cores = os.cpu_count() or 1
        machine = Machine(cores, load_before, os.getloadavg()[0],
                          cores * (busy_after - busy) / max(1, total_after - total))
        await asyncio.to_thread(far.stop)
        seen = await asyncio.to_thread(wire.stop)
        sent = wire_sends(seen, pbx.ports.sip)
        ms = delays_ms(sent, wire_receipts(seen, pbx.ports.trunk))
        read = delays_ms(phone_sends(phone.call_log()), carrier_receipts(far.call_log()))
        return Result(ms["backline"], ms["direct"], ms["control"], result.failed,
                      len(sent) - sum(map(len, ms.values())), machine, read)


def measure(plan: Plan, keep: bool = False) -> Result:
    """The three arms by ``plan`` in a work directory of its own (removed unless ``keep``);
    raises BenchError, SippError, CaptureError or AsteriskError if they could not be
    compared."""
    work = Path(tempfile.mkdtemp(prefix="backline-bench-911-"))
    try:
        return asyncio.run(run(plan, work))
    finally:
        if keep:
            print(f"SIPp and Asterisk logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


# ----- output


def interval(diff: tuple[float, float, float]) -> str:
    return f"{diff[0]:+.3f} ms (95% interval {diff[1]:+.3f} to {diff[2]:+.3f} ms)"


def report(result: Result) -> list[str]:
    m = result.machine
    out = ["911 from a desk phone: its INVITE out to the PBX's INVITE out to the carrier, on "
           "the wire, one call at a time, the arms interleaved",
           f"machine: {m.cores} cores, load average {m.load_before:.2f} at the start, "
           f"{m.load_after:.2f} at the end, {m.busy_cores:.2f} cores busy during the run "
           "(the bench's own work included)",
           f"{'arm':<10} {'calls':>6} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}   (ms)"]
    for name, values in (("backline", result.backline_ms), ("direct", result.direct_ms),
                         ("control", result.control_ms)):
        out.append(f"{name:<10} {len(values):>6} {percentile(values, 50):>8.2f} "
                   f"{percentile(values, 90):>8.2f} {percentile(values, 99):>8.2f} "
                   f"{max(values, default=float('nan')):>8.2f}")
    verdict = "meets" if result.meets else "MISSES"
    out += [f"A/B, median backline - direct: {interval(result.difference)}",
            f"A/A, median control - direct (the same dialplan): {interval(result.noise)}",
            f"{verdict} the goal of no difference beyond noise (the A/B interval holds 0, or "
            "the A/B difference is within the A/A interval's reach)"]
    read = result.read_ms
    if all(read.get(arm) for arm in ARMS.values()):
        ab = median_difference(read["backline"], read["direct"])
        aa = median_difference(read["control"], read["direct"])
        out.append(f"as the SIPps timed them (the carrier's turn on the shared cores "
                   f"included): A/B {interval(ab)}, A/A {interval(aa)}")
    if result.failed or result.unmatched:
        out.append(f"  the phone counted {result.failed} failed calls; {result.unmatched} "
                   "INVITEs never reached the carrier (not in the figures)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.emergency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: a few calls")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (SIPp and Asterisk logs)")
    args = parser.parse_args(argv)
    logging.getLogger("backline").setLevel(logging.ERROR)  # each 911's notice line: not figures
    begun = time.monotonic()
    try:
        result = measure(QUICK if args.quick else FULL, args.keep)
    except (BenchError, SippError, CaptureError, AsteriskError) as exc:
        print(f"bench.emergency: {exc}", file=sys.stderr)
        return 1
    for line in report(result):
        print(line)
    print(f"took {time.monotonic() - begun:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
