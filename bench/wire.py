"""SIP INVITEs as the kernel saw them leave, for bench.emergency: dumpcap on the loopback
interface, a capture filter for the bench's own ports only, read back by tshark.

The time a SIPp logs for a packet is when that SIPp got to run: with the carrier on the same
two shared cores as Asterisk and the controller, an INVITE that Asterisk has sent waits for the
carrier's turn, and that turn comes later when anything else woke at the same moment (the
controller acting on a 911's DialBegin, the manager thread writing it).  The capture's stamp
is taken as the sender hands the packet to the interface, whoever reads it and when.
"""

from __future__ import annotations

import csv
import signal
import subprocess
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path


class CaptureError(Exception):
    """dumpcap would not capture, or tshark could not read what it wrote."""


@dataclass(frozen=True, slots=True)
class Invite:
    """One INVITE on the wire (its first sending: retransmissions share its Call-ID)."""

    at: float  # seconds since the epoch, the kernel's stamp
    to_port: int
    dialled: str  # the request-URI's user
    from_user: str
    call_id: str
    credentials: bool  # carries Authorization: the INVITE the PBX routes


class Capture:
    """dumpcap on ``lo`` for UDP to ``ports`` into ``path``: start() returns once it
    captures (its own word on stderr), stop() ends it and returns the INVITEs."""

    def __init__(self, path: Path, ports: Collection[int]) -> None:
        self.path, self.ports = path, sorted(ports)
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> Capture:
        bpf = "udp and (" + " or ".join(f"dst port {p}" for p in self.ports) + ")"
        self._proc = subprocess.Popen(
            ["dumpcap", "-i", "lo", "-f", bpf, "-P", "-w", str(self.path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)
        assert self._proc.stderr is not None
        said = []
        for line in self._proc.stderr:  # ends when dumpcap exits: then it never captured
            said.append(line.strip())
            if line.startswith("Capturing on"):
                return self
        self._proc.wait()
        raise CaptureError(f"dumpcap did not capture: {' / '.join(said)}")

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def stop(self, timeout: float = 30.0) -> list[Invite]:
        """End the capture (SIGINT: dumpcap writes what it holds) and read its INVITEs."""
        if self._proc is None:
            raise CaptureError("the capture was never started")
        self._proc.send_signal(signal.SIGINT)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise CaptureError(f"dumpcap did not stop within {timeout:g} s") from None
        return invites(self.path, self.ports)


FIELDS = ("frame.time_epoch", "udp.dstport", "sip.r-uri.user", "sip.from.user",
          "sip.Call-ID", "sip.Authorization")


def invites(pcap: Path, ports: Collection[int]) -> list[Invite]:
    """The INVITEs in ``pcap`` (SIP on ``ports``), in time order, each Call-ID's first."""
    decode = [a for p in ports for a in ("-d", f"udp.port=={p},sip")]
    done = subprocess.run(
        ["tshark", "-n", "-r", str(pcap), *decode, "-Y", 'sip.Method == "INVITE"',
         "-T", "fields", "-E", "separator=/t", "-E", "occurrence=f",
         *[a for f in FIELDS for a in ("-e", f)]],
        capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise CaptureError(f"tshark could not read {pcap}: {done.stderr.strip()[-300:]}")
    return first_sendings(done.stdout)


def first_sendings(fields: str) -> list[Invite]:
    """tshark's FIELDS lines, tab-separated, as Invites: retransmissions (a Call-ID seen
    with the same credentials or none) left out, in time order."""
    seen: set[tuple[str, bool]] = set()
    out = []
    for row in csv.reader(fields.splitlines(), delimiter="\t"):
        if len(row) != len(FIELDS):
            continue
        at, port, dialled, from_user, call_id, auth = row
        key = (call_id, bool(auth))
        if key in seen:
            continue
        seen.add(key)
        out.append(Invite(float(at), int(port), dialled, from_user, call_id, bool(auth)))
    return sorted(out, key=lambda i: i.at)
