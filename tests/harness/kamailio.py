"""A real Kamailio (Debian's package) on loopback, running a rendered configuration.

Started in the foreground in its own process group, ready when it answers an OPTIONS (an
event, polled with a deadline), stopped by PID.  A missing ``kamailio`` fails the test that
needs it, naming the package.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType

from backline.core.connections import HostPort
from backline.render.kamailio import Node, Registrar, render_kamailio
from tests.harness import sipp
from tests.harness.ports import listen_port

MODULE_DIRS = sorted(Path("/usr/lib").glob("*/kamailio/modules"))


class KamailioMissing(RuntimeError):
    pass


def kamailio_binary() -> tuple[str, str]:
    """The kamailio executable and its module directory."""
    binary = shutil.which("kamailio") or ("/usr/sbin/kamailio"
                                          if Path("/usr/sbin/kamailio").exists() else None)
    if binary is None or not MODULE_DIRS:
        raise KamailioMissing("kamailio is not installed: install the Debian package "
                              "`kamailio` (scripts/setup.sh does)")
    return binary, str(MODULE_DIRS[-1])


def free_sip_port() -> int:
    """A port free on 127.0.0.1 for both UDP and TCP right now (tests/harness/ports.py):
    kamailio.cfg listens on both, and Kamailio exits at start if either is taken."""
    return listen_port()


def options_ping(address: HostPort, timeout: float) -> int | None:
    """Send one OPTIONS over UDP; the response's status code, or None without an answer."""
    call_id = uuid.uuid4().hex
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.settimeout(timeout)
        request = (f"OPTIONS sip:{address.host}:{address.port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{call_id[:16]};rport\r\n"
                   "Max-Forwards: 70\r\n"
                   f"From: <sip:probe@127.0.0.1:{port}>;tag={call_id[:8]}\r\n"
                   f"To: <sip:{address.host}:{address.port}>\r\n"
                   f"Call-ID: {call_id}@127.0.0.1\r\n"
                   "CSeq: 1 OPTIONS\r\n"
                   "Content-Length: 0\r\n\r\n")
        sock.sendto(request.encode(), (address.host, address.port))
        try:
            data = sock.recv(65535)
        except (TimeoutError, ConnectionRefusedError):
            return None
    status = data.split(b" ", 2)
    return int(status[1]) if len(status) > 1 and status[1].isdigit() else None


def answering_node(workdir: Path, name: str, talk_ms: int = 200, *,
                   late_ringing: bool = False) -> sipp.SippProcess:
    """A started SIPp UAS standing in for a PBX node: answers every INVITE, hangs up after
    ``talk_ms``.  Unlike the desk-phone UAS it copies Record-Route into its responses, as
    Asterisk does, so the ACK and BYE travel through the proxy that recorded the route.
    ``late_ringing``: it sends its 180 after its 200 (and the ACK), as a proxy relaying the
    two from different workers may hand them on."""
    port, media_port = sipp.free_udp_port(), sipp.free_media_port()
    text = sipp._scenario("uas_answer.xml", ON_INVITE=sipp._CAPTURE_DIALOG,
                          IN_CALL=sipp.in_call(talk_ms))
    # The first two responses are the INVITE's 180 and 200 (uas_answer.xml).
    text = text.replace("[last_CSeq:]\n", "[last_CSeq:]\n      [last_Record-Route:]\n", 2)
    if late_ringing:
        ringing = text.index("  <send>\n    <![CDATA[\n\n      SIP/2.0 180 Ringing")
        answer = text.index('  <send retrans="500">')
        # After the ACK: SIPp takes an ACK that arrives between two sends as unexpected.
        acked = text.index("\n", text.index('  <recv request="ACK"')) + 1
        text = text[:ringing] + text[answer:acked] + text[ringing:answer] + text[acked:]
    args = [*sipp._common_args(port, media_port), "-aa", "-timeout", "300s"]
    return sipp.SippProcess(name, workdir / f"{name}-{port}", text, args, port=port).start()


class Kamailio:
    """One Kamailio in ``workdir`` dispatching to ``nodes`` from ``listen``."""

    def __init__(self, workdir: Path, listen: HostPort, nodes: list[Node],
                 carrier: str = "127.0.0.1", ring_timeout_ms: int = 120_000, *,
                 registrar: Registrar | None = None, logins: dict[str, str] | None = None,
                 secrets: dict[str, str] | None = None) -> None:
        """With a ``registrar`` (its ``auth_dir`` is ``workdir``) Kamailio is the desk
        phones' registrar; libpq finds the database password through ``PGPASSFILE``."""
        self.binary, module_dir = kamailio_binary()
        if registrar is not None and registrar.tls is not None \
                and not (Path(module_dir) / "tls.so").exists():
            raise KamailioMissing("Kamailio's TLS module is not installed: install the Debian "
                                  "package `kamailio-tls-modules` (scripts/setup.sh does)")
        self.workdir = workdir
        self.listen = listen
        workdir.mkdir(parents=True, exist_ok=True)
        for f in render_kamailio(listen, nodes, str(workdir), module_dir, carrier=carrier,
                                 ring_timeout_ms=ring_timeout_ms, registrar=registrar,
                                 logins=logins, secrets=secrets):
            (workdir / f.name).write_text(f.text)
        self.cfg = workdir / "kamailio.cfg"
        self.log_path = workdir / "kamailio.log"
        self.process: subprocess.Popen[bytes] | None = None

    def check(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.binary, "-c", "-f", str(self.cfg)], capture_output=True,
                              text=True, timeout=60, check=False)

    def start(self, timeout: float = 30.0) -> Kamailio:
        run = self.workdir / "run"
        run.mkdir(exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [self.binary, "-f", str(self.cfg), "-DD", "-E", "-Y", str(run),
                 "-m", "64", "-M", "8"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, process_group=0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kamailio exited with {self.process.returncode}:\n"
                                   f"{self.log()}")
            if options_ping(self.listen, 0.2) == 200 and self._accepts_tcp():
                return self
        self.stop()
        raise RuntimeError(f"kamailio did not answer OPTIONS within {timeout}s:\n{self.log()}")

    def _accepts_tcp(self) -> bool:
        """Its TCP listener (the same port) takes a connection: both transports are up."""
        try:
            with socket.create_connection((self.listen.host, self.listen.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Stop Kamailio's whole process group (its workers), even when the main process has
        already exited: the workers it forked may outlive it and keep the ports."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):  # gone: nothing left of ours
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # any worker that ignored SIGTERM
        self.process.wait(timeout=15)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> Kamailio:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
