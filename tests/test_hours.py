"""The practice's hours: the pure ``state_at`` as a table (time zones, both daylight-saving
changes in Chicago, a holiday, a window across midnight), the hours as the YAML gives them,
and each mistake in an ``hours:`` section named with file, line and field by ``backline
check``."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from backline.app import config
from backline.core.hours import HoursState, state_at
from backline.core.model import Hours

from .test_config import check, expected_marks, parse_problems

OPEN, CLOSED = HoursState.OPEN, HoursState.CLOSED

PRACTICE_YAML = """\
practice: {name: Hours Clinic, timezone: America/Chicago}
users:
  - {id: ana, name: Ana, email: ana@x.example, extension: "101", desk_phones: [ana-desk],
     emergency_callback: "+13125550100"}
hours:
  open:
    mon: ["08:00-12:00", "13:00-17:00"]
    tue: ["08:00-17:00"]
    wed: ["08:00-17:00"]
    thu: ["08:00-17:00"]
    fri: ["08:00-17:00"]
    sat: ["20:00-03:00"]  # the Saturday night line, into Sunday morning
  holidays: ["2026-12-25", "2027-01-02"]
numbers:
  - {number: "+13125550100"}
  - number: "+13125550101"
    hours:
      open: {mon: ["00:00-24:00"], tue: ["09:00-10:00"]}
      closed: {forward_to: "(312) 555-0199"}
connections:
  storage: {url: "sqlite:///tmp/never-created.db"}
