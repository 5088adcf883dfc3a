"""``backline outage engage|end|status``: switch the backup (outage) mode from a shell, and
wait until the running controllers have the PBX in it."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, assert_never

from backline.app.commands.shared import (
    CONFIG_HELP,
    UsageError,
    add_command,
    load_directory,
    local_time,
    who,
)
from backline.core.mode_sync import Effect, InEffect, NoController, NotYet, effect_of
from backline.core.model import Directory
from backline.core.outage import AlreadyInMode, Mode, ModeChange, ModeState, Via, switch, switch_key
from backline.features.status.page import RefusedSwitch, refused_switches, status_document
from backline.journal import Journal, open_journal


def add_parser(sub: Any) -> None:
    """The ``outage`` command, on the top-level subparsers ``sub``."""
    p = add_command(
        sub, "outage", cmd_outage, "engage, end or show the backup (outage) mode",
        "The backup (outage) mode covers calls, SMS and fax together. Every switch is "
        "recorded with who, when, why and from where.")
    osub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    e = osub.add_parser("engage", help="engage the outage mode",
                        description="Engage the outage mode: callers hear the announcement, "
                                    "SMS senders get the auto-reply, faxes are still received.")
    e.add_argument("--reason", required=True, help="why (shown on the status page and to "
                   "whoever ends it)")
    end = osub.add_parser("end", help="end the outage mode",
                          description="End the outage mode; held attempts and emails are then "
                                      "delivered to the inbox by the running controller, and "
                                      "this shows its progress until the backlog is empty.")
    for q in (e, end):
        q.description = (q.description or "") + (
            " Waits until the running controller has the PBX in the new mode and says when "
            "it took effect (exit 1 if a running controller has not confirmed it in time), "
            "or says that no controller is running.")
        q.add_argument("--wait", type=float, default=5.0, metavar="SECONDS",
                       help="how long to wait for the PBX to have the mode (default 5)")
    e.add_argument("--no-wait", action="store_true",
                   help="return once the switch is recorded, without waiting for the PBX")
    end.add_argument("--no-wait", action="store_true",
                     help="return once the switch is recorded, without waiting for the PBX "
                          "or showing the delivery's progress")
    s = osub.add_parser("status", help="show the mode",
                        description="Show whether the outage is engaged, since when, by whom "
                                    "and why, and recent switches.")
    s.add_argument("--json", action="store_true", help="machine-readable output for scripts")
    s.add_argument("--history", type=int, default=10, metavar="N",
                   help="how many recent switches, and refused desk-phone switches, to show "
                   "(default 10)")
    for q in (e, osub.choices["end"], s):
        q.add_argument("--config", metavar="CONFIG", help=CONFIG_HELP)
        q.add_argument("--by", metavar="NAME", help="who is switching (default: your login)")


def cmd_outage(args: argparse.Namespace) -> int:
    directory = load_directory(args.config)
    journal = open_journal(directory.connections.storage.url)
    try:
        if args.action == "status":
            return _outage_status(journal.mode_state(), journal.mode_history(args.history),
                                  directory, args.json, journal.held(),
                                  refused_switches(journal.desk_phone_refusals(args.history)))
        target = Mode.OUTAGE if args.action == "engage" else Mode.NORMAL
        state = journal.mode_state()
        now = datetime.now(UTC)
        try:
            change = switch(state, target, at=now, by=who(args.by), via=Via.CLI,
                            reason=getattr(args, "reason", "") or "")
        except AlreadyInMode as exc:
            since = exc.state.since
            print(f"backline: already {exc.state.mode.value}"
                  + (f" since {local_time(since.at, directory)} by {since.by}" if since else "")
                  + "; nothing changed", file=sys.stderr)
            return 0
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        if args.wait < 0:
            raise UsageError("--wait: expected a number of seconds, 0 or more")
        from backline.features.inbox.progress import backlog_now, watch_drain

        held = backlog_now(journal) if target is Mode.NORMAL and not args.no_wait else None
        journal.record_mode_change(change, expected=state)
        word = "engaged" if target is Mode.OUTAGE else "ended"
        print(f"outage {word} at {local_time(change.at, directory)} by {change.by}"
              + (f": {change.reason}" if change.reason else ""), end="", flush=True)
        effect = _await_effect(journal, change, 0.0 if args.no_wait else args.wait)
        print(_effect_words(effect, change, directory, args.no_wait), flush=True)
        status = 1 if isinstance(effect, NotYet) and not args.no_wait else 0
        if held is not None:
            drained = watch_drain(journal, sys.stdout, tty=sys.stdout.isatty(),
                                  has_inbox=directory.connections.inbox is not None,
                                  local=lambda at: local_time(at, directory),
                                  blocked=_why_not_delivered(effect, journal), since=held)
            return status or drained
        return status
    finally:
        journal.close()


# A controller reports at least every REPORT_EVERY (10 s); unseen for three times as long,
# it is taken as not running.
LIVE_WITHIN = timedelta(seconds=30)
EFFECT_POLL_SECONDS = 0.1


def _await_effect(journal: Journal, change: ModeChange, within: float) -> Effect:
    """Until every running controller reports its PBX holds ``change`` (or ``within`` s
    pass, or no controller runs): what the controllers' reports in the journal say."""
    key = switch_key(change)
    deadline = time.monotonic() + within
    while True:
        effect = effect_of(journal.controllers(), key, datetime.now(UTC), LIVE_WITHIN)
        if not isinstance(effect, NotYet) or time.monotonic() >= deadline:
            return effect
        time.sleep(EFFECT_POLL_SECONDS)


