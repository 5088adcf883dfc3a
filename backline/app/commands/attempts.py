"""``backline attempts``: recent calls, SMS and faxes with their outcome and delivery state."""

from __future__ import annotations

import argparse
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any, assert_never

from backline.app.commands.shared import (
    CONFIG_HELP,
    UsageError,
    add_command,
    load_directory,
    local_time,
)
from backline.core.model import Directory
from backline.core.records import AttemptKind
from backline.journal import Attempt, open_journal
from backline.journal.delivery import InboxItem, ItemState
from backline.journal.replies import ReplyState, SmsReply


def add_parser(sub: Any) -> None:
    """The ``attempts`` command, on the top-level subparsers ``sub``."""
    p = add_command(
        sub, "attempts", cmd_attempts, "list recent calls, SMS and faxes",
        "List recent inbound attempts (calls, SMS, faxes) with their outcome and delivery "
        "state, oldest first; for an SMS received in an outage, its automatic reply: "
        "sent, pending, failed (why, next try) or not sent (why).")
    p.add_argument("--since", metavar="TIME", help="only attempts since TIME: 2h, 30m, 7d or "
                   "an ISO 8601 time")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="at most N (default 100)")
    p.add_argument("--json", action="store_true", help="machine-readable output for scripts")
    p.add_argument("--requeue-failed", action="store_true",
                   help="put the items the inbox refused back in its queue (once the cause "
                   "is fixed), then exit")
    p.add_argument("--config", metavar="CONFIG", help=CONFIG_HELP)


def cmd_attempts(args: argparse.Namespace) -> int:
    directory = load_directory(args.config)
    since = parse_since(args.since, datetime.now(UTC)) if args.since else None
    journal = open_journal(directory.connections.storage.url)
    if args.requeue_failed:
        try:
            n = journal.requeue_failed()
        finally:
            journal.close()
        print(f"{n} item(s) the inbox refused are held again; the controller delivers them in "
              "the order received")
        return 0
    try:
        rows = journal.attempts(since=since, limit=args.limit)
        queued = journal.item_of_attempts([a.id for a in rows])  # inbox delivery, if queued
        replies = journal.replies_of_attempts([a.id for a in rows])  # outage SMS auto-replies
    finally:
        journal.close()
    if args.json:
        print(json.dumps([_attempt_json(a) | _delivery_json(queued.get(a.id))
                          | _reply_json(replies.get(a.id)) for a in rows], indent=2))
        return 0
    if not rows:
        print("no attempts" + (f" since {local_time(since, directory)}" if since else ""))
        return 0
    kind = max(len(k.value) for k in AttemptKind)  # voicemail is longer than call, sms, fax
    print(f"{'time':<19}  {'kind':<{kind}}  {'mode':<7}  {'from':<16}  {'to':<13}  "
          f"{'outcome':<12}  delivery")
    for a in rows:
        print(f"{local_time(a.at, directory):<19}  {a.kind.value:<{kind}}  {a.mode.value:<7}  "
              f"{_printable(a.sender)[:16]:<16}  {a.recipient:<13}  {a.outcome.value:<12}  "
              f"{a.delivery.value}{_delivery_note(queued.get(a.id))}"
              f"{_reply_note(replies.get(a.id), directory)}"
              f"{f'; file {a.pruned.says()}' if a.pruned is not None else ''}")
    return 0


def _reply_json(reply: SmsReply | None) -> dict[str, object]:
    """An SMS's outage auto-reply: null when none was owed (normal mode, not an SMS)."""
    if reply is None:
        return {"reply": None}
    return {"reply": {"state": reply.state.value, "detail": reply.detail, "tries": reply.tries,
                      "sent_at": reply.sent_at.isoformat() if reply.sent_at else None,
                      "next_try_at": None if reply.state.final
                      else reply.next_try_at.isoformat()}}


def _reply_note(reply: SmsReply | None, directory: Directory) -> str:
    """``; reply sent``, ``; reply failed (why; next try at TIME)``, ``; reply not sent (why)``."""
    if reply is None:
        return ""
    match reply.state:
        case ReplyState.SENT:
            return "; reply sent"
        case ReplyState.PENDING:
            return "; reply pending"
        case ReplyState.FAILED:
            return (f"; reply failed ({reply.detail}; {reply.tries} "
                    f"tr{'y' if reply.tries == 1 else 'ies'}, next at "
                    f"{local_time(reply.next_try_at, directory)})")
        case ReplyState.NOT_SENT:
            return f"; reply not sent ({reply.detail})"
        case _:
            assert_never(reply.state)


def _delivery_json(item: InboxItem | None) -> dict[str, object]:
    if item is None:
        return {"delivery_tries": 0, "delivery_error": ""}
    return {"delivery_tries": item.tries, "delivery_error": item.last_error}


def _delivery_note(item: InboxItem | None) -> str:
    """Why a held item is not in the inbox yet, or why the inbox refused it."""
    if item is None or not item.last_error or item.state is ItemState.DELIVERED:
        return ""
    return f" ({item.last_error}, {item.tries} tr{'y' if item.tries == 1 else 'ies'})"


def _attempt_json(a: Attempt) -> dict[str, object]:
    return {"id": a.id, "key": a.key, "at": a.at.isoformat(), "kind": a.kind.value,
            "mode": a.mode.value, "from": a.sender, "from_raw": a.sender_raw or a.sender,
            "to": a.recipient, "outcome": a.outcome.value, "text": a.text, "file": a.file,
            "detail": a.detail, "node": a.node, "delivery": a.delivery.value,
            # Retention removed its files (connections.storage.delivered_days); null: kept.
            "file_removed": {"at": a.pruned.at.isoformat(), "after_days": a.pruned.days}
            if a.pruned is not None else None}


def parse_since(text: str, now: datetime) -> datetime:
    """``2h``, ``30m``, ``7d`` (ago) or an ISO 8601 time (UTC when it names no zone)."""
    m = re.fullmatch(r"(\d+)\s*([smhd])", text.strip())
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        try:
            return now - timedelta(**{unit: int(m.group(1))})
        except OverflowError as exc:
            raise UsageError(f"--since {text!r}: too far back; give at most a few years, "
                             f"e.g. 365d") from exc
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise UsageError(f"--since {text!r}: expected e.g. 2h, 30m, 7d or 2026-11-23T08:00"
                         ) from exc
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _printable(text: str) -> str:
    """Caller IDs are untrusted: never let one move the cursor or clear the screen."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)
