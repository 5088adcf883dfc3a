"""The practice directory as immutable, typed objects.

Everything downstream of the YAML loader sees these and never a raw dict: what the loader
accepted is exactly what these types can express.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date

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
class Secret:
    """Where a secret comes from: an environment variable or a file outside the repo.

    The value itself is never part of the config objects, so it can never be logged with them.
    """

    env: str = ""
    file: str = ""

    def __bool__(self) -> bool:
        return bool(self.env or self.file)


@dataclass(frozen=True, slots=True)
class Backup:
    announcement: Announcement = Announcement(text=DEFAULT_ANNOUNCEMENT)
    sms_reply: str = DEFAULT_SMS_REPLY
    alerts: Alerts = Alerts()
    link_hours: int = 12
    pin: Secret = Secret()  # admins' desk phones switch the mode with *28/*29 and this PIN
    # While an outage stays engaged, the alert recipients are reminded this often (hours).
    reminder_hours: float = 4.0


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Trunk:
    """The carrier: where outbound calls go, and how its inbound calls are recognised.

    ``from_user`` set: the carrier is the peer whose From user is that (tests, where every
    peer is on 127.0.0.1); empty: it is recognised by its address.
    """

    host: str = "127.0.0.1"
    port: int = 5080
    from_user: str = ""
    # Send each 911 call's dispatchable location to the carrier as a PIDF-LO body (RFC 6442
    # by value): only where the carrier takes it, so off unless the practice turns it on.
    geolocation: bool = False


@dataclass(frozen=True, slots=True)
class PortRange:
    start: int
    end: int


DEFAULT_RESERVED_DESCRIPTORS = 256


@dataclass(frozen=True, slots=True)
class AsteriskPbx:
    ami: HostPort
    ami_username: str
    ami_secret: Secret
    agi: HostPort
    sip: HostPort
    ring_seconds: int = 25
    trunk: Trunk = Trunk()
    rtp: PortRange = PortRange(10000, 10199)
    udptl: PortRange = PortRange(4000, 4039)
    secrets_file: str = "/var/lib/backline/desk-phone-secrets.json"
    # Where the controller reads Asterisk's cdr_csv Master.csv and its spool (ReceiveFax's
    # TIFFs).  Empty: asked of the running Asterisk at every AMI login (`core show settings`,
    # under its chroot if it runs in one); set them only where the controller sees Asterisk's
    # files at other paths (a container's volume).
    cdr_file: str = ""
    spool_dir: str = ""
    # Where received faxes are kept, TIFF and PDF side by side (the controller's path).
    fax_dir: str = "/var/lib/backline/fax"
    kind: str = "asterisk"
    # This PBX node's name when several share one journal: attempts carry it, and it is
    # Asterisk's systemname, so call uniqueids (and so attempt keys) never collide.
    node: str = ""
    # Descriptors no public connection may take: FastAGI calls, AMI, the journal.
    reserved_descriptors: int = DEFAULT_RESERVED_DESCRIPTORS


@dataclass(frozen=True, slots=True)
class FreeswitchPbx:
    esl: HostPort
    esl_password: Secret
    sip: HostPort
    ring_seconds: int = 25
    # Where the controller listens for FreeSWITCH's outbound ``socket`` (one per call).
    socket: HostPort = HostPort("127.0.0.1", 8084)
    trunk: Trunk = Trunk()
    secrets_file: str = "/var/lib/backline/desk-phone-secrets.json"
    kind: str = "freeswitch"
    # Where received faxes are kept (the controller's path), where FreeSWITCH's rxfax writes
    # them (both see it at this path), and the mod_cdr_csv file of carrier calls.
    fax_dir: str = "/var/lib/backline/fax"
    fax_spool: str = "/var/lib/freeswitch/fax"
    cdr_file: str = "/var/log/freeswitch/cdr-csv/Master.csv"
    # Descriptors no public connection may take: call sockets, ESL, the journal.
    reserved_descriptors: int = DEFAULT_RESERVED_DESCRIPTORS


Pbx = AsteriskPbx | FreeswitchPbx


class SmtpTls(enum.Enum):
    """How alert mail is protected on its way to the relay.  STARTTLS is the default: alert
    mail carries 12-hour links to patient data, so it is encrypted and the relay's
    certificate verified unless the config says otherwise."""

    STARTTLS = "starttls"  # required: a server offering none is refused, never fallen back from
    IMPLICIT = "implicit"  # TLS from the first byte (port 465)
    NONE = "none"  # cleartext: loopback only, or with insecure_cleartext


@dataclass(frozen=True, slots=True)
class Smtp:
    """``ca_file``: a PEM bundle that verifies the relay's certificate instead of the
    system's; ``insecure_cleartext``: the user's explicit consent to cleartext to another
    machine (``backline check`` warns about it)."""

    host: str
    port: int
    tls: SmtpTls
    sender: str
    username: Secret = Secret()
    password: Secret = Secret()
    ca_file: str = ""
    insecure_cleartext: bool = False


@dataclass(frozen=True, slots=True)
class SmsGateway:
    """A Twilio-format SMS provider: ``url`` is the API base, ``account`` the basic-auth user
    (Twilio's Account SID), ``token`` its password, ``signing_secret`` what signs webhooks
    (for Twilio the same Auth Token)."""

    url: str
    sender: str
    token: Secret = Secret()
    signing_secret: Secret = Secret()
    account: str = ""
    insecure_cleartext: bool = False  # plain http to another machine, consented to


@dataclass(frozen=True, slots=True)
class Inbox:
    url: str
    token: Secret = Secret()
    insecure_cleartext: bool = False  # plain http to another machine, consented to


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    """What one listener other machines reach may hold (backline.features.listeners):
    connections at once, and how long a connection may send nothing (``idle_seconds``), take
    over a request's head after its first byte, or over its body (an SMTP message's DATA)."""

    max_connections: int = 256
    idle_seconds: int = 15
    header_seconds: int = 10
    body_seconds: int = 30


# The intake's sessions: a sending server waits minutes between commands at worst, and a
# 50 MB message on a slow link takes a while; a sender told 421 tries again later.
SMTP_LIMITS = ListenerLimits(max_connections=64, idle_seconds=60, body_seconds=300)


@dataclass(frozen=True, slots=True)
class EmailIntake:
    """The SMTP listener that keeps the practice's mail in an outage (``domains``: the
    practice's mail domains; anything else is refused).  ``max_recipients`` per message;
    ``held_mb``: held mail not yet delivered may take this much of the journal; below
    ``free_floor_mb`` free on the journal's disk, mail is turned away (452/451) so that
    calls and SMS still journal."""

    listen: HostPort
    domains: tuple[str, ...]
    limits: ListenerLimits = SMTP_LIMITS
    max_recipients: int = 100
    held_mb: int = 1024
    free_floor_mb: int = 1024


@dataclass(frozen=True, slots=True)
class Pages:
    listen: HostPort
    base_url: str
    limits: ListenerLimits = ListenerLimits()


# Where ops read /status, /status.json and /metrics unless connections.status says otherwise:
# never the pages listener, which faces the internet (the SMS webhook, alert links) directly
# or through a reverse proxy on loopback, and these pages say who engaged the outage and why.
DEFAULT_STATUS_LISTEN = HostPort("127.0.0.1", 8089)


@dataclass(frozen=True, slots=True)
class StatusListener:
    """The ops listener: ``token`` set, every request must carry ``Authorization: Bearer``
    with it (required off loopback)."""

    listen: HostPort = DEFAULT_STATUS_LISTEN
    token: Secret = Secret()
    limits: ListenerLimits = ListenerLimits(max_connections=32)


@dataclass(frozen=True, slots=True)
class Storage:
    url: str

    @property
    def scheme(self) -> str:
        return self.url.split(":", 1)[0]


@dataclass(frozen=True, slots=True)
class Connections:
    storage: Storage
    pbx: Pbx | None = None
    smtp: Smtp | None = None
    sms_gateway: SmsGateway | None = None
    inbox: Inbox | None = None
    pages: Pages | None = None
    email_intake: EmailIntake | None = None
    # Given, or defaulted when pages are configured (the pages listener used to serve them).
    status: StatusListener | None = None


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

    def hours_of(self, e164: str) -> Hours | None:
        """The hours that apply to a call to ``e164``: its own, else the practice's."""
        number = self.number(e164)
        own = number.hours if number is not None else None
        return own or self.hours

    def user(self, user_id: str) -> User | None:
        return next((u for u in self.users if u.id == user_id), None)

    def number(self, e164: str) -> Number | None:
        return next((n for n in self.numbers if n.number == e164), None)

    def location(self, location_id: str) -> Location | None:
        return next((loc for loc in self.locations if loc.id == location_id), None)
