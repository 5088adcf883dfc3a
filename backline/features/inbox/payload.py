"""What the inbox receives for one held item, and what its answer means.  Pure.

Each item is one JSON document, POSTed with the header ``Idempotency-Key``.  It carries what
the inbox needs to file it as normal mode would have at the time:

- ``conversation``: the practice number and the outside party (for an email: the practice
  address and the sender), so the item joins the right conversation;
- ``conversation_tags`` / ``contact_tags``: the number's tags, as normal mode puts on a new
  conversation and a contact first seen through it;
- ``assign_to``: ``user:ID`` / ``team:ID`` when the number auto-assigns, else null (the shared
  inbox), so a doctor's direct line lands in that doctor's queue and nobody else's;
- ``notify``: the notification normal mode would have sent, held until now.  The inbox fires
  it when it files the item (once per idempotency key), to ``notify.users``: the assignee's
  people when auto-assigned, else the number's members.  Carrying it in the item, rather than
  as a second request, makes "filed" and "notified" one commit on the inbox's side: there is
  no state in which one happened and the other is lost.
- the item itself: times, sender, recipient, SMS text, the fax file, a voicemail's audio
  (``file``, ``audio/wav``, with ``voicemail.duration_seconds``) and the email's bytes
  (all base64, exactly as kept); a missed call is a ``call`` with the outcome ``missed``.
  An attempt's sender (``from`` and the conversation's ``party``) is in E.164 where the
  numbering plan allows, as the journal files it, so a caller whose carrier sent 10 national
  digits joins the same conversation as their texts; ``from_raw`` is the sender as the
  carrier or gateway sent it;
- for an SMS, ``reply``: the outage auto-reply's final state (``sent``, or ``not-sent`` with
  ``detail`` saying why: the number is not registered for texting, does not carry SMS, the
  outage ended before the gateway took it...), its tries and when it was sent; null when no
  reply was owed (normal mode).  The drain settles the reply before it sends the item (see
  ``backline.features.inbox.service``), so the inbox never files a reply that is still in the air.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any, assert_never

from backline.core.model import OwnerKind, Party
from backline.core.ownership import OwnershipBook
from backline.core.records import AttemptKind, Outcome
from backline.core.voicemail import wav_seconds
from backline.journal.delivery import InboxItem
from backline.journal.replies import ReplyState, SmsReply

FORMAT_VERSION = 1


def idempotency_key(item: InboxItem) -> str:
    """The header value: stable for the item across tries, restarts and controllers, and
    safe in a header whatever the attempt's key holds (an SMS id comes from a webhook)."""
    return "backline-" + hashlib.sha256(item.key.encode()).hexdigest()[:40]


def filing(book: OwnershipBook, number: str) -> dict[str, Any]:
    """Tags, assignee and who is notified for an item reaching practice number ``number``."""
    n = book.number(number)
    assignee = book.assignee(number).party
    return {
        "conversation_tags": list(n.conversation_tags) if n else [],
        "contact_tags": list(n.contact_tags) if n else [],
        "assign_to": str(assignee) if assignee is not None else None,
        "notify": {"users": _notified(book, number, assignee)},
    }


def _notified(book: OwnershipBook, number: str, assignee: Party | None) -> list[str]:
    members = book.sorted_members(number)
    if assignee is None:
        return list(members)
    if assignee.kind is OwnerKind.USER:
        return [assignee.id] if book.is_active(assignee.id) else []
    if assignee.kind is OwnerKind.TEAM:
        team = next((t for t in book.directory.teams if t.id == assignee.id), None)
        return sorted(m for m in (team.members if team else ()) if book.is_active(m))
    return list(members)


