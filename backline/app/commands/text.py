"""``backline text send|show|list``: a member of staff texts a party from a practice number.

Decided as the API decides (``backline.features.texting.requests``): a number's members text
from it; someone added to one conversation texts that party only; a number not registered
for business texting sends nothing; nothing in an outage.  The text is read from standard
input, never the command line (``ps`` shows every login's arguments), and journaled under
``--key``; a running controller sends it within a second, once.  ``list`` shows the recent
texts for ops: never a text, and the party only by its last digits.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from backline.app.commands.attempts import parse_since
from backline.app.commands.shared import CONFIG_HELP, UsageError, load_directory, local_time, who
from backline.core.conversations import ConversationBook
from backline.core.e164 import redact
from backline.core.model import Directory
from backline.core.ownership import OwnershipBook
from backline.features.texting.requests import NotKept, TextRequest, request_text
from backline.journal import open_journal
from backline.journal.texts import StaffText

MAX_STDIN = 64 * 1024


def add_parser(sub: Any) -> None:
    """The ``text`` command, on the top-level subparsers ``sub``."""
    p = sub.add_parser(
        "text", help="text a party from a practice number, or show what became of a text",
        description="Staff text from practice numbers by the rules calls follow: members of "
                    "a number text from it; someone added to one conversation texts that "
                    "party only; a number not registered for business texting sends "
                    "nothing; nothing goes out in an outage.")
    p.set_defaults(func=cmd_text)
    tsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = tsub.add_parser("send", help="text PARTY from NUMBER as USER (the text on stdin)",
                        description="Journal a text from NUMBER to PARTY as USER, read from "
                                    "standard input; a running controller sends it once. "
                                    "The same --key again sends nothing more.")
    q.add_argument("number", metavar="NUMBER", help="the practice number to text from")
    q.add_argument("party", metavar="PARTY", help="the outside party's number")
    q.add_argument("--as", dest="user", metavar="USER", required=True,
                   help="the user id from the directory who is texting")
    q.add_argument("--key", metavar="KEY", required=True,
                   help="an idempotency key: a text sent again under it is sent once")
    q.add_argument("--config", metavar="CONFIG", help=CONFIG_HELP)
    q = tsub.add_parser("show", help="what became of the text sent under KEY",
                        description="The state of the text sent under KEY: pending, failed, "
                                    "sent (and the gateway's delivery status), in-doubt or "
                                    "not-sent, and why.")
    q.add_argument("key", metavar="KEY")
    q.add_argument("--json", action="store_true", help="machine-readable output for scripts")
    q.add_argument("--config", metavar="CONFIG", help=CONFIG_HELP)
    q = tsub.add_parser("list", help="list recent staff texts",
                        description="Recent staff texts, oldest first: when each was asked "
                                    "for, its key, who texted, from which number, to the "
                                    "party's last digits, and its state (and the gateway's "
                                    "delivery status). Never the text itself.")
    q.add_argument("--since", metavar="TIME", help="only texts since TIME: 2h, 30m, 7d or an "
                   "ISO 8601 time")
    q.add_argument("--limit", type=int, default=100, metavar="N", help="at most N (default 100)")
    q.add_argument("--json", action="store_true", help="machine-readable output for scripts")
    q.add_argument("--config", metavar="CONFIG", help=CONFIG_HELP)


def cmd_text(args: argparse.Namespace) -> int:
    directory = load_directory(args.config)
    if args.action == "list":
        return _list(args, directory)
    journal = open_journal(directory.connections.storage.url)
    try:
        if args.action == "show":
            text = journal.text_by_key(args.key)
            if text is None:
                raise UsageError("no text was sent under that key")
            print(json.dumps(_shown(text), indent=2) if args.json else _line(text))
            return 0
        body = sys.stdin.read(MAX_STDIN + 1)
        if len(body) > MAX_STDIN:
            raise UsageError("the text on standard input is too long; nothing sent")
        body = body.rstrip("\n")
        book = OwnershipBook(directory)
        conversations = ConversationBook()
        conversations.hold(m.key for m in journal.conversation_members())
        outcome = request_text(
            journal, book, conversations, journal.mode_state().mode,
            TextRequest(args.key, args.user, args.number, args.party, body,
                        f"cli: login {who(None)}"),
            datetime.now(UTC), gateway=directory.connections.sms_gateway is not None)
        if isinstance(outcome, NotKept):
            named = f" ({outcome.code})" if outcome.code else ""
            raise UsageError(f"refused{named}: {outcome.why}; nothing sent")
        text = outcome.text
        if outcome.duplicate:
            print(f"already sent under that key: {_line(text)}")
        else:
            print(f"text #{text.id} by {text.user} from {text.sender} to "
                  f"{redact(text.recipient)} journaled; a running controller sends it within "
                  "a second (backline text show KEY)")
        return 0
    finally:
        journal.close()


def _list(args: argparse.Namespace, directory: Directory) -> int:
    if args.limit < 1:
        raise UsageError("--limit: expected a number of texts, 1 or more")
    since = parse_since(args.since, datetime.now(UTC)) if args.since else None
    journal = open_journal(directory.connections.storage.url)
    try:
        texts = list(reversed(journal.staff_texts(args.limit, since)))
    finally:
        journal.close()
    if args.json:
        print(json.dumps([_shown(t) | {"at": t.at.isoformat(), "sent_at": t.sent_at
                                       and t.sent_at.isoformat()} for t in texts], indent=2))
        return 0
    if not texts:
        print("no staff texts" + (f" since {local_time(since, directory)}" if since else ""))
        return 0
    print(f"{'when':<19}  {'key':<20}  {'user':<12}  {'number':<12}  {'to':<5}  state")
    for t in texts:
        delivery = f" ({t.delivery})" if t.delivery else ""
        print(f"{local_time(t.at, directory):<19}  {t.key[:20]:<20}  {t.user[:12]:<12}  "
              f"{t.sender:<12}  {redact(t.recipient):<5}  {t.state.value}{delivery}")
    return 0


def _shown(text: StaffText) -> dict[str, Any]:
    return {"key": text.key, "id": text.id, "user": text.user, "number": text.sender,
            "to": redact(text.recipient), "state": text.state.value, "detail": text.detail,
            "tries": text.tries, "message_sid": text.message_sid, "delivery": text.delivery,
            "error_code": text.error_code}


def _line(text: StaffText) -> str:
    delivery = f", the gateway says {text.delivery}" if text.delivery else ""
    why = f" ({text.detail})" if text.detail else ""
    return (f"text #{text.id} by {text.user} from {text.sender} to {redact(text.recipient)}: "
            f"{text.state.value}{why}, {text.tries} tr{'y' if text.tries == 1 else 'ies'}"
            f"{delivery}")
