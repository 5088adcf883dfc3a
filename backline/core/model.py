"""The practice directory as immutable, typed objects.

Everything downstream of the YAML loader sees these and never a raw dict: what the loader
accepted is exactly what these types can express.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date

from backline.core.connections import AsteriskPbx, Connections, Encryption, Secret
from backline.core.provisioning import ProvisionedPhone

CALLER_ID_MAX = 15  # characters of a caller-ID name that carriers keep


class Carry(enum.Enum):
    """What a practice number carries."""

    VOICE = "voice"
    SMS = "sms"
    FAX = "fax"


class OwnerKind(enum.Enum):
    USER = "user"
    TEAM = "team"
    PRACTICE = "practice"


@dataclass(frozen=True, slots=True)
class Party:
    """A user or a team, as named in the YAML (``user:ana``, ``team:front-desk``)."""

    kind: OwnerKind
    id: str = ""

    def __str__(self) -> str:
        if self.kind is OwnerKind.PRACTICE:
            return str(self.kind.value)
        return f"{self.kind.value}:{self.id}"


PRACTICE = Party(OwnerKind.PRACTICE)


@dataclass(frozen=True, slots=True)
class DeskPhoneSite:
    """What a desk phone says about itself on a 911 call, where set on the phone itself
    (``desk_phones: [{name: raj-exam2, location: annex, emergency_callback: ...}]``); what it
    leaves empty comes from its user, then from the practice (``backline.core.emergency``)."""

    desk_phone: str
    location: str = ""
    emergency_callback: str = ""
    # Its own ``encryption`` (a lobby phone that cannot do SRTP); None: the practice's.
    encryption: Encryption | None = None


@dataclass(frozen=True, slots=True)
class User:
    id: str
    name: str
    email: str
    admin: bool
    active: bool
    extension: str
    desk_phones: tuple[str, ...]
    # Emergency calls (backline/core/emergency.py): a callback number and a location for all of this
    # user's desk phones, unless a desk phone names its own in ``sites``.
    emergency_callback: str = ""
    location: str = ""
    sites: tuple[DeskPhoneSite, ...] = ()
    # Desk phones given a ``mac`` and ``model``: the controller serves their provisioning.
    provisioned: tuple[ProvisionedPhone, ...] = ()
    # Opted in to an email (a link, nothing of the caller) for each voicemail on a number
    # they are a member of (backline.features.voicemail).
    voicemail_email: bool = False


@dataclass(frozen=True, slots=True)
class Team:
    id: str
    name: str
    members: tuple[str, ...]
    # Dialled from a desk phone, rings the active members' desk phones at once (a ring group).
    extension: str = ""


@dataclass(frozen=True, slots=True)
class Number:
    number: str  # canonical E.164
    carries: frozenset[Carry]
    owner: Party
    members: tuple[Party, ...]
    auto_assign: bool
    conversation_tags: tuple[str, ...]
    contact_tags: tuple[str, ...]
    caller_id_name: str
    texting_registered: bool
    voicemail_box: str = ""
    hours: Hours | None = None  # this number's own hours; None: the practice's
    # What a caller hears before leaving a message (voicemail_greeting); None: the default,
    # spoken from the number's caller-ID name (backline.core.voicemail.greeting_of).
    greeting: Announcement | None = None


@dataclass(frozen=True, slots=True)
class Announcement:
    """The outage announcement: text rendered to audio at render time, or a recording."""

    text: str = ""
    file: str = ""


DEFAULT_ANNOUNCEMENT = (
    "Our phone system is experiencing an outage. If this is an emergency, hang up and dial "
    "9 1 1. Otherwise, please try again later."
)
DEFAULT_SMS_REPLY = (
    "Our messaging system is experiencing an outage and we may not see your message until it "
    "is restored. If this is an emergency, call 911."
)


class AlertKind(enum.Enum):
    EMAIL = "email"
    EMAIL_SMS = "email+sms"


@dataclass(frozen=True, slots=True)
class Alerts:
    kind: AlertKind = AlertKind.EMAIL
    emails: tuple[str, ...] = ()
    sms: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Backup:
    announcement: Announcement = Announcement(text=DEFAULT_ANNOUNCEMENT)
    sms_reply: str = DEFAULT_SMS_REPLY
    alerts: Alerts = Alerts()
    link_hours: int = 12
    # Admins' desk phones switch the mode with *28/*29 and this PIN.
    pin: Secret = field(default_factory=Secret)
    # While an outage stays engaged, the alert recipients are reminded this often (hours).
    reminder_hours: float = 4.0


@dataclass(frozen=True, slots=True)
class Practice:
    name: str
    timezone: str


@dataclass(frozen=True, slots=True)
class Location:
    """A dispatchable location (RAY BAUM's Act): a civic address plus the floor or room line
    that tells a responder where in the building the desk phone is."""

    id: str
    address: str  # house number and street: "1200 W Maple St"
    city: str
    state: str  # two-letter state or province code
    zip: str
    where: str = ""  # floor, suite or room: "Floor 2, Exam room 2"
    country: str = "US"

    def one_line(self) -> str:
        place = f"{self.address}, {self.city}, {self.state} {self.zip}"
        return f"{self.where}, {place}" if self.where else place


@dataclass(frozen=True, slots=True)
class EmergencyNotify:
    """Who on site hears of every 911 call at once (Kari's Law): emails, SMS numbers, and
    desk phones that are called and told."""

    emails: tuple[str, ...] = ()
    sms: tuple[str, ...] = ()
    desk_phones: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.emails or self.sms or self.desk_phones)


@dataclass(frozen=True, slots=True)
class Emergency:
    """The practice's defaults for 911 calls: the callback number (E.164, one of the
    practice's voice numbers or an ELIN the carrier knows), the caller-ID name sent with it,
    the default location, and who is notified.  ``configured`` is whether the YAML has an
    ``emergency`` section (locations are required then)."""

    callback: str = ""
    caller_id_name: str = ""
    location: str = ""
    notify: EmergencyNotify = EmergencyNotify()
    configured: bool = False


DEFAULT_EMERGENCY_NUMBERS = ("911", "933")  # 933: the carriers' address read-back test line


DEFAULT_CLOSED_TEXT = (
    "You have reached us outside our office hours. If this is an emergency, hang up and dial "
    "9 1 1. Otherwise, please leave a message after the tone."
)


@dataclass(frozen=True, slots=True)
class Window:
    """Open from ``start`` to ``end`` (minutes after local midnight, ``end`` exclusive).
    ``end`` <= ``start`` crosses midnight: the window ends the next day, and belongs to the
    day it starts on (a holiday closes the windows that start on it)."""

    start: int
    end: int

    @property
    def crosses_midnight(self) -> bool:
        return self.end <= self.start


@dataclass(frozen=True, slots=True)
class ClosedPath:
    """What a call at a closed time gets: ``forward_to`` set, the call is forwarded there
    (an answering service, E.164) with the number's caller ID; otherwise the closed
    announcement, then the number's voicemail."""

    announcement: Announcement = Announcement(text=DEFAULT_CLOSED_TEXT)
    forward_to: str = ""


@dataclass(frozen=True, slots=True)
class Hours:
    """Open windows per weekday (``week[0]`` is Monday), holidays (closed all day, local
    dates), and the closed path.  ``timezone`` is an IANA name the loader checked."""

    timezone: str
    week: tuple[tuple[Window, ...], ...]
    holidays: frozenset[date] = frozenset()
    closed: ClosedPath = ClosedPath()


@dataclass(frozen=True, slots=True)
class Park:
    """Call parking: a desk phone's park key (a blind transfer to ``extension``) puts the
    caller in the first free of ``slots`` with music; dialling the slot picks it up; after
    ``timeout`` seconds unanswered it rings back whoever parked it."""

    extension: str
    slots: tuple[str, ...]
    timeout: int


@dataclass(frozen=True, slots=True)
class Directory:
    """One practice, as the YAML describes it, validated."""

    practice: Practice
    max_per_login: int
    users: tuple[User, ...]
    teams: tuple[Team, ...]
    numbers: tuple[Number, ...]
    backup: Backup
    connections: Connections
    source: str = ""  # the top-level YAML file, for messages and relative paths
    emergency_numbers: tuple[str, ...] = field(default=DEFAULT_EMERGENCY_NUMBERS)
    emergency: Emergency = Emergency()
    locations: tuple[Location, ...] = ()
    hours: Hours | None = None  # None: always open
    park: Park | None = None  # None: no call parking

    def hours_of(self, e164: str) -> Hours | None:
        """The hours that apply to a call to ``e164``: its own, else the practice's."""
        number = self.number(e164)
        own = number.hours if number is not None else None
        return own or self.hours

    def user(self, user_id: str) -> User | None:
        return next((u for u in self.users if u.id == user_id), None)

    def requires_srtp(self, desk_phone: str) -> bool:
        """Whether ``desk_phone``'s media must be SRTP, keyed over TLS (``encryption:
        required``, its own or else the Asterisk PBX's): its calls to anything but an
        emergency number are refused otherwise, and calls to it offer nothing else."""
        pbx = self.connections.pbx
        if not isinstance(pbx, AsteriskPbx):
            return False
        own = next((s.encryption for u in self.users for s in u.sites
                    if s.desk_phone == desk_phone), None)
        return (own or pbx.encryption) is Encryption.REQUIRED

    def any_srtp(self) -> bool:
        """Whether any active desk phone's media must be SRTP."""
        return any(self.requires_srtp(p) for u in self.users if u.active for p in u.desk_phones)

    def number(self, e164: str) -> Number | None:
        return next((n for n in self.numbers if n.number == e164), None)

    def location(self, location_id: str) -> Location | None:
        return next((loc for loc in self.locations if loc.id == location_id), None)
