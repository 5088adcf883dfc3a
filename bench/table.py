"""Every bench with a short plan, and one table: figure, value, goal, meets or not.

Each section calls its bench's own functions (the ones its ``python -m bench.NAME`` prints
from) with the plan's sizes and turns what they return into rows; a section that cannot run
(a missing tool, a PBX that would not start) gives one row saying why and does not stop the
others.  The table notes the machine (cores, load average at the start and at the end) and
that every figure comes from one run: on a shared machine a figure is that machine's, not an
idle one's.  Run by ``python -m bench`` (bench/__main__.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import calls, ceiling, core, emergency, outage
from bench.ceiling import Ceiling
from bench.sipp_load import percentile


@dataclass(frozen=True, slots=True)
class Figure:
    """One row: what, how much, against what, and whether it meets it (None: no goal)."""

    name: str
    value: str
    goal: str = "-"
    meets: bool | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """How big each bench's run is."""

    name: str
    core_runs: int
    core_samples: int
    calls: ceiling.Plan
    outage: ceiling.Plan
    emergency: emergency.Plan
    journal_seconds: float
    esl_events: int
    fax_pages: int
    fax_runs: int
    alert_attempts: int
    wrk_seconds: int
    drain_items: int
    memory_conversations: int
    memory_held: int


SHORT = Plan("short", core_runs=3, core_samples=10_000, calls=calls.SHORT,
             outage=outage.SHORT, emergency=emergency.SHORT, journal_seconds=3.0,
             esl_events=50_000, fax_pages=50, fax_runs=3, alert_attempts=300,
             wrk_seconds=3, drain_items=1000, memory_conversations=100_000,
             memory_held=10_000)
QUICK = Plan("quick (a smoke run: figures too small to mean much)", core_runs=1,
             core_samples=2000, calls=calls.QUICK, outage=outage.QUICK,
             emergency=emergency.QUICK, journal_seconds=0.5,
             esl_events=5000, fax_pages=3, fax_runs=1, alert_attempts=20, wrk_seconds=1,
             drain_items=50, memory_conversations=1000, memory_held=100)


@dataclass(frozen=True, slots=True)
class Section:
    name: str  # the bench, as in ``python -m bench.NAME``
    figures: Callable[[Plan], tuple[list[Figure], list[str]]]  # rows, and notes under the table


# ----- sections: each runs its bench and reads what it returns


def core_section(plan: Plan) -> tuple[list[Figure], list[str]]:
    f = core.measure(plan.core_runs, plan.core_samples)
    largest = f.rows[-1]
    return [Figure(f"routing: worst decision p99 (0 to {largest.conversations:,} "
                   "conversations)", f"{f.worst_p99:.1f} µs", f"< {core.GOAL_P99_US:g} µs",
                   f.meets),
            Figure(f"routing: inbound p50 / p99 at {largest.conversations:,} conversations",
                   f"{largest.inbound_p50:.1f} / {largest.inbound_p99:.1f} µs")], []


def _ceiling_rows(found: Ceiling[calls.Step] | Ceiling[outage.Step], bench: str,
                  reference: str, subject: str, goal: float) -> tuple[list[Figure], list[str]]:
    value = f"{found.ceiling} cps" if found.ceiling else "none"
    if found.saturated_at:
        value += f" (not clean at {found.saturated_at})"
    elif found.ceiling:
        value += " (clean at the plan's top: the ceiling lies above)"
    rows = [Figure(f"{bench}: {reference} ceiling, no failed call or retransmission", value)]
    if found.ceiling:
        ratio = (f"{ceiling.two_places(found.ratio)} ({found.subject_rate} cps)"
                 if found.subject_rate or not found.out_of_time
                 else f"not measured: the time budget ended before {subject} had a clean rate")
        rows.append(Figure(f"{bench}: {subject}/{reference} at saturation", ratio,
                           f">= {goal}", found.ratio >= goal))
    else:  # a loaded machine: the reference failed even at the plan's lowest rate
        rows.append(Figure(f"{bench}: {subject}/{reference} at saturation",
                           f"not measured: {reference} was not clean at any rate of the plan",
                           f">= {goal}", False))
    notes = []
    for arm in (found.reference, found.subject):
        probe = found.unclean(arm)
        if probe is not None:
            notes.append(f"{bench}, {arm} at {probe.rate} cps ran out of: "
                         f"{ceiling.ran_out(probe.step.split)}")
    return rows, notes


