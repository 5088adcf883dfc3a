"""The journal/PBX mode agreement table, row by row."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from backline.core.mode_sync import Agree, InSync, PushToPbx, RecordConsoleSwitch, reconcile
from backline.core.outage import Mode, ModeChange, ModeState, Via

NORMAL = ModeState.initial()
OUTAGE = ModeState(Mode.OUTAGE, ModeChange(Mode.OUTAGE, datetime(2026, 1, 1, tzinfo=UTC),
                                           "ops", Via.CLI, "carrier down"))


@pytest.mark.parametrize(("mode", "ack", "journal", "expected"), [
    (None, None, NORMAL, PushToPbx(Mode.NORMAL)),              # a fresh PBX
    (None, "outage", OUTAGE, PushToPbx(Mode.OUTAGE)),          # key deleted by hand
    ("garbage", "normal", NORMAL, PushToPbx(Mode.NORMAL)),     # unreadable value
    ("normal", "normal", NORMAL, InSync()),
    ("outage", "outage", OUTAGE, InSync()),
    ("normal", "normal", OUTAGE, PushToPbx(Mode.OUTAGE)),      # engaged from the CLI
    ("outage", "outage", NORMAL, PushToPbx(Mode.NORMAL)),      # ended from the CLI
    ("outage", "normal", NORMAL, RecordConsoleSwitch(Mode.OUTAGE)),  # engaged on the console
    ("normal", "outage", OUTAGE, RecordConsoleSwitch(Mode.NORMAL)),  # ended on the console
    ("OUTAGE ", "normal", NORMAL, RecordConsoleSwitch(Mode.OUTAGE)),
    ("outage", None, OUTAGE, Agree(Mode.OUTAGE)),              # both sides already agree
    ("outage", "normal", OUTAGE, Agree(Mode.OUTAGE)),
])
def test_reconcile(mode: str | None, ack: str | None, journal: ModeState,
                   expected: object) -> None:
    assert reconcile(mode, ack, journal) == expected


def test_mode_at_a_cdr_time_counts_a_switch_in_the_same_second_as_before() -> None:
    from backline.app.mode_keeper import mode_at

    engaged = ModeChange(Mode.OUTAGE, datetime(2026, 1, 1, 8, 0, 10, 700000, tzinfo=UTC),
                         "ops", Via.CLI, "drill")
    ended = ModeChange(Mode.NORMAL, datetime(2026, 1, 1, 9, 0, 0, tzinfo=UTC), "ops", Via.CLI, "")
    history = [ended, engaged]
    assert mode_at(history, datetime(2026, 1, 1, 8, 0, 9, tzinfo=UTC)) is Mode.NORMAL
    assert mode_at(history, datetime(2026, 1, 1, 8, 0, 10, tzinfo=UTC)) is Mode.OUTAGE
    assert mode_at(history, datetime(2026, 1, 1, 8, 30, tzinfo=UTC)) is Mode.OUTAGE
    assert mode_at(history, datetime(2026, 1, 1, 9, 0, 1, tzinfo=UTC)) is Mode.NORMAL
