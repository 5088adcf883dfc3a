"""Decision cost of the pure core on a large practice.

200 users, 40 teams, 500 numbers, up to 100,000 conversations: prints p50/p99 of one inbound
routing decision (ring set included) and one outbound decision, at 0, 10,000 and 100,000
conversations, to show that a decision's cost does not grow with the conversations.
Run: .venv/bin/python -m bench.core
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections.abc import Callable

from backline.core.conversations import ConversationBook
from backline.core.decisions import InboundCall, OutboundCall
from backline.core.model import PRACTICE, Carry, Party, Team
from backline.core.outage import Mode
from backline.core.ownership import OwnershipBook
from backline.core.registrations import Registrations
from backline.core.routing import decide_outbound, route_inbound
from tests.practice import directory, number, t, u, user

GOAL_P99_US = 50.0
SAMPLES = 20_000


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


def main() -> int:
    rng = random.Random(7)
    book, regs, nums, phones = build(rng)
    parties = [f"+1720{3000000 + i:07d}" for i in range(20_000)]
    calls_in = [InboundCall(rng.choice(nums), rng.choice(parties)) for _ in range(4096)]
    calls_out = [OutboundCall(rng.choice(phones), rng.choice(parties), rng.choice(nums))
                 for _ in range(4096)]
    conversations = ConversationBook()
    ids = [x.id for x in book.directory.users]
    print(f"practice: {len(book.directory.users)} users, {len(book.directory.teams)} teams, "
          f"{len(nums)} numbers, {len(phones)} desk phones; {SAMPLES} samples per figure")
    print(f"{'conversations':>13}  {'inbound p50':>11}  {'inbound p99':>11}  "
          f"{'outbound p50':>12}  {'outbound p99':>12}   (microseconds)")
    worst = 0.0
    for target in (0, 10_000, 100_000):
        while len(conversations) < target:
            conversations.add(rng.choice(nums), rng.choice(parties), rng.choice(ids))
        in50, in99 = percentiles(lambda i: route_inbound(
            book, regs, calls_in[i & 4095], Mode.NORMAL, 25), SAMPLES)
        out50, out99 = percentiles(lambda i: decide_outbound(
            book, conversations, calls_out[i & 4095], Mode.NORMAL), SAMPLES)
        worst = max(worst, in99, out99)
        print(f"{len(conversations):>13}  {in50:>11.1f}  {in99:>11.1f}  {out50:>12.1f}  "
              f"{out99:>12.1f}")
    verdict = "meets" if worst < GOAL_P99_US else "MISSES"
    print(f"worst p99 {worst:.1f} us: {verdict} the {GOAL_P99_US:.0f} us goal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
