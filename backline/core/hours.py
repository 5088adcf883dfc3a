"""The practice's opening hours, and whether it is open at a given moment.  Pure.

``state_at(hours, at)`` is the whole rule; the clock is read only at the edge (the drivers
pass the controller's clock), as wazo_agid/schedule.py splits ``compute_state`` from
``compute_state_for_now``.  Same hours and moment, same answer.

Hours are wall-clock times in the practice's time zone, so "08:00-17:00" opens at 08:00 local
time on both sides of a daylight-saving change (13:00 UTC in summer, 14:00 UTC in winter in
Chicago).  On a spring-forward day a window that spans 02:00 is an hour shorter; on a
fall-back day the repeated hour counts, both times, as the wall clock says.
"""

from __future__ import annotations

import enum
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from backline.core import e164
from backline.core.model import Directory, Hours, Window

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # datetime.weekday() order
MINUTES_PER_DAY = 24 * 60

class HoursState(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class HoursOverride:
    """An admin forced ``state`` at ``at`` (``*26`` closed, ``*27`` open): it holds until
    the next scheduled change of the hours it is applied to, then the schedule rules again.
    ``state`` None is an admin handing back to the schedule at once (``backline hours
    auto``).  ``by`` and ``via`` say who and from where (the journal keeps them)."""

    state: HoursState | None
    at: datetime
    by: str = ""
    via: str = ""


def state_at(hours: Hours, at: datetime) -> HoursState:
    """Open or closed at ``at`` (an aware datetime; a naive one raises ValueError, since it
    names no moment)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("state_at needs an aware datetime (a moment, not a wall-clock time)")
    local = at.astimezone(zoneinfo.ZoneInfo(hours.timezone))
    minute = local.hour * 60 + local.minute
    today = local.date()
    yesterday = today - timedelta(days=1)
    if today not in hours.holidays:
        for w in hours.week[today.weekday()]:
            if (w.crosses_midnight and minute >= w.start) or w.start <= minute < w.end:
                return HoursState.OPEN
    if yesterday not in hours.holidays:
        for w in hours.week[yesterday.weekday()]:
            if w.crosses_midnight and minute < w.end:
                return HoursState.OPEN
    return HoursState.CLOSED


def next_change(hours: Hours, at: datetime) -> datetime | None:
    """The first moment after ``at`` at which ``state_at`` differs from its answer at
    ``at``; None if it never changes (no window at all, or open all week).

    Only window edges and local midnights (holidays) can change the state, so those are the
    candidates: eight days of them cover a week and one more day.
    """
    zone = zoneinfo.ZoneInfo(hours.timezone)
    now = state_at(hours, at)
    today = at.astimezone(zone).date()
    candidates: set[datetime] = set()
    for offset in range(-1, 9):
        day = today + timedelta(days=offset)
        midnight = datetime.combine(day, time(0), zone)
        # Aware arithmetic in one zone adds wall-clock minutes; the moments are compared in
        # UTC (in one zone Python compares wall times, wrong in a fall-back day's hour).
        candidates.add(midnight.astimezone(UTC))
        for w in hours.week[day.weekday()]:
            candidates.add((midnight + timedelta(minutes=w.start)).astimezone(UTC))
            end_day = day + timedelta(days=1) if w.crosses_midnight or w.end == MINUTES_PER_DAY \
                else day
            candidates.add((datetime.combine(end_day, time(0), zone)
                            + timedelta(minutes=w.end % MINUTES_PER_DAY)).astimezone(UTC))
    for moment in sorted(c for c in candidates if c > at):
        if state_at(hours, moment) is not now:
            return moment
    return None


def overridden(hours: Hours, at: datetime, override: HoursOverride | None) -> HoursState:
    """``hours`` at ``at``, with an admin's override while it holds (from its moment until
    the next scheduled change after it)."""
    held = _holding(hours, at, override)
    return held.state if held is not None and held.state is not None else state_at(hours, at)


def _holding(hours: Hours, at: datetime, override: HoursOverride | None
             ) -> HoursOverride | None:
    """``override`` if it forces a state at ``at``, else None."""
    if override is None or override.state is None or override.at > at:
        return None
    until = next_change(hours, override.at)
    return override if until is None or at < until else None


class HoursWhy(enum.Enum):
    """Why the hours are in their state: the weekly schedule, a holiday, an admin's
    override."""

    SCHEDULE = "schedule"
    HOLIDAY = "holiday"
    OVERRIDE = "override"


@dataclass(frozen=True, slots=True)
class HoursNow:
    """What ops are shown: the state at a moment, why, and until when (None: no scheduled
    change ahead); ``override`` is the admin's override that decides it, if one does."""

    state: HoursState
    why: HoursWhy
    until: datetime | None
    override: HoursOverride | None = None


def hours_now(hours: Hours, at: datetime, override: HoursOverride | None) -> HoursNow:
    """``hours`` at ``at`` with ``override``, explained (the same state ``overridden``
    gives)."""
    held = _holding(hours, at, override)
    if held is not None and held.state is not None:
        return HoursNow(held.state, HoursWhy.OVERRIDE, next_change(hours, held.at), held)
    state = state_at(hours, at)
    today = at.astimezone(zoneinfo.ZoneInfo(hours.timezone)).date()
    why = HoursWhy.HOLIDAY if state is HoursState.CLOSED and today in hours.holidays \
        else HoursWhy.SCHEDULE
    return HoursNow(state, why, next_change(hours, at))


def hours_state(directory: Directory, dialed: str, at: datetime,
                override: HoursOverride | None = None) -> HoursState:
    """The state at ``at`` of the hours a call to ``dialed`` falls under (the number's own,
    else the practice's), with the admins' override while it holds; open where no hours
    apply, or the number is not ours."""
    try:
        hours = directory.hours_of(e164.normalise(dialed))
    except e164.NotE164:
        return HoursState.OPEN
    return HoursState.OPEN if hours is None else overridden(hours, at, override)


def closed_clip(number: str) -> str:
    """The name (no extension) of ``number``'s closed announcement, beside the outage
    announcement; both PBXs play it, backline.localpbx.announcement.render_closed_clips
    writes it."""
    return "closed-" + number.lstrip("+")


def parse_window(text: str) -> Window:
    """``"08:00-17:00"`` (24-hour, local); ``"22:00-06:00"`` crosses midnight.  Raises
    ValueError with what was expected."""
    start_text, sep, end_text = text.partition("-")
    if not sep:
        raise ValueError("a window like 08:00-17:00")
    start, end = _minute(start_text.strip()), _minute(end_text.strip())
    if start == end:
        raise ValueError("a window whose start and end differ (a whole day is 00:00-24:00)")
    if start == MINUTES_PER_DAY:
        raise ValueError("a window that starts by 23:59")
    return Window(start, end)


def _minute(text: str) -> int:
    hh, sep, mm = text.partition(":")
    if not (sep and hh.isdigit() and mm.isdigit() and len(mm) == 2 and 1 <= len(hh) <= 2):
        raise ValueError("a window like 08:00-17:00 (24-hour times)")
    h, m = int(hh), int(mm)
    if h == 24 and m == 0:
        return MINUTES_PER_DAY
    if h > 23 or m > 59:
        raise ValueError("times from 00:00 to 24:00")
    return h * 60 + m
