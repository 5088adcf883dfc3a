"""Where Backline connects: the PBX (Asterisk or FreeSWITCH), the mail relay, the SMS
gateway, the inbox, its own listeners and the journal's storage; and where each secret comes
from (never the secret itself)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


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
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Trunk:
    """The carrier: where outbound calls go, and how its inbound calls are recognised.

    ``from_user`` set: the carrier is the peer whose From user is that (tests, where every
    peer is on 127.0.0.1); empty: it is recognised by its address: ``addresses`` (addresses
    or CIDR networks), ``host`` when none are listed.

    ``username`` and ``password`` (where it comes from) are the account's digest credentials:
    they answer the carrier's challenges to our calls and, with ``register``, our REGISTER
    to ``host``, so that the carrier sends the practice's calls to where we are (the
    registration's contact, which also recognises them).
    """

    host: str = "127.0.0.1"
    port: int = 5080
    from_user: str = ""
    # Send each 911 call's dispatchable location to the carrier as a PIDF-LO body (RFC 6442
    # by value): only where the carrier takes it, so off unless the practice turns it on.
    geolocation: bool = False
    addresses: tuple[str, ...] = ()
    username: str = ""
    password: Secret = Secret()
    register: bool = False
    # SIP over TLS to and from the carrier (connections.pbx.tls's transport), its
    # certificate verified against ``ca_file`` (a PEM bundle; empty: the system's CAs).
    tls: bool = False
    ca_file: str = ""
    # The calls' media to and from the carrier as SRTP, keyed by SDES inside that TLS.
    srtp: bool = False
    # The operator's consent to plain SIP and RTP to a carrier off this machine (many take
    # only UDP): without it `backline check` refuses a trunk without ``tls``.
    insecure_cleartext: bool = False

    @property
    def sources(self) -> tuple[str, ...]:
        """Where the carrier's requests come from: its addresses, else its host."""
        return self.addresses or (self.host,)


class Encryption(enum.Enum):
    """Whether desk phones' calls must be encrypted: ``required`` makes their media SRTP,
    keyed by SDES inside their TLS signalling, and refuses a call offered without it."""

    OPTIONAL = "optional"
    REQUIRED = "required"


@dataclass(frozen=True, slots=True)
class SipTls:
    """SIP over TLS for desk phones: the certificate and key files Asterisk serves, or
    (``practice_ca``, a folder) a CA of the practice's own that ``backline render`` makes
    there with a server certificate it signs, for a LAN that has no public certificate: the
    phones are given the CA (``ca.pem``) to trust."""

    port: int = 5061
    certificate_file: str = ""
    key_file: str = ""
    practice_ca: str = ""


@dataclass(frozen=True, slots=True)
class PortRange:
    start: int
    end: int


DEFAULT_RESERVED_DESCRIPTORS = 256


@dataclass(frozen=True, slots=True)
class Bans:
    """A source with ``failures`` failed SIP authentications within ``window_seconds`` is
    dropped by the firewall for ``ban_minutes`` (backline/core/bans.py)."""

    failures: int = 5
    window_seconds: int = 60
    ban_minutes: int = 60


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
    # The practice's LAN (networks): desk phones only from there, the carrier only from its
    # addresses; empty on loopback, where everything is one host.  ``public_address``: the
    # address the internet sees when SIP's is behind NAT (the LAN is then local_net).
    lan: tuple[str, ...] = ()
    public_address: str = ""
    # Desk phones reach the PBX through a NAT of their own (a branch office, a home): each is
    # answered where its requests come from, not at the private Contact it names.
    desk_phones_behind_nat: bool = False
    tls: SipTls | None = None
    encryption: Encryption = Encryption.OPTIONAL
    # Kamailio's SIP address when it is the desk phones' registrar for several nodes: the
    # phones register there, the location table in the journal's PostgreSQL is the ring set,
    # and this node reaches a desk phone through it (docs/nodes.md).
    registrar: HostPort | None = None
    # The operator's consent to desk phones' SIP and audio in the clear on the LAN (SIP off
    # loopback and a phone not ``encryption: required``); without it `check` refuses.
    insecure_cleartext: bool = False
    # Where the controller serves desk phones their provisioning files (HTTPS, with the
    # TLS transport's certificate; backline.features.provisioning).
    provisioning: HostPort | None = None
    # Scanners banned in the firewall's set (``backline render --firewall``); None: off.
    bans: Bans | None = None


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
    # The practice's LAN (networks): the firewall admits SIP and RTP only from there and the
    # carrier (``backline render --firewall``).  ``bans``: as Asterisk's, fed by sofia.
    lan: tuple[str, ...] = ()
    bans: Bans | None = None
    # As Asterisk's: FreeSWITCH renders no TLS or SRTP for desk phones, so off loopback
    # their SIP and audio are plain, with this consent only.
    insecure_cleartext: bool = False


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


DEFAULT_HELD_MB = 1024
DEFAULT_FREE_FLOOR_MB = 1024


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
    held_mb: int = DEFAULT_HELD_MB
    free_floor_mb: int = DEFAULT_FREE_FLOOR_MB


DEFAULT_REFUSALS_PER_MINUTE = 60
DEFAULT_AUDIT_YEARS = 6  # the HIPAA documentation period


@dataclass(frozen=True, slots=True)
class Pages:
    """``refusals_per_minute``: refused requests (forged SMS posts, unknown link tokens) a
    source may make in a minute before it is answered 429 (backline.core.refusals)."""

    listen: HostPort
    base_url: str
    limits: ListenerLimits = ListenerLimits()
    refusals_per_minute: int = DEFAULT_REFUSALS_PER_MINUTE


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
    """``audit_years``: how long audit entries and refusal counts are kept.
    ``delivered_days``: how long Backline keeps its copies of fax and voicemail files after
    the inbox accepted their item (backline.core.retention); None keeps them for ever."""

    url: str
    audit_years: int = DEFAULT_AUDIT_YEARS
    delivered_days: int | None = None

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
