"""The desk-phone PIN lockout, table by table: tries and times in, verdicts out; and the
alert a lockout sends."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backline.app import config
from backline.app.controller import Controller
from backline.core.outage import Mode
from backline.core.pin_lockout import PinPolicy, PinRecord, PinVerdict, judge_pin, lockout_after
from backline.journal import open_journal
from tests.harness.smtp_sink import SmtpSink

T0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
POLICY = PinPolicy(free_tries=3, first_lockout=timedelta(seconds=30),
                   longest_lockout=timedelta(minutes=10))
A, W, L = PinVerdict.ACCEPTED, PinVerdict.WRONG, PinVerdict.LOCKED_OUT


@pytest.mark.parametrize(("tries", "verdicts"), [
    # (seconds after T0, PIN right?) ... and the verdict on each.
    ([(0, True)], [A]),
    ([(0, False), (1, False), (2, True)], [W, W, A]),              # two slips are forgiven
    ([(0, False), (1, False), (2, False), (3, True)], [W, W, W, L]),  # the third locks
    ([(0, False), (0, False), (0, False), (31, True)], [W, W, W, A]),  # ... for 30 s
    ([(0, False), (0, False), (0, False), (29, True), (30, True)], [W, W, W, L, A]),
    # After a lockout one more wrong PIN locks again, twice as long: 60 s, then 120 s.
    ([(0, False), (0, False), (0, False), (30, False), (89, True), (90, True)],
     [W, W, W, W, L, A]),
    ([(0, False), (0, False), (0, False), (30, False), (90, False), (209, True),
      (210, True)], [W, W, W, W, W, L, A]),
    # A right PIN clears the count: two more slips are forgiven again.
    ([(0, False), (1, False), (2, True), (3, False), (4, False), (5, True)],
     [W, W, A, W, W, A]),
    # Tries during a lockout do not lengthen it.
    ([(0, False), (0, False), (0, False)] + [(s, False) for s in range(1, 30)] + [(30, True)],
     [W, W, W] + [L] * 29 + [A]),
])
def test_verdicts(tries: list[tuple[int, bool]], verdicts: list[PinVerdict]) -> None:
    record = PinRecord()
    seen = []
    for seconds, right in tries:
        judged = judge_pin(record, right, T0 + timedelta(seconds=seconds), POLICY)
        record = judged.record
        seen.append(judged.verdict)
    assert seen == verdicts


def test_two_hundred_wrong_pins_in_a_fifth_of_a_second_then_the_right_one() -> None:
    """The attack from issue 18: the right PIN after 200 wrong ones is refused."""
    record = PinRecord()
    lockouts = []
    for i in range(200):
        judged = judge_pin(record, False, T0 + timedelta(milliseconds=i), POLICY)
        record = judged.record
        if judged.lockout is not None:
            lockouts.append(judged.lockout)
    assert lockouts == [timedelta(seconds=30)]  # tries 4..200 fell inside the first lockout
    right = judge_pin(record, True, T0 + timedelta(milliseconds=200), POLICY)
    assert right.verdict is PinVerdict.LOCKED_OUT


@pytest.mark.parametrize(("failures", "lockout"), [
    (1, None), (2, None), (3, timedelta(seconds=30)), (4, timedelta(seconds=60)),
    (5, timedelta(seconds=120)), (8, timedelta(minutes=10)), (10_000, timedelta(minutes=10)),
])
def test_lockouts_grow_to_the_cap(failures: int, lockout: timedelta | None) -> None:
    assert lockout_after(failures, POLICY) == lockout


def test_only_the_try_that_starts_a_lockout_reports_it() -> None:
    record = PinRecord(failures=2)
    started = judge_pin(record, False, T0, POLICY)
    assert started.lockout == timedelta(seconds=30)
    assert started.record.locked_until == T0 + timedelta(seconds=30)
    during = judge_pin(started.record, False, T0 + timedelta(seconds=1), POLICY)
    assert during.lockout is None and during.record == started.record


async def test_a_lockout_emails_the_alert_recipients_without_the_digits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The controller's own seam for *28/*29 (both drivers call it), a real SMTP server and a
    # real SQLite journal; tests/test_asterisk_outage.py drives the same through Asterisk.
    monkeypatch.setenv("BACKLINE_TEST_LOCKOUT_PIN", "4321")
    # The wall clock at a time whose digits hold the PIN (a Message-ID made from the clock
    # carried it then); only the clock is replaced.
    monkeypatch.setattr(time, "time", lambda: 1796432171.65)
    async with SmtpSink() as sink:
        path = tmp_path / "practice.yaml"
        path.write_text(f"""\
