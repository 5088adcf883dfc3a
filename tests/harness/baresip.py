"""A desk phone that speaks SIP over TLS and SRTP: baresip (Debian's baresip-core), run in a
network namespace of tests/harness/netns.py.

The harness writes its ``config`` and ``accounts`` (trusting the practice CA), starts it,
and drives it over its ``ctrl_tcp`` module: netstring-framed JSON, commands
(``{"command": "dial", "params": ..., "token": ...}``) answered by ``{"response": true,
...}``, and events (``{"event": true, "type": "REGISTER_OK", ...}``) that the tests wait on.
What the phone says is a WAV file (the ``aufile`` source); what it hears is written by the
``sndfile`` filter (``dump-...-dec.wav``), read back once the call is over.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness.netns import Namespace

MODULES = "/usr/lib/baresip/modules"
Event = dict[str, Any]


class BaresipError(Exception):
    """baresip did not start, or an awaited event did not come: with its log's tail."""


@dataclass
class Account:
    """One registration: ``login`` is the AOR's user (the practice's user id), ``auth`` the
    desk phone (its digest user).  ``srtp``: SRTP is mandatory (``srtp-mand``); False sends
    plain RTP offers, as a phone left unconfigured would."""

    login: str
    auth: str
    password: str
    registrar: str  # host:port of the PBX's TLS transport (or its UDP one)
    srtp: bool = True
    transport: str = "tls"
    regint: int = 60  # seconds between registrations (baresip refreshes a little before)

    def line(self) -> str:
        media = ";mediaenc=srtp-mand" if self.srtp else ""
        return (f"<sip:{self.login}@{self.registrar};transport={self.transport}>;"
                f"auth_user={self.auth};"
                f"auth_pass={self.password};answermode=manual;audio_codecs=PCMU;"
                f"regint={self.regint}"
                f"{media}")


