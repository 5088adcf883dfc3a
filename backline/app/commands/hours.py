"""``backline hours status|open|closed|auto``: the practice's hours and the admins' override
of them, outside the phone.

``open`` and ``closed`` force the state until the next scheduled change (as ``*27``/``*26``
do from an admin's desk phone); ``auto`` hands back to the schedule at once.  Each is
journaled and audited like an outage switch (who, when, from where); a running controller
takes it up within a round (about a second).  The outage mode still wins over the hours.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from backline.app.commands.shared import CONFIG_HELP, UsageError, load_directory, local_time, who
from backline.core.hours import HoursNow, HoursOverride, HoursState
from backline.core.model import Directory
from backline.core.outage import Via
from backline.features.status.page import HoursRow, hours_document, hours_rows
from backline.journal import AuditEntry, open_journal

ACTIONS = {"open": HoursState.OPEN, "closed": HoursState.CLOSED, "auto": None}


def add_parser(sub: Any) -> None:
    """The ``hours`` command, on the top-level subparsers ``sub``."""
    p = sub.add_parser(
        "hours", help="show the practice's hours, or force them open or closed",
        description="The practice's hours (and a number's own): open or closed now, why "
                    "(the schedule, a holiday, an admin's override) and until when. An "
                    "override (open, closed) holds until the next scheduled change, like *27 "
                    "and *26 on an admin's desk phone; auto hands back to the schedule. Each "
                    "change is journaled and audited (who, when); a running controller applies "
                    "it within a second. The outage mode wins over the hours.")
    p.set_defaults(func=cmd_hours)
    hsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    helps = {"status": "show the hours' state now, why and until when",
             "open": "force open until the next scheduled change",
             "closed": "force closed until the next scheduled change",
             "auto": "hand back to the schedule now (end an override)"}
    for action, help_ in helps.items():
        q = hsub.add_parser(action, help=help_, description=help_[0].upper() + help_[1:] + ".")
        q.add_argument("config_path", metavar="CONFIG", nargs="?", help=CONFIG_HELP)
        q.add_argument("--config", metavar="CONFIG", help="the same, as an option")
        q.add_argument("--at", metavar="TIME",
                       help="as of TIME instead of now (ISO 8601; without a zone, the "
                            "practice's local time)")
        if action == "status":
            q.add_argument("--json", action="store_true", help="machine-readable output")
        else:
            q.add_argument("--by", metavar="NAME", help="who is changing it (default: your "
                                                        "login)")


def cmd_hours(args: argparse.Namespace) -> int:
    directory = load_directory(args.config_path or args.config)
    if directory.hours is None and not any(n.hours for n in directory.numbers):
        raise UsageError(f"{directory.source}: no hours: section (the practice is always "
                         "open), so there is nothing to show or force")
    at = _moment(args.at, directory)
    journal = open_journal(directory.connections.storage.url)
    try:
        if args.action != "status":
            by = who(args.by)
            override = HoursOverride(ACTIONS[args.action], at, by, Via.CLI.value)
            journal.record_hours_override(override)
            what = "handed back to the schedule" if override.state is None else \
                f"forced {args.action}"
            until = "" if override.state is None else ", until the next scheduled change"
            journal.audit(AuditEntry(datetime.now(UTC), by, f"hours.{args.action}",
                                     f"{what} from the CLI as of {at.isoformat()}{until}"))
            print(f"hours {what} at {local_time(at, directory)} by {by}{until}")
        rows = hours_rows(directory, at, journal.hours_override())
    finally:
        journal.close()
    if getattr(args, "json", False):
        print(json.dumps(hours_document(rows), indent=2))
        return 0
    for row in rows:
        print(f"{row.applies_to}: {_words(row.now, directory)}")
    return 0


_EARLIEST = datetime(2, 1, 1, tzinfo=UTC)
_LATEST = datetime(9998, 12, 31, tzinfo=UTC)


def _moment(text: str | None, directory: Directory) -> datetime:
    if not text:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise UsageError(f"--at: expected an ISO 8601 time such as 2026-01-05T10:00, not "
                         f"{text!r}") from exc
    if at.tzinfo is None:
        from zoneinfo import ZoneInfo
        at = at.replace(tzinfo=ZoneInfo(directory.practice.timezone))
    try:
        at = at.astimezone(UTC)
    except OverflowError:
        at = datetime.min.replace(tzinfo=UTC)  # out of range either way: refused below
    # The schedule looks days either side of the moment: a year's margin keeps that in range.
    if not _EARLIEST <= at <= _LATEST:
        raise UsageError(f"--at {text!r}: out of range; give a time between years "
                         f"{_EARLIEST.year} and {_LATEST.year}")
    return at


def _words(now: HoursNow, directory: Directory) -> str:
    until = f" until {local_time(now.until, directory)}" if now.until else ""
    why = now.why.value
    if now.override is not None:
        why += (f" by {now.override.by} (via {now.override.via}) at "
                f"{local_time(now.override.at, directory)}")
    return f"{now.state.value.upper()}{until} ({why})"


__all__ = ["HoursRow", "add_parser", "cmd_hours"]
