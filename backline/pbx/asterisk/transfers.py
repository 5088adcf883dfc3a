"""A desk phone's blind transfer (REFER) on Asterisk: the FastAGI request from the rendered
``backline-transfer`` context in, the core's decision out as the variables its contexts read.

Asterisk performs a REFER by sending the transferred caller's channel to the dialplan at the
transferring channel's ``TRANSFER_CONTEXT`` with the Refer-To user as the extension, and sets
``BLINDTRANSFER`` there to the transferring channel's name; the dialplan filters both and
passes the number and caller the call came in with.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import assert_never

from backline.core import e164
from backline.core.model import Directory
from backline.core.transfers import (
    RingTransferTarget,
    Transfer,
    TransferDecision,
    TransferKind,
    TransferOut,
    TransferOutcome,
    TransferRefused,
)
from backline.pbx.asterisk import dialplan_variables as v
from backline.pbx.asterisk.commands import ring_targets

log = logging.getLogger("backline.asterisk")

# Told of every transfer decided: the call's journal key, the transfer, the decision.
OnTransfer = Callable[[str, Transfer, TransferOutcome], Awaitable[object]]

_CHANNEL = re.compile(r"PJSIP/([A-Za-z0-9._-]{1,80})-[0-9a-f]{8}")


def desk_phone_of(channel: str) -> str:
    """The desk phone of a PJSIP channel name (``PJSIP/sam-desk-0000002a`` → ``sam-desk``;
    ``PJSIP/sam-desk-SRTP-0000002b``, its SRTP twin ringing it, too), or "" for anything
    else."""
    m = _CHANNEL.fullmatch(channel)
    return m.group(1).removesuffix(v.SRTP_TWIN) if m else ""


ATTENDED_EVENT = "AttendedTransfer"


def attended_parties(event: Mapping[str, str]) -> tuple[str, list[tuple[str, str, str]]]:
    """An ``AttendedTransfer`` event's transferring desk phone, and its two other ends (the
    transferee and the target) as (endpoint, channel, uniqueid); a channel that is no PJSIP
    channel has endpoint ""."""
    by = desk_phone_of(event.get("OrigTransfererChannel", ""))
    ends = [(desk_phone_of(event.get(f"{who}Channel", "")), event.get(f"{who}Channel", ""),
             event.get(f"{who}Uniqueid", "")) for who in ("Transferee", "TransferTarget")]
    return by, [(phone, channel, uniqueid) for phone, channel, uniqueid in ends if channel]


def transfer_from_args(args: Sequence[str]) -> Transfer:
    """The AGI arguments: transferring channel, digits, number, caller (each filtered by
    the dialplan; a missing one is empty and the core refuses)."""
    channel, digits, number, caller = [*args, "", "", "", ""][:4]
    return Transfer(desk_phone_of(channel), digits, number, caller, TransferKind.BLIND)


def transfer_variables(decision: TransferDecision, d: Directory) -> list[tuple[str, str]]:
    match decision:
        case RingTransferTarget():
            return [(v.DIAL, ring_targets(decision.contacts, d)),
                    (v.RING_SECONDS, str(decision.ring_seconds)),
                    (v.VOICEMAIL_BOX, decision.voicemail_box), (v.ACTION, v.TRANSFER_RING)]
        case TransferOut():
            return [(v.CALLER_ID_NUM, decision.number),
                    (v.CALLER_ID_NAME, decision.caller_id_name), (v.DIAL_TO, decision.to),
                    (v.VOICEMAIL_BOX, decision.voicemail_box), (v.ACTION, v.TRANSFER_OUT)]
        case TransferRefused():
            return [(v.DIAL, ring_targets(decision.back_to, d)),
                    (v.RING_SECONDS, str(decision.ring_seconds)),
                    (v.VOICEMAIL_BOX, decision.voicemail_box), (v.REFUSAL, decision.why.value),
                    (v.ACTION, v.TRANSFER_RING)]
        case _:
            assert_never(decision)


async def take_back(action: Callable[[dict[str, str]], Awaitable[object]], caller: str,
                    target: str, decision: TransferRefused, d: Directory) -> None:
    """Undo an attended transfer the rules refused (Asterisk joined the two already): the
    caller's channel is given the refusal's variables and sent to ring the transferring
    user's desk phones again, then the number's voicemail, as after a refused blind
    transfer; the outside party's channel, left alone in the bridge, is hung up.  Neither
    action is one to re-send after a reconnect: the channels will have moved on."""
    for name, value in transfer_variables(decision, d):
        await action({"Action": "Setvar", "Channel": caller, "Variable": name, "Value": value})
    await action({"Action": "Redirect", "Channel": caller,
                  "Context": v.context(v.TRANSFER_RING), "Exten": "s", "Priority": "1"})
    await action({"Action": "Hangup", "Channel": target})


def log_transfer(transfer: Transfer, decision: TransferDecision) -> None:
    log.info("%s transfer from desk phone %s to %s: %s%s", transfer.kind.value,
             transfer.desk_phone or "?", e164.redact(transfer.to)
             if len(transfer.to) > 6 else transfer.to, type(decision).__name__,
             f" ({decision.why.value})" if isinstance(decision, TransferRefused) else "")
