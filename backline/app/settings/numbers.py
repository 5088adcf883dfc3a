"""``numbers:``: the practice's phone numbers, what each carries, and who owns it."""

from __future__ import annotations

import difflib
import re

from backline.app.settings.backup import read_announcement
from backline.app.settings.hours import read_hours
from backline.app.settings.reader import CALLER_ID_CHARS, Reader, entry, unknown, where_of
from backline.app.yamlsource import Where, YMap
from backline.core import e164
from backline.core.model import (
    CALLER_ID_MAX,
    PRACTICE,
    Announcement,
    Carry,
    Number,
    OwnerKind,
    Party,
    Team,
    User,
)

_TAG = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
_BOX = re.compile(r"[0-9]{1,20}")  # a box's name becomes a spool folder and a clip's name
_NO_GREETING = Announcement()  # no voicemail_greeting: the default (core.voicemail.greeting_of)


def read_numbers(r: Reader, top: YMap, users: dict[str, User], teams: dict[str, Team],
                 timezone: str) -> list[Number]:
    """``numbers:``: each in its canonical E.164 spelling, once, with an owner among
    ``users`` and ``teams`` (or the practice) and its own hours in ``timezone``."""
    numbers: list[Number] = []
    seen: dict[str, tuple[str, Where]] = {}
    for f, node in r.listed(top, "numbers"):
        r.keys(node, f, ["number", "carries", "owner", "members", "auto_assign",
                         "conversation_tags", "contact_tags", "caller_id_name",
                         "texting_registered", "voicemail_box", "voicemail_greeting",
                         "hours"])
        raw = r.text(node, "number", f"{f}.number", None, "an E.164 number like "
                     "+13125550100")
        canonical = None
        if raw is not None:
            try:
                canonical = e164.normalise(raw)
            except e164.NotE164 as exc:
                r.problem(where_of(node, "number"), f"{f}.number", exc.why)
        if canonical is not None and canonical in seen:
            first, first_where = seen[canonical]
            r.problem(where_of(node, "number"), f"{f}.number",
                      f"each number once: {raw!r} is {canonical}, already listed as "
                      f"{first!r} at {first_where}")
            canonical = None
        elif canonical is not None and raw is not None:
            seen[canonical] = (raw, where_of(node, "number"))
        carries: set[Carry] = set()
        for j, (word, where) in enumerate(r.strings(node, "carries", f"{f}.carries",
                                                    None, "voice, sms or fax")):
            try:
                carries.add(Carry(word))
            except ValueError:
                close = difflib.get_close_matches(word, [c.value for c in Carry], n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                r.problem(where, f"{f}.carries[{j}]", f"voice, sms or fax{hint}")
        if entry(node, "carries") is None:
            carries.add(Carry.VOICE)
        owner_text = r.text(node, "owner", f"{f}.owner", "practice",
                            "user:ID, team:ID or practice") or "practice"
        owner = _party(r, owner_text, where_of(node, "owner"), f"{f}.owner", users, teams,
                       practice_ok=True)
        if owner is not None and owner.kind is OwnerKind.USER and \
                not users[owner.id].active:
            r.problem(where_of(node, "owner"), f"{f}.owner",
                      f"an active owner (user {owner.id} is deactivated)")
        extra: list[Party] = []
        for j, (text, where) in enumerate(r.strings(node, "members", f"{f}.members", None,
                                                    "user:ID or team:ID")):
            party = _party(r, text, where, f"{f}.members[{j}]", users, teams,
                           practice_ok=False)
            if party is not None and party not in extra:
                extra.append(party)
        auto = r.flag(node, "auto_assign", f"{f}.auto_assign", False)
        if auto and owner is not None and owner.kind is OwnerKind.PRACTICE:
            r.problem(where_of(node, "auto_assign"), f"{f}.auto_assign",
                      "false for a practice-owned number (auto-assign needs a user or "
                      "team owner)")
        conv_tags = r.strings(node, "conversation_tags", f"{f}.conversation_tags", _TAG,
                              "a tag (lowercase letters, digits, '-', '_')")
        contact_tags = r.strings(node, "contact_tags", f"{f}.contact_tags", _TAG,
                                 "a tag (lowercase letters, digits, '-', '_')")
        cid = r.text(node, "caller_id_name", f"{f}.caller_id_name", "",
                     "a caller-ID name") or ""
        if len(cid) > CALLER_ID_MAX:
            r.problem(where_of(node, "caller_id_name"), f"{f}.caller_id_name",
                      f"at most {CALLER_ID_MAX} characters (carriers cut the rest); "
                      f"{cid!r} has {len(cid)}")
        elif not CALLER_ID_CHARS.fullmatch(cid):
            r.problem(where_of(node, "caller_id_name"), f"{f}.caller_id_name",
                      "letters, digits, spaces and . , ' & - only")
        registered = r.flag(node, "texting_registered", f"{f}.texting_registered", False)
        if Carry.SMS in carries and not registered:
            r.problem(where_of(node, "carries"), f"{f}.texting_registered",
                      f"{raw}: carries sms but is not registered for business texting; "
                      "it will send no SMS", warning=True)
        box = r.text(node, "voicemail_box", f"{f}.voicemail_box", "",
                     "a voicemail box number") or ""
        if box and not _BOX.fullmatch(box):
            r.problem(where_of(node, "voicemail_box"), f"{f}.voicemail_box",
                      "a voicemail box number (digits only)")
            box = ""
        hours = read_hours(r, node, f"{f}.hours", timezone)
        greeting = read_announcement(r, node, f"{f}.voicemail_greeting", _NO_GREETING,
                                     key="voicemail_greeting")
        if canonical is None or owner is None:
            continue
        numbers.append(Number(canonical, frozenset(carries), owner, tuple(extra), auto,
                              tuple(t for t, _ in conv_tags),
                              tuple(t for t, _ in contact_tags), cid, registered,
                              box or canonical[-10:], hours,
                              None if greeting is _NO_GREETING else greeting))
    return numbers


def _party(r: Reader, text: str, where: Where, field: str, users: dict[str, User],
           teams: dict[str, Team], *, practice_ok: bool) -> Party | None:
    if text == "practice":
        if practice_ok:
            return PRACTICE
        r.problem(where, field, "user:ID or team:ID")
        return None
    kind, _, ident = text.partition(":")
    if kind == "user" and ident:
        if ident not in users:
            r.problem(where, field, unknown("user", ident, users))
            return None
        return Party(OwnerKind.USER, ident)
    if kind == "team" and ident:
        if ident not in teams:
            r.problem(where, field, unknown("team", ident, teams))
            return None
        return Party(OwnerKind.TEAM, ident)
    choices = "user:ID, team:ID or practice" if practice_ok else "user:ID or team:ID"
    r.problem(where, field, choices)
    return None
