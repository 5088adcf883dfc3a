"""``backline outage end`` watching the drain: a progress bar on a terminal, lines otherwise.

The CLI does not deliver anything itself: the running controller's drain does (woken within a
second by the mode change).  This only reads the journal until the backlog is empty, and then
names the items the inbox refused, by kind, time and journal id, never by number or text.
When nothing is accepted or refused for ``STALL_SECONDS`` (no controller running, an inbox
down, a head item that keeps failing) it stops watching and says what is still held: the
outage did end, and the controller goes on delivering when it can.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

from backline.journal import Journal
from backline.journal.delivery import InboxItem, ItemState

POLL_SECONDS = 0.5
LINE_EVERY = 5.0  # seconds between plain progress lines (a log file, not a terminal)
BAR = 30
STALL_SECONDS = 60.0  # stop watching after this long without an item accepted or refused


def bar(done: int, total: int) -> str:
    """``[#########---------] 120/300 sent`` (sent: accepted, or refused for good).  Pure."""
    total = max(total, done, 1)
    filled = BAR * done // total
    return f"[{'#' * filled}{'-' * (BAR - filled)}] {done}/{total} sent"


def backlog(journal: Journal) -> int:
    return sum(journal.held().values())


def describe_failed(item: InboxItem, local: Callable[[datetime], str]) -> str:
    return f"  {item.kind} received {local(item.received_at)} (item {item.id}): {item.last_error}"


@dataclass(frozen=True, slots=True)
class Backlog:
    """What was held, and already refused, when the outage ended: the progress counts from
    there (the drain may start before the watching does)."""

    held: int
    refused_before: frozenset[int]


def backlog_now(journal: Journal) -> Backlog:
    return Backlog(backlog(journal), frozenset(
        i.id for i in journal.inbox_items(ItemState.FAILED, limit=100_000)))


def watch_drain(journal: Journal, out: TextIO, *, tty: bool, has_inbox: bool,
                local: Callable[[datetime], str],
                sleep: Callable[[float], None] = time.sleep,
                clock: Callable[[], float] = time.monotonic,
                stall_after: float = STALL_SECONDS, blocked: str = "",
                since: Backlog | None = None) -> int:
    """Show the drain until the backlog is empty, or until ``stall_after`` s pass with no
    item accepted or refused; return the CLI's exit status: 0, since the outage did end
    (items the inbox refused are listed, and shown by ``backline attempts``).  ``blocked``
    says why nothing can be delivered now (no controller, no inbox token): then that is
    said at once instead of watching.  ``since``: the backlog when the outage ended (default:
    now)."""
    start = since or backlog_now(journal)
    failed_before = start.refused_before
    total = max(start.held, backlog(journal))
    if total == 0:
        print("nothing held for the inbox", file=out)
        return 0
    if not has_inbox:
        print(f"{total} held item(s) stay in the journal: connections.inbox is not configured",
              file=out)
        return 0
    if blocked:
        print(f"{total} held item(s) cannot be delivered: {blocked}; they stay in the journal "
              "until then", file=out)
        return 0
    print(f"delivering {total} held item(s) to the inbox (Ctrl-C stops watching; delivery goes "
          "on in the controller)", file=out, flush=True)
    last_line = clock()
    shown = -1
    best = 0
    last_progress = clock()
    while True:
        left = backlog(journal)
        total = max(total, left)
        done = total - left
        if done > best:
            best, last_progress = done, clock()
        if tty:
            print("\r" + bar(done, total), end="", file=out, flush=True)
        elif done != shown and (left == 0 or clock() - last_line >= LINE_EVERY):
            print(f"{done}/{total} sent", file=out, flush=True)
            last_line = clock()
            shown = done
        if left == 0:
            break
        if clock() - last_progress >= stall_after:
            if tty:
                print(file=out)
            print(f"{left} still held; the controller keeps delivering them (see "
                  "`backline outage status`)", file=out)
            return 0
        sleep(min(POLL_SECONDS, stall_after))
    if tty:
        print(file=out)
    failed = [i for i in journal.inbox_items(ItemState.FAILED, limit=100_000)
              if i.id not in failed_before]
    if not failed:
        print(f"all {total} held item(s) delivered", file=out)
        return 0
    print(f"{total - len(failed)} delivered; {len(failed)} refused by the inbox (see "
          "`backline attempts`):", file=out)
    for item in failed:
        print(describe_failed(item, local), file=out)
    return 0
