"""``backline conversation add|remove|list``: people added to one conversation alone.

A teammate added to the conversation of a practice number with one outside party may call
(and text) that party from the number, and nobody else from it; a number's own members see
all its conversations and cannot be removed from one.  Each change is journaled and audited;
a running controller reads it from the journal within a round (about a second).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from backline.app.commands.shared import CONFIG_HELP, UsageError, load_directory, local_time, who
from backline.core import e164
from backline.core.conversations import ConversationRefused
from backline.core.ownership import OwnershipBook
from backline.features.conversations import change_member
from backline.journal import open_journal
from backline.journal.conversations import ADD, REMOVE


def add_parser(sub: Any) -> None:
    """The ``conversation`` command, on the top-level subparsers ``sub``."""
    p = sub.add_parser(
        "conversation", help="add or remove a teammate in one conversation, or list them",
        description="A conversation is one outside party talking to one practice number. "
                    "Its members are the number's members (always) plus people added to it "
                    "alone, who may call and text that party from the number and nobody "
                    "else. Each change is journaled and audited (who, when); a running "
                    "controller applies it within a second.")
    p.set_defaults(func=cmd_conversation)
    csub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, help_ in ((ADD, "add USER to the conversation of NUMBER with PARTY"),
                          (REMOVE, "remove USER from it (a member of NUMBER cannot be)")):
        q = csub.add_parser(action, help=help_, description=help_ + ".")
        q.add_argument("number", metavar="NUMBER", help="the practice number (E.164)")
        q.add_argument("party", metavar="PARTY", help="the outside party's number")
        q.add_argument("user", metavar="USER", help="the user id from the directory")
        q.add_argument("--by", metavar="NAME", help="who is changing it (default: your login)")
        q.add_argument("--config", metavar="CONFIG", help=CONFIG_HELP)
    q = csub.add_parser("list", help="list the people added to conversations",
                        description="List the people added to conversations alone (optionally "
                                    "of NUMBER, with PARTY), with who added them and when.")
    q.add_argument("number", metavar="NUMBER", nargs="?", help="only this practice number")
    q.add_argument("party", metavar="PARTY", nargs="?", help="only this outside party")
    q.add_argument("user", metavar="USER", nargs="?", help="only this user")
    q.add_argument("--json", action="store_true", help="machine-readable output for scripts")
    q.add_argument("--config", metavar="CONFIG", help=CONFIG_HELP)


def cmd_conversation(args: argparse.Namespace) -> int:
    directory = load_directory(args.config)
    book = OwnershipBook(directory)
    journal = open_journal(directory.connections.storage.url)
    try:
        if args.action == "list":
            wanted = []
            for value in (args.number, args.party):
                try:
                    wanted.append(e164.normalise(value) if value else None)
                except e164.NotE164 as exc:
                    raise UsageError(f"expected {exc.why}") from None
            rows = [m for m in journal.conversation_members()
                    if (wanted[0] is None or m.key.number == wanted[0])
                    and (wanted[1] is None or m.key.party == wanted[1])
                    and (args.user is None or m.key.user_id == args.user)]
            if args.json:
                print(json.dumps([{"number": m.key.number, "party": m.key.party,
                                   "user": m.key.user_id, "added_at": m.added_at.isoformat(),
                                   "added_by": m.added_by, "via": m.via} for m in rows],
                                 indent=2))
                return 0
            if not rows:
                print("nobody is added to a conversation" + (" of these" if any(wanted) or
                                                             args.user else ""))
            for m in rows:
                print(f"{m.key.number}  {m.key.party:<16}  {m.key.user_id:<12}  added "
                      f"{local_time(m.added_at, directory)} by {m.added_by} (via {m.via})")
            return 0
        by = who(args.by)
        try:
            changed = change_member(journal, book, args.action, args.number, args.party,
                                    args.user, by=by, via="cli", at=datetime.now(UTC))
        except ConversationRefused as exc:
            raise UsageError(f"{exc}; nothing changed") from None
        k = changed.key
        if not changed.done:
            print(f"{k.user_id} was {'already' if args.action == ADD else 'not'} added to the "
                  f"conversation of {k.number} with {k.party}; nothing changed",
                  file=sys.stderr)
            return 0
        if args.action == ADD:
            print(f"{k.user_id} added to the conversation of {k.number} with {k.party} by {by}: "
                  f"they may call and text that party from {k.number}; a running controller "
                  "applies it within a second")
        else:
            print(f"{k.user_id} removed from the conversation of {k.number} with {k.party} by "
                  f"{by}; a running controller applies it within a second")
        return 0
    finally:
        journal.close()
