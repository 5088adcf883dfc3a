"""Load and validate the practice YAML into a :class:`~backline.core.model.Directory`.

Every problem is collected, not just the first, and each names its file, line and field and
what was expected, so ops fix a config in one pass.  Nothing starts on a config with problems.
"""

from __future__ import annotations

import difflib
import re
import zoneinfo
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from backline.app.yamlsource import Where, YMap, YNode, YScalar, YSeq, load_with_includes
from backline.core import e164
from backline.core.addresses import is_loopback, is_private
from backline.core.hours import WEEKDAYS, parse_window
from backline.core.model import (
    CALLER_ID_MAX,
    DEFAULT_EMERGENCY_NUMBERS,
    PRACTICE,
    AlertKind,
    Alerts,
    Announcement,
    AsteriskPbx,
    Backup,
    Carry,
    ClosedPath,
    Connections,
    DeskPhoneSite,
    Directory,
    EmailIntake,
    Emergency,
    EmergencyNotify,
    FreeswitchPbx,
    HostPort,
    Hours,
    Inbox,
    Location,
    Number,
    OwnerKind,
    Pages,
    Party,
    Pbx,
    PortRange,
    Practice,
    Secret,
    SmsGateway,
    Smtp,
    SmtpTls,
    StatusListener,
    Storage,
    Team,
    Trunk,
    User,
    Window,
)
from backline.core.routing import extension_clash
from backline.features.sms.twilio import api_url

T = TypeVar("T")