def _effect_words(effect: Effect, change: ModeChange, directory: Directory,
                  no_wait: bool) -> str:
    """The rest of the engage/end line: when it took effect, or plainly why not yet."""
    match effect:
        case InEffect(applied):
            def one(at: datetime) -> str:
                took = max(0.0, (at - change.at).total_seconds())
                return f"{local_time(at, directory)} ({took:.1f} s)"
            if len(applied) == 1:
                return f"; in effect on the PBX at {one(applied[0][1])}"
            return "; in effect on " + ", ".join(f"{node or 'the PBX'} at {one(at)}"
                                                 for node, at in applied)
        case NoController(last_seen):
            seen = f"last seen {local_time(last_seen, directory)}" if last_seen else \
                "none seen on this journal"
            return (f"; NOT in effect yet: no controller is running ({seen}), so the PBX "
                    "does not have it; it takes effect when `backline run` or `backline up` "
                    "starts")
        case NotYet(waiting):
            if no_wait:
                return "; the running controller applies it within a few seconds (--no-wait)"
            nodes = ", ".join(f"{node or 'the controller'} (last seen "
                              f"{local_time(seen, directory)})" for node, seen in waiting)
            return (f"; NOT in effect on the PBX after waiting: {nodes} has not confirmed it "
                    "(its PBX link may be down, or it stopped: see the status page)")
        case _:
            assert_never(effect)


def _why_not_delivered(effect: Effect, journal: Journal) -> str:
    """Why held items cannot be delivered now ("" if a running controller can)."""
    if isinstance(effect, NoController):
        return "no controller is running to deliver them (start `backline run`)"
    now = datetime.now(UTC)
    live = [r for r in journal.controllers() if now - r.seen_at <= LIVE_WITHIN]
    if live and all(r.inbox_blocked for r in live):
        return live[0].inbox_blocked
    return ""


def _outage_status(state: ModeState, history: list[ModeChange], directory: Directory,
                   as_json: bool, backlog: Mapping[str, int],
                   refused: list[RefusedSwitch]) -> int:
    since = state.since
    if as_json:
        print(json.dumps(status_document(state, history, backlog, refused=refused), indent=2))
        return 0
    if state.mode is Mode.OUTAGE and since:
        print(f"outage ENGAGED since {local_time(since.at, directory)} by {since.by} "
              f"(via {since.via.value}): {since.reason}")
    elif since:
        print(f"normal since {local_time(since.at, directory)} by {since.by} "
              f"(via {since.via.value})")
    else:
        print("normal (the outage has never been engaged)")
    for c in history[1:]:
        print(f"  {local_time(c.at, directory)}  {c.mode.value:<7} by {c.by} (via {c.via.value})"
              + (f": {c.reason}" if c.reason else ""))
    if refused:
        print("refused desk-phone switches (newest first):")
    for r in refused:
        print(f"  {local_time(r.at, directory)}  desk phone {r.desk_phone} asked to {r.action}: "
              f"refused, {r.why}")
    return 0
