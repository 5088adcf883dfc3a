"""A SIPp carrier caller that hangs up while the desk phones ring (a CANCEL), when the test
says so: ``hang_up`` sends the caller a SIP request of its own call (a MESSAGE with its
Call-ID), on which the scenario CANCELs.  The test decides the moment by an event (the
controller stopped), not by a pause the caller would have to guess."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.harness.sipp import LOCAL, SippProcess, _common_args, audio_sdp

_SCENARIO = """\
<?xml version="1.0" encoding="UTF-8" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="Backline caller hanging up while it rings">

  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[from_user]@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:[from_user]@[local_ip]:[local_port]>
      Max-Forwards: 70
      User-Agent: Backline test caller
      Content-Type: application/sdp
      Content-Length: [len]

""" + audio_sdp("[from_user]", 2353687637) + """
    ]]>
  </send>

  <recv response="100" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="180">
    <action>
      <ereg regexp="branch=[^;]*" search_in="hdr" header="Via:" assign_to="branch"/>
    </action>
  </recv>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv request="MESSAGE"/>

  <send>
    <![CDATA[

      CANCEL sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];[$branch]
      From: <sip:[from_user]@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 CANCEL
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>

  <recv response="200"/>
  <recv response="487"/>

  <send>
    <![CDATA[

      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];[$branch]
      From: <sip:[from_user]@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>

</scenario>
"""


def ringing_caller(pbx: tuple[str, int], workdir: Path, to: str, *, from_user: str,
                   timeout: float = 120.0) -> SippProcess:
    """A started caller to ``to`` that rings until ``hang_up`` (then CANCELs)."""
    port, media = LOCAL.free_udp_port(), LOCAL.free_media_port()
    args = [*_common_args(port, media), "-s", to, "-key", "from_user", from_user,
            "-m", "1", "-l", "1", "-timeout", f"{timeout:g}s", "-timeout_error",
            "-recv_timeout", str(int(timeout * 1000)), f"{pbx[0]}:{pbx[1]}"]
    return SippProcess(f"ringing-{from_user}", workdir / f"ringing-{port}", _SCENARIO, args,
                       port=port).start()


def hang_up(caller: SippProcess, once: int = 180) -> None:
    """Tell ``caller`` to hang up: a MESSAGE in its call, sent to its SIP port, once it has
    the response ``once`` (180: ringing; 200: answered, for
    tests.harness.voicemail_caller.answered_caller).  The scenario takes the MESSAGE only
    after it: before, SIPp would abort the call on an unexpected message."""
    caller.wait_for_messages(lambda ms: any(m.direction == "received" and m.status == once
                                            for m in ms))
    [invite] = [m for m in caller.messages() if m.direction == "sent" and m.method == "INVITE"]
    call_id = invite.header("Call-ID")
    assert call_id, invite
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOCAL.address, 0))
        here = s.getsockname()[1]
        s.sendto((f"MESSAGE sip:caller@{LOCAL.address}:{caller.port} SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP {LOCAL.address}:{here};branch=z9hG4bK-hang-up\r\n"
                  f"From: <sip:test@{LOCAL.address}>;tag=hang-up\r\n"
                  f"To: <sip:caller@{LOCAL.address}>\r\n"
                  f"Call-ID: {call_id}\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n"
                  "Content-Length: 0\r\n\r\n").encode(), (LOCAL.address, caller.port))
