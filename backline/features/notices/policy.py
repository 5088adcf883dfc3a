"""The notices that an outage has started and has ended: which are owed, and what they say.
Pure: the mode's history, the time and the counts come in as arguments.

The alert recipients hear of an outage at once, not from the first attempt's alert or the
first reminder hours later: when it is engaged, a **start notice** (when, by whom, from
where, what callers now hear); when it ends, an **end notice** (how long it lasted, how
many attempts of each kind were held, whether delivery to the inbox has finished, where the
status page is).  An outage is named by the time of the switch that engaged it, as the
reminders name it (:func:`backline.features.reminders.policy.outage_key`).

Which are owed (:func:`owed`): the start notice of the outage engaged now, and the end notice
of each outage ended in the last ``END_WINDOW``.  A start notice is moot once its outage has
ended (the end notice tells the whole of it, from start to end), so a controller that was
down for a whole short outage, or an SMTP server that was, sends one notice, not two stale
ones.  The window keeps a journal's old outages from being announced again to everyone on
the day this feature is first deployed.

What was sent is recorded in the audit log (one entry per outage, notice and recipient, see
:func:`audit_detail`), which is how a restarted controller knows not to send it again.

**No patient data.**  A notice is handed the switches and counts, never an attempt; and
not the reason typed when the outage was engaged: that is free text and may name anyone.
"""

from __future__ import annotations

import enum
import hashlib
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from zoneinfo import ZoneInfo

from backline.core.outage import Mode, ModeChange, Via
from backline.features.alerts.compose import (
    PRACTICE_NAME_CHARS,
    SMS_PRACTICE_CHARS,
    automatic_email,
    local_time,
)
from backline.features.reminders.policy import END_HOW, duration, outage_key
from backline.features.status.page import via_words

SENT_ACTION = "outage.notice.sent"
"""The audit log action of one notice that reached one recipient (kept stable: a restarted
controller reads these back)."""
ACTOR = "controller:notices"

END_WINDOW = timedelta(days=7)
"""An end notice not sent within this long of the end is not sent at all (logged)."""

BY_CHARS = 40  # who switched, as recorded: a user id, ``console:NAME``, a login
SMS_BY_CHARS = 16  # keeps each text in one 160-character GSM segment


class Kind(enum.Enum):
    START = "start"
    END = "end"


@dataclass(frozen=True, slots=True)
class Outage:
    """One outage: the switch that engaged it and the one that ended it (None: still on)."""

    engaged: ModeChange
    ended: ModeChange | None = None


@dataclass(frozen=True, slots=True)
class Notice:
    kind: Kind
    outage: Outage


def outages(history: Sequence[ModeChange]) -> list[Outage]:
    """The outages in ``history`` (switches, newest first), newest first.  An end whose
    engaging switch is older than the history is left out: its notice cannot say much."""
    found: list[Outage] = []
    end: ModeChange | None = None
    for change in history:
        if change.mode is Mode.NORMAL:
            end = change
        else:
            found.append(Outage(change, end))
            end = None
    return found


def owed(history: Sequence[ModeChange], now: datetime) -> list[Notice]:
    """The notices owed at ``now``, oldest first: the start notice of the outage engaged now,
    and the end notice of each outage ended within ``END_WINDOW``."""
    out: list[Notice] = []
    for outage in outages(history):
        if outage.ended is None:
            if not out:  # only the newest can still be on
                out.append(Notice(Kind.START, outage))
        elif now - outage.ended.at <= END_WINDOW:
            out.append(Notice(Kind.END, outage))
    return out[::-1]


# -- what was sent: the audit log's detail ------------------------------------------------------

_DETAIL = re.compile(r"outage=(\S+) notice=(start|end) to=(\S+)")


def audit_detail(notice: Notice, recipient: str) -> str:
    """``outage=<engaged at, UTC> notice=<start|end> to=<email:addr|sms:+1...>``: an ops
    recipient, from the config, never a patient."""
    return f"{outage_key(notice.outage.engaged.at)}notice={notice.kind.value} to={recipient}"


def sent_to(details: Sequence[str], notice: Notice) -> set[str]:
    """The recipients ``details`` (audit details) say already have ``notice``."""
    key = outage_key(notice.outage.engaged.at)
    out = set()
    for detail in details:
        found = _DETAIL.fullmatch(detail)
        if found and detail.startswith(key) and found.group(2) == notice.kind.value:
            out.add(found.group(3))
    return out


def message_id(practice: str, sender: str, notice: Notice, recipient: str) -> str:
    """The same Message-ID for the same notice to the same recipient, whoever sends it: a
    resend after a crash (sent, not yet recorded) is recognisably the same message."""
    seed = (f"{practice}|{outage_key(notice.outage.engaged.at)}|{notice.kind.value}|"
            f"{recipient}")
    digest = hashlib.sha256(seed.encode()).hexdigest()[:32]
    domain = sender.rpartition("@")[2] or "backline.invalid"
    return f"<outage-notice.{digest}@{_one_line(domain, 200)}>"


# -- what it says -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Held:
    """What an outage held for the inbox, and where that delivery stands now.

    ``attempts``: outage attempts journaled between its start and end, by kind (``call``,
    ``sms``, ``fax``), plus ``email`` for emails kept.  ``backlog``: items still waiting for
    the inbox now (of any outage); ``blocked``: why they cannot go ("" when they can)."""

    attempts: Mapping[str, int]
    backlog: int
    blocked: str = ""


