"""Finding where a PBX gives out: the search bench.calls and bench.outage share, and the CPU
split that says who ran out first.

Two arms on two Asterisks: a *reference* (no controller in the call's path: a static
dialplan, or the fail-safe dialplan with the controller killed) and a *subject* (the controller
in the path).  The search spends the time budget near the reference's ceiling, not on low
rates:

1. climb: the reference at ``first``, doubling, until a rate is not clean (a failed call, a
   retransmission, answers slower than the rate, or what the bench adds) or the plan's top;
2. bisect: between the last clean rate and the first unclean one, until they lie within
   ``resolution`` of each other; the reference's ceiling is then the last clean rate;
3. at the ceiling: the subject at the ceiling and at the reference's first unclean rate (or,
   if it is not clean at the ceiling, just below it and further down, then bisected to its
   own ceiling), with the reference measured at its ceiling once more in between, so both
   arms meet the machine's other work at the same time.

A rate counts as unclean only if it fails twice in a row: the machine is shared, and one burst
of another job's work must not decide a ceiling.  Ratio at saturation = the subject's highest
clean rate / the reference's ceiling.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

CORE_FULL = 0.9  # a single-threaded process at this share of one core has run out
MACHINE_FULL = 0.9  # the machine's busy time at this share of all its cores has run out
STEP_OVERHEAD = 3.0  # s per step besides placing the calls: SIPp start, the last answers


@dataclass(frozen=True, slots=True)
class Plan:
    """How far and how finely to search, and for how long."""

    first: int  # the reference's first rate (calls per second)
    top: int  # no rate above this
    step_seconds: float  # each step places about this many seconds of calls...
    max_calls_per_step: int  # ...but no more calls than this
    budget_seconds: float  # no step starts that would end after this (both arms)
    resolution: float = 0.1  # bisect until the bracket is this fraction of its low end
    below: tuple[float, ...] = (0.9, 0.75, 0.5, 0.25)  # the subject's rates under the ceiling

    def calls(self, rate: int) -> int:
        return max(2, min(self.max_calls_per_step, round(rate * self.step_seconds)))

    def seconds(self, rate: int) -> float:
        """What a step at RATE is expected to take."""
        return self.calls(rate) / rate + STEP_OVERHEAD


# ----- CPU, from /proc


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of process PID so far (all its threads; a zombie's final
    figures until it is reaped); 0.0 if gone."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy (not idle, not waiting on I/O) since boot."""
    with open("/proc/stat") as stat:
        ticks = [int(t) for t in stat.readline().split()[1:]]
    busy = sum(ticks[:8]) - ticks[3] - ticks[4]  # guest time is already in user
    return busy / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Split:
    """CPU used over a step, in cores (1.0 = one core busy the whole step)."""

    asterisk: float  # the arm's Asterisk (all its threads)
    controller: float  # the controller's process (0 on a reference arm with none)
    sipp: float  # the carrier SIPp: one thread, so 1.0 is all it can have
    phones: float  # the arm's SIPp desk phones, if any
    other: float  # everything else on the machine: the other arm, other people's work
    cores: int

    @property
    def busy(self) -> float:
        return self.asterisk + self.controller + self.sipp + self.phones + self.other


class Meter:
    """CPU seconds of the step's processes at its start; ``split()`` at its end.

    The carrier SIPp starts and ends within the step: its whole life's CPU comes from
    bench.sipp_load.finish (read before it is reaped), not from here."""

    def __init__(self, asterisk: int | None, controller: int | None,
                 phones: Sequence[int | None] = ()) -> None:
        self._pids = (asterisk, controller, tuple(phones))
        self._start = self._sample()

    def _sample(self) -> tuple[float, float, float, float, float]:
        asterisk, controller, phones = self._pids
        return (time.monotonic(), cpu_seconds(asterisk), cpu_seconds(controller),
                sum(cpu_seconds(p) for p in phones), machine_busy_seconds())

    def split(self, carrier_cpu: float) -> Split:
        end = self._sample()
        wall = max(end[0] - self._start[0], 1e-9)
        asterisk, controller, phones, machine = (
            max(0.0, (e - s) / wall) for s, e in zip(self._start[1:], end[1:], strict=True))
        sipp = carrier_cpu / wall
        other = max(0.0, machine - asterisk - controller - phones - sipp)
        return Split(asterisk, controller, sipp, phones, other, os.cpu_count() or 1)


