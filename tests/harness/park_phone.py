"""SIPp desk phones for call parking: a BLF key watching a slot, and a desk phone that
dials a slot and talks (audio by SIPp's ``rtp_stream``, counted by Asterisk)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.harness.sipp import (
    SipMessage,
    SippProcess,
    _common_args,
    _scenario,
    free_media_port,
    free_udp_port,
    in_call,
)

_STATE = re.compile(r"<state[^>]*>([a-z]+)</state>")


def blf_key(pbx: tuple[str, int], workdir: Path, phone: str, password: str,
            extension: str) -> SippProcess:
    """A started BLF key of ``phone`` subscribed (dialog events) to ``extension``; it runs
    until killed, answering each NOTIFY."""
    port = free_udp_port()
    args = [*_common_args(port, free_media_port()), "-s", extension, "-key", "from_user",
            phone, "-au", phone, "-ap", password, "-m", "1", "-timeout", "120s",
            f"{pbx[0]}:{pbx[1]}"]
    return SippProcess(f"blf-{phone}-{extension}", workdir / f"blf-{phone}-{port}",
                       _scenario("subscribe_blf.xml"), args, port=port).start()


def dialog_states(messages: list[SipMessage]) -> list[str]:
    """The dialog state (RFC 4235: terminated, early, confirmed ...) each NOTIFY received
    carried, in order; a NOTIFY that names no dialog is the extension idle ("terminated")."""
    states = []
    for m in messages:
        if m.direction == "received" and m.method == "NOTIFY":
            found = _STATE.findall(m.body)
            states.append(found[-1] if found else "terminated")
    return states


def talking_desk_caller(pbx: tuple[str, int], workdir: Path, phone: str, password: str,
                        to: str, audio: Path, timeout: float = 60.0) -> SippProcess:
    """A desk phone that dials ``to`` (answering the digest challenge), sends ``audio`` once
    answered and waits for the PBX's BYE."""
    port, media = free_udp_port(), free_media_port()
    # Started as the 200 OK arrives (see uac_call.xml's ON_ANSWER).
    sending = f'      <exec rtp_stream="{audio},-1,0"/>\n'
    text = _scenario("uac_call.xml", EXTRA_HEADERS="", ON_ANSWER=sending, AFTER_ANSWER="",
                     IN_CALL=in_call())
    args = [*_common_args(port, media), "-aa", "-s", to, "-key", "from_user", phone,
            "-key", "caller_name", "", "-au", phone, "-ap", password, "-m", "1", "-l", "1",
            "-timeout", f"{timeout:g}s", "-timeout_error", "-recv_timeout",
            str(int(timeout * 1000)), f"{pbx[0]}:{pbx[1]}"]
    return SippProcess(f"desk-{phone}-{to}", workdir / f"desk-{phone}-{port}", text, args,
                       port=port).start()