@dataclass
class Baresip:
    netns: Namespace
    folder: Path
    process: asyncio.subprocess.Process
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    lines: list[str]  # its output so far
    _changed: asyncio.Event  # set at each new line, event or response
    events: list[Event] = field(default_factory=list)
    _tokens: int = 0
    _pump: asyncio.Task[None] | None = None
    _output: asyncio.Task[None] | None = None
    _responses: dict[str, Event] = field(default_factory=dict)

    def tail(self) -> str:
        return "".join(self.lines)[-3000:]

    async def _read(self) -> None:
        """Every netstring from ctrl_tcp: events kept in order, responses by token."""
        try:
            while True:
                length = await self.reader.readuntil(b":")
                body = await self.reader.readexactly(int(length[:-1]) + 1)
                message: Event = json.loads(body[:-1])
                if message.get("response"):
                    self._responses[str(message.get("token"))] = message
                else:
                    self.events.append(message)
                self._changed.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            self._changed.set()

    async def command(self, command: str, params: str = "", within: float = 30) -> Event:
        """Run a baresip command (``dial``, ``accept``, ``hangup`` ...: the menu module's);
    its response, BaresipError if it failed."""
        self._tokens += 1
        token = str(self._tokens)
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self.writer.write(b"%d:%s," % (len(body), body))
        await self.writer.drain()
        await self._until(lambda: token in self._responses, within, f"a response to {command}")
        response = self._responses.pop(token)
        if not response.get("ok"):
            raise BaresipError(f"{command} {params}: {response}\n{self.tail()}")
        return response

    async def wait_event(self, kind: str, within: float = 30, since: int = 0,
                         match: Callable[[Event], bool] = lambda e: True) -> Event:
        """The first event of type ``kind`` (from the ``since``-th event on) that ``match``
        accepts."""
        found: list[Event] = []

        def seen() -> bool:
            found[:] = [e for e in self.events[since:] if e.get("type") == kind and match(e)]
            return bool(found)
        await self._until(seen, within, f"the event {kind}")
        return found[0]

    async def wait_events(self, kind: str, count: int, within: float = 30) -> None:
        """Until ``count`` events of type ``kind`` have come in all."""
        await self._until(lambda: sum(e.get("type") == kind for e in self.events) >= count,
                          within, f"{count} events {kind}")

    async def _until(self, done: Callable[[], bool], within: float, what: str) -> None:
        # Woken by each message baresip sends; ``within`` (30 s by default) only bounds a hang.
        async def wait() -> None:
            while not done():
                if self.process.returncode is not None:
                    raise BaresipError(f"baresip exited ({self.process.returncode}) before "
                                       f"{what}:\n{self.tail()}")
                self._changed.clear()
                await self._changed.wait()
        try:
            await asyncio.wait_for(wait(), within)
        except TimeoutError:
            raise BaresipError(f"no {what} within {within} s; events "
                               f"{[e.get('type') for e in self.events]}:\n{self.tail()}"
                               ) from None

    async def wait_output(self, text: str, within: float = 30, times: int = 1) -> None:
        """Until ``times`` lines of baresip's output hold ``text`` (what it says before
        ctrl_tcp has a client, such as the first registration's answer)."""
        await self._until(lambda: sum(text in line for line in self.lines) >= times, within,
                          f"the output {text!r} {times} time(s)")

    async def wait_registered(self, account: Account, within: float = 30,
                              times: int = 1) -> None:
        """Until the PBX accepted ``account``'s registration (200 OK), ``times`` times in
        all for its login (every account of the login counts)."""
        host = account.registrar.rpartition(":")[0]
        await self.wait_output(f"{account.login}@{host}: {{0/{account.transport.upper()}/v4}}"
                               " 200 OK", within, times)

    async def stop(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        self.writer.close()
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._output is not None:
            await self._output


def write_config(folder: Path, *, address: str, ctrl_port: int, ca: Path | None, says: Path,
                 accounts: list[Account]) -> None:
    """baresip's ``config`` and ``accounts`` in ``folder`` (its ``-f``)."""
    (folder / "sound").mkdir(parents=True, exist_ok=True)
    (folder / "config").write_text(f"""\
poll_method epoll
sip_listen {address}:5060
{f"sip_cafile {ca}" if ca is not None else ""}
call_local_timeout 60
call_max_calls 2
audio_path /usr/share/baresip
audio_player aubridge,hears
audio_source aufile,{says}
audio_alert aubridge,alert
rtcp_mux no
jitter_buffer_delay 1-10
net_interface up0
module_path {MODULES}
module g711.so
module aufile.so
module aubridge.so
module sndfile.so
module srtp.so
module_tmp account.so
module_app menu.so
module_app ctrl_tcp.so
ctrl_tcp_listen 127.0.0.1:{ctrl_port}
snd_path {folder / "sound"}
""")
    (folder / "accounts").write_text("".join(a.line() + "\n" for a in accounts))
    os.chmod(folder / "accounts", 0o600)


async def start_baresip(netns: Namespace, folder: Path, *, address: str, ca: Path | None,
                        says: Path, accounts: list[Account]) -> Baresip:
    """baresip in ``netns`` on ``address``, connected to; its ctrl_tcp socket is made in
    that namespace (a socket keeps the namespace it was made in).  ``ca``: the CA it trusts
    for TLS (None: UDP accounts only)."""
    ctrl_port = netns.free_port("127.0.0.1")
    write_config(folder, address=address, ctrl_port=ctrl_port, ca=ca, says=says,
                 accounts=accounts)
    process = await asyncio.create_subprocess_exec(
        *netns.argv("baresip", "-f", str(folder)), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    assert process.stdout is not None
    ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    lines: list[str] = []
    changed = asyncio.Event()
    output = asyncio.create_task(_keep_output(process.stdout, ready, lines, changed))
    try:
        # Said once every module (ctrl_tcp among them) is loaded and listening.
        if not await asyncio.wait_for(asyncio.shield(ready), 15):
            raise TimeoutError
    except TimeoutError:
        if process.returncode is None:
            process.kill()
        await output
        raise BaresipError("baresip did not start:\n" + "".join(lines)[-3000:]) from None
    sock = netns.call(lambda: socket.create_connection(("127.0.0.1", ctrl_port), timeout=5))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    phone = Baresip(netns, folder, process, reader, writer, lines, changed, _output=output)
    phone._pump = asyncio.create_task(phone._read())
    return phone


async def _keep_output(stream: asyncio.StreamReader, ready: asyncio.Future[bool],
                       lines: list[str], changed: asyncio.Event) -> None:
    """baresip's output into ``lines``; ``ready`` True at its "ready" line (False if the
    output ends first)."""
    while line := await stream.readline():
        lines.append(line.decode(errors="replace"))
        changed.set()
        if line.startswith(b"baresip is ready.") and not ready.done():
            ready.set_result(True)
    changed.set()
    if not ready.done():
        ready.set_result(False)


def read_wav(path: Path) -> list[int]:
    """The 16-bit mono samples of ``path``."""
    with wave.open(str(path)) as w:
        frames = w.readframes(w.getnframes())
    return [int.from_bytes(frames[i:i + 2], "little", signed=True)
            for i in range(0, len(frames) - 1, 2)]


def write_wav(path: Path, samples: list[int], rate: int = 8000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(s.to_bytes(2, "little", signed=True) for s in samples))
    return path

