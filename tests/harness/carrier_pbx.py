"""A carrier for the SIP edge tests: a second Asterisk, from the same chroot, in the WAN
namespace (tests/harness/netns.py), acting as the provider does.

- The practice's account (``ACCOUNT``, a password of the test's) has digest credentials: the
  provider challenges every request from the practice's address, its INVITEs included.
- ``registered=True``: the practice's calls go to where its REGISTER said it is (no REGISTER,
  no calls); otherwise to its address, a static contact (address authentication).
- A call from the PSTN (a SIPp at ``Topology.pstn``) to a practice number goes to the
  practice with the number spelt as ``did_form`` says (``${EXTEN:2}``: ``3125550100``).
- A call from the practice goes to the PSTN: a SIPp answering at ``pstn_port``.
- ``security.log`` (res_security_log) records each challenge and each successful digest.
- Media goes where the SDP says (no symmetric RTP): a practice behind NAT must advertise its
  public address to be heard.
- ``tls`` (a certificate and its key, PEM): the provider takes SIP over TLS on ``SIP_TLS_PORT``
  and reaches the practice over TLS only, at its TLS port (``practice_port``).
- ``srtp``: the practice's calls' media is SRTP only (SDES, inside that TLS), both ways.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from backline.localpbx.inotify import DirectoryWatch
from backline.localpbx.instance import AsteriskInstance
from backline.localpbx.instance_files import SECURITY_LOG_FILE
from backline.localpbx.pbxroot import ensure_root
from backline.localpbx.ports import AsteriskPorts
from tests.harness.netns import Topology

ACCOUNT = "maple-street"
SIP_PORT = 5060
SIP_TLS_PORT = 5061
AMI_PORT = 5038
TLS_CERT, TLS_KEY = "carrier-tls.pem", "carrier-tls.key"


@dataclass
class Carrier:
    instance: AsteriskInstance
    password: str
    pstn_port: int

    def security_log(self) -> str:
        """What res_security_log wrote so far (challenges, successful and failed digests)."""
        path = self.instance.host_path(self.instance.dir("log") / SECURITY_LOG_FILE)
        try:
            return path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, done: Callable[[str], bool], within: float = 30.0) -> str:
        """The security log once ``done(log)`` holds: Asterisk's logger writes from a
        thread of its own, after the request it logs was handled.  Sleeps on writes to the
        log directory (inotify); AssertionError after ``within`` s."""
        log_dir = self.instance.host_path(self.instance.dir("log"))
        deadline = time.monotonic() + within
        with DirectoryWatch(log_dir) as watch:
            while not done(log := self.security_log()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"the carrier's security log never showed it:\n{log}")
                select.select([watch], [], [], remaining)
                watch.drain()
        return log

    def stop(self) -> None:
        self.instance.stop()
        self.instance.remove()


def carrier_files(t: Topology, practice_port: int, password: str, *, registered: bool,
                  did_form: str, pstn_port: int, tls_dir: str = "",
                  srtp: bool = False) -> dict[str, str]:
    """``tls_dir``: where Asterisk reads TLS_CERT and TLS_KEY, when it takes TLS."""
    # Behind the practice's router, the practice is its public address.
    practice = t.pbx_wan if t.nat else t.pbx_lan
    over_tls = ";transport=tls" if tls_dir else ""
    contact = "" if registered else f"contact=sip:{practice}:{practice_port}{over_tls}\n"
    tls = (f"""
[transport-tls]
type=transport
protocol=tls
bind={t.carrier}:{SIP_TLS_PORT}
cert_file={tls_dir}/{TLS_CERT}
priv_key_file={tls_dir}/{TLS_KEY}
method=tlsv1_2
""" if tls_dir else "")
    media = (f"media_address={t.carrier}\nbind_rtp_to_media_address=yes\ndirect_media=no\n"
             "disallow=all\nallow=ulaw\n")
    srtp_lines = "media_encryption=sdes\nmedia_encryption_optimistic=no\n" if srtp else ""
    pjsip = f"""\
[global]
type=global
user_agent=Test Carrier
endpoint_identifier_order=ip,username

[transport-udp]
type=transport
protocol=udp
bind={t.carrier}:{SIP_PORT}
{tls}
; The practice: recognised by its address, and challenged on every request all the same.
[practice]
type=endpoint
context=from-practice
{"transport=transport-tls" + chr(10) if tls_dir else ""}{media}{srtp_lines}auth=practice-auth
aors={ACCOUNT}

[practice-auth]
type=auth
auth_type=userpass
username={ACCOUNT}
password={password}

[{ACCOUNT}]
type=aor
max_contacts=1
remove_existing=yes
{contact}
[practice-identify]
type=identify
endpoint=practice
match={t.pbx_lan},{t.pbx_wan}

; Everyone else on the telephone network.
[pstn]
type=endpoint
context=from-pstn
{media}aors=pstn

[pstn]
type=aor
contact=sip:{t.pstn}:{pstn_port}

[pstn-identify]
type=identify
endpoint=pstn
match={t.pstn}
"""
    extensions = f"""\
[general]
static=yes
writeprotect=yes

[from-pstn]
exten => _+1NXXNXXXXXX,1,Dial(PJSIP/{did_form}@practice,30)
 same => n,Hangup()

[from-practice]
exten => _+X.,1,Dial(PJSIP/pstn/sip:${{EXTEN}}@{t.pstn}:{pstn_port},30)
 same => n,Hangup()
exten => _X.,1,Dial(PJSIP/pstn/sip:${{EXTEN}}@{t.pstn}:{pstn_port},30)
 same => n,Hangup()
"""
    manager = f"""\
[general]
enabled=yes
port={AMI_PORT}
bindaddr=127.0.0.1
"""
    return {"pjsip.conf": pjsip, "extensions.conf": extensions, "manager.conf": manager}


def start_carrier(t: Topology, practice_port: int, *, registered: bool,
                  did_form: str = "${EXTEN}", tls: tuple[Path, Path] | None = None,
                  srtp: bool = False) -> Carrier:
    """The provider, started in ``t.wan`` (call from any thread: it starts its own);
    ``tls``: its certificate and key, for SIP over TLS (``practice_port`` is then the
    practice's TLS port)."""
    root = ensure_root()
    password = "carrier-" + os.urandom(8).hex()
    pstn_port = t.wan.free_port(t.pstn)
    ports = AsteriskPorts(sip=SIP_PORT, ami=AMI_PORT, rtp_start=20000, rtp_end=20200,
                          udptl_start=4000, udptl_end=4040)
    instance = AsteriskInstance(f"carrier-{t.prefix}", ports, root=root)
    files = carrier_files(t, practice_port, password, registered=registered,
                          did_form=did_form, pstn_port=pstn_port,
                          tls_dir=str(instance.dir("etc")) if tls else "", srtp=srtp)
    if tls:
        files |= {TLS_CERT: tls[0].read_text(), TLS_KEY: tls[1].read_text()}
    instance.set_files(files, write=False)
    instance.write_config()
    t.wan.call(instance.start)
    return Carrier(instance, password, pstn_port)


def security_events(log: str, event: str) -> list[str]:
    """The lines of ``log`` for one security event (``ChallengeSent``, ``SuccessfulAuth``)."""
    return [line for line in log.splitlines() if f'SecurityEvent="{event}"' in line]



