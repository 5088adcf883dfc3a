"""A SIPp carrier caller that leaves a voicemail: once answered it sends a tone (G.711 µ-law,
SIPp's ``rtp_stream``) and hangs up itself after ``talk_ms``, as a patient does after
speaking; a BYE from the PBX first (its longest message reached) ends the call too."""

from __future__ import annotations

from pathlib import Path

from tests.harness.sipp import (
    _SEND_BYE,
    LOCAL,
    Host,
    SippProcess,
    _common_args,
    _scenario,
    in_call,
)

# The caller's own BYE: From is ours (the INVITE's tag), To the PBX's as its 200 OK gave it.
_CALLER_BYE = """\
  <label id="hang_up"/>
  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "[caller_name]" <sip:[from_user]@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
      To:[$remote_to]
      [routes]
      Call-ID: [call_id]
      CSeq: 10 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" next="end"/>
"""


def message_caller(pbx: tuple[str, int], workdir: Path, to: str, *, from_user: str,
                   audio: Path, talk_ms: int, caller_name: str = "", timeout: float = 90.0,
                   host: Host = LOCAL) -> SippProcess:
    """A started caller to ``to`` that talks (``audio``, looped) for ``talk_ms`` once
    answered, then hangs up; ``caller_name`` is the From's display name."""
    if '"' in caller_name or "\n" in caller_name:
        raise ValueError(f"caller name must not contain quotes or newlines: {caller_name!r}")
    port, media = host.free_udp_port(), host.free_media_port()
    on_answer = (f'      <exec rtp_stream="{audio},-1,0"/>\n'
                 '      <ereg regexp=".*" search_in="hdr" header="To:" assign_to="remote_to"/>\n')
    talk = in_call(talk_ms)
    if _SEND_BYE not in talk:
        raise RuntimeError("in_call() no longer ends with the BYE this caller replaces")
    text = _scenario("uac_call.xml", EXTRA_HEADERS="", ON_ANSWER=on_answer, AFTER_ANSWER="",
                     IN_CALL=talk.replace(_SEND_BYE, _CALLER_BYE))
    args = [*_common_args(port, media, host), "-aa", "-s", to, "-key", "from_user", from_user,
            "-key", "caller_name", caller_name, "-m", "1", "-l", "1", "-timeout", f"{timeout:g}s",
            "-timeout_error", "-recv_timeout", str(int(timeout * 1000)),
            f"{pbx[0]}:{pbx[1]}"]
    return SippProcess(f"message-{from_user}", workdir / f"message-{port}", text, args,
                       port=port, host=host).start()
