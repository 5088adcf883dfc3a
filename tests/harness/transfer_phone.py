"""SIPp desk phones for transfers, and audio both ways.

- ``transferring_phone()``: a registered desk phone that answers a call, talks a while, then
  presses its transfer button: a blind transfer (REFER) to an extension or a number.
- ``tone_file()``: G.711 µ-law audio that SIPp's ``rtp_stream`` sends once answered
  (``audio=`` on these phones and on ``talking_caller``/``talking_phone``), so that what
  Asterisk received and sent on each leg can be counted.
"""

from __future__ import annotations

import math
from pathlib import Path

from tests.harness.sipp import (
    LOCAL,
    Host,
    SippError,
    SippProcess,
    _common_args,
    _scenario,
    _start_caller,
    free_media_port,
    free_udp_port,
    in_call,
    register,
)


def tone_file(path: Path, seconds: float = 30.0) -> Path:
    """Raw µ-law (8 kHz) of a 440 Hz tone: what a talking party sends."""
    samples = bytearray()
    for i in range(int(8000 * seconds)):
        samples.append(_ulaw(int(8000 * math.sin(2 * math.pi * 440 * i / 8000))))
    path.write_bytes(bytes(samples))
    return path


def _ulaw(sample: int) -> int:
    """ITU-T G.711 µ-law of a 16-bit sample."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84
    exponent = max(0, magnitude.bit_length() - 8)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def _audio(audio: Path | None) -> str:
    # Looped for the call's life (-1); payload type 0 (PCMU).
    return (f'  <nop><action><exec rtp_stream="{audio},-1,0"/></action></nop>\n'
            if audio is not None else "")


def _audio_action(audio: Path) -> str:
    """Start ``audio`` as an action of the step that answers the call (the 200 OK received,
    the INVITE taken): a step of its own after the answer lets a re-INVITE (Asterisk's
    connected-line update) arrive while the call stands there, and SIPp aborts the call."""
    return f'      <exec rtp_stream="{audio},-1,0"/>\n'


def transferring_phone(pbx: tuple[str, int], workdir: Path, user: str, password: str,
                       target: str, *, aor: str, talk_ms: int = 3000,
                       audio: Path | None = None) -> SippProcess:
    """A registered desk phone whose first call it answers, then blind-transfers to
    ``target`` after ``talk_ms``; it hangs up once the PBX accepted the transfer."""
    port, media = free_udp_port(), free_media_port()
    text = _scenario("uas_transfer.xml", ON_ANSWER=_audio(audio),
                     TALK=f'  <recv request="INVITE" timeout="{int(talk_ms)}" '
                          'ontimeout="refer"/>\n')
    args = [*_common_args(port, media), "-aa", "-key", "target", target, "-key", "pbx",
            f"{pbx[0]}:{pbx[1]}", "-m", "1",
            "-timeout", "120s"]
    uas = SippProcess(f"transfer-{user}", workdir / f"transfer-{user}-{port}", text, args,
                      port=port).start()
    try:
        register(pbx, workdir, user, password, contact_port=uas.port, aor=aor)
    except SippError:
        uas.kill()
        raise
    return uas


def talking_phone(pbx: tuple[str, int], workdir: Path, user: str, password: str, *,
                  aor: str, audio: Path, host: Host = LOCAL) -> SippProcess:
    """A registered desk phone that answers, sends ``audio`` and waits for the PBX's BYE."""
    port, media = host.free_udp_port(), host.free_media_port()
    text = _scenario("uas_answer.xml", ON_INVITE=f"    <action>\n{_audio_action(audio)}"
                     "    </action>", IN_CALL=in_call())
    args = [*_common_args(port, media, host), "-aa", "-timeout", "120s"]
    uas = SippProcess(f"phone-{user}", workdir / f"phone-{user}-{port}", text, args,
                      port=port, host=host).start()
    try:
        register(pbx, workdir, user, password, contact_port=uas.port, aor=aor, host=host)
    except SippError:
        uas.kill()
        raise
    return uas


def talking_caller(pbx: tuple[str, int], workdir: Path, to: str, *, from_user: str,
                   audio: Path, timeout: float = 60.0, host: Host = LOCAL) -> SippProcess:
    """A carrier caller that sends ``audio`` once answered and waits for the PBX's BYE."""
    text = _scenario("uac_call.xml", EXTRA_HEADERS="", ON_ANSWER=_audio_action(audio),
                     AFTER_ANSWER="",
                     IN_CALL=in_call())
    return _start_caller("caller", pbx, workdir, to, text, from_user=from_user,
                         timeout=timeout, host=host)
