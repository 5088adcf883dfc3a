"""``hours:``, the practice's or a number's: open windows per weekday, holidays, and the
closed path (an announcement, or a forward to an answering service)."""

from __future__ import annotations

from datetime import date

from backline.app.settings.backup import read_announcement
from backline.app.settings.reader import Reader, entry, where_of
from backline.app.yamlsource import YMap
from backline.core import e164
from backline.core.hours import WEEKDAYS, parse_window
from backline.core.model import ClosedPath, Hours, Window


def read_hours(r: Reader, parent: YMap, f: str, timezone: str) -> Hours | None:
    """``hours: {open: {mon: ["08:00-17:00"], ...}, holidays: ["2026-12-25"], closed:
    {announcement: {text: ...}, forward_to: +1...}}``, in the practice's time zone
    (``timezone``)."""
    node = r.mapping(entry(parent, "hours"), f, parent.where)
    if node is None:
        return None
    r.keys(node, f, ["open", "holidays", "closed"])
    week: list[tuple[Window, ...]] = [() for _ in WEEKDAYS]
    days = r.mapping(entry(node, "open"), f"{f}.open", node.where)
    if days is None:
        r.problem(node.where, f"{f}.open",
                  'the open times per weekday, like mon: ["08:00-17:00"]')
    else:
        r.keys(days, f"{f}.open", WEEKDAYS)
        for i, day in enumerate(WEEKDAYS):
            windows: list[Window] = []
            for j, (text, where) in enumerate(r.strings(
                    days, day, f"{f}.open.{day}", None, "a window like 08:00-17:00")):
                try:
                    windows.append(parse_window(text))
                except ValueError as exc:
                    r.problem(where, f"{f}.open.{day}[{j}]", str(exc))
            week[i] = tuple(windows)
    holidays: set[date] = set()
    for j, (text, where) in enumerate(r.strings(node, "holidays", f"{f}.holidays", None,
                                                "a date like 2026-12-25")):
        try:
            holidays.add(date.fromisoformat(text))
        except ValueError:
            r.problem(where, f"{f}.holidays[{j}]", "a date like 2026-12-25")
    closed = ClosedPath()
    cl = r.mapping(entry(node, "closed"), f"{f}.closed", node.where)
    if cl is not None:
        r.keys(cl, f"{f}.closed", ["announcement", "forward_to"])
        announcement = read_announcement(r, cl, f"{f}.closed.announcement",
                                         closed.announcement)
        forward = r.text(cl, "forward_to", f"{f}.closed.forward_to", "",
                         "an E.164 number like +13125550199") or ""
        if forward:
            try:
                forward = e164.normalise(forward)
            except e164.NotE164 as exc:
                r.problem(where_of(cl, "forward_to"), f"{f}.closed.forward_to",
                          exc.why)
                forward = ""
        closed = ClosedPath(announcement, forward)
    return Hours(timezone, tuple(week), frozenset(holidays), closed)
