"""The reminder that an outage is still engaged: when one is due, and what it says.  Pure.

An outage left on by mistake sends every caller to the announcement, so while it lasts the
alert recipients are reminded every ``backup.reminder_hours``.  Time is cut into
slots from the moment the outage was engaged: slot ``n`` (n >= 1) falls due at
``since + n * interval``.  Only the newest slot due is ever sent: a controller that was down
for three intervals, or an SMTP server that was, sends one reminder with the true duration,
not three stale ones.  An outage is named by the time of the switch that engaged it, so a
new outage (ended and engaged again) starts its own slots.

What was sent is recorded in the audit log (one entry per outage, slot and recipient, see
:func:`audit_detail`), which is how a restarted controller knows not to send it again.

**No patient data.**  A reminder says the practice's name, since when the outage has been on
and how to end it; nothing is handed an attempt.  Not even the reason it was engaged: that is
free text typed by ops and may name anyone.
"""

from __future__ import annotations

import hashlib
import re
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from zoneinfo import ZoneInfo

from backline.core.outage import Mode, ModeState
from backline.features.alerts.compose import (
    PRACTICE_NAME_CHARS,
    SMS_PRACTICE_CHARS,
    automatic_email,
    local_time,
)

SENT_ACTION = "outage.reminder.sent"
"""The audit log action of one reminder that reached one recipient (kept stable: a restarted
controller reads these back)."""
ACTOR = "controller:reminders"


@dataclass(frozen=True, slots=True)
class Slot:
    """One reminder of one outage: due at ``since + number * interval``."""

    since: datetime  # when the outage was engaged: names it
    number: int      # 1, 2, ...
    due_at: datetime


def due_slot(state: ModeState, now: datetime, interval: timedelta) -> Slot | None:
    """The newest reminder due at ``now``, or None: not engaged, or not an interval yet."""
    if state.mode is not Mode.OUTAGE or state.since is None:
        return None
    if interval <= timedelta(0):
        raise ValueError("the reminder interval must be positive")
    since = state.since.at
    number = (now - since) // interval  # floor; negative if the clock is behind the switch
    if number < 1:
        return None
    return Slot(since, number, since + number * interval)


def next_due_at(state: ModeState, now: datetime, interval: timedelta) -> datetime | None:
    """When the next reminder after ``now`` falls due (None: not engaged)."""
    if state.mode is not Mode.OUTAGE or state.since is None:
        return None
    since = state.since.at
    number = max((now - since) // interval, 0) + 1
    return since + number * interval


# -- what was sent: the audit log's detail ------------------------------------------------------

_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"
_DETAIL = re.compile(r"outage=(\S+) slot=(\d+) to=(\S+)")


def outage_key(since: datetime) -> str:
    """The prefix every sent-entry's detail of the outage engaged at ``since`` starts with."""
    return f"outage={since.astimezone(UTC).strftime(_TIME)} "


def audit_detail(slot: Slot, recipient: str) -> str:
    """``outage=<engaged at, UTC> slot=<n> to=<email:addr|sms:+1...>``: an ops recipient, from
    the config, never a patient."""
    return f"{outage_key(slot.since)}slot={slot.number} to={recipient}"


def sent_to(details: list[str], slot: Slot) -> set[str]:
    """The recipients ``details`` (audit details) say already have ``slot``."""
    key = outage_key(slot.since)
    out = set()
    for detail in details:
        found = _DETAIL.fullmatch(detail)
        if found and detail.startswith(key) and int(found.group(2)) == slot.number:
            out.add(found.group(3))
    return out


def message_id(practice: str, sender: str, slot: Slot, recipient: str) -> str:
    """The same Message-ID for the same reminder to the same recipient, whoever sends it:
    a resend after a crash (sent, not yet recorded) is recognisably the same message.  The
    practice's name is in the hash so two practices' reminders never share one."""
    seed = f"{practice}|{outage_key(slot.since)}|{slot.number}|{recipient}"
    digest = hashlib.sha256(seed.encode()).hexdigest()[:32]
    domain = sender.rpartition("@")[2] or "backline.invalid"
    return f"<reminder.{digest}@{_one_line(domain, 200)}>"


# -- what it says -------------------------------------------------------------------------------

END_HOW = ("backline outage end", "*29 and the PIN, on an admin's desk phone",
           "database put backline mode normal, on the Asterisk console")


def duration(elapsed: timedelta) -> str:
    """``4 hours``, ``1 hour 30 minutes``, ``45 minutes``: whole minutes, floored."""
    minutes = max(int(elapsed.total_seconds() // 60), 0)
    hours, minutes = divmod(minutes, 60)
    parts = []
    if hours:
        parts.append(f"{hours} hour{'s' if hours != 1 else ''}")
    if minutes or not hours:
        parts.append(f"{minutes} minute{'s' if minutes != 1 else ''}")
    return " ".join(parts)


def every(interval: timedelta) -> str:
    hours = interval.total_seconds() / 3600
    return f"{hours:g} hour{'s' if hours != 1 else ''}"


def reminder_email(*, practice: str, sender: str, to: str, message_id: str, slot: Slot,
                   sent_at: datetime, tz: str, interval: timedelta) -> EmailMessage:
    """The reminder email: plain text only (nothing to link to)."""
    name = _one_line(practice, PRACTICE_NAME_CHARS)
    when = local_time(slot.since, tz)
    message = automatic_email(sender=sender, to=to, message_id=message_id, sent_at=sent_at,
                              subject=f"Reminder: {name} is still in backup (outage) mode")
    message.set_content("\n\n".join([
        textwrap.fill(f"{name}: the phone system has been in backup (outage) mode since "
                      f"{when}, for {duration(sent_at - slot.since)} now. Callers hear the "
                      "outage announcement and desk phones do not ring.", 72),
        "If the outage is over, end it with any of:\n"
        + "\n".join(f"  - {how}" for how in END_HOW),
        textwrap.fill(f"This reminder comes every {every(interval)} while the outage lasts. "
                      "It holds no patient information.", 72),
    ]) + "\n")
    return message


def reminder_sms(practice: str, slot: Slot, sent_at: datetime, tz: str) -> str:
    """The text to each SMS recipient; one 160-character segment."""
    name = _one_line(practice, SMS_PRACTICE_CHARS)
    when = slot.since.astimezone(ZoneInfo(tz)).strftime("%a %H:%M")
    return (f"{name}: phone outage mode still on since {when} "
            f"({duration(sent_at - slot.since)}). End it: *29+PIN or 'backline outage end'.")


def _one_line(text: str, limit: int) -> str:
    """One line of at most ``limit`` characters: header injection needs a line break."""
    return " ".join(text.split())[:limit]
