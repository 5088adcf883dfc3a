"""Emergency calls: ``locations:``, ``emergency:``, and the check that every active desk
phone has a callback number that rings back and, with an ``emergency:`` section, a location
(the rules are backline/core/emergency.py's)."""

from __future__ import annotations

import re

from backline.app.settings.people import People, emergency_callback
from backline.app.settings.reader import (
    CALLER_ID_CHARS,
    EMAIL,
    Reader,
    entry,
    unknown,
    where_of,
)
from backline.app.yamlsource import YMap
from backline.core.connections import Connections
from backline.core.model import (
    CALLER_ID_MAX,
    Carry,
    DeskPhoneSite,
    Emergency,
    EmergencyNotify,
    Location,
    Number,
    User,
)

# Civic address text: plain, as PIDF-LO, a spoken notice and a carrier's database take it.
_CIVIC_TEXT = re.compile(r"[A-Za-z0-9][A-Za-z0-9 .,#'&/-]{0,79}")


def read_locations(r: Reader, top: YMap) -> dict[str, Location]:
    """``locations:``: the practice's civic addresses, each a dispatchable location."""
    locations: dict[str, Location] = {}
    for f, node in r.listed(top, "locations"):
        r.keys(node, f, ["id", "address", "city", "state", "zip", "where", "country"])
        lid = r.ident(node, f, "a location id",
                      "a location id (lowercase letters, digits, '-', '_', '.')")
        fields = {}
        for key, what, pattern in (
                ("address", "the house number and street, e.g. 1200 W Maple St",
                 _CIVIC_TEXT),
                ("city", "the city", _CIVIC_TEXT),
                ("state", "the two-letter state code, e.g. IL", re.compile(r"[A-Z]{2}")),
                ("zip", "a ZIP code, e.g. 60601", re.compile(r"\d{5}(-\d{4})?"))):
            value = r.text(node, key, f"{f}.{key}", None, what) or ""
            if value and not pattern.fullmatch(value):
                r.problem(where_of(node, key), f"{f}.{key}", what)
            fields[key] = value
        where = r.text(node, "where", f"{f}.where", "",
                       "the floor, suite or room, e.g. Floor 2, Exam room 2") or ""
        if where and not _CIVIC_TEXT.fullmatch(where):
            r.problem(where_of(node, "where"), f"{f}.where",
                      "letters, digits, spaces and . , # ' & - / only (at most 80)")
        country = r.text(node, "country", f"{f}.country", "US",
                         "a two-letter country code") or "US"
        if not re.fullmatch(r"[A-Z]{2}", country):
            r.problem(where_of(node, "country"), f"{f}.country",
                      "a two-letter country code, e.g. US")
        if lid is None or r.listed_before(node, f, "location", lid, locations):
            continue
        locations[lid] = Location(lid, fields["address"], fields["city"], fields["state"],
                                  fields["zip"], where, country)
    return locations


def read_emergency(r: Reader, top: YMap, users: dict[str, User], locations: dict[str, Location],
                   connections: Connections | None, numbers: list[Number]) -> Emergency:
    node = r.mapping(entry(top, "emergency"), "emergency", top.where)
    if node is None:
        return Emergency()
    r.keys(node, "emergency", ["callback", "caller_id_name", "location", "notify"])
    callback = emergency_callback(r, node, "callback", "emergency.callback")
    carrying = next((n for n in numbers if n.number == callback), None)
    if carrying is not None and Carry.VOICE not in carrying.carries:
        r.problem(where_of(node, "callback"), "emergency.callback",
                  f"a number that rings back into the practice: {callback} carries "
                  "no voice")
    cid = r.text(node, "caller_id_name", "emergency.caller_id_name", "",
                 "a caller-ID name") or ""
    if len(cid) > CALLER_ID_MAX or not CALLER_ID_CHARS.fullmatch(cid):
        r.problem(where_of(node, "caller_id_name"), "emergency.caller_id_name",
                  f"at most {CALLER_ID_MAX} letters, digits, spaces and . , ' & -")
        cid = ""
    location = r.text(node, "location", "emergency.location", "",
                      "the id of one of the practice's locations") or ""
    if location and location not in locations:
        r.problem(where_of(node, "location"), "emergency.location",
                  unknown("location", location, locations))
    notify = EmergencyNotify()
    sub = r.mapping(entry(node, "notify"), "emergency.notify", node.where)
    if sub is not None:
        f = "emergency.notify"
        r.keys(sub, f, ["emails", "sms", "desk_phones"])
        emails = r.strings(sub, "emails", f"{f}.emails", EMAIL, "an email address")
        sms = r.e164_numbers(sub, "sms", f"{f}.sms")
        phones = {p: u for u in users.values() if u.active for p in u.desk_phones}
        desk: list[str] = []
        for j, (phone, where) in enumerate(r.strings(sub, "desk_phones",
                                                     f"{f}.desk_phones", None,
                                                     "a desk phone name")):
            if phone not in phones:
                r.problem(where, f"{f}.desk_phones[{j}]",
                          unknown("desk phone of an active user", phone, phones))
            else:
                desk.append(phone)
        if emails and connections is not None and connections.smtp is None:
            r.problem(where_of(sub, "emails"), f"{f}.emails",
                      "connections.smtp, to send the notice by email")
        if sms and connections is not None and connections.sms_gateway is None:
            r.problem(where_of(sub, "sms"), f"{f}.sms",
                      "connections.sms_gateway, to send the notice by SMS")
        notify = EmergencyNotify(tuple(e for e, _ in emails), tuple(sms), tuple(desk))
    if not notify:
        r.problem(node.where, "emergency.notify",
                  "who on site hears of each 911 call (Kari's Law requires a notice): "
                  "emails, sms or desk_phones; nobody will be told", warning=True)
    return Emergency(callback, cid, location, notify, configured=True)


def check_emergency_sites(r: Reader, people: People, locations: dict[str, Location],
                          numbers: list[Number], emergency: Emergency) -> None:
    """Every active desk phone must resolve a callback number (the phone's, its user's,
    else the practice's) that rings back into the practice; with an ``emergency``
    section, a location too."""
    voice = {n.number for n in numbers if Carry.VOICE in n.carries}
    practice_numbers = {n.number for n in numbers}
    for uid, user in people.users.items():
        user_field, location_where, phone_where = people.user_where[uid]
        if user.location and user.location not in locations:
            r.problem(location_where, f"{user_field}.location",
                      unknown("location", user.location, locations))
        if not user.active:
            continue
        sites = {s.desk_phone: s for s in user.sites}
        for phone in user.desk_phones:
            site = sites.get(phone, DeskPhoneSite(phone))
            field, where = phone_where[phone]
            callback = site.emergency_callback or user.emergency_callback \
                or emergency.callback
            if not callback:
                r.problem(where, field,
                          f"{phone}: an emergency callback number (E.164) that rings "
                          "back into the practice: emergency_callback on the desk "
                          "phone or its user, or emergency.callback for the practice")
            elif callback in practice_numbers and callback not in voice:
                r.problem(where, field,
                          f"an emergency callback number that rings back: {callback} "
                          "carries no voice")
            if site.location and site.location not in locations:
                r.problem(where, f"{field}.location",
                          unknown("location", site.location, locations))
            elif emergency.configured and not (site.location or user.location
                                               or emergency.location):
                r.problem(where, field,
                          f"{phone}: a location (RAY BAUM's dispatchable location): "
                          "location on the desk phone or its user, or "
                          "emergency.location")