practice: {{name: Maple Street Family Medicine, timezone: America/Chicago}}
users:
  - {{id: ana, name: Dr. Ana Lee, email: ana@maple.example, admin: true, extension: "101",
     desk_phones: [ana-desk]}}
numbers:
  - {{number: "+13125550100", carries: [voice], owner: "user:ana"}}
locations:
  - {{id: front, address: 1200 W Maple St, city: Chicago, state: IL, zip: "60607",
     where: "Floor 1"}}
emergency: {{callback: "+13125550100", location: front}}
backup:
  pin_env: BACKLINE_TEST_LOCKOUT_PIN
  alerts: {{kind: email, emails: [ops@maple.example, it@maple.example]}}
connections:
  smtp: {{host: 127.0.0.1, port: {sink.port}, starttls: false, from: backline@maple.example}}
  storage: {{url: "sqlite://{tmp_path}/journal.db"}}
""")
        directory = config.load(path).directory
        journal = open_journal(directory.connections.storage.url)
        controller = Controller(directory, journal, clock=lambda: T0)
        try:
            tries = [await controller.desk_phone_switch("ana-desk", Mode.OUTAGE, pin)
                     for pin in ("1111", "2222", "3333", "4321")]
            assert tries == [False, False, False, False]
            mails = await sink.wait_for(2)
        finally:
            await controller.close()
            journal.close()
    assert sorted(m.rcpt_tos[0] for m in mails) == ["it@maple.example", "ops@maple.example"]
    message = mails[0].message()
    assert message["Subject"] == "Desk phone ana-desk locked out: wrong outage PINs"
    body = message.get_content()
    assert body.startswith("Maple Street Family Medicine: desk phone ana-desk (user ana)")
    assert "3 wrong PINs in a row; locked out for 30 s" in body
    assert not any(pin in m.raw.decode() for m in mails
                   for pin in ("1111", "2222", "3333", "4321"))


class MovedClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


async def test_a_lockout_outlasts_a_controller_restart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Restarting the controller (a crash, an upgrade, a reload gone wrong: or one the attacker
    # provoked) must not hand a PIN guesser a fresh set of tries.  The records are in the
    # journal, read by the next controller.
    monkeypatch.setenv("BACKLINE_TEST_LOCKOUT_PIN", "4321")
    path = tmp_path / "practice.yaml"
    path.write_text(f"""\
practice: {{name: Maple Street Family Medicine, timezone: America/Chicago}}
users:
  - {{id: ana, name: Dr. Ana Lee, email: ana@maple.example, admin: true, extension: "101",
     desk_phones: [ana-desk]}}
  - {{id: raj, name: Dr. Raj Patel, email: raj@maple.example, admin: true, extension: "102",
     desk_phones: [raj-desk]}}
numbers:
  - {{number: "+13125550100", carries: [voice], owner: "user:ana"}}
locations:
  - {{id: front, address: 1200 W Maple St, city: Chicago, state: IL, zip: "60607",
     where: "Floor 1"}}
emergency: {{callback: "+13125550100", location: front}}
backup:
  pin_env: BACKLINE_TEST_LOCKOUT_PIN
connections:
  storage: {{url: "sqlite://{tmp_path}/journal.db"}}
""")
    clock = MovedClock()

    async def tries(pins: list[str], phone: str = "ana-desk") -> list[bool]:
        directory = config.load(path).directory
        journal = open_journal(directory.connections.storage.url)
        controller = Controller(directory, journal, clock=clock)
        try:
            return [await controller.desk_phone_switch(phone, Mode.OUTAGE, pin)
                    for pin in pins]
        finally:
            await controller.close()
            journal.close()

    assert await tries(["1111", "2222"]) == [False, False]
    # Restarted: the third wrong PIN still counts as the third, and locks.
    assert await tries(["3333"]) == [False]
    clock.now = T0 + timedelta(seconds=29)
    assert await tries(["4321"]) == [False]  # restarted during the lockout: still locked
    assert await tries(["4321"], "raj-desk") == [True]  # only that desk phone
    clock.now = T0 + timedelta(seconds=30)
    assert await tries(["4321"]) == [True]  # the lockout is over
    assert await tries(["1111", "2222"]) == [False, False]  # and the right PIN cleared it
    assert await tries(["4321"]) == [True]
