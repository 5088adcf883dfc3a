"""SIPp desk phones and callers against a local Asterisk, driven by PID.

Each SIPp process gets its own working directory (message log, statistics,
errors), its own SIP port (`-p`) and media port (`-mp`), and binds only to
127.0.0.1 except for SIPp's UDP control socket, which SIPp always binds on
0.0.0.0 (we give it a free `-cp` so parallel SIPps do not race for 8888).

Roles (scenarios in tests/harness/sipp/):
- `desk_phone()`: a UAS that answers, rings unanswered, or rejects every
  INVITE, registered (digest auth) as a SIP user with its Contact on the UAS.
- `register()`: one REGISTER (with digest auth) as a SIP user.
- `place_calls()`: a caller (carrier or desk phone) that places N calls,
  may send DTMF, and EXPECTS the PBX's BYE.

Waiting is on process exit (pidfd) or on writes to the working directory
(inotify), never on a fixed sleep.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from backline.localpbx.inotify import DirectoryWatch
from backline.localpbx.ports import LOOPBACK
from tests.harness.netns import Namespace
from tests.harness.ports import listen_port, media_port_pair

SCENARIOS = Path(__file__).with_name("sipp")
SIPP = "sipp"

MESSAGES = "messages.log"
STATS = "stats.csv"
ERRORS = "errors.log"
STDERR = "stderr.log"

# SIPp exit codes (sipp(1)): 0 all calls succeeded, 1 some failed, 97 exit on
# internal command, 99 normal exit without calls processed.
EXIT_OK = 0
EXIT_NO_CALLS = 99


class SippError(Exception):
    """A SIPp process failed to start, or its run did not go as required."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"sipp {name}: {detail}")
        self.name = name
        self.detail = detail


# ----- where SIPp runs


@dataclass(frozen=True)
class Host:
    """Where a SIPp runs: the address it binds (SIP and media) and, when not this process's
    own, the network namespace it runs in (tests/harness/netns.py)."""

    address: str = LOOPBACK
    netns: str = ""

    def argv(self, command: list[str]) -> list[str]:
        return Namespace(self.netns).argv(*command) if self.netns else command

    def free_udp_port(self) -> int:
        if not self.netns:
            return free_udp_port()
        return Namespace(self.netns).free_port(self.address)

    def free_media_port(self) -> int:
        if not self.netns:
            return free_media_port()
        return Namespace(self.netns).free_media_port(self.address)


LOCAL = Host()


# ----- ports


def free_udp_port() -> int:
    """A UDP port free on 127.0.0.1 right now, one of the worker's own below the ephemeral
    range (tests/harness/ports.py): a client socket of any process can take an ephemeral
    port before SIPp binds it."""
    return listen_port()


def free_media_port() -> int:
    """An even UDP port P with P and P+2 free on loopback (SIPp's -mp audio and video), as
    :func:`free_udp_port` picks them (SIPp once found its video port taken)."""
    return media_port_pair()


# ----- results