def item_document(item: InboxItem, book: OwnershipBook, file: bytes | None,
                  reply: SmsReply | None = None) -> dict[str, Any]:
    """The JSON body for ``item``; ``file`` is the fax's PDF (or kept TIFF), if it has one;
    ``reply`` the SMS auto-reply, if one was owed."""
    doc: dict[str, Any] = {"version": FORMAT_VERSION, "key": item.key, "kind": item.kind,
                           "received_at": item.received_at.isoformat()}
    if item.attempt is not None:
        a = item.attempt
        doc.update({
            "mode": a.mode.value, "from": a.sender, "from_raw": a.sender_raw or a.sender,
            "to": a.recipient,
            "outcome": a.outcome.value, "text": a.text, "detail": a.detail,
            "conversation": {"number": a.recipient, "party": a.sender},
        })
        doc.update(filing(book, a.recipient))
        if a.kind is AttemptKind.SMS:
            doc["reply"] = _reply_document(reply)
            if reply is not None and reply.state is ReplyState.SENT:
                # Sent after the queue was read: the journal now says auto-replied too.
                doc["outcome"] = Outcome.AUTO_REPLIED.value
        if file is not None and a.kind is AttemptKind.VOICEMAIL:
            doc["voicemail"] = {"duration_seconds": _seconds(file)}
            doc["file"] = {"name": a.file.rsplit("/", 1)[-1], "type": "audio/wav",
                           "data": base64.b64encode(file).decode("ascii")}
        elif file is not None:
            pdf = a.file.lower().endswith(".pdf")
            doc["file"] = {"name": a.file.rsplit("/", 1)[-1],
                           "type": "application/pdf" if pdf else "image/tiff",
                           "data": base64.b64encode(file).decode("ascii")}
    elif item.email is not None:
        e = item.email
        practice_address = e.rcpt_to[0] if e.rcpt_to else ""
        doc.update({
            "from": e.mail_from, "to": list(e.rcpt_to),
            "conversation": {"address": practice_address, "party": e.mail_from},
            "conversation_tags": [], "contact_tags": [], "assign_to": None,
            "notify": {"users": []},  # the inbox notifies for mail as it always does
            "email": base64.b64encode(e.data).decode("ascii"),
        })
    else:
        raise ValueError(f"inbox item {item.id} has neither an attempt nor an email")
    return doc


def _reply_document(reply: SmsReply | None) -> dict[str, Any] | None:
    if reply is None:
        return None
    return {"state": reply.state.value, "detail": reply.detail, "tries": reply.tries,
            "sent_at": reply.sent_at.isoformat() if reply.sent_at else None}


@dataclass(frozen=True, slots=True)
class Accepted:
    """2xx: the inbox has the item (now, or from an earlier try with the same key)."""


@dataclass(frozen=True, slots=True)
class TryAgain:
    """No acceptance yet (5xx, 408, 409, 429, a wrong URL or token, no answer): the same
    item, later, same key."""

    reason: str
    status: int = 0  # the HTTP status, 0 when there was no answer


@dataclass(frozen=True, slots=True)
class Refused:
    """A permanent 4xx: this item will never be accepted as it is; ops must look."""

    reason: str


Answer = Accepted | TryAgain | Refused


def answer_for(status: int, phrase: str) -> Answer:
    """What an HTTP status from the inbox means for the item.  The reason names the status
    only: an inbox's error body may echo patient data back."""
    reason = f"HTTP {status} {phrase}".strip()
    if 200 <= status < 300:
        return Accepted()
    if status in ENDPOINT_STATUSES or status in (408, 409, 425, 429):
        return TryAgain(reason, status)
    if 400 <= status < 500:
        return Refused(reason)
    return TryAgain(reason, status)  # 5xx, and anything an inbox should not say (1xx, 3xx)


ENDPOINT_STATUSES = frozenset({401, 403, 404, 405, 407})
"""4xx that say the endpoint (its URL, token, proxy) is wrong, not the item: every item would
get the same answer, so refusing them would fail the whole backlog in a second.  They are
tried again (and logged as errors) until ops fix the configuration.  408, 409 (the inbox is
still working on this Idempotency-Key), 425 and 429 are plainly "later".  400, 413, 415, 422
and the other 4xx are about this item: refused, reported, and the drain goes on."""


def endpoint_problem(answer: Answer) -> bool:
    """A TryAgain caused by the endpoint's configuration (log it as an error)."""
    return isinstance(answer, TryAgain) and answer.status in ENDPOINT_STATUSES


def describe(answer: Answer) -> str:
    match answer:
        case Accepted():
            return "accepted"
        case TryAgain() | Refused():
            return answer.reason
        case _:
            assert_never(answer)


def _seconds(audio: bytes) -> float | None:
    """The recording's length; None once it cannot be read (checked when it was kept, so
    damaged on disk since): the bytes still go, and nothing behind them waits."""
    try:
        return round(wav_seconds(audio), 2)
    except ValueError:
        return None