def memory_section(plan: Plan) -> tuple[list[Figure], list[str]]:
    from bench import memory

    f = asyncio.run(memory.measure(plan.memory_conversations, plan.memory_held))
    phases = " / ".join(f"{p.rss_mb:.0f}" for p in f.phases)
    seen: set[str] = set()
    labels = []
    for p in f.phases:  # a phase measured twice is told apart by its note
        note = p.note.split(" (")[0]
        labels.append(f"{p.name}, {note}" if p.name in seen and note else p.name)
        seen.add(p.name)
    names = " / ".join(labels)
    return [Figure(f"controller memory, resident: {names}",
                   f"{phases} MB (peak {max(p.peak_mb for p in f.phases):.0f})",
                   f"< {memory.GOAL_MB:g} MB", f.meets)], []


def calls_section(plan: Plan) -> tuple[list[Figure], list[str]]:
    result = calls.measure(plan.calls)
    rows, notes = _ceiling_rows(result.found, "calls", "static", "controller",
                                calls.GOAL_RATIO)
    d = result.decisions_ms
    if d:
        p99 = percentile(d, 99)
        rows.append(Figure("calls: FastAGI decision p99 (clean steps)", f"{p99:.2f} ms",
                           f"< {calls.GOAL_P99_MS:g} ms", p99 < calls.GOAL_P99_MS))
    return rows, notes


def outage_section(plan: Plan) -> tuple[list[Figure], list[str]]:
    result = outage.measure(plan.outage)
    rows, notes = _ceiling_rows(result.found, "outage", "killed", "up", outage.GOAL_RATIO)
    answered = result.answered("up")
    rows.append(Figure("outage: calls journaled with the controller up",
                       f"{result.journaled['up']} of {answered}", "every one",
                       result.journaled["up"] == answered))
    return rows, notes


def emergency_section(plan: Plan) -> tuple[list[Figure], list[str]]:
    r = emergency.measure(plan.emergency)
    diff, low, high = r.difference
    same, same_low, same_high = r.noise
    m = r.machine
    return [Figure("911: phone INVITE to carrier INVITE on the wire, p50, Backline / direct dial / "
                   "direct again",
                   f"{emergency.percentile(r.backline_ms, 50):.2f} / "
                   f"{emergency.percentile(r.direct_ms, 50):.2f} / "
                   f"{emergency.percentile(r.control_ms, 50):.2f} ms"),
            Figure("911: direct minus direct, the A/A control (median, 95% interval)",
                   f"{same:+.2f} ms ({same_low:+.2f} to {same_high:+.2f})"),
            Figure("911: Backline minus direct (median, 95% interval)",
                   f"{diff:+.2f} ms ({low:+.2f} to {high:+.2f})",
                   "interval holds 0, or within the A/A's", r.meets)], [
        f"911: the arms interleaved, one call at a time; load average {m.load_before:.1f} to "
        f"{m.load_after:.1f}, {m.busy_cores:.2f} of {m.cores} cores busy"]


def journal_section(plan: Plan) -> tuple[list[Figure], list[str]]:
    from bench import journal

    rows = []
    for r in journal.measure(plan.journal_seconds):
        label = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}.get(r.backend, r.backend)
        name = (f"journal: {label}, {r.writers} writer{'s' if r.writers > 1 else ''}: "
                "attempts/s, p99, longest wait")
        value = f"{r.rate:,.0f}/s, {r.percentile(99):.2f} ms, {r.max_ms:,.0f} ms"
        rows.append(Figure(name, value, f"longest < {journal.GOAL_MAX_MS:g} ms",
                           r.max_ms < journal.GOAL_MAX_MS))
    return rows, []


def esl_section(plan: Plan) -> tuple[list[Figure], list[str]]:
    from bench import esl

    (f,) = esl.measure(plan.esl_events, kinds=("sofia::register",))
    rate = f.bridge_per_s
    return [Figure("ESL: sofia::register events/s through the bridge (codec alone)",
                   f"{rate:,.0f} ({f.codec_per_s:,.0f})", f">= {esl.GOAL_EVENTS_PER_S:,}",
                   rate >= esl.GOAL_EVENTS_PER_S)], [
        f"ESL, sofia::register through the bridge: {f.bridge.per_cpu_s:,.0f} events per "
        f"CPU-second of its process; {esl.cpu_split(f.bridge)}"]


def fax_section(plan: Plan) -> tuple[list[Figure], list[str]]:
    from bench import fax_pdf
    from tests.fax_samples import FINE, fax_tiff, letter

    pages = tuple(letter(FINE, seed) for seed in range(plan.fax_pages))
    tiff = fax_tiff(pages, coding="group3_2d", clean=False)
    with tempfile.TemporaryDirectory(prefix="backline-bench-fax-") as tmp:
        results = {r.tool: r for r in fax_pdf.measure(tiff, plan.fax_runs, Path(tmp))}
    ours = results["backline"]
    theirs = results.get("tiff2pdf")
    label = f"fax: {plan.fax_pages} Group 3 pages not marked clean, Backline / tiff2pdf"
    if theirs is None:
        return [Figure(label, f"{ours.seconds * 1000:.0f} ms / - (no tiff2pdf)",
                       "<= tiff2pdf", None)], []
    return [Figure(label, f"{ours.seconds * 1000:.0f} / {theirs.seconds * 1000:.0f} ms",
                   "<= tiff2pdf", ours.seconds <= theirs.seconds)], []