def ran_out(split: Split) -> str:
    """Who ran out of CPU over a step, in words: a single-threaded process at a full core, or
    the machine's cores, or nobody (then the limit is not CPU)."""
    shares = (f"Asterisk {split.asterisk:.0%}, controller {split.controller:.0%}, carrier "
              f"SIPp {split.sipp:.0%}, desk-phone SIPp {split.phones:.0%}, other work "
              f"{split.other:.0%} of a core")
    if split.sipp >= CORE_FULL:
        return (f"the carrier SIPp (one thread, at {split.sipp:.0%} of a core): SIPp is the "
                f"limit here, not the PBX ({shares})")
    if split.controller >= CORE_FULL:
        return f"the controller (one Python thread, at {split.controller:.0%}) ({shares})"
    if split.busy >= MACHINE_FULL * split.cores:
        who = "other people's work" if split.other > split.asterisk else "Asterisk"
        return (f"the machine's {split.cores} cores, mostly {who} ({shares})")
    return f"no CPU: {split.busy:.0%} of {split.cores} cores busy ({shares})"


# ----- the search


class Rig(Protocol):
    name: str


class Measured(Protocol):
    @property
    def passed(self) -> bool: ...

    @property
    def split(self) -> Split: ...


R = TypeVar("R", bound=Rig)
S = TypeVar("S", bound=Measured)


@dataclass(frozen=True, slots=True)
class Probe(Generic[S]):
    """One step of the search: which arm, why (the phase), at what rate, and what it did."""

    arm: str
    phase: str  # climb, bisect, ceiling, saturation, below
    rate: int
    step: S


@dataclass(frozen=True, slots=True)
class Ceiling(Generic[S]):
    """What the search found."""

    probes: tuple[Probe[S], ...]
    reference: str
    subject: str
    ceiling: int  # the reference's highest clean rate (0: not even the first)
    saturated_at: int  # its lowest unclean rate (0: none found, see stopped_by)
    subject_rate: int  # the subject's highest clean rate tried (0: none)
    stopped_by: str
    out_of_time: bool = False  # the budget ended the search before it was done

    @property
    def ratio(self) -> float:
        """Subject / reference at the reference's ceiling (nan if there is none)."""
        return self.subject_rate / self.ceiling if self.ceiling else float("nan")

    def unclean(self, arm: str) -> Probe[S] | None:
        """The arm's last step at the lowest rate it never passed: where it ran out (a rate
        that failed once and then passed was the machine's hiccup, not the arm's limit)."""
        mine = [p for p in self.probes if p.arm == arm]
        passed = {p.rate for p in mine if p.step.passed}
        failed = [p for p in mine if p.rate not in passed]
        if not failed:
            return None
        lowest = min(p.rate for p in failed)
        return [p for p in failed if p.rate == lowest][-1]


class _Search(Generic[R, S]):
    def __init__(self, plan: Plan, step: Callable[[R, int, int], Awaitable[S]]) -> None:
        self.plan = plan
        self.step = step
        self.probes: list[Probe[S]] = []
        self.out_of_time = False
        self.started = time.monotonic()

    def fits(self, rate: int, reserve: float = 0.0) -> bool:
        spent = time.monotonic() - self.started
        return spent + self.plan.seconds(rate) + reserve <= self.plan.budget_seconds

    async def once(self, rig: R, rate: int, phase: str) -> bool:
        done = await self.step(rig, rate, self.plan.calls(rate))
        self.probes.append(Probe(rig.name, phase, rate, done))
        print(f"  {rig.name:<10} {phase:<10} {rate:>5} cps: "
              f"{'clean' if done.passed else 'NOT clean'}", file=sys.stderr, flush=True)
        return done.passed

    async def clean(self, rig: R, rate: int, phase: str, reserve: float = 0.0) -> bool | None:
        """Whether RATE is clean on RIG: passed, or failed once and then passed (None: the
        budget has no room for it)."""
        if not self.fits(rate, reserve):
            self.out_of_time = True
            return None
        if await self.once(rig, rate, phase):
            return True
        if not self.fits(rate, reserve):
            return False
        return await self.once(rig, rate, phase + " again")