"""


@pytest.fixture(scope="module")
def hours(tmp_path_factory: pytest.TempPathFactory) -> Hours:
    path = tmp_path_factory.mktemp("hours") / "practice.yaml"
    path.write_text(PRACTICE_YAML)
    found = config.load(path).directory.hours
    assert found is not None
    return found


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# (the moment in UTC, what the wall clock in Chicago says, open or closed)
TABLE = [
    # An ordinary winter Monday (CST, UTC-6): 08:00 local is 14:00 UTC; lunch is closed.
    ("2026-01-05 13:59", "Mon 07:59 CST", CLOSED),
    ("2026-01-05 14:00", "Mon 08:00 CST", OPEN),
    ("2026-01-05 18:00", "Mon 12:00 CST lunch", CLOSED),
    ("2026-01-05 19:00", "Mon 13:00 CST", OPEN),
    ("2026-01-05 22:59", "Mon 16:59 CST", OPEN),
    ("2026-01-05 23:00", "Mon 17:00 CST", CLOSED),
    # Summer (CDT, UTC-5): the same wall-clock hours are an hour earlier in UTC.
    ("2026-07-06 13:00", "Mon 08:00 CDT", OPEN),
    ("2026-07-06 12:59", "Mon 07:59 CDT", CLOSED),
    ("2026-07-06 22:00", "Mon 17:00 CDT", CLOSED),
    # Spring forward, Sun 2026-03-08: 02:00 CST becomes 03:00 CDT; the Saturday night window
    # (until 03:00) ends at 08:00 UTC, an hour early by the UTC clock.
    ("2026-03-08 02:00", "Sat 20:00 CST", OPEN),
    ("2026-03-08 07:59", "Sun 01:59 CST", OPEN),
    ("2026-03-08 08:00", "Sun 03:00 CDT", CLOSED),
    ("2026-03-09 12:59", "Mon 07:59 CDT", CLOSED),
    ("2026-03-09 13:00", "Mon 08:00 CDT, first weekday after the change", OPEN),
    ("2026-03-06 13:30", "Fri 07:30 CST, last weekday before it", CLOSED),
    ("2026-03-06 14:00", "Fri 08:00 CST", OPEN),
    # Fall back, Sun 2026-11-01: 02:00 CDT becomes 01:00 CST; 01:00-02:00 happens twice and
    # the window (until 03:00) lasts an hour longer by the UTC clock.
    ("2026-11-01 06:30", "Sun 01:30 CDT, the first time", OPEN),
    ("2026-11-01 07:30", "Sun 01:30 CST, the second time", OPEN),
    ("2026-11-01 08:59", "Sun 02:59 CST", OPEN),
    ("2026-11-01 09:00", "Sun 03:00 CST", CLOSED),
    ("2026-11-02 13:00", "Mon 07:00 CST, first weekday after the change", CLOSED),
    ("2026-11-02 14:00", "Mon 08:00 CST", OPEN),
    # A window across midnight: Saturday 20:00 to Sunday 03:00.
    ("2026-01-11 01:59", "Sat 19:59 CST", CLOSED),
    ("2026-01-11 05:59", "Sat 23:59 CST", OPEN),
    ("2026-01-11 06:00", "Sun 00:00 CST", OPEN),
    ("2026-01-11 09:00", "Sun 03:00 CST", CLOSED),
    ("2026-01-11 18:00", "Sun 12:00 CST", CLOSED),
    # A holiday (Fri 2026-12-25) is closed all day; the days around it are not.
    ("2026-12-24 18:00", "Thu 12:00 CST", OPEN),
    ("2026-12-25 18:00", "Fri 12:00 CST, Christmas", CLOSED),
    ("2026-12-26 03:00", "Fri 21:00 CST, Christmas night", CLOSED),
    ("2026-12-27 03:00", "Sat 21:00 CST, the day after", OPEN),
    ("2026-12-27 07:00", "Sun 01:00 CST, after an ordinary Saturday", OPEN),
    # A holiday Saturday (2027-01-02) closes its night window, past midnight too.
    ("2027-01-03 03:00", "Sat 21:00 CST, a holiday", CLOSED),
    ("2027-01-03 07:00", "Sun 01:00 CST, the holiday's night", CLOSED),
    # UTC midnight is not the practice's: Mon 23:30 UTC is Mon 17:30 local (closed), and
    # Tue 02:00 UTC is Mon 20:00 local, not Tuesday.
    ("2026-01-06 02:00", "Mon 20:00 CST", CLOSED),
]


@pytest.mark.parametrize(("moment", "wall_clock", "expected"), TABLE,
                         ids=[w for _, w, _ in TABLE])
def test_state_at(hours: Hours, moment: str, wall_clock: str, expected: HoursState) -> None:
    assert state_at(hours, utc(moment)) is expected


def test_the_same_moment_in_another_time_zone_is_the_same_answer(hours: Hours) -> None:
    from zoneinfo import ZoneInfo
    moment = utc("2026-03-08 07:59")
    for zone in ("Asia/Tokyo", "America/Los_Angeles", "Europe/London"):
        assert state_at(hours, moment.astimezone(ZoneInfo(zone))) is OPEN
    assert state_at(hours, utc("2026-03-08 08:00").astimezone(ZoneInfo("Asia/Tokyo"))) \
        is CLOSED


def test_a_wall_clock_time_without_a_zone_names_no_moment(hours: Hours) -> None:
    with pytest.raises(ValueError, match="aware"):
        state_at(hours, datetime(2026, 1, 5, 9, 0))


def test_a_number_with_its_own_hours_and_one_without(tmp_path: Path) -> None:
    path = tmp_path / "practice.yaml"
    path.write_text(PRACTICE_YAML)
    d = config.load(path).directory
    main, direct = d.hours_of("+13125550100"), d.hours_of("+13125550101")
    assert main is d.hours and main is not None
    assert main.holidays == frozenset({date(2026, 12, 25), date(2027, 1, 2)})
    assert main.closed.forward_to == ""  # the announcement, then voicemail
    assert direct is not None and direct.closed.forward_to == "+13125550199"
    assert direct.timezone == "America/Chicago"
    assert state_at(direct, utc("2026-01-06 05:59")) is OPEN  # Mon 23:59, all day
    assert state_at(direct, utc("2026-01-06 06:00")) is CLOSED  # Tue 00:00
    assert state_at(direct, utc("2026-01-06 15:00")) is OPEN  # Tue 09:00
    assert d.hours_of("+19995550000") is d.hours  # an unknown number: the practice's


def test_no_hours_section_means_always_open(tmp_path: Path) -> None:
    path = tmp_path / "practice.yaml"
    path.write_text(PRACTICE_YAML.split("hours:")[0].rstrip() + "\nnumbers:\n"
                    '  - {number: "+13125550100"}\n'
                    "connections:\n  storage: {url: \"sqlite:///tmp/never-created.db\"}\n")
    d = config.load(path).directory
    assert d.hours is None and d.hours_of("+13125550100") is None


BROKEN_HOURS = """\
practice: {name: Broken Hours, timezone: America/Chicago}
users:
  - {id: ana, name: Ana, email: ana@x.example, extension: "101", desk_phones: [ana-desk],
     emergency_callback: "+13125550100"}
