"""``python -m bench``'s table machinery on a tiny plan, so that it cannot rot: every bench runs
(the real Asterisk, SIPp, SQLite, the ESL test server, wrk, the fax converter) and gives its
rows, the table notes the machine and that figures are from one run, and a bench that fails
gives a row saying so without losing the others' figures.  No figure is asserted: they are
the shared machine's of the moment (docs/benchmarks.md has a run's table)."""

from __future__ import annotations

import re
import shutil

import pytest

from bench import emergency, table
from bench.ceiling import Plan as Rates

TINY = table.Plan(
    "tiny (the test's)", core_runs=1, core_samples=500,
    calls=Rates(first=5, top=5, step_seconds=1.0, max_calls_per_step=5, budget_seconds=30.0),
    outage=Rates(first=5, top=5, step_seconds=1.0, max_calls_per_step=5, budget_seconds=30.0),
    emergency=emergency.Plan(calls_per_arm=5, rate=10), journal_seconds=0.2,
    esl_events=1000, fax_pages=1, fax_runs=1, alert_attempts=5, wrk_seconds=1, drain_items=10,
    memory_conversations=100, memory_held=10)

ROW = re.compile(r"^\| (.+) \| (.+) \| (.+) \| (yes|\*\*no\*\*|-) \|$")


@pytest.mark.asterisk
def test_every_bench_gives_rows_in_one_table_that_notes_the_machine() -> None:
    assert shutil.which("wrk"), "wrk is one of scripts/debian-packages.txt"
    report = table.run(TINY)
    assert report.failed == (), report.rows
    lines = report.lines()
    assert re.match(r"Machine: \d+ cores .*load average .* at the start, .* at the end\. "
                    r".*Every figure is from one run", lines[0]), lines[0]
    assert lines[2:4] == ["| figure | value | goal | meets |", "| --- | --- | --- | --- |"]
    rows = [ROW.match(line) for line in lines[4:4 + len(report.rows)]]
    assert all(rows), lines
    named = {m.group(1).split(":")[0] for m in rows if m}
    assert named == {"routing", "controller memory, resident", "journal", "ESL", "fax",
                     "alerts", "inbox drain", "911", "calls", "outage"}, named
    for f in report.rows:
        assert f.value and f.value != "none", f
        assert (f.meets is None) == (f.goal == "-"), f
    # The PBX benches' own goals appear with a verdict, whatever it is.
    goals = {f.name: f.meets for f in report.rows}
    assert isinstance(goals["calls: controller/static at saturation"], bool)
    assert isinstance(goals["outage: up/killed at saturation"], bool)
    assert isinstance(goals["911: Backline minus direct (median, 95% interval)"], bool)


def test_a_bench_that_fails_gives_a_row_and_the_others_keep_theirs() -> None:
    def broken(_: table.Plan) -> tuple[list[table.Figure], list[str]]:
        raise RuntimeError("no tiff2pdf here\nsecond line")

    def fine(_: table.Plan) -> tuple[list[table.Figure], list[str]]:
        return [table.Figure("fine: a figure", "1", "< 2", True)], ["a note"]

    report = table.run(TINY, [table.Section("broken", broken), table.Section("fine", fine)])
    assert report.failed == ("broken",)
    assert [(f.name, f.value, f.meets) for f in report.rows] == [
        ("broken: could not run", "RuntimeError: no tiff2pdf here", False),
        ("fine: a figure", "1", True)]
    assert report.lines()[-1] == "- a note"
    assert table.verdicts(report) == (1, 2)

