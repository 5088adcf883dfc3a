"""The controller's CPU per outage call: CPU-seconds per 1,000 calls with the outage engaged.

A figure less sensitive to the machine's other work than bench.outage's ceiling: the
controller's own user + system seconds (all its threads) over a step of calls at a fixed rate
below every ceiling seen, divided by the calls.  The rig is bench.outage's up arm (a fresh
Asterisk running the test practice, ``backline run`` with the outage engaged, every call asked
over FastAGI and journaled before the PBX hears "announce"), and each step must be clean as
bench.outage counts it.

With ``--against REV``, a second rig runs the controller from commit REV's tree (``git
archive``; or from REV itself if it is a directory holding a source tree), and the steps
alternate between the two, so before and after meet the same machine in the same run.
Prints each step (the event loop's thread apart from the journal's worker threads) and each
tree's median.
Run: .venv/bin/python -m bench.outage_cpu [--against REV] [--rate 80] [--calls 1600]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from backline.localpbx.instance import AsteriskError
from bench import outage
from bench.ceiling import cpu_seconds
from bench.pbx_setup import BenchError
from tests.harness.sipp import SippError

ROOT = outage.ROOT


def thread_seconds(pid: int | None) -> tuple[float, float]:
    """CPU seconds so far of PID's main thread (the event loop) and of its other threads."""
    if pid is None:
        return 0.0, 0.0
    main = cpu_seconds(pid)  # the whole process
    loop = 0.0
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        loop = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return loop, max(0.0, main - loop)


@dataclass(frozen=True, slots=True)
class Sample:
    tree: str
    calls: int
    clean: bool
    loop: float  # CPU-seconds of the event loop's thread per 1,000 calls
    others: float  # of the other threads (the journal's commits) per 1,000 calls

    @property
    def total(self) -> float:
        return self.loop + self.others


async def sample(rig: outage.Rig, rate: int, calls: int) -> Sample:
    pid = rig.controller.pid
    loop0, others0 = thread_seconds(pid)
    step = await outage.run_step(rig, rate, calls, False)
    loop1, others1 = thread_seconds(pid)
    per = 1000 / calls
    return Sample(rig.name, calls, step.passed, (loop1 - loop0) * per, (others1 - others0) * per)


def archived(rev: str, into: Path) -> Path:
    """Commit REV's tree, unpacked in INTO."""
    tree = into / "tree"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def against_tree(against: str, work: Path) -> tuple[Path, str]:
    """The tree AGAINST names (a directory, or a commit archived into WORK) and a name for
    its rig."""
    tree = Path(against)
    if not tree.is_dir():
        tree = archived(against, work)
    else:
        against = tree.name
    return tree, re.sub(r"[^A-Za-z0-9_.-]", "-", against)[:20]


async def run(rate: int, calls: int, rounds: int, against: str | None,
              work: Path) -> list[Sample]:
    async with contextlib.AsyncExitStack() as stack:
        rigs = [await outage.start_rig(stack, work / "this", kill=False, name="this-tree")]
        if against is not None:
            tree, name = await asyncio.to_thread(against_tree, against, work)
            rigs.append(await outage.start_rig(stack, work / "against", kill=False, tree=tree,
                                               name=name))
        out = []
        for _ in range(rounds):
            for rig in rigs:
                got = await sample(rig, rate, calls)
                print(line(got), flush=True)
                out.append(got)
        return out


def line(s: Sample) -> str:
    return (f"{s.tree:<12} {s.calls:>5} calls  {s.total:6.3f} CPU-s per 1,000 calls (event loop "
            f"{s.loop:.3f}, other threads {s.others:.3f})  clean {'yes' if s.clean else 'NO'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.outage_cpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", help="a commit (or a source tree's directory) whose "
                        "controller runs alongside")
    parser.add_argument("--rate", type=int, default=80, help="calls per second (80)")
    parser.add_argument("--calls", type=int, default=1600, help="calls per step (1600)")
    parser.add_argument("--rounds", type=int, default=3, help="steps per tree (3)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="backline-bench-outage-cpu-"))
    try:
        samples = asyncio.run(run(args.rate, args.calls, args.rounds, args.against, work))
    except (BenchError, SippError, AsteriskError, subprocess.CalledProcessError) as exc:
        print(f"bench.outage_cpu: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"at {args.rate} calls/s, median of {args.rounds} steps:")
    for tree in dict.fromkeys(s.tree for s in samples):
        mine = [s for s in samples if s.tree == tree]
        print(f"  {tree:<12} {statistics.median(s.total for s in mine):.3f} CPU-s per 1,000 "
              f"calls (event loop {statistics.median(s.loop for s in mine):.3f}); "
              f"{sum(s.clean for s in mine)} of {len(mine)} steps clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