_CALLER_ID_CHARS = re.compile(r"[A-Za-z0-9 .,'&-]*")
_ID = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
_DESK_PHONE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
_EXTENSION = re.compile(r"[1-9]\d{1,5}")
_EMAIL = re.compile(r"[^@\s<>\"']+@[^@\s<>\"']+\.[A-Za-z]{2,}")
_DOMAIN = re.compile(r"(?i)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
_TAG = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
# Civic address text: plain, as PIDF-LO, a spoken notice and a carrier's database take it.
_CIVIC_TEXT = re.compile(r"[A-Za-z0-9][A-Za-z0-9 .,#'&/-]{0,79}")
_SECRET_WORDS = ("secret", "password", "passwd", "token", "api_key", "apikey", "pin", "key")
_SECRET_SUFFIXES = ("_env", "_file")


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One mistake in the config, as ``FILE:LINE: FIELD: what was expected``."""

    file: str
    line: int
    field: str
    expected: str
    warning: bool = False

    def __str__(self) -> str:
        prefix = "warning: " if self.warning else ""
        return f"{self.file}:{self.line}: {prefix}{self.field}: {self.expected}"


class ConfigError(Exception):
    """The config has problems; nothing may start.  ``problems`` lists every one."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Loaded:
    directory: Directory
    warnings: tuple[Problem, ...]


def load(path: str | Path) -> Loaded:
    """Read ``path`` (and its includes); raise :class:`ConfigError` listing every problem."""
    path = Path(path)
    top, source_errors = load_with_includes(path)
    reader = _Reader()
    for err in source_errors:
        reader.problem(err.where, err.field, err.message)
    directory = None
    if top is not None:
        directory = reader.directory(top, str(path))
    errors = sorted(p for p in reader.problems if not p.warning)
    if errors or directory is None:
        raise ConfigError(errors or [Problem(str(path), 1, "file", "a practice config")])
    return Loaded(directory, tuple(p for p in reader.problems if p.warning))


def _is_secret_key(key: str) -> bool:
    if key.endswith(_SECRET_SUFFIXES):
        return False
    words = re.split(r"[_\-]", key.lower())
    return any(w in _SECRET_WORDS for w in words) or key.lower() in _SECRET_WORDS


class _Reader:
    """Walks the located YAML, builds the typed objects, and collects problems on the way."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self._timezone = "UTC"  # the practice's, once read: hours are in it
        self._gateway_node: YMap | None = None
        # Where each user, its location key and each of its desk phones are written, for
        # the emergency checks made once locations and the practice defaults are known.
        self._user_where: dict[str, tuple[str, Where, dict[str, tuple[str, Where]]]] = {}
        # Every extension written (users', deactivated ones too, and teams'): whose, and where.
        self._extensions: dict[str, tuple[str, str, Where]] = {}

    # -- reporting -------------------------------------------------------------------------

    def problem(self, where: Where, field: str, expected: str, *, warning: bool = False) -> None:
        self.problems.append(Problem(where.file, where.line, field, expected, warning))

    def keys(self, node: YMap, field: str, allowed: Iterable[str]) -> None:
        """Report unknown keys (with a suggestion), written-in secrets and duplicate keys."""
        allowed = list(allowed)
        for key, where in node.duplicates:
            self.problem(where, _join(field, key), "each key once (this one is repeated)")
        for key, (where, _) in node.entries.items():
            if key in allowed:
                continue
            if _is_secret_key(key):
                self.problem(where, _join(field, key),
                             f"no secret written in the file: use {key}_env (an environment "
                             f"variable) or {key}_file (a file outside the repo)")
                continue
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.problem(where, _join(field, key),
                         f"a known key{hint}; expected one of: {', '.join(sorted(allowed))}")

    # -- typed accessors -------------------------------------------------------------------

    def mapping(self, node: YNode | None, field: str, where: Where) -> YMap | None:
        if node is None:
            return None
        if isinstance(node, YMap):
            return node
        self.problem(node.where, field, "a mapping (key: value lines)")
        return None

    def seq(self, parent: YMap, key: str, field: str) -> list[YNode]:
        node = _get(parent, key)
        if node is None or (isinstance(node, YScalar) and node.value is None):
            return []
        if isinstance(node, YSeq):
            return node.items
        self.problem(node.where, field, "a list")
        return []

    def scalar(self, parent: YMap, key: str, field: str, kind: type[T], default: T | None,
               what: str) -> T | None:
        node = _get(parent, key)
        if node is None:
            if default is None:
                self.problem(parent.where, field, f"{what} (this field is required)")
            return default
        if isinstance(node, YScalar) and kind is str and isinstance(node.value, int | float) \
                and not isinstance(node.value, bool):
            return kind(str(node.value))  # type: ignore[call-arg]
        if isinstance(node, YScalar) and isinstance(node.value, kind) and \
                (kind is bool or not isinstance(node.value, bool)):
            return node.value
        self.problem(node.where, field, what)
        return default

    def text(self, parent: YMap, key: str, field: str, default: str | None = None,
             what: str = "text") -> str | None:
        return self.scalar(parent, key, field, str, default, what)

    def flag(self, parent: YMap, key: str, field: str, default: bool) -> bool:
        value = self.scalar(parent, key, field, bool, default, "true or false")
        return bool(value)

    def integer(self, parent: YMap, key: str, field: str, default: int | None,
                low: int, high: int) -> int | None:
        what = f"a whole number from {low} to {high}"
        value = self.scalar(parent, key, field, int, default, what)
        if value is not None and not low <= value <= high:
            node = _get(parent, key)
            self.problem(node.where if node else parent.where, field,
                         f"a whole number from {low} to {high}")
            return default
        return value

    def strings(self, parent: YMap, key: str, field: str, pattern: re.Pattern[str] | None,
                what: str) -> list[tuple[str, Where]]:
        out: list[tuple[str, Where]] = []
        for i, item in enumerate(self.seq(parent, key, field)):
            value = item.value if isinstance(item, YScalar) else None
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str) or (pattern is not None and not pattern.fullmatch(value)):
                self.problem(item.where, f"{field}[{i}]", what)
                continue
            out.append((value, item.where))
        return out

    def secret(self, parent: YMap, key: str, field: str, required: bool) -> Secret:
        env = self.text(parent, f"{key}_env", _join(field, f"{key}_env"), "",
                        "the name of an environment variable")
        file = self.text(parent, f"{key}_file", _join(field, f"{key}_file"), "",
                         "the path of a file outside the repo")
        if env and not re.fullmatch(r"[A-Z_][A-Z0-9_]*", env):
            self.problem(_where_of(parent, f"{key}_env"), _join(field, f"{key}_env"),
                         "an environment variable name (capitals, digits, underscores)")
        if required and not env and not file and key not in parent.entries:
            self.problem(parent.where, _join(field, f"{key}_env"),
                         f"where the {key} comes from: {key}_env or {key}_file")
        return Secret(env or "", file or "")

    def host_port(self, parent: YMap, field: str, *, control: bool, default_port: int,
                  default_host: str = "127.0.0.1") -> HostPort:
        host = self.text(parent, "host", _join(field, "host"), default_host,
                         "a host name or IP address") or default_host
        port = self.integer(parent, "port", _join(field, "port"), default_port, 1, 65535)
        if control and not is_private(host):
            self.problem(_where_of(parent, "host"), _join(field, "host"),
                         "a loopback or private address: PBX control ports never face the "
                         "internet")
        return HostPort(host, port or default_port)

    def listen(self, node: YMap, f: str, default: HostPort) -> HostPort:
        """A listener's ``listen: HOST:PORT`` (``default`` when absent or malformed)."""
        listen = self.text(node, "listen", f"{f}.listen", str(default), "HOST:PORT")
        host, _, port = (listen or "").rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            self.problem(_where_of(node, "listen"), f"{f}.listen", "HOST:PORT, e.g. "
                         f"{default}")
            return default
        return HostPort(host, int(port))

    # -- sections --------------------------------------------------------------------------

    def directory(self, top: YMap, source: str) -> Directory | None:
        self.keys(top, "", ["practice", "devices", "users", "teams", "numbers", "backup",
                            "connections", "emergency_numbers", "emergency", "locations",
                            "hours"])
        practice = self.practice(top)
        self._timezone = practice.timezone if practice is not None else "UTC"
        devices = self.mapping(_get(top, "devices"), "devices", top.where)
        max_per_login = 3
        if devices is not None:
            self.keys(devices, "devices", ["max_per_login"])
            max_per_login = self.integer(devices, "max_per_login", "devices.max_per_login", 3,
                                         1, 20) or 3
        users = self.users(top)
        teams = self.teams(top, users)
        numbers = self.numbers(top, users, teams)
        backup = self.backup(top)
        hours = self.hours(top, "hours")
        connections = self.connections(top, Path(source).parent)
        emergency_numbers = [v for v, _ in self.strings(
            top, "emergency_numbers", "emergency_numbers", re.compile(r"\d{3}"),
            "a 3-digit number")]
        for ext, (_, field, where) in self._extensions.items():
            clash = extension_clash(ext, emergency_numbers or DEFAULT_EMERGENCY_NUMBERS,
                                    [n.number for n in numbers])
            if clash is not None:
                self.problem(where, field, f"an extension a desk phone can reach ({ext} "
                             f"dials {clash})")
        locations = self.locations(top)
        emergency = self.emergency(top, users, locations, connections, numbers)
        pbx = connections.pbx if connections is not None else None
        if isinstance(pbx, FreeswitchPbx) and pbx.trunk.geolocation:
            self.problem(top.where, "connections.pbx.trunk.geolocation",
                         "false: a 911 call's location is sent by Asterisk only so far")
        elif pbx is not None and pbx.trunk.geolocation and not emergency.configured:
            self.problem(top.where, "emergency",
                         "an emergency: section and the practice's locations: "
                         "connections.pbx.trunk.geolocation sends each desk phone's location "
                         "with its 911 calls")
        self.emergency_sites(users, locations, numbers, emergency)
        if connections is not None:
            self.sms_senders(top, numbers, backup, connections)
        if practice is None or connections is None:
            return None
        return Directory(practice, max_per_login, tuple(users.values()), tuple(teams.values()),
                         tuple(numbers), backup, connections, source,
                         tuple(emergency_numbers) or DEFAULT_EMERGENCY_NUMBERS, emergency,
                         tuple(locations.values()), hours)

    def practice(self, top: YMap) -> Practice | None:
        node = self.mapping(_get(top, "practice"), "practice", top.where)
        if node is None:
            self.problem(top.where, "practice", "a practice: {name: ..., timezone: ...} section")
            return None
        self.keys(node, "practice", ["name", "timezone"])
        name = self.text(node, "name", "practice.name", None, "the practice's name")
        tz = self.text(node, "timezone", "practice.timezone", "UTC",
                       "an IANA time zone like America/Chicago") or "UTC"
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            self.problem(_where_of(node, "timezone"), "practice.timezone",
                         "an IANA time zone like America/Chicago")
        return Practice(name or "", tz) if name else None

    def users(self, top: YMap) -> dict[str, User]:
        users: dict[str, User] = {}
        phones: dict[str, str] = {}
        extensions: dict[str, str] = {}
        for i, item in enumerate(self.seq(top, "users", "users")):
            f = f"users[{i}]"
            node = self.mapping(item, f, item.where)
            if node is None:
                continue
            self.keys(node, f, ["id", "name", "email", "admin", "active", "extension",
                                "desk_phones", "emergency_callback", "location"])
            uid = self.text(node, "id", f"{f}.id", None, "a user id (lowercase letters, "
                            "digits, '-', '_', '.')")
            if uid is not None and not _ID.fullmatch(uid):
                self.problem(_where_of(node, "id"), f"{f}.id",
                             "a user id (lowercase letters, digits, '-', '_', '.'; at most 32)")
                uid = None
            name = self.text(node, "name", f"{f}.name", None, "the user's name") or ""
            email = self.text(node, "email", f"{f}.email", None, "a business email address")
            if email is not None and not _EMAIL.fullmatch(email):
                self.problem(_where_of(node, "email"), f"{f}.email", "an email address")
            admin = self.flag(node, "admin", f"{f}.admin", False)
            active = self.flag(node, "active", f"{f}.active", True)
            ext = self.text(node, "extension", f"{f}.extension", "", "an extension of 2 to 6 "
                            "digits, not starting with 0") or ""
            if ext and not _EXTENSION.fullmatch(ext):
                self.problem(_where_of(node, "extension"), f"{f}.extension",
                             "an extension of 2 to 6 digits, not starting with 0")
            elif ext in extensions:
                self.problem(_where_of(node, "extension"), f"{f}.extension",
                             f"an extension of its own ({ext} is already {extensions[ext]}'s)")
            desk, sites = self.desk_phones(node, f)
            callback = self.callback(node, "emergency_callback", f"{f}.emergency_callback")
            location = self.text(node, "location", f"{f}.location", "",
                                 "the id of one of the practice's locations") or ""
            for phone, where in desk:
                if phone in phones:
                    self.problem(where, f"{f}.desk_phones",
                                 f"a desk phone of its own ({phone} is already {phones[phone]}'s)")
            if uid is None:
                continue
            if uid in users:
                self.problem(_where_of(node, "id"), f"{f}.id", f"a unique user id ({uid} is "
                             "listed twice)")
                continue
            for phone, _ in desk:
                phones.setdefault(phone, uid)
            if ext:
                extensions.setdefault(ext, uid)
                self._extensions.setdefault(ext, (f"user {uid}", f"{f}.extension",
                                                  _where_of(node, "extension")))
            users[uid] = User(uid, name, email or "", admin, active, ext,
                              tuple(p for p, _ in desk), callback, location, tuple(sites))
            self._user_where[uid] = (f, _where_of(node, "location"),
                                     {p: (f"{f}.desk_phones[{j}]", w)
                                      for j, (p, w) in enumerate(desk)})
        return users

    def desk_phones(self, node: YMap, f: str
                    ) -> tuple[list[tuple[str, Where]], list[DeskPhoneSite]]:
        """A user's desk phones: each a name, or ``{name, location, emergency_callback}``
        for a phone somewhere other than its user's other phones."""
        what = "a desk phone name (lowercase letters, digits, '-', '_')"
        desk: list[tuple[str, Where]] = []
        sites: list[DeskPhoneSite] = []
        for j, item in enumerate(self.seq(node, "desk_phones", f"{f}.desk_phones")):
            field = f"{f}.desk_phones[{j}]"
            if isinstance(item, YMap):
                self.keys(item, field, ["name", "location", "emergency_callback"])
                name = self.text(item, "name", f"{field}.name", None, what)
                site = DeskPhoneSite(
                    name or "",
                    self.text(item, "location", f"{field}.location", "",
                              "the id of one of the practice's locations") or "",
                    self.callback(item, "emergency_callback", f"{field}.emergency_callback"))
                where = item.where
            else:
                value = item.value if isinstance(item, YScalar) else None
                name = str(value) if isinstance(value, str | int) and \
                    not isinstance(value, bool) else None
                site, where = None, item.where
            if name is None or not _DESK_PHONE.fullmatch(name):
                if name is not None:
                    self.problem(where, field, what)
                continue
            desk.append((name, where))
            if site is not None:
                sites.append(site)
        return desk, sites

    def callback(self, node: YMap, key: str, field: str) -> str:
        """An emergency callback number, canonical E.164 (empty when not given here)."""
        raw = self.text(node, key, field, "", "an E.164 number like +13125550100") or ""
        if not raw:
            return ""
        try:
            return e164.normalise(raw)
        except e164.NotE164 as exc:
            self.problem(_where_of(node, key), field, exc.why)
            return ""

    def teams(self, top: YMap, users: dict[str, User]) -> dict[str, Team]:
        teams: dict[str, Team] = {}
        for i, item in enumerate(self.seq(top, "teams", "teams")):
            f = f"teams[{i}]"
            node = self.mapping(item, f, item.where)
            if node is None:
                continue
            self.keys(node, f, ["id", "name", "members", "extension"])
            tid = self.text(node, "id", f"{f}.id", None, "a team id")
            if tid is not None and not _ID.fullmatch(tid):
                self.problem(_where_of(node, "id"), f"{f}.id",
                             "a team id (lowercase letters, digits, '-', '_', '.')")
                tid = None
            name = self.text(node, "name", f"{f}.name", None, "the team's name") or ""
            members = []
            for j, (uid, where) in enumerate(self.strings(node, "members", f"{f}.members", None,
                                                           "a user id")):
                if uid.startswith("user:"):
                    uid = uid[5:]
                if uid not in users:
                    self.problem(where, f"{f}.members[{j}]", _unknown("user", uid, users))
                else:
                    members.append(uid)
            if tid is None:
                continue
            if tid in teams:
                self.problem(_where_of(node, "id"), f"{f}.id", f"a unique team id ({tid} is "
                             "listed twice)")
                continue
            ext = self.text(node, "extension", f"{f}.extension", "", "an extension of 2 to 6 "
                            "digits, not starting with 0") or ""
            if ext and not _EXTENSION.fullmatch(ext):
                self.problem(_where_of(node, "extension"), f"{f}.extension",
                             "an extension of 2 to 6 digits, not starting with 0")
                ext = ""
            elif ext in self._extensions:
                self.problem(_where_of(node, "extension"), f"{f}.extension",
                             f"an extension of its own ({ext} is already "
                             f"{self._extensions[ext][0]}'s, at {self._extensions[ext][2]})")
                ext = ""
            elif ext:
                self._extensions[ext] = (f"team {tid}", f"{f}.extension",
                                         _where_of(node, "extension"))
            teams[tid] = Team(tid, name, tuple(dict.fromkeys(members)), ext)
        return teams

    def party(self, text: str, where: Where, field: str, users: dict[str, User],
              teams: dict[str, Team], *, practice_ok: bool) -> Party | None:
        if text == "practice":
            if practice_ok:
                return PRACTICE
            self.problem(where, field, "user:ID or team:ID")
            return None
        kind, _, ident = text.partition(":")
        if kind == "user" and ident:
            if ident not in users:
                self.problem(where, field, _unknown("user", ident, users))
                return None
            return Party(OwnerKind.USER, ident)
        if kind == "team" and ident:
            if ident not in teams:
                self.problem(where, field, _unknown("team", ident, teams))
                return None
            return Party(OwnerKind.TEAM, ident)
        choices = "user:ID, team:ID or practice" if practice_ok else "user:ID or team:ID"
        self.problem(where, field, choices)
        return None

    def numbers(self, top: YMap, users: dict[str, User],
                teams: dict[str, Team]) -> list[Number]:
        numbers: list[Number] = []
        seen: dict[str, tuple[str, Where]] = {}
        for i, item in enumerate(self.seq(top, "numbers", "numbers")):
            f = f"numbers[{i}]"
            node = self.mapping(item, f, item.where)
            if node is None:
                continue
            self.keys(node, f, ["number", "carries", "owner", "members", "auto_assign",
                                "conversation_tags", "contact_tags", "caller_id_name",
                                "texting_registered", "voicemail_box", "hours"])
            raw = self.text(node, "number", f"{f}.number", None, "an E.164 number like "
                            "+13125550100")
            canonical = None
            if raw is not None:
                try:
                    canonical = e164.normalise(raw)
                except e164.NotE164 as exc:
                    self.problem(_where_of(node, "number"), f"{f}.number", exc.why)
            if canonical is not None and canonical in seen:
                first, first_where = seen[canonical]
                self.problem(_where_of(node, "number"), f"{f}.number",
                             f"each number once: {raw!r} is {canonical}, already listed as "
                             f"{first!r} at {first_where}")
                canonical = None
            elif canonical is not None and raw is not None:
                seen[canonical] = (raw, _where_of(node, "number"))
            carries: set[Carry] = set()
            for j, (word, where) in enumerate(self.strings(node, "carries", f"{f}.carries",
                                                           None, "voice, sms or fax")):
                try:
                    carries.add(Carry(word))
                except ValueError:
                    close = difflib.get_close_matches(word, [c.value for c in Carry], n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    self.problem(where, f"{f}.carries[{j}]", f"voice, sms or fax{hint}")
            if _get(node, "carries") is None:
                carries.add(Carry.VOICE)
            owner_text = self.text(node, "owner", f"{f}.owner", "practice",
                                   "user:ID, team:ID or practice") or "practice"
            owner = self.party(owner_text, _where_of(node, "owner"), f"{f}.owner", users, teams,
                               practice_ok=True)
            if owner is not None and owner.kind is OwnerKind.USER and \
                    not users[owner.id].active:
                self.problem(_where_of(node, "owner"), f"{f}.owner",
                             f"an active owner (user {owner.id} is deactivated)")
            extra: list[Party] = []
            for j, (text, where) in enumerate(self.strings(node, "members", f"{f}.members", None,
                                                           "user:ID or team:ID")):
                party = self.party(text, where, f"{f}.members[{j}]", users, teams,
                                   practice_ok=False)
                if party is not None and party not in extra:
                    extra.append(party)
            auto = self.flag(node, "auto_assign", f"{f}.auto_assign", False)
            if auto and owner is not None and owner.kind is OwnerKind.PRACTICE:
                self.problem(_where_of(node, "auto_assign"), f"{f}.auto_assign",
                             "false for a practice-owned number (auto-assign needs a user or "
                             "team owner)")
            conv_tags = self.strings(node, "conversation_tags", f"{f}.conversation_tags", _TAG,
                                     "a tag (lowercase letters, digits, '-', '_')")
            contact_tags = self.strings(node, "contact_tags", f"{f}.contact_tags", _TAG,
                                        "a tag (lowercase letters, digits, '-', '_')")
            cid = self.text(node, "caller_id_name", f"{f}.caller_id_name", "",
                            "a caller-ID name") or ""
            if len(cid) > CALLER_ID_MAX:
                self.problem(_where_of(node, "caller_id_name"), f"{f}.caller_id_name",
                             f"at most {CALLER_ID_MAX} characters (carriers cut the rest); "
                             f"{cid!r} has {len(cid)}")
            elif not _CALLER_ID_CHARS.fullmatch(cid):
                self.problem(_where_of(node, "caller_id_name"), f"{f}.caller_id_name",
                             "letters, digits, spaces and . , ' & - only")
            registered = self.flag(node, "texting_registered", f"{f}.texting_registered", False)
            if Carry.SMS in carries and not registered:
                self.problem(_where_of(node, "carries"), f"{f}.texting_registered",
                             f"{raw}: carries sms but is not registered for business texting; "
                             "it will send no SMS", warning=True)
            box = self.text(node, "voicemail_box", f"{f}.voicemail_box", "",
                            "a voicemail box number") or ""
            hours = self.hours(node, f"{f}.hours")
            if canonical is None or owner is None:
                continue
            numbers.append(Number(canonical, frozenset(carries), owner, tuple(extra), auto,
                                  tuple(t for t, _ in conv_tags),
                                  tuple(t for t, _ in contact_tags), cid, registered,
                                  box or canonical[-10:], hours))
        return numbers

    def backup(self, top: YMap) -> Backup:
        node = self.mapping(_get(top, "backup"), "backup", top.where)
        if node is None:
            return Backup()
        self.keys(node, "backup", ["announcement", "sms_reply", "alerts", "link_hours",
                                   "pin_env", "pin_file", "reminder_hours"])
        default = Backup()
        announcement = default.announcement
        ann = self.mapping(_get(node, "announcement"), "backup.announcement", node.where)
        if ann is not None:
            self.keys(ann, "backup.announcement", ["text", "file"])
            text = self.text(ann, "text", "backup.announcement.text", "", "text") or ""
            file = self.text(ann, "file", "backup.announcement.file", "", "a path") or ""
            if bool(text) == bool(file):
                self.problem(ann.where, "backup.announcement",
                             "exactly one of text: (rendered to audio) or file: (a recording)")
            announcement = Announcement(text, file)
        sms_reply = self.text(node, "sms_reply", "backup.sms_reply", default.sms_reply,
                              "the text of the SMS auto-reply") or default.sms_reply
        alerts = Alerts()
        al = self.mapping(_get(node, "alerts"), "backup.alerts", node.where)
        if al is not None:
            self.keys(al, "backup.alerts", ["kind", "emails", "sms"])
            kind_text = self.text(al, "kind", "backup.alerts.kind", "email", "email or email+sms")
            try:
                kind = AlertKind(kind_text)
            except ValueError:
                self.problem(_where_of(al, "kind"), "backup.alerts.kind", "email or email+sms")
                kind = AlertKind.EMAIL
            emails = self.strings(al, "emails", "backup.alerts.emails", _EMAIL, "an email address")
            sms: list[str] = []
            for j, (text, where) in enumerate(self.strings(al, "sms", "backup.alerts.sms", None,
                                                           "an E.164 number")):
                try:
                    sms.append(e164.normalise(text))
                except e164.NotE164 as exc:
                    self.problem(where, f"backup.alerts.sms[{j}]", exc.why)
            if kind is AlertKind.EMAIL_SMS and not sms:
                self.problem(_where_of(al, "kind"), "backup.alerts.sms",
                             "at least one SMS number when kind is email+sms")
            alerts = Alerts(kind, tuple(e for e, _ in emails), tuple(sms))
        hours = self.integer(node, "link_hours", "backup.link_hours", 12, 1, 72) or 12
        reminder_hours = default.reminder_hours
        reminder = _get(node, "reminder_hours")
        if reminder is not None:
            value = reminder.value if isinstance(reminder, YScalar) else None
            if isinstance(value, int | float) and not isinstance(value, bool) \
                    and 0 < value < float("inf"):
                reminder_hours = float(value)
            else:
                self.problem(reminder.where, "backup.reminder_hours",
                             "a positive number of hours (e.g. 4 or 0.5)")
        return Backup(announcement, sms_reply, alerts, hours,
                      self.secret(node, "pin", "backup", False), reminder_hours)

    def hours(self, parent: YMap, f: str) -> Hours | None:
        """``hours: {open: {mon: ["08:00-17:00"], ...}, holidays: ["2026-12-25"], closed:
        {announcement: {text: ...}, forward_to: +1...}}``, in the practice's time zone."""
        node = self.mapping(_get(parent, "hours"), f, parent.where)
        if node is None:
            return None
        self.keys(node, f, ["open", "holidays", "closed"])
        week: list[tuple[Window, ...]] = [() for _ in WEEKDAYS]
        days = self.mapping(_get(node, "open"), f"{f}.open", node.where)
        if days is None:
            self.problem(node.where, f"{f}.open",
                         'the open times per weekday, like mon: ["08:00-17:00"]')
        else:
            self.keys(days, f"{f}.open", WEEKDAYS)
            for i, day in enumerate(WEEKDAYS):
                windows: list[Window] = []
                for j, (text, where) in enumerate(self.strings(
                        days, day, f"{f}.open.{day}", None, "a window like 08:00-17:00")):
                    try:
                        windows.append(parse_window(text))
                    except ValueError as exc:
                        self.problem(where, f"{f}.open.{day}[{j}]", str(exc))
                week[i] = tuple(windows)
        holidays: set[date] = set()
        for j, (text, where) in enumerate(self.strings(node, "holidays", f"{f}.holidays", None,
                                                       "a date like 2026-12-25")):
            try:
                holidays.add(date.fromisoformat(text))
            except ValueError:
                self.problem(where, f"{f}.holidays[{j}]", "a date like 2026-12-25")
        closed = ClosedPath()
        cl = self.mapping(_get(node, "closed"), f"{f}.closed", node.where)
        if cl is not None:
            self.keys(cl, f"{f}.closed", ["announcement", "forward_to"])
            announcement = closed.announcement
            ann = self.mapping(_get(cl, "announcement"), f"{f}.closed.announcement", cl.where)
            if ann is not None:
                self.keys(ann, f"{f}.closed.announcement", ["text", "file"])
                text = self.text(ann, "text", f"{f}.closed.announcement.text", "", "text") or ""
                file = self.text(ann, "file", f"{f}.closed.announcement.file", "",
                                 "a path") or ""
                if bool(text) == bool(file):
                    self.problem(ann.where, f"{f}.closed.announcement",
                                 "exactly one of text: (rendered to audio) or file: "
                                 "(a recording)")
                announcement = Announcement(text, file)
            forward = self.text(cl, "forward_to", f"{f}.closed.forward_to", "",
                                "an E.164 number like +13125550199") or ""
            if forward:
                try:
                    forward = e164.normalise(forward)
                except e164.NotE164 as exc:
                    self.problem(_where_of(cl, "forward_to"), f"{f}.closed.forward_to",
                                 exc.why)
                    forward = ""
            closed = ClosedPath(announcement, forward)
        return Hours(self._timezone, tuple(week), frozenset(holidays), closed)

    # -- emergency calls (backline/core/emergency.py) ------------------------------------------

    def locations(self, top: YMap) -> dict[str, Location]:
        locations: dict[str, Location] = {}
        for i, item in enumerate(self.seq(top, "locations", "locations")):
            f = f"locations[{i}]"
            node = self.mapping(item, f, item.where)
            if node is None:
                continue
            self.keys(node, f, ["id", "address", "city", "state", "zip", "where", "country"])
            lid = self.text(node, "id", f"{f}.id", None, "a location id")
            if lid is not None and not _ID.fullmatch(lid):
                self.problem(_where_of(node, "id"), f"{f}.id",
                             "a location id (lowercase letters, digits, '-', '_', '.')")
                lid = None
            fields = {}
            for key, what, pattern in (
                    ("address", "the house number and street, e.g. 1200 W Maple St",
                     _CIVIC_TEXT),
                    ("city", "the city", _CIVIC_TEXT),
                    ("state", "the two-letter state code, e.g. IL", re.compile(r"[A-Z]{2}")),
                    ("zip", "a ZIP code, e.g. 60601", re.compile(r"\d{5}(-\d{4})?"))):
                value = self.text(node, key, f"{f}.{key}", None, what) or ""
                if value and not pattern.fullmatch(value):
                    self.problem(_where_of(node, key), f"{f}.{key}", what)
                fields[key] = value
            where = self.text(node, "where", f"{f}.where", "",
                              "the floor, suite or room, e.g. Floor 2, Exam room 2") or ""
            if where and not _CIVIC_TEXT.fullmatch(where):
                self.problem(_where_of(node, "where"), f"{f}.where",
                             "letters, digits, spaces and . , # ' & - / only (at most 80)")
            country = self.text(node, "country", f"{f}.country", "US",
                                "a two-letter country code") or "US"
            if not re.fullmatch(r"[A-Z]{2}", country):
                self.problem(_where_of(node, "country"), f"{f}.country",
                             "a two-letter country code, e.g. US")
            if lid is None:
                continue
            if lid in locations:
                self.problem(_where_of(node, "id"), f"{f}.id",
                             f"a unique location id ({lid} is listed twice)")
                continue
            locations[lid] = Location(lid, fields["address"], fields["city"], fields["state"],
                                      fields["zip"], where, country)
        return locations

    def emergency(self, top: YMap, users: dict[str, User], locations: dict[str, Location],
                  connections: Connections | None, numbers: list[Number]) -> Emergency:
        node = self.mapping(_get(top, "emergency"), "emergency", top.where)
        if node is None:
            return Emergency()
        self.keys(node, "emergency", ["callback", "caller_id_name", "location", "notify"])
        callback = self.callback(node, "callback", "emergency.callback")
        carrying = next((n for n in numbers if n.number == callback), None)
        if carrying is not None and Carry.VOICE not in carrying.carries:
            self.problem(_where_of(node, "callback"), "emergency.callback",
                         f"a number that rings back into the practice: {callback} carries "
                         "no voice")
        cid = self.text(node, "caller_id_name", "emergency.caller_id_name", "",
                        "a caller-ID name") or ""
        if len(cid) > CALLER_ID_MAX or not _CALLER_ID_CHARS.fullmatch(cid):
            self.problem(_where_of(node, "caller_id_name"), "emergency.caller_id_name",
                         f"at most {CALLER_ID_MAX} letters, digits, spaces and . , ' & -")
            cid = ""
        location = self.text(node, "location", "emergency.location", "",
                             "the id of one of the practice's locations") or ""
        if location and location not in locations:
            self.problem(_where_of(node, "location"), "emergency.location",
                         _unknown("location", location, locations))
        notify = EmergencyNotify()
        sub = self.mapping(_get(node, "notify"), "emergency.notify", node.where)
        if sub is not None:
            f = "emergency.notify"
            self.keys(sub, f, ["emails", "sms", "desk_phones"])
            emails = self.strings(sub, "emails", f"{f}.emails", _EMAIL, "an email address")
            sms: list[str] = []
            for j, (text, where) in enumerate(self.strings(sub, "sms", f"{f}.sms", None,
                                                           "an E.164 number")):
                try:
                    sms.append(e164.normalise(text))
                except e164.NotE164 as exc:
                    self.problem(where, f"{f}.sms[{j}]", exc.why)
            phones = {p: u for u in users.values() if u.active for p in u.desk_phones}
            desk: list[str] = []
            for j, (phone, where) in enumerate(self.strings(sub, "desk_phones",
                                                            f"{f}.desk_phones", None,
                                                            "a desk phone name")):
                if phone not in phones:
                    self.problem(where, f"{f}.desk_phones[{j}]",
                                 _unknown("desk phone of an active user", phone, phones))
                else:
                    desk.append(phone)
            if emails and connections is not None and connections.smtp is None:
                self.problem(_where_of(sub, "emails"), f"{f}.emails",
                             "connections.smtp, to send the notice by email")
            if sms and connections is not None and connections.sms_gateway is None:
                self.problem(_where_of(sub, "sms"), f"{f}.sms",
                             "connections.sms_gateway, to send the notice by SMS")
            notify = EmergencyNotify(tuple(e for e, _ in emails), tuple(sms), tuple(desk))
        if not notify:
            self.problem(node.where, "emergency.notify",
                         "who on site hears of each 911 call (Kari's Law requires a notice): "
                         "emails, sms or desk_phones; nobody will be told", warning=True)
        return Emergency(callback, cid, location, notify, configured=True)

    def emergency_sites(self, users: dict[str, User], locations: dict[str, Location],
                        numbers: list[Number], emergency: Emergency) -> None:
        """Every active desk phone must resolve a callback number (the phone's, its user's,
        else the practice's) that rings back into the practice; with an ``emergency``
        section, a location too."""
        voice = {n.number for n in numbers if Carry.VOICE in n.carries}
        practice_numbers = {n.number for n in numbers}
        for uid, user in users.items():
            user_field, location_where, phone_where = self._user_where[uid]
            if user.location and user.location not in locations:
                self.problem(location_where, f"{user_field}.location",
                             _unknown("location", user.location, locations))
            if not user.active:
                continue
            sites = {s.desk_phone: s for s in user.sites}
            for phone in user.desk_phones:
                site = sites.get(phone, DeskPhoneSite(phone))
                field, where = phone_where[phone]
                callback = site.emergency_callback or user.emergency_callback \
                    or emergency.callback
                if not callback:
                    self.problem(where, field,
                                 f"{phone}: an emergency callback number (E.164) that rings "
                                 "back into the practice: emergency_callback on the desk "
                                 "phone or its user, or emergency.callback for the practice")
                elif callback in practice_numbers and callback not in voice:
                    self.problem(where, field,
                                 f"an emergency callback number that rings back: {callback} "
                                 "carries no voice")
                if site.location and site.location not in locations:
                    self.problem(where, f"{field}.location",
                                 _unknown("location", site.location, locations))
                elif emergency.configured and not (site.location or user.location
                                                   or emergency.location):
                    self.problem(where, field,
                                 f"{phone}: a location (RAY BAUM's dispatchable location): "
                                 "location on the desk phone or its user, or "
                                 "emergency.location")

    def connections(self, top: YMap, base: Path) -> Connections | None:
        node = self.mapping(_get(top, "connections"), "connections", top.where)
        if node is None:
            self.problem(top.where, "connections", "a connections: section (at least storage:)")
            return None
        self.keys(node, "connections", ["pbx", "smtp", "sms_gateway", "inbox", "pages",
                                        "storage", "email_intake", "status"])
        storage = self.storage(node, base)
        pbx = self.pbx(node)
        pbx_map = _get(node, "pbx")
        if isinstance(pbx, AsteriskPbx) and isinstance(pbx_map, YMap) \
                and _get(pbx_map, "node") is None and storage.url.startswith("postgres"):
            # Nodes sharing a journal tell their calls apart by the node name (Asterisk's
            # systemname in every uniqueid): without it two nodes' calls can share a key and
            # the second call's attempt is dropped as a repeat.
            self.problem(pbx_map.where, "connections.pbx.node",
                         "a node name (e.g. node: node1), required with a postgresql:// "
                         "storage: every node on a shared journal needs its own")
        pages = self._section(node, "pages", self.pages)
        status = self._section(node, "status", self.status_listener)
        if status is None and pages is not None:
            status = StatusListener()  # where the pages listener used to serve them
        if status is not None and pages is not None and status.listen == pages.listen:
            self.problem(_where_of(node, "status"), "connections.status.listen",
                         f"a HOST:PORT of its own: {pages.listen} is connections.pages.listen, "
                         "which the internet reaches (default 127.0.0.1:8089)")
        return Connections(
            storage=storage,
            pbx=pbx,
            smtp=self._section(node, "smtp", self.smtp),
            sms_gateway=self._section(node, "sms_gateway", self.sms_gateway),
            inbox=self._section(node, "inbox", self.inbox),
            pages=pages,
            email_intake=self._section(node, "email_intake", self.email_intake),
            status=status,
        )

    def _section(self, parent: YMap, key: str, build: Callable[[YMap, str], T]) -> T | None:
        node = self.mapping(_get(parent, key), f"connections.{key}", parent.where)
        return build(node, f"connections.{key}") if node is not None else None

    def storage(self, parent: YMap, base: Path) -> Storage:
        default = "sqlite:///var/lib/backline/journal.db"
        node = self.mapping(_get(parent, "storage"), "connections.storage", parent.where)
        if node is None:
            return Storage(default)
        self.keys(node, "connections.storage", ["url"])
        url = self.text(node, "url", "connections.storage.url", default,
                        "sqlite:///ABSOLUTE/PATH, sqlite:RELATIVE/PATH or postgresql://...")
        url = url or default
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            # libpq's own parsing: a password as user:pw@ or as ?password= is the same key.
            from psycopg import Error as PsycopgError
            from psycopg.conninfo import conninfo_to_dict

            try:
                fields = conninfo_to_dict(url)
            except PsycopgError:
                self.problem(_where_of(node, "url"), "connections.storage.url",
                             "a PostgreSQL URL libpq accepts: postgresql://USER@HOST:PORT/DB "
                             "(query parameters only those libpq knows)")
                return Storage(url)
            if "password" in fields:
                self.problem(_where_of(node, "url"), "connections.storage.url",
                             "no password in the URL: use PGPASSWORD or a .pgpass file")
            return Storage(url)
        if url.startswith("sqlite:///"):
            return Storage(url)
        if url.startswith("sqlite:") and len(url) > 7:
            return Storage("sqlite://" + str((base / url[7:]).resolve()))
        self.problem(_where_of(node, "url"), "connections.storage.url",
                     "sqlite:///ABSOLUTE/PATH, sqlite:RELATIVE/PATH or postgresql://...")
        return Storage(default)

    def pbx(self, parent: YMap) -> Pbx | None:
        node = self.mapping(_get(parent, "pbx"), "connections.pbx", parent.where)
        if node is None:
            return None
        f = "connections.pbx"
        kind = self.text(node, "kind", f"{f}.kind", "asterisk", "asterisk or freeswitch")
        sip = self._sub(node, "sip", f)
        sip_hp = self.host_port(sip, f"{f}.sip", control=False, default_port=5060) \
            if sip else HostPort("127.0.0.1", 5060)
        ring = self.integer(node, "ring_seconds", f"{f}.ring_seconds", 25, 5, 120) or 25
        if kind == "freeswitch":
            self.keys(node, f, ["kind", "esl", "sip", "ring_seconds", "socket", "trunk",
                                "secrets_file", "fax_dir", "fax_spool", "cdr_file"])
            esl = self._sub(node, "esl", f) or YMap({}, node.where)
            self.keys(esl, f"{f}.esl", ["host", "port", "password_env", "password_file"])
            sock = self._sub(node, "socket", f) or YMap({}, node.where)
            self.keys(sock, f"{f}.socket", ["host", "port"])
            return FreeswitchPbx(
                self.host_port(esl, f"{f}.esl", control=True, default_port=8021),
                self.secret(esl, "password", f"{f}.esl", True), sip_hp, ring,
                socket=self.host_port(sock, f"{f}.socket", control=True, default_port=8084),
                trunk=self.trunk(node, f),
                secrets_file=self.text(node, "secrets_file", f"{f}.secrets_file",
                                       "/var/lib/backline/desk-phone-secrets.json",
                                       "the path of the desk-phone secrets file (outside the "
                                       "repo)") or "/var/lib/backline/desk-phone-secrets.json",
                fax_dir=self.fax_dir(node, f),
                fax_spool=self.plain_path(node, "fax_spool", f, "/var/lib/freeswitch/fax"),
                cdr_file=self.plain_path(node, "cdr_file", f,
                                         "/var/log/freeswitch/cdr-csv/Master.csv"))
        if kind != "asterisk":
            self.problem(_where_of(node, "kind"), f"{f}.kind", "asterisk or freeswitch")
            return None
        self.keys(node, f, ["kind", "ami", "agi", "sip", "ring_seconds", "trunk", "rtp",
                            "udptl", "secrets_file", "cdr_file", "spool_dir", "fax_dir",
                            "node"])
        ami = self._sub(node, "ami", f) or YMap({}, node.where)
        self.keys(ami, f"{f}.ami", ["host", "port", "username", "secret_env", "secret_file"])
        agi = self._sub(node, "agi", f) or YMap({}, node.where)
        self.keys(agi, f"{f}.agi", ["host", "port"])
        username = self.text(ami, "username", f"{f}.ami.username", "backline",
                             "the AMI user name") or "backline"
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", username):
            self.problem(_where_of(ami, "username"), f"{f}.ami.username",
                         "letters, digits, '-' and '_' only")
        return AsteriskPbx(
            ami=self.host_port(ami, f"{f}.ami", control=True, default_port=5038),
            ami_username=username,
            ami_secret=self.secret(ami, "secret", f"{f}.ami", True),
            agi=self.host_port(agi, f"{f}.agi", control=True, default_port=4573),
            sip=sip_hp,
            ring_seconds=ring,
            trunk=self.trunk(node, f),
            rtp=self.port_range(node, "rtp", f, PortRange(10000, 10199)),
            udptl=self.port_range(node, "udptl", f, PortRange(4000, 4039)),
            secrets_file=self.text(node, "secrets_file", f"{f}.secrets_file",
                                   "/var/lib/backline/desk-phone-secrets.json",
                                   "the path of the desk-phone secrets file (outside the repo)")
            or "/var/lib/backline/desk-phone-secrets.json",
            cdr_file=self.absolute_path(node, "cdr_file", f,
                                        "the absolute path of Asterisk's cdr-csv Master.csv "
                                        "(leave it out: it is asked of Asterisk)"),
            spool_dir=self.absolute_path(node, "spool_dir", f,
                                         "the absolute path of Asterisk's spool directory "
                                         "(leave it out: it is asked of Asterisk)"),
            fax_dir=self.fax_dir(node, f),
            node=self.node_name(node, f),
        )

    def node_name(self, node: YMap, f: str) -> str:
        what = "a node name: lower-case letters, digits and '-' (at most 32)"
        name = self.text(node, "node", f"{f}.node", "", what) or ""
        # Asterisk's systemname, so it must fit a uniqueid ([systemname-]EPOCH.SEQ).
        if name and not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", name):
            self.problem(_where_of(node, "node"), f"{f}.node", what)
            return ""
        return name

    def absolute_path(self, node: YMap, key: str, f: str, what: str) -> str:
        """An optional absolute path ("" when left out)."""
        path = self.text(node, key, f"{f}.{key}", "", what) or ""
        if path and not path.startswith("/"):
            self.problem(_where_of(node, key), f"{f}.{key}", what)
            return ""
        return path

    def fax_dir(self, node: YMap, f: str) -> str:
        default = "/var/lib/backline/fax"
        what = "the absolute path of the directory where received faxes are kept"
        path = self.text(node, "fax_dir", f"{f}.fax_dir", default, what) or default
        if not path.startswith("/"):
            self.problem(_where_of(node, "fax_dir"), f"{f}.fax_dir", what)
            return default
        return path

    def plain_path(self, node: YMap, key: str, f: str, default: str) -> str:
        """An absolute path FreeSWITCH's XML and applications take verbatim: plain
        characters only (no spaces, quotes or ``$``)."""
        what = "an absolute path of letters, digits, '_', '.', '/' and '-'"
        path = self.text(node, key, f"{f}.{key}", default, what) or default
        if not re.fullmatch(r"/[A-Za-z0-9_./-]{1,255}", path):
            self.problem(_where_of(node, key), f"{f}.{key}", what)
            return default
        return path

    def trunk(self, node: YMap, f: str) -> Trunk:
        sub = self._sub(node, "trunk", f)
        if sub is None:
            return Trunk()
        self.keys(sub, f"{f}.trunk", ["host", "port", "from_user", "geolocation"])
        hp = self.host_port(sub, f"{f}.trunk", control=False, default_port=5080)
        user = self.text(sub, "from_user", f"{f}.trunk.from_user", "", "a SIP user name") or ""
        if user and not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", user):
            self.problem(_where_of(sub, "from_user"), f"{f}.trunk.from_user",
                         "letters, digits, '.', '-' and '_' only")
        geolocation = self.flag(sub, "geolocation", f"{f}.trunk.geolocation", False)
        return Trunk(hp.host, hp.port, user, geolocation)

    def port_range(self, node: YMap, key: str, f: str, default: PortRange) -> PortRange:
        sub = self._sub(node, key, f)
        if sub is None:
            return default
        self.keys(sub, f"{f}.{key}", ["start", "end"])
        start = self.integer(sub, "start", f"{f}.{key}.start", default.start, 1024, 65535)
        end = self.integer(sub, "end", f"{f}.{key}.end", default.end, 1024, 65535)
        if start is None or end is None or end - start < 1:
            self.problem(sub.where, f"{f}.{key}", "start below end")
            return default
        return PortRange(start, end)

    def _sub(self, parent: YMap, key: str, field: str) -> YMap | None:
        return self.mapping(_get(parent, key), f"{field}.{key}", parent.where)

    def smtp(self, node: YMap, f: str) -> Smtp:
        self.keys(node, f, ["host", "port", "tls", "starttls", "ca_file", "insecure_cleartext",
                            "from", "username_env", "username_file", "password_env",
                            "password_file"])
        tls = self.smtp_tls(node, f)
        hp = self.host_port(node, f, control=False,
                            default_port=465 if tls is SmtpTls.IMPLICIT else 25)
        sender = self.text(node, "from", f"{f}.from", "backline@localhost",
                           "the sender address") or "backline@localhost"
        what = "the absolute path of a PEM file of CA certificates"
        ca_file = self.text(node, "ca_file", f"{f}.ca_file", "", what) or ""
        if ca_file and not ca_file.startswith("/"):
            self.problem(_where_of(node, "ca_file"), f"{f}.ca_file", what)
        elif ca_file and tls is SmtpTls.NONE:
            self.problem(_where_of(node, "ca_file"), f"{f}.ca_file",
                         "tls: starttls or implicit: a CA file verifies a TLS certificate, and "
                         "this relay is reached in cleartext")
        insecure = self.flag(node, "insecure_cleartext", f"{f}.insecure_cleartext", False)
        username = self.secret(node, "username", f, False)
        password = self.secret(node, "password", f, False)
        self.cleartext(node, f, "tls" if "tls" in node.entries else "starttls", hp.host,
                       tls is SmtpTls.NONE, insecure,
                       "alert mails, with their 12-hour links to patient data",
                       "tls: starttls (the default) or implicit")
        if tls is SmtpTls.NONE and (username or password) and not is_loopback(hp.host):
            # Even with the opt-out: the mail is the user's to expose, the relay's password
            # would be reused by anyone who read it.
            self.problem(_where_of(node, "tls" if "tls" in node.entries else "starttls"),
                         f"{f}.tls", "starttls or implicit: a username or password is never "
                         "sent in the clear to another machine")
        return Smtp(hp.host, hp.port, tls, sender, username, password, ca_file, insecure)

    def smtp_tls(self, node: YMap, f: str) -> SmtpTls:
        """``tls`` (starttls, implicit, none), or the older ``starttls`` flag: true is
        ``tls: starttls`` and false ``tls: none`` (so an old config still loads, and its
        cleartext is judged like any other).  Neither: STARTTLS."""
        what = "starttls, implicit or none"
        text = self.text(node, "tls", f"{f}.tls", "", what) if "tls" in node.entries else None
        legacy = _get(node, "starttls")
        starttls = self.flag(node, "starttls", f"{f}.starttls", True)
        if text is not None and legacy is not None:
            self.problem(legacy.where, f"{f}.starttls",
                         "tls alone: starttls is its older spelling, give one of them")
        if text is None:
            return SmtpTls.STARTTLS if starttls else SmtpTls.NONE
        try:
            return SmtpTls(text)
        except ValueError:
            self.problem(_where_of(node, "tls"), f"{f}.tls", what)
            return SmtpTls.STARTTLS

    def cleartext(self, node: YMap, f: str, key: str, host: str, clear: bool, insecure: bool,
                  exposed: str, wanted: str) -> None:
        """Cleartext goes only to this machine, or where ``insecure_cleartext: true`` says
        the user accepts it (then a warning naming ``exposed``, what anyone on the path
        reads); otherwise ``key`` is refused, ``wanted`` instead."""
        if insecure and not clear:
            self.problem(_where_of(node, "insecure_cleartext"), f"{f}.insecure_cleartext",
                         "removed: the connection is encrypted, so the opt-out has no effect",
                         warning=True)
        if not clear or is_loopback(host):
            return
        if insecure:
            self.problem(_where_of(node, "insecure_cleartext"), f"{f}.insecure_cleartext",
                         f"false: INSECURE: {exposed} go to {host} unencrypted, readable by "
                         "anyone on the network path", warning=True)
            return
        self.problem(_where_of(node, key), f"{f}.{key}",
                     f"{wanted} (cleartext only to this machine: 127.0.0.1, ::1, localhost): "
                     f"{exposed} would cross the network to {host} readable by anyone; to send "
                     "them so anyway, set insecure_cleartext: true")

    def sms_gateway(self, node: YMap, f: str) -> SmsGateway:
        self.keys(node, f, ["url", "from", "account", "token_env", "token_file",
                            "signing_secret_env", "signing_secret_file", "insecure_cleartext"])
        self._gateway_node = node  # for sms_senders(), once the rest is read
        reported = len(self.problems)
        url = self._url(node, "url", f)
        insecure = self.flag(node, "insecure_cleartext", f"{f}.insecure_cleartext", False)
        url_account = ""
        if url and len(self.problems) == reported:
            self.cleartext(node, f, "url", urlsplit(url).hostname or "",
                           url.startswith("http:"), insecure,
                           "the SMS texts and the gateway's API token", "an https:// URL")
        if url and len(self.problems) == reported:
            # The base, or the provider's full Messages URL as a user pastes it: the client
            # wants the base, and the account may come from the URL.
            try:
                api = api_url(url, insecure_cleartext=insecure)
            except ValueError as exc:
                self.problem(_where_of(node, "url"), f"{f}.url", str(exc))
            else:
                url, url_account = api.base, api.account
        sender = self.text(node, "from", f"{f}.from", "", "the E.164 number alerts come from")
        if sender:
            try:
                sender = e164.normalise(sender)
            except e164.NotE164 as exc:
                self.problem(_where_of(node, "from"), f"{f}.from", exc.why)
        account = self.text(node, "account", f"{f}.account", "",
                            "the provider's account id (Twilio: the Account SID)") or ""
        if account and url_account and account != url_account:
            self.problem(_where_of(node, "account"), f"{f}.account",
                         "the account the url names (they differ): give it once, in either")
        elif ":" in account:
            self.problem(_where_of(node, "account"), f"{f}.account",
                         "an account id without ':' (it is the basic-auth user)")
        account = account or url_account
        return SmsGateway(url, sender or "", self.secret(node, "token", f, False),
                          self.secret(node, "signing_secret", f, False), account, insecure)

    def sms_senders(self, top: YMap, numbers: list[Number], backup: Backup,
                    connections: Connections) -> None:
        """Whatever would send SMS must find a gateway that can: SMS alerts (``email+sms``)
        and, with a gateway to receive SMS, the outage auto-reply from every number that
        carries SMS and is registered for texting.  Otherwise an outage would find out."""
        f = "connections.sms_gateway"
        alerts = backup.alerts.kind is AlertKind.EMAIL_SMS and bool(backup.alerts.sms)
        gateway = connections.sms_gateway
        replying = [n.number for n in numbers
                    if Carry.SMS in n.carries and n.texting_registered]
        senders = ["backup.alerts.kind is email+sms"] if alerts else []
        if replying and gateway is not None:
            others = len(replying) - 1
            senders.append(f"the outage auto-reply from {replying[0]}"
                           + (f" and {others} other number(s)" if others else ""))
        if not senders:
            return
        why = f"SMS is sent ({'; '.join(senders)})"
        node = self._gateway_node
        if gateway is None or node is None:
            backup_node = _get(top, "backup")
            alerts_node = _get(backup_node, "alerts") if isinstance(backup_node, YMap) \
                else None
            where = _where_of(alerts_node, "kind") if isinstance(alerts_node, YMap) \
                else top.where
            self.problem(where, f, "an SMS gateway (url, account, token_env, from) to text "
                         "backup.alerts.sms, since backup.alerts.kind is email+sms")
            return
        if gateway.url and not gateway.account:
            self.problem(node.where, f"{f}.account",
                         "the provider's account id (Twilio: the Account SID), or the full "
                         "Messages URL as url (https://api.twilio.com/2010-04-01/Accounts/"
                         f"AC…/Messages.json): {why}")
        if not gateway.token.env and not gateway.token.file:
            self.problem(node.where, f"{f}.token_env",
                         f"where the API token comes from: token_env or token_file: {why}")
        if alerts and not gateway.sender:
            self.problem(node.where, f"{f}.from",
                         "the E.164 number SMS alerts are sent from: backup.alerts.kind is "
                         "email+sms")

    def inbox(self, node: YMap, f: str) -> Inbox:
        self.keys(node, f, ["url", "token_env", "token_file", "insecure_cleartext"])
        reported = len(self.problems)
        url = self._url(node, "url", f)
        insecure = self.flag(node, "insecure_cleartext", f"{f}.insecure_cleartext", False)
        if url and len(self.problems) == reported:
            self.cleartext(node, f, "url", urlsplit(url).hostname or "",
                           url.startswith("http:"), insecure,
                           "held emails, faxes, SMS texts, caller numbers and the inbox token",
                           "an https:// URL")
        return Inbox(url, self.secret(node, "token", f, False), insecure)

    def email_intake(self, node: YMap, f: str) -> EmailIntake:
        self.keys(node, f, ["listen", "domains"])
        listen = self.listen(node, f, HostPort("127.0.0.1", 2526))
        domains = self.strings(node, "domains", f"{f}.domains", _DOMAIN,
                               "a mail domain of the practice, e.g. maple.example")
        listed = _get(node, "domains")
        if listed is None or (isinstance(listed, YSeq) and not listed.items):
            self.problem(_where_of(node, "domains"), f"{f}.domains",
                         "at least one mail domain of the practice (other mail is refused)")
        return EmailIntake(listen, tuple(d.lower() for d, _ in domains))

    def pages(self, node: YMap, f: str) -> Pages:
        self.keys(node, f, ["listen", "base_url"])
        return Pages(self.listen(node, f, HostPort("127.0.0.1", 8080)),
                     self._url(node, "base_url", f))

    def status_listener(self, node: YMap, f: str) -> StatusListener:
        """``/status``, ``/status.json`` and ``/metrics``: who engaged the outage, why, the
        backlog.  Off loopback only behind a bearer token."""
        self.keys(node, f, ["listen", "token_env", "token_file"])
        listen = self.listen(node, f, StatusListener().listen)
        token = self.secret(node, "token", f, False)
        if not is_loopback(listen.host.strip("[]")) and not token.env and not token.file:
            self.problem(_where_of(node, "listen"), f"{f}.token_env",
                         f"a bearer token (token_env or token_file) for a status listener "
                         f"off loopback ({listen.host}): its pages say who engaged the outage, "
                         "why, and the backlog")
        return StatusListener(listen, token)

    def _url(self, node: YMap, key: str, f: str) -> str:
        url = self.text(node, key, f"{f}.{key}", None, "an http:// or https:// URL") or ""
        if url and not re.fullmatch(r"https?://[^\s/?#@]+(/[^\s]*)?", url):
            self.problem(_where_of(node, key), f"{f}.{key}",
                         "an http:// or https:// URL with no credentials in it")
        return url


def _get(node: YMap, key: str) -> YNode | None:
    entry = node.entries.get(key)
    return entry[1] if entry else None


def _where_of(node: YMap, key: str) -> Where:
    entry = node.entries.get(key)
    return entry[1].where if entry else node.where


def _join(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def _unknown(kind: str, ident: str, known: dict[str, T]) -> str:
    close = difflib.get_close_matches(ident, list(known), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"a known {kind}: there is no {kind} {ident!r}{hint}"
