"""TLS for a SIPp desk phone: this machine's SIPp is built without TLS, and a desk phone
under ``encryption: required`` is rung over TLS only (backline/render/asterisk_srtp.py).

The edge holds one TLS connection to the PBX, made in the phone's network namespace (so the
PBX sees the phone's address), and speaks plain TCP to the two SIPp processes of a desk
phone (tests/harness/sipp.py ``desk_phone``): what the registering SIPp sends goes up the
TLS connection and the answers to it come back; the requests the PBX sends down that
connection (its INVITEs, rewrite_contact pointing them at it) go to the answering SIPp, and
that SIPp's answers go up.  Messages are framed by Content-Length, so the two never
interleave mid-message.  The PBX's own certificate is checked against the practice CA.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Coroutine
from pathlib import Path

from tests.harness.netns import Namespace


async def read_message(reader: asyncio.StreamReader) -> bytes:
    """One SIP message (head and body) from a stream; b"" at its end.  Keep-alive blank
    lines (RFC 5626 CRLF pings) are passed on as they came."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return b""
    if head.strip() == b"":
        return head
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            length = int(value.strip())
    return head + (await reader.readexactly(length) if length else b"")


class TlsEdge:
    """The edge of one desk phone: ``port`` is where its registering SIPp connects (TCP, on
    ``address``); requests from the PBX go to the answering SIPp at ``address:uas_port``."""

    def __init__(self, ns: Namespace, address: str, uas_port: int) -> None:
        self.ns, self.address, self.uas_port = ns, address, uas_port
        self.port = 0
        self._pbx: asyncio.StreamWriter | None = None
        self._client: asyncio.StreamWriter | None = None
        self._uas: asyncio.StreamWriter | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self, pbx: tuple[str, int], ca: Path) -> TlsEdge:
        def listening() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((self.address, 0))
            sock.listen(4)
            return sock

        def connected() -> socket.socket:
            sock = socket.create_connection(pbx, timeout=30)
            sock.settimeout(None)
            return sock

        context = ssl.create_default_context(cafile=str(ca))
        context.check_hostname = False  # the PBX's certificate names its own host, not pbx[0]
        up = await asyncio.to_thread(self.ns.call, connected)
        reader, self._pbx = await asyncio.open_connection(sock=up, ssl=context,
                                                         server_hostname="")
        self._spawn(self._down(reader))
        sock = await asyncio.to_thread(self.ns.call, listening)
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._registering, sock=sock)
        return self

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _registering(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        self._client = writer
        await self._up(reader)

    async def _up(self, reader: asyncio.StreamReader) -> None:
        """What a SIPp sends, a message at a time, up the TLS connection."""
        assert self._pbx is not None
        while message := await read_message(reader):
            self._pbx.write(message)
            await self._pbx.drain()

    async def _down(self, reader: asyncio.StreamReader) -> None:
        """What the PBX sends: answers to the registering SIPp, requests to the answering."""
        while message := await read_message(reader):
            if not message.strip():
                continue
            if message.startswith(b"SIP/2.0 "):
                writer = self._client
            else:
                writer = self._uas or await self._to_uas()
            if writer is not None:
                writer.write(message)
                await writer.drain()

    async def _to_uas(self) -> asyncio.StreamWriter:
        def connected() -> socket.socket:
            sock = socket.create_connection((self.address, self.uas_port), timeout=30)
            sock.settimeout(None)
            return sock

        reader, self._uas = await asyncio.open_connection(
            sock=await asyncio.to_thread(self.ns.call, connected))
        self._spawn(self._up(reader))
        return self._uas

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in (self._pbx, self._client, self._uas):
            if writer is not None:
                writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
