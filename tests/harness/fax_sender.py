"""A second Asterisk playing a fax machine at the carrier: SendFax, over T.38, to the practice.

Its configuration is hand-written here, not rendered by Backline: one PJSIP endpoint towards
the practice PBX's SIP port, From user ``carrier`` (how the practice recognises its carrier),
T.38 with the settings of the practice's carrier endpoint.  It listens on the practice's trunk
port, where the practice's carrier contact points.  Each fax is an AMI Originate into
``fax-send``; SendFax's result (FAXSTATUS, FAXERROR, FAXPAGES) comes back as a UserEvent from
the h extension, which every answered call runs however it ends.

Waiting is on AMI events and on inotify (the practice's CDR file), never on a fixed sleep.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import select
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from backline.fax.errors import UnreadableTiff
from backline.fax.tiff import read_pages
from backline.localpbx.inotify import DirectoryWatch
from backline.localpbx.instance import AsteriskInstance
from backline.localpbx.ports import LOOPBACK
from backline.pbx.asterisk import cdr
from backline.pbx.asterisk.ami import AmiLink
from backline.pbx.ports import CdrRow
from tests.harness.ports import asterisk_ports
from tests.harness.practice_pbx import PracticePbx

AMI_USER = "faxsender"
CONTEXT = "fax-send"
DOCUMENTS = "outfax"  # in the sender's spool
SENT_EVENT = "BacklineFaxSent"
_DOCUMENT = re.compile(r"[a-z0-9][a-z0-9-]{1,30}")  # the dialplan's _[a-z0-9]. needs two
_STATION = re.compile(r"[A-Za-z0-9 +.-]{1,20}")  # what a fax machine's TSI holds, here


@dataclass(frozen=True)
class SentFax:
    """How one SendFax ended, as the sending Asterisk saw it."""

    answered: bool  # False: the practice never answered (SendFax did not run)
    status: str  # FAXSTATUS: SUCCESS or FAILED ("" if SendFax never ran)
    error: str  # FAXERROR (HANGUP is normal on success: the receiver hangs up first)
    pages: int
    reason: str = ""  # the originate's failure reason when not answered
    seconds: float = 0.0


def pjsip_conf(sip_port: int, practice_sip: int, address: str = LOOPBACK,
               practice_address: str = LOOPBACK) -> str:
    return f"""\
[global]
type=global
user_agent=Backline test fax sender
endpoint_identifier_order=ip

[transport-udp]
type=transport
protocol=udp
bind={address}:{sip_port}

[practice]
type=endpoint
context=fax-in
disallow=all
allow=ulaw,alaw
direct_media=no
rtp_symmetric=yes
from_user=carrier
aors=practice
media_address={address}
bind_rtp_to_media_address=yes
t38_udptl=yes
t38_udptl_ec=redundancy
t38_udptl_maxdatagram=400

[practice]
type=aor
contact=sip:{practice_address}:{practice_sip}

[practice-identify]
type=identify
endpoint=practice
match={practice_address}
"""


def extensions_conf(station: str) -> str:
    # No 'z' option: the receiver asks for T.38, as ReceiveFax (and real fax servers) do;
    # 'f' allows G.711 audio if it does not.
    return f"""\
[general]
static=yes
writeprotect=yes

[fax-in]

[{CONTEXT}]
exten => _[a-z0-9].,1,Set(SENDER_DOC=${{EXTEN}})
 same => n,Set(FAXOPT(localstationid)={station})
 same => n,SendFax(${{ASTSPOOLDIR}}/{DOCUMENTS}/${{EXTEN}}.tif,f)
 same => n,Hangup()
exten => h,1,UserEvent({SENT_EVENT},Doc: ${{SENDER_DOC}},Status: ${{FAXSTATUS}},Error: ${{FAXERROR}},Pages: ${{FAXPAGES}})
"""  # noqa: E501


def manager_conf(port: int, secret: str) -> str:
    return f"""\