async def find_ceiling(reference: R, subject: R, plan: Plan,
                       step: Callable[[R, int, int], Awaitable[S]]) -> Ceiling[S]:
    """The search in the module's docstring; ``step(rig, rate, calls)`` runs one step."""
    search = _Search(plan, step)
    # The subject's part needs some five steps near the ceiling (each unclean rate is tried
    # twice): keep room for them.
    def reserve(rate: int) -> float:
        return 5 * plan.seconds(rate)

    lo, hi, stopped = 0, 0, ""
    rate = plan.first
    while True:  # 1. climb by doubling
        verdict = await search.clean(reference, rate, "climb", reserve(rate))
        if verdict is None:
            stopped = f"time budget ({plan.budget_seconds:g} s) spent while climbing"
            break
        if not verdict:
            hi = rate
            break
        lo = rate
        if rate >= plan.top:
            stopped = f"the reference passed the plan's top rate ({plan.top} cps)"
            break
        rate = min(plan.top, rate * 2)
    while hi and lo and hi - lo > max(1, plan.resolution * lo):  # 2. bisect
        mid = (lo + hi) // 2
        verdict = await search.clean(reference, mid, "bisect", reserve(mid))
        if verdict is None:
            stopped = f"time budget spent while bisecting ({lo}-{hi} cps)"
            break
        lo, hi = (mid, hi) if verdict else (lo, mid)
    if not stopped:
        stopped = f"the reference is clean at {lo} cps, not at {hi}" if lo else \
            f"the reference was not clean even at {plan.first} cps"
    found = 0
    if lo:  # 3. the subject at the ceiling, the reference there again in between
        at_ceiling = await search.clean(subject, lo, "ceiling")
        if at_ceiling is None:
            stopped += "; no time left for the subject"
        elif at_ceiling:
            found = lo
            await search.clean(reference, lo, "ceiling")
            if hi and await search.clean(subject, hi, "saturation"):
                found = hi
        else:
            await search.clean(reference, lo, "ceiling")
            failed = lo
            for fraction in plan.below:
                # Up, not to the nearest: at 0.9 x 225 = 202.5 the subject tried at 202 and
                # clean there read 0.89 against a 0.9 goal it may well have met.
                below = max(1, math.ceil(lo * fraction))
                verdict = await search.clean(subject, below, "below")
                if verdict is None:
                    break
                if verdict:
                    found = below
                    break
                failed = below
            # The subject's own ceiling between its last clean and first unclean rate, as
            # finely as the reference's, while the budget lasts.
            while found and failed - found > max(1, plan.resolution * found):
                mid = (found + failed) // 2
                verdict = await search.clean(subject, mid, "bisect")
                if verdict is None:
                    break
                found, failed = (mid, failed) if verdict else (found, mid)
    if lo and not found and search.out_of_time:
        stopped += "; the time budget ended before the subject had a clean rate"
    return Ceiling(tuple(search.probes), reference.name, subject.name, lo, hi, found, stopped,
                   search.out_of_time)


def two_places(ratio: float) -> str:
    """RATIO cut (not rounded) to two decimals, so that 0.897 does not read as a met 0.90."""
    return f"{math.floor(ratio * 100) / 100:.2f}"


def cpu_columns() -> str:
    return f"{'ast':>5} {'ctl':>5} {'sipp':>5} {'phones':>6} {'other':>5}"


def cpu_row(split: Split) -> str:
    return (f"{split.asterisk:>5.0%} {split.controller:>5.0%} {split.sipp:>5.0%} "
            f"{split.phones:>6.0%} {split.other:>5.0%}")


def summary(found: Ceiling[S], *, reference: str, subject: str, goal: float) -> list[str]:
    """The ceiling, the ratio at saturation against GOAL, and who ran out on each arm."""
    out = []
    if found.ceiling:
        out.append(f"{reference} ceiling: {found.ceiling} cps clean"
                   + (f", not clean at {found.saturated_at} cps" if found.saturated_at else "")
                   + f" ({found.stopped_by})")
    else:
        out.append(f"{reference} ceiling: none found ({found.stopped_by})")
    if found.ceiling and not found.subject_rate and found.out_of_time:
        out.append(f"ratio at saturation {subject}/{reference}: not measured (the time "
                   f"budget ended before {subject} had a clean rate)")
    elif found.ceiling:
        verdict = "meets" if found.ratio >= goal else "MISSES"
        out.append(f"ratio at saturation {subject}/{reference}: {two_places(found.ratio)} "
                   f"({found.subject_rate} / {found.ceiling} cps; {verdict} the >= {goal} "
                   "goal)")
    for arm, label in ((found.reference, reference), (found.subject, subject)):
        probe = found.unclean(arm)
        if probe is None:
            out.append(f"  {label}: clean at every rate tried")
        else:
            out.append(f"  {label} at {probe.rate} cps ran out of: {ran_out(probe.step.split)}")
    return out


__all__ = [
    "Ceiling",
    "Meter",
    "Plan",
    "Probe",
    "Split",
    "cpu_columns",
    "cpu_row",
    "cpu_seconds",
    "find_ceiling",
    "machine_busy_seconds",
    "ran_out",
    "summary",
    "two_places",
]
