"""Emergency calls: what each desk phone presents on a 911 call, and what the
people on site are told.  Pure: the directory and the call in, answers out.

A practice's phone system is a multi-line telephone system.  The emergency service must be
able to call back (a callback number in E.164 that rings into the practice, never an
extension), must learn where the caller is (a dispatchable location: address plus floor or
room), and someone on site must hear of the call at once (Kari's Law).  The PBX sends the
first two with the call on its own (rendered from :func:`emergency_callers`); the controller
sends the third (:func:`notice`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from backline.core.model import CALLER_ID_MAX, DeskPhoneSite, Directory, Location, User

_CALLER_ID_CHARS = re.compile(r"[^A-Za-z0-9 .,'&-]")


@dataclass(frozen=True, slots=True)
class EmergencyCaller:
    """What one desk phone presents on a 911 call."""

    desk_phone: str
    user: User
    callback: str  # E.164
    caller_id_name: str  # the practice's, never the person's
    location: Location | None


def emergency_caller(d: Directory, desk_phone: str) -> EmergencyCaller | None:
    """The desk phone's callback number, caller-ID name and location; None for a phone no
    active user has (the config loader refuses an active phone with no callback number)."""
    user = next((u for u in d.users if u.active and desk_phone in u.desk_phones), None)
    if user is None:
        return None
    site = next((s for s in user.sites if s.desk_phone == desk_phone),
                DeskPhoneSite(desk_phone))
    callback = site.emergency_callback or user.emergency_callback or d.emergency.callback
    if not callback:
        return None
    location_id = site.location or user.location or d.emergency.location
    return EmergencyCaller(desk_phone, user, callback, caller_id_name(d),
                           d.location(location_id) if location_id else None)


def emergency_callers(d: Directory) -> tuple[EmergencyCaller, ...]:
    """Every active desk phone's, in directory order (what the PBX configuration carries)."""
    found = (emergency_caller(d, p) for u in d.users if u.active for p in u.desk_phones)
    return tuple(c for c in found if c is not None)


def caller_id_name(d: Directory) -> str:
    """The name sent with a 911 call: ``emergency.caller_id_name``, else the practice's name
    cut at a word to what carriers keep.  Never a number's own caller-ID name: that may be a
    person's ("Dr Ana Lee"), and the dispatcher is calling the practice back."""
    if d.emergency.caller_id_name:
        return d.emergency.caller_id_name
    name = _CALLER_ID_CHARS.sub("", d.practice.name).strip()
    if len(name) <= CALLER_ID_MAX:
        return name
    cut = name[:CALLER_ID_MAX + 1].rpartition(" ")[0].strip()
    return cut or name[:CALLER_ID_MAX]


@dataclass(frozen=True, slots=True)
class EmergencyCall:
    """A 911 call as the PBX reported it: when, from which desk phone, what was dialled."""

    key: str  # "emergency:" + the PBX's call id: one notice per call, however often told
    at: datetime
    desk_phone: str
    dialled: str


@dataclass(frozen=True, slots=True)
class Notice:
    """What the people on site are told: staff information (who, which phone, where, when),
    nothing of the call itself."""

    subject: str
    text: str  # for email and SMS


def describe(d: Directory, desk_phone: str) -> tuple[str, str]:
    """Who placed a call from ``desk_phone`` and where it is, as the notice words them (and
    the journal keeps them, as they were at the time)."""
    caller = emergency_caller(d, desk_phone)
    if caller is None:
        return f"desk phone {desk_phone}", "location unknown"
    where = caller.location.one_line() if caller.location is not None else "location unknown"
    return f"{caller.user.name}'s desk phone ({desk_phone})", where


def notice(practice: str, tz: str, dialled: str, who: str, where: str, at: datetime) -> Notice:
    local = at.astimezone(ZoneInfo(tz))
    when = f"{local:%I:%M %p}".lstrip("0") + f" on {local:%a %b} {local.day}"
    return Notice(f"{practice}: {dialled} call from {who}",
                  f"{practice}: a {dialled} call was placed from {who}, {where}, at {when}. "
                  "Help may be on the way: meet the responders.")


def spoken_notice(caller: EmergencyCaller, practice: str) -> str:
    """The fixed part of the notice a desk phone hears, rendered to audio once per desk
    phone at render time; the PBX says the time after it."""
    where = caller.location.one_line() if caller.location is not None else ""
    return (f"Attention. This is {practice}. An emergency call was placed from "
            f"{caller.user.name}'s desk phone" + (f", at {where}" if where else "") + ", at")


class NoticeUnheard(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
