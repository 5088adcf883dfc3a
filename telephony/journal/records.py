"""What the journal holds, as frozen records.  Times are timezone-aware UTC."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from telephony.outage import Mode


class AttemptKind(enum.Enum):
    CALL = "call"
    SMS = "sms"
    FAX = "fax"


class Outcome(enum.Enum):
    """What happened to an inbound attempt."""

    RANG = "rang"                  # desk phones rang (normal mode)
    VOICEMAIL = "voicemail"
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


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: datetime
    actor: str
    action: str
    detail: str