hours:
  open:
    mon: ["8-17"]  #! hours.open.mon[0]: a window like 08:00-17:00
    tue: ["08:00-25:00"]  #! hours.open.tue[0]: times from 00:00 to 24:00
    wed: ["09:00-09:00"]  #! hours.open.wed[0]: start and end differ
    thurs: ["08:00-17:00"]  #! hours.open.thurs: did you mean 'thu'
  holidays: ["2026-02-30", christmas]  #! hours.holidays[0]: a date like 2026-12-25
  closed:
    forward_to: "555-0199"  #! hours.closed.forward_to: E.164
    announcement: {text: Closed, file: closed.wav}  #! hours.closed.announcement: exactly one
numbers:
  - number: "+13125550100"
    hours: {holidays: ["2026-12-25"]}  #! numbers[0].hours.open: open times per weekday
connections:
  storage: {url: "sqlite:///tmp/never-created.db"}
"""


def test_every_hours_mistake_is_named_in_one_run(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN_HOURS)
    result = check(path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    problems = parse_problems(result.stderr)
    for file, line, field, words in expected_marks(BROKEN_HOURS, str(path)):
        hits = [p for p in problems if p[:3] == (file, line, field)]
        assert hits, f"no problem reported at {file}:{line} {field}; got:\n{result.stderr}"
        assert any(words.lower() in p[3].lower() for p in hits), (words, hits)
    # "christmas" on the same line as 2026-02-30 is reported too, as holidays[1].
    assert any(p[2] == "hours.holidays[1]" for p in problems), result.stderr
    marked = {(f, ln) for f, ln, _, _ in expected_marks(BROKEN_HOURS, str(path))}
    assert {(p[0], p[1]) for p in problems} <= marked, result.stderr


def test_the_inbound_decision_takes_the_hours(tmp_path: Path) -> None:
    """Closed: the number's closed path; the outage wins over the hours; faxes ignore them."""
    from backline.core.decisions import (
        ForwardToAnsweringService,
        InboundCall,
        PlayAnnouncement,
        PlayClosedAnnouncement,
        SendToVoicemail,
    )
    from backline.core.hours import hours_state
    from backline.core.outage import Mode
    from backline.core.ownership import OwnershipBook
    from backline.core.registrations import Registrations
    from backline.core.routing import route_inbound

    path = tmp_path / "practice.yaml"
    path.write_text(PRACTICE_YAML)
    book = OwnershipBook(config.load(path).directory)
    regs = Registrations(book, 3)
    main, direct = "+13125550100", "+13125550101"
    closed_at = utc("2026-01-06 02:00")  # Mon 20:00 in Chicago
    open_at = utc("2026-01-06 16:00")  # Tue 10:00: open for the main line, not the direct one

    def decide(number: str, at: datetime, mode: Mode = Mode.NORMAL) -> object:
        return route_inbound(book, regs, InboundCall(number, "+17205550141"), mode, 20,
                             hours=hours_state(book.directory, number, at))

    assert decide(main, open_at) == SendToVoicemail(main, "3125550100")  # nobody registered
    assert decide(main, closed_at) == PlayClosedAnnouncement(main, "3125550100")
    assert decide(direct, open_at) == ForwardToAnsweringService(direct, "+13125550199", "")
    assert decide(direct, closed_at, Mode.OUTAGE) == PlayAnnouncement(direct)
    assert decide(main, closed_at, Mode.OUTAGE) == PlayAnnouncement(main)
    assert hours_state(book.directory, "not a number", closed_at) is OPEN


# (the moment in UTC, the next scheduled change in UTC or None, as the wall clock says it)
NEXT_CHANGE = [
    ("2026-01-05 14:30", "2026-01-05 18:00", "Mon 08:30 CST: lunch at 12:00 CST"),
    ("2026-01-05 23:30", "2026-01-06 14:00", "Mon 17:30 CST: Tue 08:00 CST"),
    ("2026-01-10 01:00", "2026-01-11 02:00", "Fri 19:00 CST: Sat 20:00 CST"),
    ("2026-03-08 05:00", "2026-03-08 08:00", "Sun 23:00 CST: 03:00 CDT, spring forward"),
    ("2026-03-08 08:00", "2026-03-09 13:00", "Sun 03:00 CDT: Mon 08:00 CDT"),
    ("2026-11-01 06:30", "2026-11-01 09:00", "Sun 01:30 CDT: 03:00 CST, fall back"),
    ("2026-12-24 18:00", "2026-12-24 23:00", "Thu 12:00 CST: 17:00 CST"),
    ("2026-12-24 23:00", "2026-12-27 02:00", "Thu 17:00 CST: past Christmas, Sat 20:00"),
]