def alerts_section(plan: Plan) -> tuple[list[Figure], list[str]]:
    from bench import alerts

    with tempfile.TemporaryDirectory() as tmp:
        gathered = asyncio.run(alerts.attempts_to_alerts(Path(tmp), plan.alert_attempts,
                                                         gathered=True))
    with tempfile.TemporaryDirectory() as tmp:
        pages = asyncio.run(alerts.link_pages(Path(tmp), plan.wrk_seconds, 16))
    rate, p99 = pages["alert page (3 attempts)"]
    return [Figure("alerts: attempts/s journaled to delivered alerts (gathered)",
                   f"{gathered:,.0f}/s"),
            Figure("alerts: link page requests/s under wrk, p99", f"{rate:,.0f}/s, "
                   f"{p99:.1f} ms")], []


def drain_section(plan: Plan) -> tuple[list[Figure], list[str]]:
    from bench import drain

    rate = asyncio.run(drain.run(plan.drain_items, 0.0))
    return [Figure(f"inbox drain: held items/s delivered in order ({plan.drain_items:,})",
                   f"{rate:,.0f}/s")], []


SECTIONS = (
    Section("core", core_section),
    Section("memory", memory_section),
    Section("journal", journal_section),
    Section("esl", esl_section),
    Section("fax_pdf", fax_section),
    Section("alerts", alerts_section),
    Section("drain", drain_section),
    Section("emergency", emergency_section),
    Section("calls", calls_section),
    Section("outage", outage_section),
)


# ----- the table


@dataclass(frozen=True, slots=True)
class Report:
    plan: str
    rows: tuple[Figure, ...]
    notes: tuple[str, ...]
    failed: tuple[str, ...]  # sections that could not run
    cores: int
    load_start: tuple[float, float, float]
    load_end: tuple[float, float, float]
    started: datetime
    seconds: float

    def lines(self) -> list[str]:
        """The table in Markdown, so that docs/benchmarks.md can hold it as printed."""
        def load(x: tuple[float, float, float]) -> str:
            return " / ".join(f"{v:.2f}" for v in x)

        out = [f"Machine: {self.cores} cores ({platform.machine()}), load average (1 / 5 / 15 "
               f"min) {load(self.load_start)} at the start, {load(self.load_end)} at the end. "
               f"Plan: {self.plan}. Every figure is from one run, started "
               f"{self.started:%Y-%m-%d %H:%M} UTC, {self.seconds:.0f} s in all.",
               "",
               "| figure | value | goal | meets |",
               "| --- | --- | --- | --- |"]
        for f in self.rows:
            meets = "-" if f.meets is None else ("yes" if f.meets else "**no**")
            out.append(f"| {f.name} | {f.value} | {f.goal} | {meets} |")
        if self.notes:
            out += ["", *(f"- {n}" for n in self.notes)]
        return out


def run(plan: Plan, sections: Sequence[Section] = SECTIONS) -> Report:
    """Every section by PLAN, in order, each reported on stderr as it goes."""
    started, begun = datetime.now(UTC), time.monotonic()
    load_start = os.getloadavg()
    rows: list[Figure] = []
    notes: list[str] = []
    failed: list[str] = []
    for section in sections:
        print(f"bench: {section.name} ...", file=sys.stderr, flush=True)
        took = time.monotonic()
        try:
            # The benches print their own tables as they go: to stderr, so that stdout is
            # the one table.
            with contextlib.redirect_stdout(sys.stderr):
                figures, more = section.figures(plan)
        except Exception as exc:  # one bench's failure must not lose the others' figures
            rows.append(Figure(f"{section.name}: could not run",
                               f"{type(exc).__name__}: {exc}".splitlines()[0][:120], "runs",
                               False))
            failed.append(section.name)
            continue
        rows += figures
        notes += more
        print(f"bench: {section.name} took {time.monotonic() - took:.0f} s", file=sys.stderr,
              flush=True)
    return Report(plan.name, tuple(rows), tuple(notes), tuple(failed), os.cpu_count() or 1,
                  load_start, os.getloadavg(), started, time.monotonic() - begun)


def verdicts(report: Report) -> tuple[int, int]:
    """(figures meeting their goal, figures with a goal)."""
    goals = [f for f in report.rows if f.meets is not None]
    return sum(1 for f in goals if f.meets), len(goals)


__all__ = ["QUICK", "SECTIONS", "SHORT", "Figure", "Plan", "Report", "Section", "run",
           "verdicts"]
