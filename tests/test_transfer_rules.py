"""Where a transferred outside call goes, and who it adds to the conversation: the pure rules
(backline.core.transfers), table-driven.  The real-Asterisk side is test_asterisk_transfers."""

from __future__ import annotations

import dataclasses

import pytest

from backline.core.conversations import ConversationBook
from backline.core.decisions import Refusal
from backline.core.model import Team, User
from backline.core.outage import Mode
from backline.core.ownership import OwnershipBook
from backline.core.registrations import Registrations
from backline.core.transfers import (
    AttendedJoin,
    RingTransferTarget,
    Transfer,
    TransferDecision,
    TransferKind,
    TransferOut,
    TransferRefused,
    attended_join,
    decide_transfer,
    transfer_note,
)
from tests.practice import directory, number, t, user

LINE, PATIENT, OTHER = "+13125550102", "+17205550141", "+17205550199"


def staff(uid: str, extension: str, *, active: bool = True) -> User:
    return dataclasses.replace(user(uid, active=active), extension=extension)


BOOK = OwnershipBook(directory(
    [staff("sam", "111"), staff("jo", "112"), staff("mia", "121"), staff("ana", "101"),
     staff("pat", "122", active=False)],
    [Team("front", "Front Desk", ("sam", "jo"), "200"),
     Team("nurses", "Nursing", ("mia", "ana", "pat"), "300")],
    [number(LINE, t("front"), caller_id_name="Sched"), number("+13125550100")]))


def registered(*users: str) -> Registrations:
    r = Registrations(BOOK, 3)
    for i, u in enumerate(users):
        r.register(f"{u}-p0", f"sip:{u}@10.0.0.{i + 1}:5060", float(i))
    return r


def decide(to: str, *, by: str = "sam-p0", caller: str = PATIENT, mode: Mode = Mode.NORMAL,
           regs: Registrations | None = None, added: tuple[str, str] | None = None,
           on: str = LINE) -> TransferDecision:
    conversations = ConversationBook()
    if added is not None:
        conversations.add(LINE, added[0], added[1])
    return decide_transfer(BOOK, conversations,
                           regs or registered("sam", "jo", "mia", "ana"),
                           Transfer(by, to, on, caller), mode, 20)


def test_an_extension_rings_its_desk_phones_and_adds_whoever_is_not_a_member() -> None:
    d = decide("121")
    assert isinstance(d, RingTransferTarget)
    assert (d.users, d.added, d.contacts, d.voicemail_box) == (
        ("mia",), ("mia",), (("mia-p0", "sip:mia@10.0.0.3:5060"),), LINE[-10:])
    assert transfer_note(d, TransferKind.BLIND) == (
        "handled by sam; blind transfer to extension 121 (mia); added mia to the conversation")
    # A member of the line, or someone already added, is not added again.
    assert decide("112").added == ()  # type: ignore[union-attr]
    assert decide("121", added=(PATIENT, "mia")).added == ()  # type: ignore[union-attr]
    # An anonymous caller has no conversation to add anyone to; the call still goes.
    anonymous = decide("121", caller="anonymous")
    assert isinstance(anonymous, RingTransferTarget) and anonymous.added == ()
    # In an outage too: an extension never touches the carrier.
    assert isinstance(decide("121", mode=Mode.OUTAGE), RingTransferTarget)


def test_a_team_extension_rings_its_active_members_but_the_transferring_user() -> None:
    d = decide("300")
    assert isinstance(d, RingTransferTarget)
    assert (d.users, d.added) == (("ana", "mia"), ("ana", "mia"))
    front = decide("200")
    assert isinstance(front, RingTransferTarget) and front.users == ("jo",)


def test_out_only_if_the_transferring_user_may_call_out_from_the_line() -> None:
    assert decide(OTHER) == TransferOut(LINE, "Sched", OTHER, "sam", LINE[-10:])
    # Mia was given the call (not a member): she may send it to the patient she was added
    # to (the same party), not to anyone else.
    assert decide(OTHER, by="mia-p0", added=(OTHER, "mia")) == \
        TransferOut(LINE, "Sched", OTHER, "mia", LINE[-10:])
    refused = decide(OTHER, by="mia-p0")
    assert refused == TransferRefused(Refusal.NOT_A_MEMBER, "mia",
                                      (("mia-p0", "sip:mia@10.0.0.3:5060"),), 20, LINE[-10:])
    assert transfer_note(refused, TransferKind.BLIND) == (
        "handled by mia; blind transfer refused (not-a-member): the caller went back to mia")


@pytest.mark.parametrize(("to", "kwargs", "why"), [
    ("199", {}, Refusal.INVALID_DESTINATION),  # nobody's extension
    ("122", {}, Refusal.INVALID_DESTINATION),  # a deactivated user's
    ("121", {"regs": registered("sam")}, Refusal.NOBODY_REGISTERED),
    (OTHER, {"mode": Mode.OUTAGE}, Refusal.OUTAGE),
    ("+13125550100", {}, Refusal.INVALID_DESTINATION),  # a practice number: use extensions
    ("12", {}, Refusal.INVALID_DESTINATION),
    ("121", {"by": "stranger"}, Refusal.UNKNOWN_DESK_PHONE),
    ("121", {"on": "+13125550177"}, Refusal.NOT_A_PRACTICE_NUMBER),
])
def test_refusals_send_the_caller_back_never_into_silence(
        to: str, kwargs: dict[str, object], why: Refusal) -> None:
    d = decide(to, **kwargs)  # type: ignore[arg-type]
    assert isinstance(d, TransferRefused) and d.why is why
    if why not in (Refusal.UNKNOWN_DESK_PHONE, Refusal.NOT_A_PRACTICE_NUMBER):
        assert d.back_to == (("sam-p0", "sip:sam@10.0.0.1:5060"),)
        assert d.voicemail_box == LINE[-10:]


def test_an_attended_transfer_adds_the_colleague_it_joined_if_not_a_member() -> None:
    def join(target: str, *, caller: str = PATIENT, by: str = "sam-p0",
             added: tuple[str, str] | None = None) -> AttendedJoin | None:
        conversations = ConversationBook()
        if added is not None:
            conversations.add(LINE, *added)
        return attended_join(BOOK, conversations,
                             Transfer(by, target, LINE, caller, TransferKind.ATTENDED), target)

    mia = join("mia-p0")
    assert mia == AttendedJoin(LINE, PATIENT, "sam", "mia", ("mia",))
    assert transfer_note(mia, TransferKind.ATTENDED) == \
        "handled by sam; attended transfer to mia; added mia to the conversation"
    assert join("jo-p0") == AttendedJoin(LINE, PATIENT, "sam", "jo", ())  # a member
    assert join("mia-p0", added=(PATIENT, "mia")).added == ()  # type: ignore[union-attr]
    assert join("mia-p0", caller="anonymous").added == ()  # type: ignore[union-attr]
    out = join("")  # joined to a call the user placed out
    assert out == AttendedJoin(LINE, PATIENT, "sam", "", ())
    assert transfer_note(out, TransferKind.ATTENDED) == \
        "handled by sam; attended transfer to an outside call"
    assert join("mia-p0", by="stranger") is None
