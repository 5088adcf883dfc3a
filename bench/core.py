"""Decision cost of the pure core on a large practice.

200 users, 40 teams, 500 numbers (10 of them owned by the whole practice, so they ring about
190 people), up to 100,000 conversations: p50/p99 of one inbound routing decision (ring set
included) and one outbound decision, at 0, 10,000 and 100,000 conversations, to show that a
decision's cost does not grow with the conversations.  Each figure is the median over
``runs`` runs of ``samples`` decisions (the machine is shared: one run can be hit by another
process), with the load average before and after.  Also printed: a ring set built again
after a registration change (the whole practice's number: the costliest one), and one full
garbage collection at the largest size.
Run: .venv/bin/python -m bench.core [--runs 7] [--samples 20000]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from backline.core.conversations import ConversationBook
from backline.core.decisions import InboundCall, OutboundCall, RingDeskPhones
from backline.core.model import PRACTICE, Carry, Party, Team
from backline.core.outage import Mode
from backline.core.ownership import OwnershipBook
from backline.core.registrations import Registrations
from backline.core.routing import decide_outbound, route_inbound
from tests.practice import directory, number, t, u, user

GOAL_P99_US = 20.0  # inbound and outbound, at every size (issue 17)
SAMPLES = 20_000
SIZES = (0, 10_000, 100_000)


@dataclass(frozen=True)
class Row:
    """Medians over the runs at one number of conversations, in microseconds."""

    conversations: int
    inbound_p50: float
    inbound_p99: float
    outbound_p50: float
    outbound_p99: float


@dataclass(frozen=True)
class CoreFigures:
    rows: tuple[Row, ...]
    runs: int
    samples: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    rebuild_us: float  # the practice-wide ring set built again after a registration change
    full_gc_ms: float  # one full collection at the largest size

    @property
    def worst_p99(self) -> float:
        return max(max(r.inbound_p99, r.outbound_p99) for r in self.rows)

    @property
    def meets(self) -> bool:
        return self.worst_p99 < GOAL_P99_US


def build(rng: random.Random) -> tuple[OwnershipBook, Registrations, list[str], list[str]]:
    users = [user(f"user{i:03d}", active=rng.random() > 0.05, phones=rng.choice([1, 1, 2, 3]))
             for i in range(200)]
    ids = [x.id for x in users]
    teams = [Team(f"team{i:02d}", f"Team {i}", tuple(rng.sample(ids, rng.randint(3, 15))))
             for i in range(40)]
    parties: list[Party] = [u(i) for i in ids] + [t(x.id) for x in teams]
    numbers = []
    for i in range(500):
        owner = PRACTICE if i % 50 == 0 else rng.choice(parties)
        extra = tuple(rng.sample(parties, rng.randint(0, 3)))
        numbers.append(number(f"+1312{2000000 + i:07d}", owner, extra,
                              carries=(Carry.VOICE, Carry.SMS)))
    book = OwnershipBook(directory(users, teams, numbers, max_per_login=3))
    regs = Registrations(book, 3)
    phones = [p for x in users for p in x.desk_phones]
    for i, phone in enumerate(phones):
        if rng.random() < 0.9:
            regs.register(phone, f"sip:{phone}@10.0.0.{i % 250}", at=float(i))
    return book, regs, [n.number for n in numbers], phones


def percentiles(fn: Callable[[int], object], n: int) -> tuple[float, float]:
    for i in range(1000):
        fn(i)
    samples = []
    clock = time.perf_counter_ns
    for i in range(n):
        start = clock()
        fn(i)
        samples.append((clock() - start) / 1000)
    q = statistics.quantiles(samples, n=100)
    return q[49], q[98]


def rebuild_cost(book: OwnershipBook, regs: Registrations, phones: Sequence[str]) -> float:
    """Median time of an inbound decision on a practice-owned number right after a desk phone
    registered a new contact (which drops every kept ring set)."""
    whole = next(n.number for n in book.numbers if n.owner.kind is PRACTICE.kind)
    call = InboundCall(whole, "+17203000000")
    times = []
    for i in range(200):
        phone = phones[i % len(phones)]
        regs.register(phone, f"sip:{phone}@10.1.{i // 250}.{i % 250}", at=1e6 + i)
        start = time.perf_counter_ns()
        decision = route_inbound(book, regs, call, Mode.NORMAL, 25)
        times.append((time.perf_counter_ns() - start) / 1000)
        assert isinstance(decision, RingDeskPhones)
    return statistics.median(times)


def measure(runs: int = 7, samples: int = SAMPLES, sizes: Sequence[int] = SIZES) -> CoreFigures:
    """The figures; ``python -m bench`` calls this with a short plan."""
    load_before = os.getloadavg()
    rng = random.Random(7)
    book, regs, nums, phones = build(rng)
    parties = [f"+1720{3000000 + i:07d}" for i in range(20_000)]
    calls_in = [InboundCall(rng.choice(nums), rng.choice(parties)) for _ in range(4096)]
    calls_out = [OutboundCall(rng.choice(phones), rng.choice(parties), rng.choice(nums))
                 for _ in range(4096)]
    conversations = ConversationBook()
    ids = [x.id for x in book.directory.users]
    rows = []
    for target in sizes:
        while len(conversations) < target:
            conversations.add(rng.choice(nums), rng.choice(parties), rng.choice(ids))
        inbound = [percentiles(lambda i: route_inbound(
            book, regs, calls_in[i & 4095], Mode.NORMAL, 25), samples) for _ in range(runs)]
        outbound = [percentiles(lambda i: decide_outbound(
            book, conversations, calls_out[i & 4095], Mode.NORMAL), samples)
            for _ in range(runs)]
        rows.append(Row(len(conversations),
                        statistics.median(x[0] for x in inbound),
                        statistics.median(x[1] for x in inbound),
                        statistics.median(x[0] for x in outbound),
                        statistics.median(x[1] for x in outbound)))
    started = time.perf_counter()
    gc.collect()
    full_gc_ms = (time.perf_counter() - started) * 1000
    rebuild = rebuild_cost(book, regs, phones)
    return CoreFigures(tuple(rows), runs, samples, load_before, os.getloadavg(), rebuild,
                       full_gc_ms)


def report(f: CoreFigures) -> list[str]:
    lines = [f"{f.runs} runs of {f.samples} decisions per figure, median of the runs; "
             f"load average {f.load_before[0]:.2f} before, {f.load_after[0]:.2f} after "
             f"({os.cpu_count()} CPUs)",
             f"{'conversations':>13}  {'inbound p50':>11}  {'inbound p99':>11}  "
             f"{'outbound p50':>12}  {'outbound p99':>12}   (microseconds)"]
    lines += [f"{r.conversations:>13}  {r.inbound_p50:>11.1f}  {r.inbound_p99:>11.1f}  "
              f"{r.outbound_p50:>12.1f}  {r.outbound_p99:>12.1f}" for r in f.rows]
    lines.append(f"practice-wide ring set built again after a registration change: "
                 f"{f.rebuild_us:.1f} us; one full garbage collection at "
                 f"{f.rows[-1].conversations} conversations: {f.full_gc_ms:.1f} ms")
    verdict = "meets" if f.meets else "MISSES"
    lines.append(f"worst p99 {f.worst_p99:.1f} us: {verdict} the {GOAL_P99_US:.0f} us goal")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--samples", type=int, default=SAMPLES)
    args = parser.parse_args(argv)
    print("practice: 200 users, 40 teams, 500 numbers (10 owned by the whole practice)")
    print("\n".join(report(measure(args.runs, args.samples))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
