"""What bench.calls and bench.outage change in the test practice's running Asterisk, the same
in every arm, so that the bench measures the PBX and the controller, not a resolver timeout or
a small port range; and the error for a comparison that could not be set up fairly."""

from __future__ import annotations

import contextlib
import re
import shutil
from pathlib import Path

from backline.localpbx.instance import AsteriskInstance
from backline.localpbx.ports import LOOPBACK

ANSWERS = ("ana-desk", "ana")  # (desk phone, login): answers every call at once
RINGS = ("mia-desk", "mia")  # rings until Asterisk cancels it
CARRIER_USER = "carrier"  # the test practice's trunk From user


class BenchError(Exception):
    """The bench could not set up a fair comparison (e.g. the arms would ring differently)."""


ENDPOINT_LINE = "type=endpoint\n"
LOOPBACK_RTP = f"media_address={LOOPBACK}\nbind_rtp_to_media_address=yes\n"


def rtp_on_loopback(pjsip_conf: str) -> str:
    """Every endpoint's RTP bound to the loopback address instead of the wildcard.

    With RTP on 0.0.0.0, Asterisk looks up its own hostname, then A.ROOT-SERVERS.NET, for
    each RTP session's RTCP (acl.c ast_find_ourip): six DNS queries a call here, since the
    chroot has no /etc/hosts.  They leave the machine, and one lost query stalls the PJSIP
    thread for the resolver's 5 s timeout, which is what the bench would then measure.
    Raises BenchError if there is no endpoint to change.
    """
    if ENDPOINT_LINE not in pjsip_conf:
        raise BenchError("pjsip.conf has no endpoint")
    return pjsip_conf.replace(ENDPOINT_LINE, ENDPOINT_LINE + LOOPBACK_RTP)


def bind_rtp_to_loopback(instance: AsteriskInstance) -> None:
    """rtp_on_loopback() on the running instance's pjsip.conf, reloaded; raise BenchError
    unless Asterisk then shows the setting on the endpoints."""
    path = instance.host_path(instance.dir("etc")) / "pjsip.conf"
    path.write_text(rtp_on_loopback(path.read_text()))
    instance.cli("module reload res_pjsip.so")
    for phone in (ANSWERS[0], RINGS[0], CARRIER_USER):
        shown = instance.cli(f"pjsip show endpoint {phone}")
        if not re.search(r"bind_rtp_to_media_address\s*:\s*true", shown):
            raise BenchError(f"endpoint {phone}: RTP still on the wildcard address")


RTP_PORTS = 6000  # 3000 RTP sessions: a thousand three-leg calls, or outage calls, at once
RTP_TOP = 32000  # below the kernel's ephemeral range (32768 up), as localpbx/ports.py keeps


def widen_rtp_range(instance: AsteriskInstance) -> int:
    """Give the running instance up to RTP_PORTS RTP ports from its own start (below RTP_TOP),
    reload, and return how many it has.

    The test practice has 100 (tests/harness/practice_pbx.py): 50 RTP sessions, so 16 calls of
    three legs at once, reached near 80 calls a second; past that Asterisk refuses calls for
    want of a port, and the bench would measure the port range.  The arms' ranges may overlap:
    Asterisk tries the next port when one is taken.  Raises BenchError unless Asterisk then
    reports the new range.
    """
    start = instance.ports.rtp_start
    end = min(start + RTP_PORTS, RTP_TOP)
    if end - start < 1000:
        raise BenchError(f"RTP range {start}-{end}: too few ports below {RTP_TOP}")
    path = instance.host_path(instance.dir("etc")) / "rtp.conf"
    path.write_text(f"[general]\nrtpstart = {start}\nrtpend = {end}\n")
    instance.cli("module reload res_rtp_asterisk.so")
    shown = instance.cli("rtp show settings")
    if not re.search(rf"Port end:\s*{end}\b", shown):
        raise BenchError(f"the RTP range did not change:\n{shown}")
    return end - start


def keep_log(instance: AsteriskInstance, to: Path) -> None:
    with contextlib.suppress(OSError):
        shutil.copy(instance.log_path, to)

