"""Writers of one SQLite journal take turns (backline.journal.turns): none waits while the
others write hundreds, and one stopped in its turn makes the others fail, not hang."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from backline.journal import AttemptKind, JournalError, open_journal
from backline.journal.sqlite import SqliteJournal
from backline.journal.turns import NO_TURN, give_turn, take_turn
from tests.test_journal import attempt, together


def test_sqlite_writers_take_turns_so_none_waits_while_the_others_write_hundreds(
        tmp_path: Path) -> None:
    # SQLite's busy handler let one writer of five wait while the others wrote all their
    # 400 records (bench.journal: one record waited 5 s, a caller hearing silence).
    # The count includes any time the waiting thread got no CPU, which other jobs on a
    # loaded machine decide (105 once, with a second test run beside it): the best of three
    # runs is compared.  Without turns every run shows a writer waiting out most of the
    # others' records (300-400 here).
    def most_passed_in_a_run(run: int) -> int:
        url = f"sqlite://{tmp_path}/{run}/j.db"
        (tmp_path / str(run)).mkdir()
        journals = [open_journal(url) for _ in range(5)]
        guard = threading.Lock()
        written = 0
        most_passed = 0  # the most records others wrote while one record waited

        def write(i: int) -> None:
            nonlocal written, most_passed
            for n in range(100):
                before = written
                journals[i].record_attempt(attempt(f"w{i}-{n}", kind=AttemptKind.CALL))
                with guard:
                    written += 1
                    most_passed = max(most_passed, written - 1 - before)

        try:
            together(5, write)
        finally:
            for j in journals:
                j.close()
        assert written == 500
        return most_passed

    runs = [most_passed_in_a_run(run) for run in range(3)]
    assert min(runs) < 100, runs  # at most 25 turns of each other writer


def test_a_writer_stopped_in_its_turn_makes_others_fail_not_hang(tmp_path: Path) -> None:
    # A CLI command stopped mid-transaction (Ctrl-Z) holds the turn: a writer gives up after
    # its wait, as it did on SQLite's own lock, and writes once the turn is back.
    journal = open_journal(f"sqlite://{tmp_path}/j.db")
    assert isinstance(journal, SqliteJournal)
    journal.wait_on_locks(0.2)
    held = take_turn(tmp_path, 1.0)
    assert held is not None and held != NO_TURN
    try:
        with pytest.raises(JournalError, match="kept its turn"):
            journal.record_attempt(attempt("waits"))
    finally:
        give_turn(held)
    journal.record_attempt(attempt("after"))
    assert [a.key for a in journal.attempts()] == ["after"]
    journal.close()