@pytest.mark.parametrize(("moment", "expected", "wall_clock"), NEXT_CHANGE,
                         ids=[w for _, _, w in NEXT_CHANGE])
def test_next_change(hours: Hours, moment: str, expected: str, wall_clock: str) -> None:
    from backline.core.hours import next_change
    assert next_change(hours, utc(moment)) == utc(expected)


def test_hours_that_never_change_have_no_next_change(tmp_path: Path) -> None:
    from backline.core.hours import next_change
    from backline.core.model import Window
    always = Hours("America/Chicago", tuple((Window(0, 1440),) for _ in range(7)))
    never = Hours("America/Chicago", tuple(() for _ in range(7)))
    assert next_change(always, utc("2026-03-08 08:00")) is None
    assert next_change(never, utc("2026-03-08 08:00")) is None


def test_an_override_holds_until_the_next_scheduled_change(hours: Hours) -> None:
    from backline.core.hours import HoursOverride, overridden
    # Forced closed on Monday at 10:00 CST: closed until the lunch break (when the schedule
    # says closed anyway), then the schedule again: open at 13:00.
    forced = HoursOverride(CLOSED, utc("2026-01-05 16:00"), "ana", "desk-phone")
    assert overridden(hours, utc("2026-01-05 15:59"), forced) is OPEN  # before it was set
    assert overridden(hours, utc("2026-01-05 16:00"), forced) is CLOSED
    assert overridden(hours, utc("2026-01-05 17:59"), forced) is CLOSED
    assert overridden(hours, utc("2026-01-05 19:00"), forced) is OPEN
    # Forced open on Monday evening (19:00 CST): open through
    # the night until Tuesday 08:00, when the schedule opens anyway and then rules.
    late = HoursOverride(OPEN, utc("2026-01-06 01:00"), "ana", "desk-phone")
    assert overridden(hours, utc("2026-01-06 13:59"), late) is OPEN
    assert overridden(hours, utc("2026-01-06 23:00"), late) is CLOSED  # Tue 17:00
    # Forced open on Christmas Eve's evening: through Christmas (a holiday), until the next
    # change of the schedule (Sat 20:00), then the schedule rules.
    xmas = HoursOverride(OPEN, utc("2026-12-24 23:30"))
    assert overridden(hours, utc("2026-12-25 18:00"), xmas) is OPEN
    assert overridden(hours, utc("2026-12-27 09:00"), xmas) is CLOSED  # Sun 03:00


async def test_an_override_set_through_another_controller_holds_after_a_round(
        tmp_path: Path) -> None:
    from backline.app.controller import Controller
    from backline.core.hours import HoursOverride
    from backline.journal import open_journal

    path = tmp_path / "practice.yaml"
    path.write_text(PRACTICE_YAML.replace("sqlite:///tmp/never-created.db",
                                          f"sqlite://{tmp_path / 'journal.db'}"))
    d = config.load(path).directory
    mine, other = (open_journal(d.connections.storage.url) for _ in range(2))
    controller = Controller(d, mine)
    try:
        assert controller.hours_override is None
        forced = HoursOverride(CLOSED, utc("2026-01-05 16:00"), "ana", "desk-phone")
        other.record_hours_override(forced)  # the other node's controller
        await controller.sync_once()
        assert controller.hours_override == forced
        restarted = Controller(d, other)
        assert restarted.hours_override == forced
        await restarted.close()
    finally:
        await controller.close()
        mine.close()
        other.close()


def test_closed_announcements_are_rendered_for_the_numbers_that_play_them(
        tmp_path: Path) -> None:
    """One clip per voice number whose closed path is the announcement: none for a number
    forwarded to an answering service, none for a fax-only number."""
    import wave

    from backline.localpbx.announcement import render_closed_clips

    path = tmp_path / "practice.yaml"
    path.write_text(PRACTICE_YAML.replace('  - {number: "+13125550100"}\n',
                                          '  - {number: "+13125550100"}\n'
                                          '  - {number: "+13125550109", carries: [fax]}\n'))
    d = config.load(path).directory
    clips = render_closed_clips(d, tmp_path / "sounds")
    assert [c.name for c in clips] == ["closed-13125550100.wav"]
    with wave.open(str(clips[0])) as clip:  # as Asterisk plays it: 8 kHz, mono, 16-bit
        assert (clip.getframerate(), clip.getnchannels(), clip.getsampwidth()) == (8000, 1, 2)
        assert clip.getnframes() > 8000  # the default text is several seconds long
