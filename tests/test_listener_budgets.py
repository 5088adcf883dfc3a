"""Nothing on a public listener can silence the call path (issue 18, item 1).

`backline run` on the real Asterisk, under a descriptor limit far below the number of idle
connections an attacker holds open to its pages listener or its SMTP intake: the listener
holds what the budget allows, refuses the rest at once, and keeps the descriptors reserved
for the PBX, so SIPp calls placed meanwhile are all decided by the controller (its decision
log and the journal say so; the PBX's own fail-safe announcement never plays).  And each
way of dawdling (silence, a request head or body sent a byte at a time, an SMTP command or
message dribbled) is cut off, and the intake caps recipients.
"""

from __future__ import annotations

import ast
import asyncio
import re
import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest

from backline.app.cli import main as backline
from backline.core.outage import Mode
from backline.core.records import AttemptKind, Outcome
from backline.pbx.asterisk.dialplan_variables import FAILSAFE_EVENT
from tests.harness.alert_site import free_port
from tests.harness.backline_process import ControllerProcess
from tests.harness.practice_pbx import practice_pbx
from tests.harness.sipp import place_calls
from tests.harness.sms_gateway import ACCOUNT_SID, AUTH_TOKEN

pytestmark = pytest.mark.asterisk

UNKNOWN = "+13125559999"  # the controller decides it: a polite refusal, journaled
ATTACK = int(__import__("os").environ.get("ATTACK", 2000))
CALLS = 20
RESERVE = 256  # connections.pbx.reserved_descriptors' default
STATUS_SLICE = 32  # connections.status.max_connections' default, kept for ops
ROOT = Path(__file__).resolve().parent.parent
TOKEN_ENV = "BACKLINE_TEST_SMS_TOKEN"


def listeners(pages: int, smtp: int, status: int, **keys: int) -> str:
    extra = "".join(f", {k}: {v}" for k, v in keys.items())
    return (f'  pages: {{listen: "127.0.0.1:{pages}", base_url: "http://127.0.0.1:{pages}"'
            f'{extra}}}\n'
            f'  status: {{listen: "127.0.0.1:{status}"}}\n'
            f'  email_intake: {{listen: "127.0.0.1:{smtp}", domains: [t.example]}}\n')


# The attacker, in a process of its own (this one's select() cannot take descriptors past
# 1,024): opens COUNT connections that never send a byte, then one more, prints what that
# last one is told, and holds them all until its stdin closes.
ATTACKER = """
import resource, socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held = []
for _ in range(count + 1):
    s = socket.socket()
    s.settimeout(60)
    s.connect(("127.0.0.1", port))
    held.append(s)
print(repr(held[-1].recv(200)), flush=True)
sys.stdin.read()
"""