[general]
enabled=yes
port={port}
bindaddr={LOOPBACK}
displayconnects=no

[{AMI_USER}]
secret={secret}
deny=0.0.0.0/0.0.0.0
permit={LOOPBACK}/255.255.255.255
read=system,call,user,originate,reporting
write=system,call,originate,command
"""


class FaxSender:
    """The sending Asterisk; ``start()``, ``document()``, ``send()``, ``stop()``."""

    def __init__(self, name: str, *, sip_port: int, practice_sip: int, root: Path,
                 station: str = "+1 720 555 0199", address: str = LOOPBACK,
                 practice_address: str = LOOPBACK) -> None:
        """``address``: where its SIP and media are (its AMI stays on loopback);
        ``practice_address``: the practice PBX's SIP address."""
        if not _STATION.fullmatch(station):
            raise ValueError(f"a station ID this harness writes into its dialplan: {station!r}")
        ports = dataclasses.replace(asterisk_ports(), sip=sip_port)
        self.secret = os.urandom(12).hex()
        self.station = station
        self.instance = AsteriskInstance(name, ports, {
            "pjsip.conf": pjsip_conf(sip_port, practice_sip, address, practice_address),
            "extensions.conf": extensions_conf(station),
            "manager.conf": manager_conf(ports.ami, self.secret),
        }, root=root)
        self.ami: AmiLink | None = None
        self._results: dict[str, SentFax] = {}
        self._changed = asyncio.Event()

    async def start(self) -> None:
        await asyncio.to_thread(self.instance.write_config)
        self.instance.host_path(self.instance.dir("spool") / DOCUMENTS).mkdir(exist_ok=True)
        # cdr_csv (a required module) logs an error per call without its directory.
        self.instance.host_path(self.instance.dir("log") / "cdr-csv").mkdir(exist_ok=True)
        await asyncio.to_thread(self.instance.start, 60)  # 60 s, 30 s: bounds on a hang only
        self.ami = AmiLink(LOOPBACK, self.instance.ports.ami, AMI_USER, self.secret)
        self.ami.on_event("UserEvent", self._on_user_event)
        self.ami.on_event("OriginateResponse", self._on_originate)
        await self.ami.connect(within=30)

    async def stop(self) -> None:
        if self.ami is not None:
            self.ami.close()
        await asyncio.to_thread(self.instance.stop)
        await asyncio.to_thread(self.instance.remove)

    def document(self, name: str, tiff: bytes) -> str:
        """Put a TIFF into the sender's tree; return the name ``send()`` takes."""
        if not _DOCUMENT.fullmatch(name):
            raise ValueError(f"document names are 2-31 lowercase letters, digits, '-': {name!r}")
        path = self.instance.host_path(self.instance.dir("spool") / DOCUMENTS / f"{name}.tif")
        path.write_bytes(tiff)
        return name

    async def send(self, number: str, document: str, within: float) -> SentFax:
        """SendFax ``document`` to ``number`` at the practice; wait for the call to end."""
        assert self.ami is not None
        self._results.pop(document, None)
        started = time.monotonic()
        answer = await self.ami.action({
            "Action": "Originate", "Channel": f"PJSIP/{number}@practice", "Context": CONTEXT,
            "Exten": document, "Priority": "1", "CallerID": f"Test Fax <{number}>",
            "Timeout": "20000", "Async": "true"})
        if answer.get("Response") != "Success":
            raise AssertionError(f"Originate refused: {dict(answer)}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while document not in self._results:
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise AssertionError(f"SendFax of {document} did not end within {within} s:\n"
                                     f"{self.instance.log_tail()}") from None
        return dataclasses.replace(self._results[document],
                                   seconds=time.monotonic() - started)

    def stats(self) -> dict[str, dict[str, int]]:
        return fax_stats(self.instance)

    def hang_up(self) -> None:
        """Hang up every call of the sender at once: the fax machine's line drops."""
        self.instance.cli("channel request hangup all")

    def _on_user_event(self, event: Mapping[str, str]) -> None:
        if event.get("UserEvent") != SENT_EVENT:
            return
        pages = event.get("Pages", "")
        self._done(event.get("Doc", ""), SentFax(True, event.get("Status", ""),
                                                 event.get("Error", ""),
                                                 int(pages) if pages.isdigit() else 0))

    def _on_originate(self, event: Mapping[str, str]) -> None:
        if event.get("Response") != "Failure":
            return  # answered: the UserEvent from the h extension tells the rest
        self._done(event.get("Exten", ""), SentFax(False, "", "", 0,
                                                   reason=event.get("Reason", "")))

    def _done(self, document: str, result: SentFax) -> None:
        self._results[document] = result
        self._changed.set()
        self._changed = asyncio.Event()


def fax_stats(instance: AsteriskInstance) -> dict[str, dict[str, int]]:
    """``fax show stats`` by section (``FAX Statistics``, ``Spandsp G.711``, ``Spandsp T.38``):
    how many faxes each way of carrying them completed, failed, ...; counts since start."""
    sections: dict[str, dict[str, int]] = {}
    current: dict[str, int] | None = None
    for line in instance.cli("fax show stats").splitlines():
        key, sep, value = line.partition(":")
        if not line.strip() or set(line.strip()) == {"-"}:
            continue
        if not sep:
            current = sections.setdefault(line.strip(), {})
        elif current is not None and value.strip().isdigit():
            current[key.strip()] = int(value.strip())
    return sections


def wait_for_cdr(path: Path, predicate: Callable[[CdrRow], bool],
                 within: float) -> CdrRow:
    """The first CDR row (cdr_csv's Master.csv) matching ``predicate``, waiting on inotify.

    Asterisk writes a call's row once the channel is gone, after its h extension: a fax's
    row there means the practice has finished with it (the controller was told, if up).
    """
    deadline = time.monotonic() + within
    path.parent.mkdir(parents=True, exist_ok=True)
    with DirectoryWatch(path.parent) as watch:
        while True:
            try:
                text = path.read_text("utf-8", "replace")
            except FileNotFoundError:
                text = ""
            for row in cdr.parse(text):
                if predicate(row):
                    return row
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no such CDR row in {path} within {within} s:\n{text}")
            select.select([watch.fileno()], [], [], remaining)
            watch.drain()


def wait_for_pages(spool: Path, pages: int, within: float) -> Path:
    """The TIFF a ReceiveFax is writing in ``spool`` once it holds ``pages`` whole pages.

    spandsp writes a page into the TIFF when the page is complete, so this is the moment the
    receiver has that many pages, observed on inotify, not guessed with a sleep.
    """
    deadline = time.monotonic() + within
    with DirectoryWatch(spool) as watch:
        while True:
            for path in spool.glob("fax-*.tif"):
                try:
                    if len(read_pages(path.read_bytes())) >= pages:
                        return path
                except (UnreadableTiff, OSError):
                    pass  # still being written
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no TIFF with {pages} page(s) in {spool} within {within} s")
            select.select([watch.fileno()], [], [], remaining)
            watch.drain()


@asynccontextmanager
async def fax_sender(practice: PracticePbx, name: str,
                     station: str = "+1 720 555 0199") -> AsyncIterator[FaxSender]:
    """A started sender pointed at ``practice``, on the practice's trunk port."""
    sender = FaxSender(f"fs-{name}-{os.urandom(3).hex()}"[:64], sip_port=practice.ports.trunk,
                       practice_sip=practice.ports.sip, root=practice.instance.root,
                       station=station)
    try:
        await sender.start()
        yield sender
    finally:
        await sender.stop()


def spool_of(instance: AsteriskInstance) -> Path:
    """The instance's spool directory on the host (where its ReceiveFax writes)."""
    return instance.host_path(PurePosixPath(instance.dir("spool")))
