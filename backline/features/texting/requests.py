"""One request to text, as the API and ``backline text send`` both take it: checked, decided
by :func:`backline.core.texting.decide_text`, and journaled under its idempotency key (or
answered from the journal when the key is known).  Synchronous: it reads and writes the
journal, so the API calls it in a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from backline.core import e164
from backline.core.conversations import ConversationBook
from backline.core.outage import Mode
from backline.core.ownership import OwnershipBook
from backline.core.records import AuditEntry
from backline.core.texting import OutboundText, RefuseText, decide_text
from backline.features.sms.twilio import MAX_BODY_CHARS
from backline.journal import Journal
from backline.journal.texts import StaffText

MAX_KEY = 200
NO_GATEWAY = "no SMS gateway is configured to send it"


@dataclass(frozen=True, slots=True)
class TextRequest:
    """``user`` is whom the caller names: trusted, not proven (docs/sms.md, "Texting").
    ``via`` is who made the request, as far as Backline can tell (the API's token-holder and
    address, the CLI's login): audited beside the user."""

    key: str
    user: str
    number: str
    to: str
    text: str
    via: str = ""


@dataclass(frozen=True, slots=True)
class Kept:
    """Journaled (``duplicate``: under this key already, as this very text)."""

    text: StaffText
    duplicate: bool


@dataclass(frozen=True, slots=True)
class NotKept:
    """Nothing journaled: ``status`` (HTTP's word for it), ``why`` in words (never the text
    or the party's number), ``code`` the refusal's short name when the policy refused it."""

    status: int
    why: str
    code: str = ""


def request_text(journal: Journal, book: OwnershipBook, conversations: ConversationBook,
                 mode: Mode, request: TextRequest, at: datetime, *,
                 gateway: bool) -> Kept | NotKept:
    """Keep ``request`` to be sent, or say why not (a policy refusal is audited)."""
    r = request
    if len(r.key) > MAX_KEY or not r.key.isprintable() or not r.key:
        return NotKept(400, f"expected a key of 1 to {MAX_KEY} printable characters")
    if not r.text.strip():
        return NotKept(422, "the text is empty")
    if len(r.text) > MAX_BODY_CHARS:
        return NotKept(422, f"the text is longer than {MAX_BODY_CHARS} characters")
    known = journal.text_by_key(r.key)
    if known is not None:  # a request sent again: what became of the first
        return _again(known, r)
    if not gateway:
        return NotKept(503, NO_GATEWAY)
    decision = decide_text(book, conversations, OutboundText(r.user, r.number, r.to), mode)
    if isinstance(decision, RefuseText):
        via = f" (via {r.via})" if r.via else ""
        journal.audit(AuditEntry(at, r.user[:80], "text.refused",
                                 f"{decision.why.value}: {decision.detail}{via}"))
        return NotKept(403, decision.detail, decision.why.value)
    kept, new = journal.add_text(r.key, at, r.user, decision.from_number, decision.to, r.text,
                                 r.via)
    return Kept(kept, False) if new else _again(kept, r)  # not new: the same key at once


def _again(known: StaffText, r: TextRequest) -> Kept | NotKept:
    if not known.same_request(r.user, _spelt(r.number), _spelt(r.to), r.text):
        return NotKept(409, "the key was used for another text")
    return Kept(known, True)


def _spelt(number: str) -> str:
    """``number`` as the journal keeps it (E.164), when it is one."""
    try:
        return e164.normalise(number)
    except e164.NotE164:
        return number