def _who(change: ModeChange, limit: int) -> str:
    return _one_line(change.by, limit) or "someone"


def _where(via: Via) -> str:
    return "an admin's desk phone" if via is Via.DESK_PHONE else f"the {via_words(via)}"


def callers_hear(announcement: str) -> str:
    """What callers now hear: the announcement's text (the config's, never a caller's), or
    that it is the recording."""
    text = _one_line(announcement, 400)
    said = f'the outage announcement: "{text}"' if text else "the recorded outage announcement"
    return f"Callers now hear {said}, and are then hung up."


def start_email(*, practice: str, sender: str, to: str, message_id: str, engaged: ModeChange,
                sent_at: datetime, tz: str, announcement: str) -> EmailMessage:
    """The start notice by email: plain text only."""
    name = _one_line(practice, PRACTICE_NAME_CHARS)
    message = automatic_email(sender=sender, to=to, message_id=message_id, sent_at=sent_at,
                              subject=f"{name} is now in backup (outage) mode")
    message.set_content("\n\n".join([
        textwrap.fill(f"{name}: the phone system was put in backup (outage) mode at "
                      f"{local_time(engaged.at, tz)} by {_who(engaged, BY_CHARS)}, from "
                      f"{_where(engaged.via)}.", 72),
        textwrap.fill(callers_hear(announcement) + " Desk phones do not ring. Texts get the "
                      "automatic outage reply; faxes are still received. Every attempt is "
                      "kept and delivered to the inbox when the outage ends.", 72),
        "When it is over, end it with any of:\n" + "\n".join(f"  - {how}" for how in END_HOW),
        textwrap.fill("You get a notice when it ends, and alerts for what comes in meanwhile. "
                      "This notice holds no patient information.", 72),
    ]) + "\n")
    return message


def start_sms(practice: str, engaged: ModeChange, tz: str) -> str:
    """The start notice's text; one 160-character segment."""
    name = _one_line(practice, SMS_PRACTICE_CHARS)
    when = engaged.at.astimezone(ZoneInfo(tz)).strftime("%a %H:%M")
    return (f"{name}: phone outage mode ON since {when}, by {_who(engaged, SMS_BY_CHARS)}. "
            "Callers hear the outage announcement. Details by email.")


_KINDS = (("call", "call", "calls"), ("sms", "text", "texts"), ("fax", "fax", "faxes"),
          ("email", "email", "emails"))


def held_words(attempts: Mapping[str, int]) -> str:
    """``3 calls, 1 text, 0 faxes and 2 emails``: every kind, zeros too (a zero says so)."""
    parts = [f"{attempts.get(k, 0)} {one if attempts.get(k, 0) == 1 else many}"
             for k, one, many in _KINDS]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def delivery_words(held: Held) -> str:
    if held.blocked:
        return (f"Delivery to the inbox has not finished: {held.backlog} items wait, and "
                f"cannot go yet ({held.blocked}).")
    if held.backlog:
        return (f"Delivery to the inbox has not finished yet: {held.backlog} items are "
                "still being delivered.")
    return "Delivery to the inbox has finished."


def end_email(*, practice: str, sender: str, to: str, message_id: str, outage: Outage,
              sent_at: datetime, tz: str, held: Held, status_url: str) -> EmailMessage:
    """The end notice by email: plain text only."""
    assert outage.ended is not None
    name = _one_line(practice, PRACTICE_NAME_CHARS)
    engaged, ended = outage.engaged, outage.ended
    message = automatic_email(sender=sender, to=to, message_id=message_id, sent_at=sent_at,
                              subject=f"{name}: backup (outage) mode has ended")
    status = (f"The status page shows the delivery as it goes:\n{status_url}" if status_url
              else "No status page is configured (connections.status).")
    message.set_content("\n\n".join([
        textwrap.fill(f"{name}: the phone system is back in normal mode since "
                      f"{local_time(ended.at, tz)}, ended by {_who(ended, BY_CHARS)} from "
                      f"{_where(ended.via)}. The outage lasted "
                      f"{duration(ended.at - engaged.at)} (engaged {local_time(engaged.at, tz)} "
                      f"by {_who(engaged, BY_CHARS)}).", 72),
        textwrap.fill(f"Held during the outage: {held_words(held.attempts)}. "
                      + delivery_words(held), 72),
        status,
        "This notice holds no patient information.",
    ]) + "\n")
    return message


def end_sms(practice: str, outage: Outage, tz: str, held: Held) -> str:
    """The end notice's text; one 160-character segment."""
    assert outage.ended is not None
    name = _one_line(practice, SMS_PRACTICE_CHARS)
    when = outage.ended.at.astimezone(ZoneInfo(tz)).strftime("%a %H:%M")
    total = sum(held.attempts.values())
    state = "done" if not held.backlog and not held.blocked else "in progress"
    return (f"{name}: phone outage ended {when} after "
            f"{duration(outage.ended.at - outage.engaged.at)}. {total} items held; inbox "
            f"delivery {state}. See email.")


def _one_line(text: str, limit: int) -> str:
    """One line of at most ``limit`` characters: header injection needs a line break."""
    return " ".join(text.split())[:limit]