@contextmanager
def idle_connections(port: int, count: int) -> Iterator[bytes]:
    """``count`` idle connections held open; yields what one more, opened after them, is
    told first: the listener takes connections in order, so by then every earlier one has
    been admitted or refused."""
    attacker = subprocess.Popen([sys.executable, "-c", ATTACKER, str(port), str(count)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert attacker.stdout is not None
        told = attacker.stdout.readline()
        assert told, "the attacker could not open its connections"
        yield ast.literal_eval(told)
    finally:
        attacker.kill()
        attacker.wait(30)


def open_descriptors(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def descriptor_limit(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no descriptor limit in /proc/PID/limits")


def decisions(controller: ControllerProcess) -> list[str]:
    return [line for line in controller.lines if "inbound call from" in line]


@pytest.mark.parametrize(("target", "nofile"), [
    ("pages", (512, 1024)),  # soft 512, hard 1024: `run` raises it to 1024 itself
    ("smtp", (1024, 1024)),  # `ulimit -n 1024`: systemd's soft limit, and no higher
])
async def test_idle_connections_cannot_take_the_descriptors_calls_need(
        tmp_path: Path, target: str, nofile: tuple[int, int]) -> None:
    pages, smtp, status = free_port(), free_port(), free_port()
    # Caps and timeouts far beyond the attack: only the descriptor reserve stands between
    # it and the FastAGI connections.
    extra = listeners(pages, smtp, status, max_connections=10000, idle_seconds=3600,
                      header_seconds=600).replace(
        "domains: [t.example]", "domains: [t.example], max_sessions: 10000, "
                                "idle_seconds: 3600")
    async with practice_pbx(tmp_path, f"fd-{target}", controller_in_process=False,
                            connections_extra=extra) as pbx:
        controller = ControllerProcess(pbx, nofile=nofile)
        try:
            pid = controller.proc.pid
            assert descriptor_limit(pid) == (1024, 1024)
            port = pages if target == "pages" else smtp
            with idle_connections(port, ATTACK) as busy:
                in_use = open_descriptors(pid)
                # Ops still read the status listener: its cap is a slice of its own.
                async with aiohttp.ClientSession() as http, \
                        http.get(f"http://127.0.0.1:{status}/metrics") as response:
                    assert response.status == 200
                    metrics = await response.text()
                callers = place_calls(("127.0.0.1", pbx.ports.sip), tmp_path, UNKNOWN,
                                      from_user="carrier", calls=CALLS, timeout=60)
                result = await asyncio.to_thread(callers.wait, 90)
                in_use_after = open_descriptors(pid)
            # Every call was answered, and decided by the controller in normal mode: its
            # decision log, the journal, and no fail-safe announcement on the PBX.
            assert result.ok and result.successful == CALLS, callers.describe()
            # (Newexten is among manager.conf's disabledevents: the fail-safe says itself.)
            assert not [e for e in pbx.events.named("UserEvent")
                        if e.get("UserEvent") == FAILSAFE_EVENT]
            controller.wait_for("inbound call from", 60, count=CALLS)
            assert len(decisions(controller)) == CALLS, "".join(controller.lines[-30:])
            attempts = [a for a in pbx.controller.journal.attempts(limit=200)
                        if a.kind is AttemptKind.CALL and a.recipient == UNKNOWN]
            assert len(attempts) == CALLS
            assert {(a.mode, a.outcome) for a in attempts} == {(Mode.NORMAL, Outcome.REFUSED)}
            # The attack was refused at the reserve, not before: the controller held
            # descriptors up to it while the calls went through.
            assert busy.startswith(b"HTTP/1.1 503" if target == "pages" else b"421 4.3.2")
            shared = 1024 - RESERVE - STATUS_SLICE
            assert shared - 64 <= in_use <= shared + 8, in_use
            assert in_use_after <= shared + 8, in_use_after
            attacked = "pages listener" if target == "pages" else "email intake"
            series = f'backline_public_connections_refused_total{{listener="{attacked}"}}'
            count = next(float(line.split()[-1]) for line in metrics.splitlines()
                         if line.startswith(series))
            assert count >= ATTACK - shared
            refused = "pages listener" if target == "pages" else "email intake"
            assert any(f"{refused}: " in line and "new connection(s) refused" in line
                       and f"the {RESERVE} descriptors kept for the PBX" in line
                       for line in controller.lines), "".join(controller.lines[-30:])
        finally:
            controller.stop()


def dribble(port: int, opening: bytes, drip: bytes) -> bytes:
    """Sends ``opening``, then ``drip`` a byte at a time, half a second apart, as a slow
    attacker does, until the listener closes the connection; returns all it was told."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(opening)
        told = b""
        for byte in drip:
            readable, _, _ = select.select([s], [], [], 0.5)
            if readable:
                chunk = s.recv(4096)
                if not chunk:
                    return told
                told += chunk
            try:
                s.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                return told
        raise AssertionError(f"still open after {len(drip)} bytes at two a second: {told!r}")


def silent(port: int) -> bytes:
    """Opens a connection, sends nothing; returns what it was told before it was closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        told = b""
        while chunk := s.recv(4096):
            told += chunk
        return told


def smtp_session(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    return s


def reply(s: socket.socket) -> str:
    """One whole SMTP reply (its last line is ``NNN text``), however the bytes came."""
    told = b""
    while not re.search(rb"(^|\n)\d{3} [^\n]*\r\n$", told):
        chunk = s.recv(4096)
        if not chunk:
            break
        told += chunk
    return told.decode()


def smtp(s: socket.socket, line: str) -> str:
    s.sendall(line.encode() + b"\r\n")
    return reply(s)


async def test_dawdlers_are_cut_off_and_each_listener_holds_its_cap(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pages, smtp_port, status = free_port(), free_port(), free_port()
    extra = (f'  pages: {{listen: "127.0.0.1:{pages}", base_url: "http://127.0.0.1:{pages}", '
             f'idle_seconds: 2, header_seconds: 3, body_seconds: 3}}\n'
             f'  status: {{listen: "127.0.0.1:{status}", max_connections: 2, '
             f'idle_seconds: 600}}\n'
             f'  email_intake: {{listen: "127.0.0.1:{smtp_port}", domains: [t.example], '
             f'max_sessions: 2, max_recipients: 3, idle_seconds: 10, data_seconds: 3}}\n'
             # The webhook, so that a body is waited for (nothing is sent through it).
             f'  sms_gateway: {{url: "http://127.0.0.1:9", account: {ACCOUNT_SID}, '
             f'token_env: {TOKEN_ENV}, signing_secret_env: {TOKEN_ENV}}}\n')
    monkeypatch.setenv(TOKEN_ENV, AUTH_TOKEN)
    async with practice_pbx(tmp_path, "fd-slow", controller_in_process=False,
                            connections_extra=extra, observe=False) as pbx:
        controller = ControllerProcess(pbx)
        try:
            # HTTP: silence, a head and a body sent a byte at a time are all cut off.
            assert await asyncio.to_thread(silent, pages) == b""
            head = b"GET /a/x HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 200
            assert await asyncio.to_thread(dribble, pages, head[:30], head[30:]) == b""
            # Signed (wrongly, but the webhook reads the body before it can tell).
            body = (b"POST /sms/inbound HTTP/1.1\r\nHost: t\r\nContent-Length: 500\r\n"
                    b"X-Twilio-Signature: c2lnbmVk\r\n"
                    b"Content-Type: application/x-www-form-urlencoded\r\n\r\n")
            assert await asyncio.to_thread(dribble, pages, body, b"a" * 200) == b""
            # ...while a request sent at once is answered as before.
            async with aiohttp.ClientSession() as http, \
                    http.get(f"http://127.0.0.1:{pages}/nothing") as response:
                assert response.status == 404
            # The status listener's cap: two held, the third told 503 at once.
            held = [socket.create_connection(("127.0.0.1", status), timeout=30)
                    for _ in range(2)]
            try:
                third = await asyncio.to_thread(silent, status)
                assert third.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), third
            finally:
                for s in held:
                    s.close()

            # SMTP: two sessions at once, three recipients a message, DATA within its time.
            first, second = smtp_session(smtp_port), smtp_session(smtp_port)
            try:
                assert reply(first).startswith("220 ")
                assert reply(second).startswith("220 ")
                third = await asyncio.to_thread(silent, smtp_port)
                assert third.startswith(b"421 4.3.2 "), third
                assert smtp(first, "EHLO sender.example").startswith("250")
                assert smtp(first, "MAIL FROM:<a@sender.example>").startswith("250")
                for n in range(3):
                    assert smtp(first, f"RCPT TO:<r{n}@t.example>").startswith("250")
                assert smtp(first, "RCPT TO:<r3@t.example>").startswith("452 4.5.3")
                assert smtp(first, "DATA").startswith("354")
                told = await asyncio.to_thread(silent, smtp_port)  # both still held
                assert told.startswith(b"421 4.3.2 "), told
                first.settimeout(60)
                drip = b"Subject: slow\r\n\r\n" + b"a" * 200
                for byte in drip:
                    readable, _, _ = select.select([first], [], [], 0.5)
                    if readable:
                        break
                    first.sendall(bytes([byte]))
                else:
                    raise AssertionError("DATA sent at two bytes a second was not cut off")
                assert first.recv(4096) in (b"", b"421 4.4.2 timeout\r\n"), "DATA not cut off"
            finally:
                first.close()
                second.close()
            # A session that says nothing is closed too (after its greeting).
            told = await asyncio.to_thread(silent, smtp_port)
            assert told.startswith(b"220 ") and told.count(b"\r\n") == 1, told
        finally:
            controller.stop()


@pytest.mark.parametrize(("line", "problem"), [
    ('  pages: {listen: "127.0.0.1:8080", base_url: "http://127.0.0.1:8080", '
     'max_connections: 0}',
     "connections.pages.max_connections: a whole number from 1 to 100000"),
    ('  pages: {listen: "127.0.0.1:8080", base_url: "http://127.0.0.1:8080", '
     'idle_seconds: soon}', "connections.pages.idle_seconds: a whole number from 1 to 3600"),
    ('  pages: {listen: "127.0.0.1:8080", base_url: "http://127.0.0.1:8080", '
     'data_seconds: 5}', "connections.pages.data_seconds: a known key"),
    ('  status: {listen: "127.0.0.1:8089", header_seconds: 9999}',
     "connections.status.header_seconds: a whole number from 1 to 600"),
    ('  email_intake: {listen: "127.0.0.1:2526", domains: [maple.example], '
     'max_recipients: 0}', "connections.email_intake.max_recipients: a whole number from 1 "
                           "to 1000"),
    ('  email_intake: {listen: "127.0.0.1:2526", domains: [maple.example], '
     'body_seconds: 5}', "connections.email_intake.body_seconds: a known key"),
])
def test_check_names_a_bad_listener_budget(tmp_path: Path, line: str, problem: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / "config" / "example.yaml").read_text()
    anchor = '  status: {listen: "127.0.0.1:8089"}\n'
    assert text.count(anchor) == 1
    if line.startswith("  pages:"):
        text = text.replace('  pages: {listen: "127.0.0.1:8080", base_url: '
                            '"http://127.0.0.1:8080"}\n', line + "\n")
    elif line.startswith("  status:"):
        text = text.replace(anchor, line + "\n")
    else:
        text = text.replace(anchor, anchor + line + "\n")
    path = tmp_path / "practice.yaml"
    path.write_text(text)
    number = 1 + text.splitlines().index(line)
    capsys.readouterr()
    assert backline(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:{number}: {problem}" in err, err
