"""Benchmark the journal's write path: attempts recorded per second, SQLite vs PostgreSQL.

Run: .venv/bin/python -m bench.journal [--seconds 5] [--writers 1 8]

Each writer is a thread with its own journal (its own connection, as each controller of a
several-node setup has) calling ``record_attempt`` in a loop with new keys; every call returns
only once its attempt is durably committed (SQLite ``synchronous=FULL`` in WAL mode;
PostgreSQL ``synchronous_commit=on`` with the server's default ``fsync=on``).  Both databases
sit on the same filesystem (a temporary directory); the PostgreSQL server is Debian's, started
for the run by tests/harness/postgres.py and reached over loopback TCP with a password.

SQLite lets one writer in at a time (``BEGIN IMMEDIATE``), so more writers queue, taking
turns (backline.journal.turns: before them, SQLite's busy handler let one record of 8 writers
wait 5 s, the whole run); PostgreSQL commits them side by side and flushes several commits
with one WAL fsync.  Goal: no record waits as long as GOAL_MAX_MS, on either backend.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.harness

from backline.core.outage import Mode
from backline.journal import AttemptKind, Delivery, NewAttempt, Outcome, open_journal
from tests.harness.postgres import running_server

GOAL_MAX_MS = 250.0  # a caller in an outage hears the announcement after its record


@dataclass(frozen=True)
class Result:
    backend: str
    writers: int
    attempts: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.attempts / self.seconds

    def percentile(self, p: float) -> float:
        return statistics.quantiles(self.latencies, n=100)[int(p) - 1] * 1000

    @property
    def max_ms(self) -> float:
        return max(self.latencies) * 1000


def write_for(url: str, writers: int, seconds: float, label: str) -> Result:
    """``writers`` threads recording attempts for ``seconds``; count what was acknowledged."""
    journals = [open_journal(url) for _ in range(writers)]
    start = threading.Barrier(writers + 1)
    counts = [0] * writers
    latencies: list[list[float]] = [[] for _ in range(writers)]
    stop_at = [0.0]

    def writer(i: int) -> None:
        journal = journals[i]
        start.wait()
        n = 0
        while time.perf_counter() < stop_at[0]:
            began = time.perf_counter()
            journal.record_attempt(NewAttempt(
                f"{label}-w{i}-{n}", datetime.now(UTC), AttemptKind.CALL, Mode.OUTAGE,
                "+17205550141", "+13125550100", Outcome.ANNOUNCED, node=f"node{i}",
                delivery=Delivery.HELD))
            latencies[i].append(time.perf_counter() - began)
            n += 1
        counts[i] = n

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    for j in journals:
        j.close()
    return Result(label, writers, sum(counts), elapsed, [x for xs in latencies for x in xs])


@contextmanager
def sqlite_urls(tmp: Path) -> Iterator[Callable[[str], str]]:
    yield lambda name: f"sqlite://{tmp / name}.db"


@contextmanager
def postgres_urls() -> Iterator[Callable[[str], str]]:
    # libpq's password file only while the server runs (tests/test_bench.py runs this in a
    # pytest worker whose later tests must not inherit it).
    with running_server() as server, mock.patch.dict(os.environ,
                                                     {"PGPASSFILE": str(server.passfile)}):
        yield server.new_database


def measure(seconds: float = 5.0, writers: Sequence[int] = (1, 8)) -> list[Result]:
    """Each backend at each number of writers; ``python -m bench`` calls this."""
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="backline-bench-journal-") as tmp:
        for backend, urls in (("sqlite", sqlite_urls(Path(tmp))), ("postgresql", postgres_urls())):
            with urls as new_url:
                for n in writers:
                    results.append(write_for(new_url(f"w{n}"), n, seconds, backend))
                    print(f"  {backend} x{n}: {results[-1].attempts} attempts", file=sys.stderr)
    return results


def report(results: Sequence[Result], seconds: float) -> list[str]:
    lines = [f"Durable record_attempt, {seconds:g} s per run, new key each call "
             f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f})",
             f"{'backend':<11} {'writers':>7} {'attempts/s':>11} {'p50 ms':>8} {'p99 ms':>8} "
             f"{'mean ms':>8} {'max ms':>8}"]
    lines += [f"{r.backend:<11} {r.writers:>7} {r.rate:>11.0f} {r.percentile(50):>8.2f} "
              f"{r.percentile(99):>8.2f} {statistics.fmean(r.latencies) * 1000:>8.2f} "
              f"{r.max_ms:>8.1f}" for r in results]
    worst = max(r.max_ms for r in results)
    verdict = "meets" if worst < GOAL_MAX_MS else "MISSES"
    lines.append(f"longest wait {worst:.1f} ms: {verdict} the {GOAL_MAX_MS:.0f} ms goal")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    print("\n".join(report(measure(args.seconds, args.writers), args.seconds)))


if __name__ == "__main__":
    main()
