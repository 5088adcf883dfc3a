"""A SIPp carrier caller that leaves a voicemail: once answered it sends a tone (G.711 µ-law,
SIPp's ``rtp_stream``) and hangs up itself after ``talk_ms``, as a patient does after
speaking; a BYE from the PBX first (its longest message reached) ends the call too.  And
one that says nothing and hangs up when the test says so (``answered_caller``): at the beep,
told by the event of the voicemail starting, not by a pause."""

from __future__ import annotations

from pathlib import Path

from tests.harness.sipp import (
    _OK_TO_BYE,
    _OK_TO_REINVITE,
    _SEND_BYE,
    LOCAL,
    Host,
    SippProcess,
    _scenario,
    _start_caller,
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
    on_answer = (f'      <exec rtp_stream="{audio},-1,0"/>\n'
                 '      <ereg regexp=".*" search_in="hdr" header="To:" assign_to="remote_to"/>\n')
    talk = in_call(talk_ms)
    if _SEND_BYE not in talk:
        raise RuntimeError("in_call() no longer ends with the BYE this caller replaces")
    text = _scenario("uac_call.xml", EXTRA_HEADERS="", ON_ANSWER=on_answer, AFTER_ANSWER="",
                     IN_CALL=talk.replace(_SEND_BYE, _CALLER_BYE))
    return _start_caller("message", pbx, workdir, to, text, from_user=from_user,
                         caller_name=caller_name, timeout=timeout, host=host)


# Answered, it waits for the test's MESSAGE (tests.harness.cancelling_caller.hang_up), then
# hangs up; re-INVITEs meanwhile are answered, a BYE from the PBX ends the call too.
_UNTIL_TOLD = """\
  <label id="in_call"/>
  <recv request="INVITE" optional="true" next="reinvite"/>
  <recv request="BYE" optional="true" next="far_bye"/>
  <recv request="MESSAGE" next="hang_up"/>
"""


def answered_caller(pbx: tuple[str, int], workdir: Path, to: str, *, from_user: str,
                    timeout: float = 90.0, host: Host = LOCAL) -> SippProcess:
    """A started caller to ``to`` that, once answered, sends no audio and hangs up on
    ``hang_up(caller, once=200)``."""
    on_answer = '      <ereg regexp=".*" search_in="hdr" header="To:" assign_to="remote_to"/>\n'
    text = _scenario("uac_call.xml", EXTRA_HEADERS="", ON_ANSWER=on_answer, AFTER_ANSWER="",
                     IN_CALL=_UNTIL_TOLD + _OK_TO_REINVITE + _CALLER_BYE + _OK_TO_BYE)
    return _start_caller("answered", pbx, workdir, to, text, from_user=from_user,
                         timeout=timeout, host=host)
