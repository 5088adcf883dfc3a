"""Load and validate the practice YAML into a :class:`~backline.core.model.Directory`.

Every problem is collected, not just the first, and each names its file, line and field and
what was expected, so ops fix a config in one pass.  Nothing starts on a config with problems.
The sections are read in ``backline/app/settings/``, one module each, through the generic
accessors of :class:`~backline.app.settings.reader.Reader`; this module puts them together and
makes the checks that span them.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from backline.app.settings.backup import read_backup
from backline.app.settings.connections import read_connections
from backline.app.settings.edge import check_cleartext_edge
from backline.app.settings.emergency import check_emergency_sites, read_emergency, read_locations
from backline.app.settings.hours import read_hours
from backline.app.settings.numbers import read_numbers
from backline.app.settings.outbound import check_sms_senders
from backline.app.settings.park import read_park
from backline.app.settings.people import Extension, check_phone_encryption, read_people
from backline.app.settings.reader import Problem, Reader, entry, where_of
from backline.app.yamlsource import YMap, load_with_includes
from backline.core.connections import FreeswitchPbx
from backline.core.dialling import extension_clash
from backline.core.model import DEFAULT_EMERGENCY_NUMBERS, Directory, Park, Practice


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
    reader = Reader()
    for err in source_errors:
        reader.problem(err.where, err.field, err.message)
    directory = None
    if top is not None:
        directory = _directory(reader, top, str(path))
    errors = sorted(p for p in reader.problems if not p.warning)
    if errors or directory is None:
        raise ConfigError(errors or [Problem(str(path), 1, "file", "a practice config")])
    return Loaded(directory, tuple(p for p in reader.problems if p.warning))


def _directory(r: Reader, top: YMap, source: str) -> Directory | None:
    """The sections in the order their checks need each other (the warnings keep it)."""
    r.keys(top, "", ["practice", "devices", "users", "teams", "numbers", "backup",
                     "connections", "emergency_numbers", "emergency", "locations",
                     "hours", "park"])
    practice = _practice(r, top)
    timezone = practice.timezone if practice is not None else "UTC"  # hours are in it
    devices = r.mapping(entry(top, "devices"), "devices", top.where)
    max_per_login = 3
    if devices is not None:
        r.keys(devices, "devices", ["max_per_login"])
        max_per_login = r.integer(devices, "max_per_login", "devices.max_per_login", 3,
                                  1, 20) or 3
    people = read_people(r, top)
    users, teams = people.users, people.teams
    numbers = read_numbers(r, top, users, teams, timezone)
    backup = read_backup(r, top)
    hours = read_hours(r, top, "hours", timezone)
    connections = read_connections(r, top, Path(source).parent)
    emergency_numbers = [v for v, _ in r.strings(
        top, "emergency_numbers", "emergency_numbers", re.compile(r"\d{3}"),
        "a 3-digit number")]
    for ext, (_, field, where) in people.extensions.items():
        clash = extension_clash(ext, emergency_numbers or DEFAULT_EMERGENCY_NUMBERS,
                                [n.number for n in numbers])
        if clash is not None:
            r.problem(where, field, f"an extension a desk phone can reach ({ext} "
                      f"dials {clash})")
    park = read_park(r, top)
    if park is not None:
        _check_park(r, top, park, people.extensions, emergency_numbers or
                    DEFAULT_EMERGENCY_NUMBERS, [n.number for n in numbers])
    locations = read_locations(r, top)
    emergency = read_emergency(r, top, users, locations, connections, numbers)
    pbx = connections.pbx if connections is not None else None
    if isinstance(pbx, FreeswitchPbx) and pbx.trunk.geolocation:
        r.problem(top.where, "connections.pbx.trunk.geolocation",
                  "false: a 911 call's location is sent by Asterisk only so far")
    elif pbx is not None and pbx.trunk.geolocation and not emergency.configured:
        r.problem(top.where, "emergency",
                  "an emergency: section and the practice's locations: "
                  "connections.pbx.trunk.geolocation sends each desk phone's location "
                  "with its 911 calls")
    if isinstance(pbx, FreeswitchPbx) and park is not None:
        r.problem(where_of(top, "park"), "park",
                  "no park: section with FreeSWITCH: call parking is rendered for Asterisk "
                  "only so far")
    check_emergency_sites(r, people, locations, numbers, emergency)
    check_phone_encryption(r, top, users, pbx, people.user_where)
    check_cleartext_edge(r, top, users.values(), pbx)
    if connections is not None:
        check_sms_senders(r, top, numbers, backup, connections)
    if practice is None or connections is None:
        return None
    return Directory(practice, max_per_login, tuple(users.values()), tuple(teams.values()),
                     tuple(numbers), backup, connections, source,
                     tuple(emergency_numbers) or DEFAULT_EMERGENCY_NUMBERS, emergency,
                     tuple(locations.values()), hours, park)


def _check_park(r: Reader, top: YMap, park: Park, extensions: Mapping[str, Extension],
                emergency_numbers: Sequence[str], numbers: Sequence[str]) -> None:
    """The park extension and every slot are dialled as they are: none may be anyone's
    extension, a feature code, an emergency or practice number (each named where it is)."""
    node = entry(top, "park")
    for key, codes in (("extension", (park.extension,)), ("slots", park.slots)):
        field = f"park.{key}"
        where = where_of(node, key) if isinstance(node, YMap) else top.where
        for code in codes:
            taken = extensions.get(code)
            clash = f"{taken[0]}'s extension" if taken is not None else \
                extension_clash(code, emergency_numbers, numbers)
            if clash is not None:
                r.problem(where, field, f"codes nobody else dials ({code} is {clash})")


def _practice(r: Reader, top: YMap) -> Practice | None:
    node = r.mapping(entry(top, "practice"), "practice", top.where)
    if node is None:
        r.problem(top.where, "practice", "a practice: {name: ..., timezone: ...} section")
        return None
    r.keys(node, "practice", ["name", "timezone"])
    name = r.text(node, "name", "practice.name", None, "the practice's name")
    tz = r.text(node, "timezone", "practice.timezone", "UTC",
                "an IANA time zone like America/Chicago") or "UTC"
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        r.problem(where_of(node, "timezone"), "practice.timezone",
                  "an IANA time zone like America/Chicago")
    return Practice(name or "", tz) if name else None