@dataclass(frozen=True)
class SipMessage:
    """One SIP message from SIPp's message log (`-trace_msg`)."""

    direction: Literal["sent", "received"]
    start_line: str
    headers: tuple[tuple[str, str], ...]
    body: str

    @property
    def method(self) -> str | None:
        """The request method, or None for a response."""
        first = self.start_line.split(" ", 1)[0]
        return None if first.startswith("SIP/") else first

    @property
    def status(self) -> int | None:
        """The response code, or None for a request."""
        parts = self.start_line.split(" ", 2)
        if parts[0].startswith("SIP/") and len(parts) > 1 and parts[1].isdigit():
            return int(parts[1])
        return None

    def header(self, name: str) -> str | None:
        """The first value of header NAME (case-insensitive), or None."""
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        """Every value of header NAME (case-insensitive)."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]


_ENTRY_SEPARATOR = re.compile(r"^-{20,} .*$", re.MULTILINE)
_DIRECTION = re.compile(r"^\w+ message (sent|received)\b")


def parse_message_log(text: str) -> list[SipMessage]:
    """Parse a SIPp `-trace_msg` log into messages, in log order (retransmissions too)."""
    messages = []
    for entry in _ENTRY_SEPARATOR.split(text):
        lines = entry.strip("\n").split("\n")
        found = _DIRECTION.match(lines[0]) if lines else None
        if found is None:
            continue  # SIPp's own notes, e.g. "Aborting call on unexpected message"
        raw = "\n".join(lines[1:]).replace("\r\n", "\n").lstrip("\n")
        head, _, body = raw.partition("\n\n")
        head_lines = head.split("\n")
        headers = []
        for line in head_lines[1:]:
            key, sep, value = line.partition(":")
            if sep:
                headers.append((key.strip(), value.strip()))
        direction: Literal["sent", "received"] = (
            "sent" if found.group(1) == "sent" else "received"
        )
        messages.append(SipMessage(direction, head_lines[0].strip(), tuple(headers), body))
    return messages


@dataclass(frozen=True)
class SippResult:
    """How a SIPp run ended: exit code and its final call counters."""

    returncode: int
    created: int
    successful: int
    failed: int

    @property
    def ok(self) -> bool:
        """Every call went through the scenario to its end."""
        return self.returncode == EXIT_OK and self.failed == 0


def parse_stats(text: str) -> dict[str, str]:
    """The last row of a SIPp `-trace_stat` CSV (';'-separated), keyed by column."""
    rows = [line for line in text.splitlines() if line.strip()]
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0].split(";"), rows[-1].split(";"), strict=False))


# ----- one process


class SippProcess:
    """One SIPp process: started by start(), ended by wait()/stop()/kill() by PID.

    Every wait returns on the event itself (a file SIPp writes, its exit); the timeouts, 30 s
    by default, only bound a hang: a loaded 2-core machine is slower than any promise."""

    def __init__(
        self, name: str, workdir: Path, scenario_text: str, args: Sequence[str], *, port: int,
        host: Host = LOCAL,
    ) -> None:
        self.name = name
        self.host = host
        self.workdir = workdir
        self.port = port  # our SIP port (-p): a desk phone's Contact
        self.scenario = workdir / "scenario.xml"
        self.args = list(args)
        self._scenario_text = scenario_text
        self._proc: subprocess.Popen[bytes] | None = None
        self._pidfd: int | None = None
        self.result: SippResult | None = None

    @property
    def pid(self) -> int | None:
        """PID of the SIPp process while it is ours to wait for."""
        return self._proc.pid if self._proc is not None else None

    def argv(self) -> list[str]:
        """The full SIPp command line."""
        w = self.workdir
        return self.host.argv([
            SIPP,
            "-sf", str(self.scenario),
            "-nostdin",
            "-trace_msg", "-message_file", str(w / MESSAGES),
            "-trace_stat", "-stf", str(w / STATS),
            "-trace_err", "-error_file", str(w / ERRORS),
            *self.args,
        ])  # fmt: skip

    def start(self, timeout: float = 30.0) -> Self:
        """Launch SIPp and wait until its sockets are bound.

        SIPp creates its statistics file right after binding the SIP and media
        sockets, so that file appearing is the "ready" event.  Raises SippError
        (with SIPp's stderr) if it exits first or the timeout passes.
        """
        if self._proc is not None:
            raise SippError(self.name, "already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        for stale in (MESSAGES, STATS, ERRORS):
            (self.workdir / stale).unlink(missing_ok=True)
        self.scenario.write_text(self._scenario_text)
        with DirectoryWatch(self.workdir) as watch:
            with open(self.workdir / STDERR, "wb") as stderr:
                self._proc = subprocess.Popen(
                    self.argv(),
                    cwd=self.workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,  # the live screen: unreadable, not needed
                    stderr=stderr,
                    start_new_session=True,
                )
            self._pidfd = os.pidfd_open(self._proc.pid)
            started = False
            try:
                started = self._wait_event(
                    watch, lambda: (self.workdir / STATS).exists(), time.monotonic() + timeout
                )
            finally:
                if not started:
                    self.kill()
        if not started:
            raise SippError(self.name, f"did not start: {self._diagnostics()}")
        return self

    def _wait_event(self, watch: DirectoryWatch, done: Callable[[], bool], deadline: float) -> bool:
        """Until done() or the deadline, sleep on writes in workdir; False if SIPp exited."""
        assert self._pidfd is not None
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SippError(self.name, f"timed out: {self._diagnostics()}")
            readable, _, _ = select.select([watch.fileno(), self._pidfd], [], [], remaining)
            if self._pidfd in readable:
                return done()
            watch.drain()
        return True

    def _exited(self, timeout: float) -> bool:
        assert self._pidfd is not None
        readable, _, _ = select.select([self._pidfd], [], [], timeout)
        return bool(readable)

    def wait(self, timeout: float = 30.0) -> SippResult:
        """Wait for SIPp to exit by itself (a caller's last call ended)."""
        if self._proc is None:
            return self._final()
        if not self._exited(timeout):
            self.kill()
            raise SippError(self.name, f"still running after {timeout} s; killed")
        return self._reap()

    def stop(self, timeout: float = 30.0) -> SippResult:
        """Ask SIPp to finish (SIGUSR1: no new calls, end current ones), SIGKILL on timeout."""
        if self._proc is None:
            return self._final()
        if not self._exited(0):
            self._proc.send_signal(signal.SIGUSR1)
            if not self._exited(timeout):
                self._proc.send_signal(signal.SIGKILL)
                self._exited(timeout)
        return self._reap()

    def kill(self) -> None:
        """SIGKILL SIPp now (cleanup after a failure)."""
        if self._proc is None:
            return
        if self._pidfd is None or not self._exited(0):
            self._proc.send_signal(signal.SIGKILL)
        self._reap()

    def _reap(self) -> SippResult:
        assert self._proc is not None
        self._proc.wait()  # already exited (pidfd readable): reaps without blocking
        if self._pidfd is not None:
            os.close(self._pidfd)
        self._pidfd = None
        self.result = self._read_result(self._proc.returncode)
        self._proc = None
        return self.result

    def _final(self) -> SippResult:
        if self.result is None:
            raise SippError(self.name, "never started")
        return self.result

    def _read_result(self, returncode: int) -> SippResult:
        try:
            stats = parse_stats((self.workdir / STATS).read_text(errors="replace"))
        except FileNotFoundError:
            stats = {}

        def count(column: str) -> int:
            value = stats.get(column, "0").strip()
            return int(value) if value.isdigit() else 0

        return SippResult(
            returncode=returncode,
            created=count("TotalCallCreated"),
            successful=count("SuccessfulCall(C)"),
            failed=count("FailedCall(C)"),
        )

    # ----- what SIPp saw

    def messages(self) -> list[SipMessage]:
        """Every SIP message sent or received so far (the log is written live)."""
        try:
            return parse_message_log((self.workdir / MESSAGES).read_text(errors="replace"))
        except FileNotFoundError:
            return []

    def received(self, method_or_status: str | int) -> list[SipMessage]:
        """Received requests of a method ("INVITE") or responses with a status (200)."""
        return [
            m
            for m in self.messages()
            if m.direction == "received"
            and (m.method == method_or_status or m.status == method_or_status)
        ]

    def invites(self) -> list[SipMessage]:
        """Distinct INVITEs received: one per Call-ID (no retransmissions, no re-INVITEs)."""
        seen: dict[str, SipMessage] = {}
        for message in self.received("INVITE"):
            seen.setdefault(message.header("Call-ID") or "", message)
        return list(seen.values())

    def wait_for_invites(self, count: int, timeout: float = 30.0) -> list[SipMessage]:
        """Wait until COUNT distinct INVITEs have arrived; return them."""
        if self._proc is None:
            raise SippError(self.name, "not running")
        with DirectoryWatch(self.workdir) as watch:
            if not self._wait_event(
                watch, lambda: len(self.invites()) >= count, time.monotonic() + timeout
            ):
                raise SippError(self.name, f"exited before {count} INVITEs arrived")
        return self.invites()

    def wait_for_messages(self, done: Callable[[list[SipMessage]], bool],
                          timeout: float = 30.0) -> list[SipMessage]:
        """Wait until ``done`` holds for the messages so far (checked at each write of the
        message log); return them."""
        if self._proc is None:
            raise SippError(self.name, "not running")
        with DirectoryWatch(self.workdir) as watch:
            if not self._wait_event(
                watch, lambda: done(self.messages()), time.monotonic() + timeout
            ):
                raise SippError(self.name, "exited before the messages arrived")
        return self.messages()

    def errors(self) -> str:
        """SIPp's unexpected-message log (`-trace_err`)."""
        try:
            return (self.workdir / ERRORS).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _diagnostics(self) -> str:
        parts = []
        for fname in (STDERR, ERRORS):
            try:
                text = (self.workdir / fname).read_text(errors="replace").strip()
            except FileNotFoundError:
                continue
            if text:
                parts.append(f"[{fname}] {text[-2000:]}")
        return " ".join(parts) or f"no output (see {self.workdir})"

    def describe(self) -> str:
        """A one-paragraph account of the run, for assertion messages."""
        lines = [f"{self.name}: {self.result}", self._diagnostics()]
        lines += [f"  {m.direction:8} {m.start_line}" for m in self.messages()]
        return "\n".join(lines)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is not None:
            if exc_type is None:
                self.stop()
            else:
                self.kill()


# ----- scenarios


def _scenario(name: str, **blocks: str) -> str:
    """Read a scenario and fill its {{BLOCK}} lines (a whole line each)."""
    out: list[str] = []
    filled: set[str] = set()
    for line in (SCENARIOS / name).read_text().splitlines(keepends=True):
        key = line.strip().removeprefix("{{").removesuffix("}}")
        if line.strip().startswith("{{") and key in blocks:
            out.append(blocks[key])  # an empty block leaves no blank line behind
            filled.add(key)
        elif "{{" in line:
            raise ValueError(f"{name}: unfilled placeholder {line.strip()}")
        else:
            out.append(line)
    if missing := set(blocks) - filled:
        raise ValueError(f"{name} has no line for {sorted(missing)}")
    return "".join(out)


def _common_args(port: int, media_port: int, host: Host = LOCAL,
                 transport: Literal["u1", "t1"] = "u1") -> list[str]:
    """``transport`` t1: one TCP connection (a desk phone behind tests/harness/tls_edge.py)."""
    return [
        "-i", host.address,
        "-mi", host.address,
        "-p", str(port),
        "-mp", str(media_port),
        "-cp", str(host.free_udp_port()),
        "-t", transport,  # u1: one UDP socket, every message leaves from -p
    ]  # fmt: skip


def _start_caller(kind: str, pbx: tuple[str, int], workdir: Path, to: str, text: str, *,
                  from_user: str, timeout: float, host: Host, caller_name: str = "") -> SippProcess:
    """One started call of ``text`` to ``to``, failed past ``timeout`` (or a wait that long):
    the arguments the callers of tests/harness/voicemail_caller.py and transfer_phone.py share."""
    port, media = host.free_udp_port(), host.free_media_port()
    args = [*_common_args(port, media, host), "-aa", "-s", to, "-key", "from_user", from_user,
            "-key", "caller_name", caller_name, "-m", "1", "-l", "1", "-timeout", f"{timeout:g}s",
            "-timeout_error", "-recv_timeout", str(int(timeout * 1000)),
            f"{pbx[0]}:{pbx[1]}"]
    return SippProcess(f"{kind}-{from_user}", workdir / f"{kind}-{port}", text, args,
                       port=port, host=host).start()


def _safe_header(line: str) -> str:
    if "\n" in line or "\r" in line or "]]>" in line or ":" not in line:
        raise ValueError(f"not a single SIP header line: {line!r}")
    return line


class DeskPhoneMode(Enum):
    """What an answering desk phone does with each INVITE."""

    ANSWER = "answer"  # answer, then wait for the PBX's BYE
    ANSWER_AND_HANG_UP = "answer-and-hang-up"  # answer, talk talk_ms, send BYE
    RING = "ring"  # 180 Ringing until the PBX CANCELs
    REJECT = "reject"  # reject_code at once


_CAPTURE_DIALOG = """\
    <action>
      <ereg regexp=".*" search_in="hdr" header="To:" assign_to="local_to"/>
      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="remote_from"/>
    </action>
"""

def audio_sdp(origin: str, version: int) -> str:
    """The SDP body the scenarios written here send (their CDATA lines): one audio stream,
    PCMU and telephone-event (RFC 4733).  ``origin`` and ``version`` fill its o= line: a
    re-INVITE's answer bears a version above the one the call was answered with."""
    return f"""\
      v=0
      o={origin} 53655765 {version} IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-16
      a=sendrecv
"""


_OK_TO_REINVITE = """\
  <label id="reinvite"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

""" + audio_sdp("user1", 2353687640) + """
    ]]>
  </send>
  <recv request="ACK" next="in_call"/>
"""

_OK_TO_BYE = """\
  <label id="far_bye"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <label id="end"/>
"""

_SEND_BYE = """\
  <label id="hang_up"/>
  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From:[$local_to];tag=[pid]SIPpTag01[call_number]
      To:[$remote_from]
      [routes]
      Call-ID: [call_id]
      CSeq: 1 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" next="end"/>
"""


def in_call(hang_up_after_ms: int | None = None) -> str:
    """The answered part of a call, up to its end.

    Either wait for the far end's BYE, or (hang_up_after_ms) send our own BYE
    when that long passes without one.  Meanwhile re-INVITEs (Asterisk's
    connected-line updates arrive as re-INVITEs, depending on timing) are
    answered; UPDATE/INFO/OPTIONS are answered by SIPp's -aa.  SIPp counts
    any request arriving during a <pause> as unexpected, so the talk time is
    a receive timeout, not a pause.
    """
    if hang_up_after_ms is None:
        # A provisional response may arrive after the 200 it preceded: a proxy relays the
        # two from different worker processes (Kamailio's UDP children), and UDP keeps no
        # order.  It is stale, not unexpected.
        wait = """\
  <label id="in_call"/>
  <recv response="180" optional="true" next="in_call"/>
  <recv response="183" optional="true" next="in_call"/>
  <recv request="INVITE" optional="true" next="reinvite"/>
  <recv request="BYE" next="far_bye"/>
"""
        return wait + _OK_TO_REINVITE + _OK_TO_BYE
    # SIPp arms a receive timeout from the first <recv> of a run of them, so
    # the timeout sits on the optional BYE, not on the INVITE after it.
    wait = f"""\
  <label id="in_call"/>
  <recv request="BYE" optional="true" timeout="{int(hang_up_after_ms)}" ontimeout="hang_up"
        next="far_bye"/>
  <recv request="INVITE" next="reinvite"/>
"""
    return wait + _OK_TO_REINVITE + _SEND_BYE + _OK_TO_BYE


def answering_phone(
    workdir: Path,
    mode: DeskPhoneMode = DeskPhoneMode.ANSWER,
    *,
    name: str = "uas",
    port: int | None = None,
    media_port: int | None = None,
    talk_ms: int = 500,
    reject_code: int = 486,
    reject_reason: str = "Busy Here",
    lifetime: float = 300.0,
    host: Host = LOCAL,
    pickup_ms: int = 0,
    transport: Literal["u1", "t1"] = "u1",
) -> SippProcess:
    """A started UAS that handles every INVITE per MODE (no registration).

    Use it directly for a carrier the PBX dials at a static contact.
    `lifetime` is SIPp's own -timeout: a UAS orphaned by a killed test run
    still goes away.  ``pickup_ms``: an answering phone rings that long before it answers,
    as a person picking up does (an instant answer can CANCEL the other phones' INVITEs
    before a proxy has relayed them, and they never ring).
    """
    port = port or host.free_udp_port()
    media_port = media_port or host.free_media_port()
    args = [*_common_args(port, media_port, host, transport), "-aa",
            "-timeout", f"{lifetime:g}s"]
    if mode is DeskPhoneMode.ANSWER:
        text = _scenario("uas_answer.xml", ON_INVITE="", IN_CALL=in_call())
    elif mode is DeskPhoneMode.ANSWER_AND_HANG_UP:
        text = _scenario("uas_answer.xml", ON_INVITE=_CAPTURE_DIALOG, IN_CALL=in_call(talk_ms))
    elif mode is DeskPhoneMode.RING:
        text = _scenario("uas_ring.xml")
    else:
        text = ""
    if pickup_ms and mode in (DeskPhoneMode.ANSWER, DeskPhoneMode.ANSWER_AND_HANG_UP):
        text = text.replace('  <send retrans="500">',
                            f'  <pause milliseconds="{int(pickup_ms)}"/>\n\n'
                            '  <send retrans="500">', 1)
    if mode is DeskPhoneMode.REJECT:
        if not 300 <= reject_code <= 699 or not re.fullmatch(r"[A-Za-z ]+", reject_reason):
            raise ValueError(f"not a SIP rejection: {reject_code} {reject_reason!r}")
        status = f"      SIP/2.0 {reject_code} {reject_reason}\n"
        text = _scenario("uas_reject.xml", STATUS_LINE=status)
    return SippProcess(name, workdir / f"{name}-{port}", text, args, port=port,
                       host=host).start()


def carrier_registrar(workdir: Path, port: int, username: str, password: str, *,
                      host: Host = LOCAL) -> SippProcess:
    """A started carrier on ``port`` that challenges the practice's REGISTER and checks the
    digest answer against ``username``/``password`` (SIPp's verifyauth): 200 if right, 403
    if wrong; one registration per process."""
    for value in (username, password):
        if not re.fullmatch(r"[A-Za-z0-9._-]+", value):
            raise ValueError(f"not a plain account value: {value!r}")
    verify = (f'      <verifyauth assign_to="authvalid" username="{username}" '
              f'password="{password}"/>\n')
    args = [*_common_args(port, host.free_media_port(), host), "-aa", "-m", "1",
            "-timeout", "120s"]
    return SippProcess("registrar", workdir / f"registrar-{port}",
                       _scenario("registrar.xml", VERIFY=verify), args, port=port,
                       host=host).start()


def register(
    pbx: tuple[str, int],
    workdir: Path,
    user: str,
    password: str,
    *,
    contact_port: int,
    expires: int = 3600,
    port: int | None = None,
    timeout: float = 30.0,
    aor: str | None = None,
    host: Host = LOCAL,
    transport: Literal["u1", "t1"] = "u1",
) -> SippProcess:
    """REGISTER as USER (digest auth with PASSWORD), Contact on contact_port.

    With AOR, the REGISTER's From/To name that address of record (a login shared by
    several desk phones) while USER stays the digest user.
    Returns the finished process; raises SippError unless the PBX said 200.
    """
    port = port or host.free_udp_port()
    args = [
        *_common_args(port, host.free_media_port(), host, transport),
        "-au", user, "-ap", password,
        "-key", "user", aor or user,
        "-key", "contact_port", str(contact_port),
        "-key", "expires", str(expires),
        "-m", "1",
        "-timeout", f"{timeout:g}s", "-timeout_error",
        f"{pbx[0]}:{pbx[1]}",
    ]  # fmt: skip
    proc = SippProcess(
        f"register-{user}", workdir / f"register-{user}-{port}", _scenario("register.xml"), args,
        port=port, host=host,
    )  # fmt: skip
    result = proc.start().wait(timeout + 5)
    if not result.ok:
        raise SippError(proc.name, f"registration failed\n{proc.describe()}")
    return proc


def desk_phone(
    pbx: tuple[str, int],
    workdir: Path,
    user: str,
    password: str,
    mode: DeskPhoneMode = DeskPhoneMode.ANSWER,
    *,
    talk_ms: int = 500,
    reject_code: int = 486,
    expires: int = 3600,
    aor: str | None = None,
    host: Host = LOCAL,
    pickup_ms: int = 0,
) -> SippProcess:
    """A registered desk phone: an answering UAS plus a REGISTER pointing at it
    (``pickup_ms``: see answering_phone).

    Two SIPp processes because a SIPp scenario is either a client or a server;
    the REGISTER's Contact names the UAS's port, which is where Asterisk
    sends INVITEs (keep `rewrite_contact` off in pjsip.conf, or Asterisk would
    send them to the REGISTER's source port instead).
    """
    uas = answering_phone(
        workdir, mode, name=f"phone-{user}", talk_ms=talk_ms, reject_code=reject_code, host=host,
        pickup_ms=pickup_ms,
    )
    try:
        register(pbx, workdir, user, password, contact_port=uas.port, expires=expires, aor=aor,
                 host=host)
    except SippError:
        uas.kill()
        raise
    return uas


def _info_steps(digits: str) -> str:
    """One INFO per digit, each waiting for its 200 (no pause after the last:
    SIPp counts a BYE that arrives during a pause as unexpected)."""
    steps = []
    for i, digit in enumerate(digits):
        # [last_To:] is the far end's To with its tag: from the 200 to the
        # INVITE for the first INFO, from the 200 to the previous INFO after.
        steps.append(f"""\
  <send retrans="500">
    <![CDATA[

      INFO [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "[caller_name]" <sip:[from_user]@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      [routes]
      Call-ID: [call_id]
      CSeq: {10 + i} INFO
      Contact: <sip:[from_user]@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/dtmf-relay
      Content-Length: [len]

      Signal={digit}
      Duration=160

    ]]>
  </send>
  <recv response="200"/>""")
    return "\n".join(steps) + "\n"


# RFC 4733 event codes for the DTMF keys.
_EVENT_CODES = {**{str(d): d for d in range(10)}, "*": 10, "#": 11}
_PACKET_MS = 20
_TONE_PACKETS = 8  # 160 ms of tone per key
_GAP_MS = 100  # silence between keys so Read() sees separate presses


def write_dtmf_pcap(path: Path, digits: str, payload_type: int = 101) -> float:
    """Write a pcap of RFC 4733 events for DIGITS; return its length in seconds.

    Debian's per-key pcaps (dtmf_2833_N.pcap) were cut from one capture: each
    key has a fixed RTP timestamp and sequence number, so "42" plays key 2
    with an older timestamp than key 4 and Asterisk drops it as stale, and
    "11" repeats one event.  One pcap with increasing sequence numbers and a
    new timestamp per key avoids both.  SIPp rewrites the addresses and ports.
    """
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    seq, clock_ms = 1000, 0
    for digit in digits:
        event = _EVENT_CODES[digit]
        start_ts = 8 * clock_ms  # 8 kHz RTP clock
        packets = [(k == 0, False, 8 * _PACKET_MS * (k + 1)) for k in range(_TONE_PACKETS)]
        final = 8 * _PACKET_MS * _TONE_PACKETS
        packets += [(False, True, final)] * 3  # the end packet, sent three times (RFC 4733)
        for marker, end, duration in packets:
            rtp = struct.pack(
                ">BBHII", 0x80, (0x80 if marker else 0) | payload_type, seq, start_ts, 0x0B4C1E
            ) + struct.pack(">BBH", event, (0x80 if end else 0) | 10, duration)
            udp = struct.pack(">HHHH", 6000, 6000, 8 + len(rtp), 0) + rtp
            ip = struct.pack(
                ">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), seq & 0xFFFF, 0, 64, 17, 0,
                socket.inet_aton(LOOPBACK), socket.inet_aton(LOOPBACK),
            )  # fmt: skip
            frame = b"\x00" * 12 + b"\x08\x00" + ip + udp  # Ethernet, IPv4
            out += struct.pack("<IIII", clock_ms // 1000, (clock_ms % 1000) * 1000,
                               len(frame), len(frame)) + frame  # fmt: skip
            seq += 1
            if not end:
                clock_ms += _PACKET_MS
        clock_ms += _GAP_MS
    path.write_bytes(bytes(out))
    return clock_ms / 1000


_DTMF_DIGITS = re.compile(r"[0-9*#]*")


def place_calls(
    pbx: tuple[str, int],
    workdir: Path,
    to: str,
    *,
    from_user: str,
    caller_name: str = "",
    calls: int = 1,
    password: str | None = None,
    auth_user: str | None = None,
    dtmf: str = "",
    dtmf_mode: Literal["rfc2833", "info"] = "rfc2833",
    dtmf_delay_ms: int = 300,
    extra_headers: Iterable[str] = (),
    port: int | None = None,
    media_port: int | None = None,
    timeout: float = 30.0,
    host: Host = LOCAL,
    number_in_to_only: bool = False,
    tel: Literal["", "request", "to"] = "",
) -> SippProcess:
    """A started caller placing CALLS calls to TO as FROM_USER; wait() for the result.

    Each call must be answered and then hung up by the PBX (announcement,
    refusal, far end hanging up); a failure response fails the call.  With a
    password, digest challenges are answered as AUTH_USER (default FROM_USER: a desk phone
    whose From is its login answers as the desk phone).  DTMF digits go out after
    dtmf_delay_ms: RFC 4733 events (a pcap written by write_dtmf_pcap(), played
    by SIPp) or SIP INFO (application/dtmf-relay); Asterisk's pjsip takes both
    with its default dtmf_mode (rfc4733).  ``number_in_to_only``: TO goes in the To header
    alone, the Request-URI has no user part.  ``tel``: TO as a tel: URI (RFC 3966), in the
    Request-URI and To (``request``) or in To alone (``to``, the Request-URI with no user).
    """
    if not _DTMF_DIGITS.fullmatch(dtmf):
        raise ValueError(f"DTMF digits must be 0-9, * or #: {dtmf!r}")
    if re.search(r'(?<!\\)"', caller_name) or "\n" in caller_name or "\r" in caller_name:
        raise ValueError("caller name must not contain quotes (but as quoted-pairs, \\\") "
                         f"or line breaks: {caller_name!r}")
    port = port or host.free_udp_port()
    media_port = media_port or host.free_media_port()
    headers = "".join(f"      {_safe_header(h)}\n" for h in extra_headers)
    workdir = workdir / f"call-{from_user[:40]}-{to}-{port}"  # a long caller ID: a long name
    after = ""
    if dtmf:
        after = f'  <pause milliseconds="{int(dtmf_delay_ms)}"/>\n'
        if dtmf_mode == "info":
            after += _info_steps(dtmf)
        else:
            # Played by a SIPp thread while the scenario goes on to wait for the BYE.
            pcap = workdir / "dtmf.pcap"
            workdir.mkdir(parents=True, exist_ok=True)
            write_dtmf_pcap(pcap, dtmf)
            after += f'  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>\n'
    text = _scenario("uac_call.xml", EXTRA_HEADERS=headers, ON_ANSWER="", AFTER_ANSWER=after,
                     IN_CALL=in_call())
    if number_in_to_only or tel == "to":  # as on registered trunks: no user in the R-URI
        text = text.replace("INVITE sip:[service]@", "INVITE sip:")
    elif tel == "request":
        text = text.replace("sip:[service]@[remote_ip]:[remote_port] SIP/2.0",
                            "tel:[service] SIP/2.0")  # the INVITEs and the challenge's ACK
    if tel:
        text = text.replace("To: <sip:[service]@[remote_ip]:[remote_port]>", "To: <tel:[service]>")
    args = [
        *_common_args(port, media_port, host),
        "-aa",
        "-s", to,
        "-key", "from_user", from_user,
        "-key", "caller_name", caller_name,
        "-m", str(calls),
        "-l", str(calls),
        "-timeout", f"{timeout:g}s", "-timeout_error",
        "-recv_timeout", str(int(timeout * 1000)),
    ]  # fmt: skip
    if password is not None:
        args += ["-au", auth_user or from_user, "-ap", password]
    args.append(f"{pbx[0]}:{pbx[1]}")
    return SippProcess(f"call-{from_user}-{to}", workdir, text, args, port=port,
                       host=host).start()
