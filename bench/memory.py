"""The controller's resident memory: idle, at 100,000 conversations, with 10,000 held items.

``backline run`` on the test practice (tests/harness/practice_pbx.py: a real Asterisk from the
repo's chroot, AMI and FastAGI connected) in a process of its own, three times on one journal:

- idle: a fresh journal;
- conversations: 100,000 conversations with someone added to each (written to the journal in
  one transaction before the start, as years of use would leave them), read at start; then one
  more added with ``backline conversation add``, which the running controller reads again;
- held: the outage engaged and 10,000 held attempts (calls and SMS, in batches) on top.

Printed per phase: VmRSS from /proc once ``ready`` was printed and the process settled, and
VmHWM (the peak resident size the process reached, loading included).  Goal: under 100 MB.
Run: .venv/bin/python -m bench.memory [--conversations 100000] [--held 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from backline.core.outage import Mode
from backline.journal import AttemptKind, Delivery, NewAttempt, Outcome, open_journal
from backline.journal.rows import to_text
from bench.controller_process import ControllerProcess, backline
from tests.harness.practice_pbx import practice_pbx

GOAL_MB = 100.0
SETTLE_SECONDS = 3.0  # after `ready`: the first rounds of the features have run
CONVERSATIONS = 100_000
HELD = 10_000
# The test practice's numbers and, for each, users who are not its members (the only people
# one adds to a single conversation).
ADDED = (("+13125550101", ("sam", "jo", "raj")), ("+13125550102", ("ana", "mia")))


@dataclass(frozen=True)
class Phase:
    name: str
    rss_mb: float  # settled, after ready
    peak_mb: float  # VmHWM: the most the process held at once
    note: str = ""


@dataclass(frozen=True)
class MemoryFigures:
    phases: tuple[Phase, ...]
    load: tuple[float, float, float]

    @property
    def worst_mb(self) -> float:
        return max(max(p.rss_mb, p.peak_mb) for p in self.phases)

    @property
    def meets(self) -> bool:
        return self.worst_mb < GOAL_MB


def status_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MB, from /proc."""
    fields = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def seed_conversations(journal_path: Path, count: int) -> None:
    """``count`` conversations with one person added to each, as the journal holds them."""
    at = datetime(2025, 1, 1, tzinfo=UTC)
    rows = []
    for i in range(count):
        number, users = ADDED[i % len(ADDED)]
        when = to_text(at + timedelta(seconds=i))
        rows.append((number, f"+1720{2000000 + i:07d}", users[i % len(users)], when,
                     "bench", "cli"))
    with contextlib.closing(sqlite3.connect(journal_path)) as db, db:
        db.executemany("INSERT INTO conversation_members (number, party, user_id, added_at, "
                       "added_by, via) VALUES (?, ?, ?, ?, ?, ?)", rows)
        db.executemany("INSERT INTO conversation_changes (at, by_whom, via, action, number, "
                       "party, user_id) VALUES (?, ?, ?, 'add', ?, ?, ?)",
                       [(r[3], r[4], r[5], r[0], r[1], r[2]) for r in rows])


def seed_held(url: str, count: int) -> None:
    """``count`` attempts held for the inbox: calls and SMS (a sentence each)."""
    journal = open_journal(url)
    try:
        base = datetime.now(UTC) - timedelta(hours=1)
        batch: list[NewAttempt] = []
        for i in range(count):
            sms = i % 2 == 1
            batch.append(NewAttempt(
                f"bench-held-{i}", base + timedelta(milliseconds=i),
                AttemptKind.SMS if sms else AttemptKind.CALL, Mode.OUTAGE,
                f"+1720{5000000 + i:07d}", ADDED[i % 2][0],
                Outcome.AUTO_REPLIED if sms else Outcome.ANNOUNCED,
                text=f"Hello, this is patient {i}; please call me back about my appointment."
                if sms else "", delivery=Delivery.HELD))
            if len(batch) == 500:
                journal.record_attempts(batch)
                batch = []
        if batch:
            journal.record_attempts(batch)
    finally:
        journal.close()


def settled(controller: ControllerProcess) -> tuple[float, float]:
    time.sleep(SETTLE_SECONDS)
    assert controller.pid is not None, "the controller ended"
    return status_mb(controller.pid)


async def measure(conversations: int = CONVERSATIONS, held: int = HELD) -> MemoryFigures:
    """The three phases; ``python -m bench`` calls this."""
    phases: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="backline-bench-memory-") as tmp:
        work = Path(tmp)
        async with practice_pbx(work, "bench-memory", controller_in_process=False,
                                observe=False) as pbx:
            config = pbx.config_path
            url = pbx.directory.connections.storage.url
            journal_path = Path(url.removeprefix("sqlite://"))

            def run_phase(name: str) -> ControllerProcess:
                controller = ControllerProcess(config, work / f"controller-{name}.log")
                controller.wait_for("ready")
                return controller

            def idle() -> None:
                with run_phase("idle") as controller:
                    phases.append(Phase("idle", *settled(controller)))

            def with_conversations() -> None:
                seed_conversations(journal_path, conversations)
                with run_phase("conversations") as controller:
                    rss, peak = settled(controller)
                    phases.append(Phase(f"{conversations:,} conversations", rss, peak,
                                        "read at start"))
                    backline(config, "conversation", "add", "+13125550101", "+17209999999",
                             "sam", "--by", "bench")
                    controller.wait_for(f"change #{conversations + 1}", 60)
                    rss, peak = settled(controller)
                    phases.append(Phase(f"{conversations:,} conversations", rss, peak,
                                        "after one more is added (that change read)"))

            def with_held() -> None:
                backline(config, "outage", "engage", "--reason", "bench", "--by", "bench",
                         "--no-wait")
                seed_held(url, held)
                with run_phase("held") as controller:
                    phases.append(Phase(f"+ {held:,} held items", *settled(controller),
                                        "outage engaged"))

            for step in (idle, with_conversations, with_held):
                await asyncio.to_thread(step)
    return MemoryFigures(tuple(phases), os.getloadavg())


def report(f: MemoryFigures) -> list[str]:
    lines = [f"controller (`backline run`, Asterisk connected) resident memory; load average "
             f"{f.load[0]:.2f} ({os.cpu_count()} CPUs)",
             f"{'phase':<28} {'RSS MB':>7} {'peak MB':>8}"]
    lines += [f"{p.name:<28} {p.rss_mb:>7.1f} {p.peak_mb:>8.1f}  {p.note}" for p in f.phases]
    verdict = "meets" if f.meets else "MISSES"
    lines.append(f"largest {f.worst_mb:.1f} MB: {verdict} the {GOAL_MB:.0f} MB goal")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else "")
    parser.add_argument("--conversations", type=int, default=CONVERSATIONS)
    parser.add_argument("--held", type=int, default=HELD)
    args = parser.parse_args(argv)
    print("\n".join(report(asyncio.run(measure(args.conversations, args.held)))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
