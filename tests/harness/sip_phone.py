"""A desk phone that makes an attended transfer, as a tiny SIP user agent over UDP.

An attended transfer takes two calls on one phone (the caller, and the consultation call to
the target) and a REFER on the first whose Refer-To names the second (``Replaces``, RFC 3891):
one SIPp scenario holds one call, so this phone is written out.  It answers the first call the
PBX offers, places the consultation call (answering the PBX's digest challenge), sends the
REFER, answers whatever the PBX sends (NOTIFYs, re-INVITEs, BYEs) and, once the PBX says the
transfer is done, hangs up the first call.
Every message in and out is kept for the test to read.  Waits are on messages, never on time.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass, field

from backline.localpbx.ports import LOOPBACK

SDP = ("v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n")


@dataclass
class Message:
    start: str
    headers: list[tuple[str, str]]
    body: str = ""

    @property
    def method(self) -> str:
        return "" if self.start.startswith("SIP/") else self.start.split(" ", 1)[0]

    @property
    def status(self) -> int:
        return int(self.start.split(" ", 2)[1]) if self.start.startswith("SIP/") else 0

    def get(self, name: str) -> str:
        return next((v for k, v in self.headers if k.lower() == name.lower()), "")

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def text(self) -> str:
        body = self.body.encode()
        lines = [self.start, *(f"{k}: {v}" for k, v in self.headers),
                 f"Content-Length: {len(body)}", "", ""]
        return "\r\n".join(lines) + self.body

    @classmethod
    def parse(cls, data: bytes) -> Message:
        head, _, body = data.decode("utf-8", "replace").partition("\r\n\r\n")
        start, *lines = head.split("\r\n")
        headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines)]
        return cls(start, [(k, v) for k, v in headers if k.lower() != "content-length"], body)


def _tag(value: str) -> str:
    return value.partition(";tag=")[2].split(";")[0]


def _uri(value: str) -> str:
    return value[value.index("<") + 1:value.index(">")] if "<" in value else value


@dataclass
class AttendedPhone(asyncio.DatagramProtocol):
    """Desk phone ``endpoint`` (digest ``password``) of the PBX at ``pbx``."""

    pbx: tuple[str, int]
    endpoint: str
    password: str
    seen: list[tuple[str, Message]] = field(default_factory=list)
    port: int = 0
    _queue: asyncio.Queue[Message] = field(default_factory=asyncio.Queue)
    _transport: asyncio.DatagramTransport | None = None
    _byes: int = 0
    # Calls whose transfer the PBX said is done (a NOTIFY with a 2xx sipfrag), noted as they
    # arrive: the NOTIFY may come before the REFER's 202.
    _done: set[str] = field(default_factory=set)

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self,
                                                           local_addr=(LOOPBACK, 0))
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self.port

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data.strip():
            return  # a keep-alive
        message = Message.parse(data)
        self.seen.append(("in", message))
        if message.method and message.method not in ("INVITE", "ACK"):
            self._answer(message)  # NOTIFY, BYE, OPTIONS: 200 at once
            if message.method == "BYE":
                self._byes += 1
            if message.method == "NOTIFY" and message.body.startswith("SIP/2.0 2"):
                self._done.add(message.get("Call-ID"))
        self._queue.put_nowait(message)

    def _send(self, message: Message) -> None:
        assert self._transport is not None
        self.seen.append(("out", message))
        self._transport.sendto(message.text().encode(), self.pbx)

    def _answer(self, request: Message, status: str = "200 OK", *, to_tag: str = "",
                sdp: bool = False) -> None:
        to = request.get("To")
        if to_tag and ";tag=" not in to:
            to += f";tag={to_tag}"
        headers = [*(("Via", v) for v in request.all("Via")), ("From", request.get("From")),
                   ("To", to), ("Call-ID", request.get("Call-ID")),
                   ("CSeq", request.get("CSeq")), ("Contact", self.contact)]
        if sdp:
            headers.append(("Content-Type", "application/sdp"))
        self._send(Message(f"SIP/2.0 {status}", headers, SDP.format(port=self.port + 2)
                           if sdp else ""))

    @property
    def contact(self) -> str:
        return f"<sip:{self.endpoint}@{LOOPBACK}:{self.port}>"

    def _via(self) -> str:
        return f"SIP/2.0/UDP {LOOPBACK}:{self.port};rport;branch=z9hG4bK{os.urandom(6).hex()}"

    async def _next(self, wanted: str | int, call_id: str, within: float) -> Message:
        """The next message of ``call_id`` that is ``wanted`` (a method or a final status);
        re-INVITEs meanwhile are answered."""
        async with asyncio.timeout(within):
            while True:
                m = await self._queue.get()
                if m.method == "INVITE" and _tag(m.get("To")):
                    self._answer(m, sdp=True)  # a re-INVITE in a call we hold
                    continue
                if m.get("Call-ID") != call_id and call_id:
                    continue
                if m.method == wanted or (m.status == wanted) or \
                        (wanted == "final" and m.status >= 200):
                    return m
                if isinstance(wanted, int) and m.status >= 300:
                    return m

    async def answer_call(self, within: float = 30) -> Message:
        """The first call the PBX offers, answered; returns its INVITE."""
        invite = await self._next("INVITE", "", within)
        self.a_invite = invite
        self.a_tag = os.urandom(4).hex()
        self._answer(invite, to_tag=self.a_tag, sdp=True)
        await self._next("ACK", invite.get("Call-ID"), within)
        return invite

    async def consult(self, extension: str, within: float = 30) -> Message:
        """Place the consultation call to ``extension``; returns its 200 OK once answered."""
        self.b_call_id = os.urandom(8).hex()  # no @: it goes into a URI header (Replaces)
        self.b_tag = os.urandom(4).hex()
        uri = f"sip:{extension}@{self.pbx[0]}:{self.pbx[1]}"

        def invite(cseq: int, auth: str = "") -> Message:
            headers = [("Via", self._via()), ("Max-Forwards", "70"),
                       ("From", f"<sip:{self.endpoint}@{LOOPBACK}>;tag={self.b_tag}"),
                       ("To", f"<{uri}>"), ("Call-ID", self.b_call_id),
                       ("CSeq", f"{cseq} INVITE"), ("Contact", self.contact),
                       ("Content-Type", "application/sdp")]
            if auth:
                headers.append(("Authorization", auth))
            return Message(f"INVITE {uri} SIP/2.0", headers, SDP.format(port=self.port + 4))

        first = invite(1)
        self._send(first)
        answer = await self._next(200, self.b_call_id, within)
        if answer.status == 401:
            self._ack(first, answer, uri)
            second = invite(2, self._digest(answer.get("WWW-Authenticate"), "INVITE", uri))
            self._send(second)
            answer = await self._next(200, self.b_call_id, within)
            first = second
        if answer.status != 200:
            raise AssertionError(f"the consultation call was refused: {answer.start}")
        self.b_to = answer.get("To")
        self._ack(first, answer, _uri(answer.get("Contact")) or uri)
        return answer

    def _ack(self, invite: Message, answer: Message, uri: str) -> None:
        cseq = invite.get("CSeq").split()[0]
        via = invite.get("Via") if answer.status >= 300 else self._via()
        self._send(Message(f"ACK {uri} SIP/2.0", [
            ("Via", via), ("Max-Forwards", "70"), ("From", invite.get("From")),
            ("To", answer.get("To")), ("Call-ID", invite.get("Call-ID")),
            ("CSeq", f"{cseq} ACK")]))

    def _digest(self, challenge: str, method: str, uri: str) -> str:
        fields = dict(part.strip().split("=", 1) for part in
                      challenge.removeprefix("Digest ").split(","))
        realm, nonce = fields["realm"].strip('"'), fields["nonce"].strip('"')
        ha1 = hashlib.md5(f"{self.endpoint}:{realm}:{self.password}".encode()).hexdigest()
        ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
        cnonce, nc = os.urandom(4).hex(), "00000001"
        response = hashlib.md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()
        opaque = f', opaque={fields["opaque"]}' if "opaque" in fields else ""
        return (f'Digest username="{self.endpoint}", realm="{realm}", nonce="{nonce}", '
                f'uri="{uri}", response="{response}", algorithm=MD5, qop=auth, '
                f'nc={nc}, cnonce="{cnonce}"{opaque}')

    async def transfer(self, extension: str, within: float = 30) -> Message:
        """REFER on the first call, replacing it with the consultation call; returns the
        PBX's answer (202 Accepted)."""
        replaces = (f"{self.b_call_id}%3Bto-tag%3D{_tag(self.b_to)}%3Bfrom-tag%3D"
                    f"{self.b_tag}")
        a = self.a_invite
        target = f"sip:{extension}@{self.pbx[0]}:{self.pbx[1]}?Replaces={replaces}"
        self._send(Message(f"REFER {_uri(a.get('Contact'))} SIP/2.0", [
            ("Via", self._via()), ("Max-Forwards", "70"),
            ("From", f"{a.get('To')};tag={self.a_tag}"), ("To", a.get("From")),
            ("Call-ID", a.get("Call-ID")), ("CSeq", "1 REFER"), ("Contact", self.contact),
            ("Refer-To", f"<{target}>"),
            ("Referred-By", f"<sip:{self.endpoint}@{LOOPBACK}>")]))
        return await self._next(202, a.get("Call-ID"), within)

    async def hang_up_after_transfer(self, within: float = 30) -> None:
        """As phones do: once the PBX says the transfer is done (a NOTIFY with sipfrag
        ``SIP/2.0 200``) the first call is hung up (BYE); the consultation call is the PBX's
        to end (its BYE).  Returns once both are over."""
        a = self.a_invite
        bye_sent = bye_answered = False
        async with asyncio.timeout(within):
            while True:
                if not bye_sent and a.get("Call-ID") in self._done:
                    bye_sent = True
                    self._bye(a)
                if bye_answered and self._byes >= 1:
                    return
                m = await self._queue.get()
                if m.method == "INVITE" and _tag(m.get("To")):
                    self._answer(m, sdp=True)
                elif m.status == 200 and m.get("CSeq") == "2 BYE":
                    bye_answered = True

    def _bye(self, a: Message) -> None:
        self._send(Message(f"BYE {_uri(a.get('Contact'))} SIP/2.0", [
            ("Via", self._via()), ("Max-Forwards", "70"),
            ("From", f"{a.get('To')};tag={self.a_tag}"), ("To", a.get("From")),
            ("Call-ID", a.get("Call-ID")), ("CSeq", "2 BYE")]))

    async def blind_transfer(self, target: str, within: float = 30) -> None:
        """A blind transfer (REFER, no Replaces) of the first call to ``target``, as phones
        make it: once the PBX says it is done (the final NOTIFY) the first call is hung up;
        returns once that BYE is answered.  A call the PBX offers meanwhile is left ringing."""
        a = self.a_invite
        self._refer(f"sip:{target}@{self.pbx[0]}:{self.pbx[1]}")
        accepted = bye_sent = False
        async with asyncio.timeout(within):
            while True:
                if not bye_sent and a.get("Call-ID") in self._done:
                    bye_sent = True
                    self._bye(a)
                m = await self._queue.get()
                if m.method == "INVITE" and _tag(m.get("To")):
                    self._answer(m, sdp=True)
                elif m.status == 202 and m.get("CSeq") == "1 REFER":
                    accepted = True
                elif m.status == 200 and m.get("CSeq") == "2 BYE":
                    assert accepted, "BYE answered before the REFER was accepted"
                    return

    def _refer(self, refer_to: str) -> None:
        a = self.a_invite
        self._send(Message(f"REFER {_uri(a.get('Contact'))} SIP/2.0", [
            ("Via", self._via()), ("Max-Forwards", "70"),
            ("From", f"{a.get('To')};tag={self.a_tag}"), ("To", a.get("From")),
            ("Call-ID", a.get("Call-ID")), ("CSeq", "1 REFER"), ("Contact", self.contact),
            ("Refer-To", f"<{refer_to}>"),
            ("Referred-By", f"<sip:{self.endpoint}@{LOOPBACK}>")]))

    async def blind_transfer_taken_back(self, target: str, within: float = 30) -> Message:
        """A blind transfer (REFER, no Replaces) of the first call to ``target`` that the
        PBX refuses by ringing this phone again: the new call is answered, the first call is
        hung up on the PBX's final NOTIFY.  Returns the new call's INVITE."""
        return await self._taken_back(f"sip:{target}@{self.pbx[0]}:{self.pbx[1]}", within)

    async def attended_transfer_taken_back(self, extension: str, within: float = 30
                                           ) -> Message:
        """An attended transfer (REFER with Replaces, after :meth:`consult`) that the PBX
        undoes by ringing this phone again with the first call's caller: as
        :meth:`blind_transfer_taken_back`; the consultation call is the PBX's to end."""
        replaces = (f"{self.b_call_id}%3Bto-tag%3D{_tag(self.b_to)}%3Bfrom-tag%3D"
                    f"{self.b_tag}")
        return await self._taken_back(
            f"sip:{extension}@{self.pbx[0]}:{self.pbx[1]}?Replaces={replaces}", within)

    async def _taken_back(self, refer_to: str, within: float) -> Message:
        a = self.a_invite
        self._send(Message(f"REFER {_uri(a.get('Contact'))} SIP/2.0", [
            ("Via", self._via()), ("Max-Forwards", "70"),
            ("From", f"{a.get('To')};tag={self.a_tag}"), ("To", a.get("From")),
            ("Call-ID", a.get("Call-ID")), ("CSeq", "1 REFER"), ("Contact", self.contact),
            ("Refer-To", f"<{refer_to}>"),
            ("Referred-By", f"<sip:{self.endpoint}@{LOOPBACK}>")]))
        back: Message | None = None
        accepted = bye_sent = bye_answered = False
        async with asyncio.timeout(within):
            while True:
                if not bye_sent and a.get("Call-ID") in self._done:
                    bye_sent = True
                    self._bye(a)
                if accepted and back is not None and bye_answered:
                    break
                m = await self._queue.get()
                if m.method == "INVITE" and _tag(m.get("To")):
                    self._answer(m, sdp=True)
                elif m.method == "INVITE" and back is None:
                    back = m
                    self._answer(m, to_tag=os.urandom(4).hex(), sdp=True)
                elif m.status == 202 and m.get("CSeq") == "1 REFER":
                    accepted = True
                elif m.status == 200 and m.get("CSeq") == "2 BYE":
                    bye_answered = True
        assert back is not None
        return back
