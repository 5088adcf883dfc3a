"""The practice's people: ``users:`` (with their desk phones) and ``teams:``.

Each user and team is checked against the others as it is read: unique ids, one extension and
one desk phone each.  What the later checks need (every extension written, and where each user's
location and desk phones are written) comes back in :class:`People` with the users and teams.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from backline.app.settings.reader import EMAIL, Reader, unknown, where_of
from backline.app.yamlsource import Where, YMap, YScalar
from backline.core import e164
from backline.core.connections import AsteriskPbx, Encryption, FreeswitchPbx, Pbx
from backline.core.model import DeskPhoneSite, Team, User
from backline.core.provisioning import MODELS_WHAT, ProvisionedPhone, normal_mac, vendor_of

_DESK_PHONE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
_EXTENSION = re.compile(r"[1-9]\d{1,5}")

# An extension as written: whose ("user ana", "team front-desk"), its field, and where.
Extension = tuple[str, str, Where]
# Where a user is written: its field (users[3]), its location key, and each desk phone's
# field and place.
UserWhere = tuple[str, Where, dict[str, tuple[str, Where]]]


@dataclass(frozen=True, slots=True)
class People:
    users: dict[str, User]
    teams: dict[str, Team]
    extensions: dict[str, Extension]  # users' (deactivated ones too) and teams'
    user_where: dict[str, UserWhere]


def read_people(r: Reader, top: YMap) -> People:
    """``users:`` then ``teams:`` (a team's members must be users)."""
    extensions: dict[str, Extension] = {}
    user_where: dict[str, UserWhere] = {}
    users = _users(r, top, extensions, user_where)
    teams = _teams(r, top, users, extensions)
    return People(users, teams, extensions, user_where)


def _users(r: Reader, top: YMap, extensions_seen: dict[str, Extension],
           user_where: dict[str, UserWhere]) -> dict[str, User]:
    users: dict[str, User] = {}
    phones: dict[str, str] = {}
    macs: dict[str, str] = {}  # MAC: the field that listed it first
    extensions: dict[str, str] = {}
    for f, node in r.listed(top, "users"):
        r.keys(node, f, ["id", "name", "email", "admin", "active", "extension",
                         "desk_phones", "emergency_callback", "location",
                         "voicemail_email"])
        uid = r.ident(node, f, "a user id (lowercase letters, digits, '-', '_', '.')",
                      "a user id (lowercase letters, digits, '-', '_', '.'; at most 32)")
        name = r.text(node, "name", f"{f}.name", None, "the user's name") or ""
        email = r.text(node, "email", f"{f}.email", None, "a business email address")
        if email is not None and not EMAIL.fullmatch(email):
            r.problem(where_of(node, "email"), f"{f}.email", "an email address")
        admin = r.flag(node, "admin", f"{f}.admin", False)
        active = r.flag(node, "active", f"{f}.active", True)
        voicemail_email = r.flag(node, "voicemail_email", f"{f}.voicemail_email", False)
        ext, well_formed = _extension(r, node, f)
        if well_formed and ext in extensions:
            r.problem(where_of(node, "extension"), f"{f}.extension",
                      f"an extension of its own ({ext} is already {extensions[ext]}'s)")
        desk, sites, provisioned = _desk_phones(r, node, f, macs)
        callback = emergency_callback(r, node, "emergency_callback", f"{f}.emergency_callback")
        location = r.text(node, "location", f"{f}.location", "",
                          "the id of one of the practice's locations") or ""
        for phone, where in desk:
            if phone in phones:
                r.problem(where, f"{f}.desk_phones",
                          f"a desk phone of its own ({phone} is already {phones[phone]}'s)")
        if uid is None or r.listed_before(node, f, "user", uid, users):
            continue
        for phone, _ in desk:
            phones.setdefault(phone, uid)
        if ext:
            extensions.setdefault(ext, uid)
            extensions_seen.setdefault(ext, (f"user {uid}", f"{f}.extension",
                                             where_of(node, "extension")))
        users[uid] = User(uid, name, email or "", admin, active, ext,
                          tuple(p for p, _ in desk), callback, location, tuple(sites),
                          tuple(provisioned), voicemail_email)
        user_where[uid] = (f, where_of(node, "location"),
                           {p: (f"{f}.desk_phones[{j}]", w)
                            for j, (p, w) in enumerate(desk)})
    return users


def _extension(r: Reader, node: YMap, f: str) -> tuple[str, bool]:
    """An ``extension`` as written ("" when there is none), and whether it is well formed
    (2 to 6 digits, not starting with 0; if not, reported)."""
    what = "an extension of 2 to 6 digits, not starting with 0"
    ext = r.text(node, "extension", f"{f}.extension", "", what) or ""
    if ext and not _EXTENSION.fullmatch(ext):
        r.problem(where_of(node, "extension"), f"{f}.extension", what)
        return ext, False
    return ext, True


def _desk_phones(r: Reader, node: YMap, f: str, macs: dict[str, str]
                ) -> tuple[list[tuple[str, Where]], list[DeskPhoneSite],
                           list[ProvisionedPhone]]:
    """A user's desk phones: each a name, or ``{name, location, emergency_callback}``
    for a phone somewhere other than its user's other phones, with ``mac`` and ``model``
    for one the controller provisions (``macs``: the MACs listed so far, each once)."""
    what = "a desk phone name (lowercase letters, digits, '-', '_')"
    desk: list[tuple[str, Where]] = []
    sites: list[DeskPhoneSite] = []
    provisioned: list[ProvisionedPhone] = []
    for j, item in enumerate(r.seq(node, "desk_phones", f"{f}.desk_phones")):
        field = f"{f}.desk_phones[{j}]"
        if isinstance(item, YMap):
            r.keys(item, field, ["name", "location", "emergency_callback", "mac", "model",
                                 "encryption"])
            name = r.text(item, "name", f"{field}.name", None, what)
            phone = _provisioned(r, item, field, name or "", macs)
            if phone is not None:
                provisioned.append(phone)
            site = DeskPhoneSite(
                name or "",
                r.text(item, "location", f"{field}.location", "",
                       "the id of one of the practice's locations") or "",
                emergency_callback(r, item, "emergency_callback", f"{field}.emergency_callback"),
                _phone_encryption(r, item, field))
            where = item.where
        else:
            value = item.value if isinstance(item, YScalar) else None
            name = str(value) if isinstance(value, str | int) and \
                not isinstance(value, bool) else None
            site, where = None, item.where
        if name is None or not _DESK_PHONE.fullmatch(name):
            if name is not None:
                r.problem(where, field, what)
            continue
        desk.append((name, where))
        if site is not None:
            sites.append(site)
    return desk, sites, provisioned


def _phone_encryption(r: Reader, item: YMap, field: str) -> Encryption | None:
    """A desk phone's own ``encryption`` (required or optional), over the practice's
    ``connections.pbx.encryption``; None when it names none (or a wrong one, reported)."""
    what = "required or optional (this desk phone's own, over connections.pbx.encryption)"
    text = r.text(item, "encryption", f"{field}.encryption", "", what)
    if not text:
        return None
    try:
        return Encryption(text)
    except ValueError:
        r.problem(where_of(item, "encryption"), f"{field}.encryption", what)
        return None


def check_phone_encryption(r: Reader, top: YMap, users: dict[str, User], pbx: Pbx | None,
                           user_where: dict[str, UserWhere]) -> None:
    """A desk phone's own ``encryption`` needs the Asterisk PBX (FreeSWITCH renders no
    SRTP), and ``required`` its TLS transport (SRTP's keys travel in the phone's SIP) and no
    Kamailio as the registrar."""
    for uid, user in users.items():
        for site in user.sites:
            if site.encryption is None or uid not in user_where:
                continue
            field, where = user_where[uid][2].get(site.desk_phone, ("", top.where))
            if isinstance(pbx, FreeswitchPbx):
                r.problem(where, f"{field}.encryption", "no encryption: with FreeSWITCH "
                          "(desk phones' SRTP is rendered for Asterisk only so far)")
            elif (isinstance(pbx, AsteriskPbx) and pbx.tls is None
                  and site.encryption is Encryption.REQUIRED):
                r.problem(where, f"{field}.encryption", "required needs connections.pbx.tls "
                          "(SRTP's keys travel in the phone's SIP, so its SIP must be TLS)")
            elif (isinstance(pbx, AsteriskPbx) and pbx.registrar is not None
                  and site.encryption is Encryption.REQUIRED):
                # As the practice's (settings.pbx): the nodes reach it through Kamailio.
                r.problem(where, f"{field}.encryption", "optional behind Kamailio as the "
                          "registrar: required (SRTP to this desk phone) is not supported "
                          "there yet; it would never ring, and only its 911 calls go through")


def _provisioned(r: Reader, item: YMap, field: str, name: str, macs: dict[str, str]
                 ) -> ProvisionedPhone | None:
    """``mac`` and ``model`` of one desk phone (both or neither), checked: a MAC of six
    bytes listed once in the whole config, a model whose vendor the renderer knows."""
    if "mac" not in item.entries and "model" not in item.entries:
        return None
    mac_what = "a MAC address of six bytes, like 00:15:65:aa:bb:cc"
    raw_mac = r.text(item, "mac", f"{field}.mac", None, mac_what)
    model = r.text(item, "model", f"{field}.model", None, MODELS_WHAT)
    mac = normal_mac(raw_mac) if raw_mac is not None else None
    if raw_mac is not None and mac is None:
        r.problem(where_of(item, "mac"), f"{field}.mac", mac_what)
    elif mac is not None and mac in macs:
        r.problem(where_of(item, "mac"), f"{field}.mac",
                  f"a MAC of its own ({raw_mac} is already {macs[mac]}'s)")
        mac = None
    elif mac is not None:
        macs[mac] = field
    if model is not None and vendor_of(model) is None:
        r.problem(where_of(item, "model"), f"{field}.model", MODELS_WHAT)
        model = None
    if mac is None or model is None or not name:
        return None
    return ProvisionedPhone(name, mac, model)


def emergency_callback(r: Reader, node: YMap, key: str, field: str) -> str:
    """An emergency callback number, canonical E.164 (empty when not given here)."""
    raw = r.text(node, key, field, "", "an E.164 number like +13125550100") or ""
    if not raw:
        return ""
    try:
        return e164.normalise(raw)
    except e164.NotE164 as exc:
        r.problem(where_of(node, key), field, exc.why)
        return ""


def _teams(r: Reader, top: YMap, users: dict[str, User],
           extensions_seen: dict[str, Extension]) -> dict[str, Team]:
    teams: dict[str, Team] = {}
    for f, node in r.listed(top, "teams"):
        r.keys(node, f, ["id", "name", "members", "extension"])
        tid = r.ident(node, f, "a team id",
                      "a team id (lowercase letters, digits, '-', '_', '.')")
        name = r.text(node, "name", f"{f}.name", None, "the team's name") or ""
        members = []
        for j, (uid, where) in enumerate(r.strings(node, "members", f"{f}.members", None,
                                                   "a user id")):
            if uid.startswith("user:"):
                uid = uid[5:]
            if uid not in users:
                r.problem(where, f"{f}.members[{j}]", unknown("user", uid, users))
            else:
                members.append(uid)
        if tid is None or r.listed_before(node, f, "team", tid, teams):
            continue
        ext, well_formed = _extension(r, node, f)
        if not well_formed:
            ext = ""
        elif ext in extensions_seen:
            r.problem(where_of(node, "extension"), f"{f}.extension",
                      f"an extension of its own ({ext} is already "
                      f"{extensions_seen[ext][0]}'s, at {extensions_seen[ext][2]})")
            ext = ""
        elif ext:
            extensions_seen[ext] = (f"team {tid}", f"{f}.extension",
                                    where_of(node, "extension"))
        teams[tid] = Team(tid, name, tuple(dict.fromkeys(members)), ext)
    return teams
