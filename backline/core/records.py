"""What the journal holds, as frozen records.  Times are timezone-aware UTC."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime

from backline.core.e164 import outside
from backline.core.outage import Mode


class AttemptKind(enum.Enum):
    CALL = "call"
    SMS = "sms"
    FAX = "fax"
    VOICEMAIL = "voicemail"  # a message left on a number's voicemail (its audio in ``file``)


class Outcome(enum.Enum):
    """What happened to an inbound attempt."""

    RANG = "rang"                  # desk phones rang (normal mode)
    VOICEMAIL = "voicemail"
    MISSED = "missed"              # nobody answered and no message was left
    FORWARDED = "forwarded"        # closed: forwarded to the answering service
    ANNOUNCED = "announced"        # outage: announcement played, hung up
    AUTO_REPLIED = "auto-replied"  # outage SMS: the sender got the automatic reply
    RECEIVED = "received"          # SMS or fax taken in
    REJECTED = "rejected"          # fax refused during the call
    REFUSED = "refused"            # unknown number, forged webhook, ...
    UNREADABLE = "unreadable"      # a fax whose TIFF could not be read (kept as it came)


class Delivery(enum.Enum):
    """Where an attempt stands on its way to the practice's normal inbox."""

    NOT_NEEDED = "not-needed"  # handled by the normal path at the time
    HELD = "held"              # received in an outage, waits for the outage to end
    DELIVERED = "delivered"
    FAILED = "failed"          # the inbox refused it for good (4xx); ops must look


@dataclass(frozen=True, slots=True)
class NewAttempt:
    """An attempt to record.  ``key`` makes recording idempotent (e.g. a PBX spool id)."""

    key: str
    at: datetime
    kind: AttemptKind
    mode: Mode
    sender: str
    recipient: str
    outcome: Outcome
    text: str = ""
    file: str = ""
    detail: str = ""
    node: str = ""
    delivery: Delivery = Delivery.NOT_NEEDED
    # The sender as it came, when ``sender`` was already made E.164 (an SMS); "" otherwise:
    # the journal files ``sender`` by :func:`filed` and keeps what came beside it.
    sender_raw: str = ""


def filed(a: NewAttempt) -> NewAttempt:
    """``a`` as the journal keeps it: the outside party (the sender of an inbound call, fax or
    SMS) in E.164 where the numbering plan allows (backline.core.e164.outside), so one caller is
    one conversation however the carrier spelt them, and the sender as it came in
    ``sender_raw``.  Every path (a call decided live, its CDR re-imported, a fax, an SMS)
    records through here, so all of them name the same party alike."""
    raw = a.sender_raw or a.sender
    return replace(a, sender=outside(a.sender).number[:64], sender_raw=raw[:64])


@dataclass(frozen=True, slots=True)
class Pruned:
    """Backline's copies of an attempt's files were removed ``at``, ``days`` after the inbox
    accepted it (``connections.storage.delivered_days``, backline.core.retention): the
    record stays, and says so where the file used to be offered."""

    at: datetime
    days: int

    def says(self) -> str:
        return f"removed after {self.days} day{'s' if self.days != 1 else ''} (the inbox has it)"


@dataclass(frozen=True, slots=True)
class Attempt:
    id: int
    key: str
    at: datetime
    kind: AttemptKind
    mode: Mode
    sender: str
    recipient: str
    outcome: Outcome
    text: str
    file: str
    detail: str
    node: str
    delivery: Delivery
    sender_raw: str = ""  # the sender as the carrier or gateway sent it (see filed)
    pruned: Pruned | None = None  # its files removed by retention; None while they are kept


@dataclass(frozen=True, slots=True)
class ControllerReport:
    """What a running controller last told the journal (see ``outage.switch_key``).

    ``mode_switch`` is the switch it runs by; ``pbx_switch`` the one its PBX was last seen
    holding ("" while that is unknown, e.g. the PBX link is down) and ``pbx_at`` when;
    ``inbox_blocked`` says why held items cannot be delivered ("" when they can).
    """

    holder: str
    node: str
    seen_at: datetime
    mode_switch: str
    pbx_switch: str
    pbx_at: datetime | None
    inbox_blocked: str


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: datetime
    actor: str
    action: str
    detail: str


# -- backup alerts ---------------------------------------------------------------------------


class AlertChannel(enum.Enum):
    """How an alert reaches one recipient."""

    EMAIL = "email"
    SMS = "sms"


class AlertState(enum.Enum):
    PENDING = "pending"  # not yet accepted by the SMTP server or the SMS gateway
    SENT = "sent"


@dataclass(frozen=True, slots=True)
class AlertSlot:
    """The newest alert, as gathering sees it: a new attempt joins it or opens the next one."""

    id: int
    due_at: datetime
    window_seconds: int
    closed: bool  # a delivery of it has been picked up for sending: its list is final


@dataclass(frozen=True, slots=True)
class JoinAlert:
    """Gathering's decision: the attempt is listed on the still-open alert ``alert_id``."""

    alert_id: int


@dataclass(frozen=True, slots=True)
class OpenAlert:
    """Gathering's decision: a new alert, sent at ``due_at``; the one after it waits for
    ``window_seconds`` past that."""

    due_at: datetime
    window_seconds: int


Placement = JoinAlert | OpenAlert


@dataclass(frozen=True, slots=True)
class AlertDelivery:
    """One alert to one recipient.  ``message_id`` is fixed when the row is made, so every
    try of an email carries the same Message-ID."""

    id: int
    alert_id: int
    channel: AlertChannel
    recipient: str
    message_id: str
    state: AlertState
    tries: int
    next_try_at: datetime
    last_error: str
    sent_at: datetime | None
    alert_due_at: datetime


@dataclass(frozen=True, slots=True)
class AlertLink:
    """A link as the journal keeps it: the token's hash, never the token."""

    id: int
    alert_id: int
    delivery_id: int
    created_at: datetime
    expires_at: datetime
