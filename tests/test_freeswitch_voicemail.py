"""Voicemail on FreeSWITCH, over the Event Socket's wire format only (no FreeSWITCH runs
here): the ESL test server fires mod_voicemail's ``vm::maintenance`` / ``leave-message``
event as mod_event_socket serializes it, with the recording on disk where the event says,
and the controller files it in the inbox (the tests' real inbox server) by ownership, once,
across a reconnect and a restart.

The event's headers, their order and when it fires are mod_voicemail.c's (deliver_vm:
after the recording is closed, before the message is filed in mod_voicemail's database),
then the channel's data (switch_channel_event_set_data: a CUSTOM event carries the
variables too).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import math
import os
import stat
import struct
import uuid as uuidlib
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from backline.app.controller import Controller
from backline.core.connections import Connections, Inbox, Secret, Storage
from backline.core.model import Carry, Directory, Team
from backline.core.records import AttemptKind, Delivery, Outcome
from backline.journal import open_journal
from backline.pbx.freeswitch import names
from tests.harness.eslserver import Channel
from tests.harness.freeswitch_rig import (
    DOMAIN,
    PASSWORD,
    FsRig,
    SwitchWithApps,
    freeswitch_pbx,
    fs_rig,
)
from tests.harness.inbox_server import TOKEN_ENV, InboxServer
from tests.practice import directory, number, t, u, user

TEAM = "+13125550100"
OTHER = "+13125550111"
PATIENT = "+17205550141"
SECONDS = 4


def practice(tmp: Path, inbox_url: str) -> Directory:
    """front-desk (sam, jo, lee deactivated) owns TEAM, ana is an additional member; mia is
    in the practice and no member of it."""
    d = directory(
        [user("ana"), user("sam"), user("jo"), user("lee", active=False), user("mia")],
        [Team("front-desk", "Front Desk", ("sam", "jo", "lee"))],
        [number(TEAM, t("front-desk"), (u("ana"),), caller_id_name="Maple Street",
                tags=("scheduling",)),
         number(OTHER, u("mia"), carries=(Carry.VOICE,))])
    pbx = dataclasses.replace(freeswitch_pbx(0, str(tmp / "fax-spool")),
                              fax_dir=str(tmp / "backline" / "fax"),
                              secrets_file=str(tmp / "secrets.json"))
    return dataclasses.replace(d, connections=Connections(
        Storage(f"sqlite:///{tmp / 'journal.db'}"), pbx=pbx,
        inbox=Inbox(inbox_url, Secret(env=TOKEN_ENV))))


def recording(path: Path, seconds: int = SECONDS, hz: int = 440) -> bytes:
    """What mod_voicemail leaves for a G.711 call: a WAV (mod_sndfile, the profile's
    file-extension) of 8 kHz, 16-bit mono samples; here the caller's tone. Written 0644
    in the box's folder, as FreeSWITCH writes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * i / 8000)))
                      for i in range(8000 * seconds))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(frames)
    os.chmod(path, 0o644)
    return path.read_bytes()


@dataclass(frozen=True)
class Left:
    """A message as mod_voicemail left it: the call, the box and the file."""

    call: Channel
    box: str
    path: Path
    audio: bytes


def leave(storage: Path, to: str = TEAM, caller: str = PATIENT, *,
          seconds: int = SECONDS) -> Left:
    """A caller to ``to`` left a message: the recording is on disk where deliver_vm puts it
    (storage/voicemail/PROFILE/DOMAIN/BOX/msg_UUID.wav; its own uuid, not the call's)."""
    call = Channel(caller_id_number=caller, caller_id_name='Bob: "; ${system(id)}:',
                   destination_number=to, context=names.CARRIER_CONTEXT,
                   variables={names.ROUTE: names.INBOUND, names.NUMBER: to})
    box = to[-10:]
    path = storage / "voicemail" / names.VOICEMAIL_PROFILE / DOMAIN / box / \
        f"msg_{uuidlib.uuid4()}.wav"
    return Left(call, box, path, recording(path, seconds))


class MessageDb:
    """mod_voicemail's ``voicemail_msgs``, as deliver_vm fills it (after the event) and
    ``vm_list BOX@DOMAIN`` prints it (voicemail_list_api_function, api_list_callback: one
    line a message, ten columns joined by ``:``, nothing escaped)."""

    def __init__(self) -> None:
        self.rows: list[tuple[Left, str, str]] = []  # the message, its domain and path

    def keep(self, left: Left, domain: str = DOMAIN, path: str | None = None) -> None:
        self.rows.append((left, domain, str(left.path) if path is None else path))

    def vm_list(self, arg: str | None) -> str:
        box, _, domain = (arg or "").partition("@")
        return "".join(
            f"1790000000:0:{left.box}:{where}:inbox:{path}:{left.call.uuid}:"
            f"{left.call.caller_id_name}:{left.call.caller_id_number}:{seconds(left)}\n"
            for left, where, path in self.rows if left.box == box and where == domain)


def seconds(left: Left) -> int:
    return len(left.audio[44:]) // 16000


def fire_left(rig: FsRig, left: Left, *, path: str | None = None,
              domain: str = DOMAIN, db: MessageDb | None = None) -> bytes:
    """deliver_vm's event for ``left``: its VM-* headers in its order, then the channel's;
    then the message is filed in ``db``."""
    fired = rig.server.fire_event("CUSTOM", [
        ("VM-Action", "leave-message"), ("VM-User", left.box), ("VM-Domain", domain),
        ("VM-Caller-ID-Name", left.call.caller_id_name),
        ("VM-Caller-ID-Number", left.call.caller_id_number),
        ("VM-File-Path", str(left.path) if path is None else path),
        ("VM-Flags", "B"), ("VM-Folder", "inbox"), ("VM-UUID", left.call.uuid),
        ("VM-Message-Len", str(seconds(left))), ("VM-Timestamp", "1790000000"),
        *left.call.event_headers()],
        subclass=names.VOICEMAIL_EVENT, calling=("mod_voicemail.c", "deliver_vm", 2908))
    if db is not None:
        db.keep(left, domain, path)
    return fired


@asynccontextmanager
async def controller_on(d: Directory, db: MessageDb | None = None,
                        logins: asyncio.Queue[int] | None = None
                        ) -> AsyncIterator[tuple[Controller, FsRig]]:
    """A controller (its journal, voicemail intake and inbox drain) and its FreeSWITCH driver
    logged in to the ESL test server, as `backline run` wires them; ``vm_list`` answers from
    ``db``; ``logins`` is told when each login's imports are done."""
    journal = open_journal(d.connections.storage.url)
    controller = Controller(d, journal)
    drain = controller.inbox
    assert drain is not None
    drain.start()
    server = SwitchWithApps(PASSWORD)
    server.script_api("vm_list", (db or MessageDb()).vm_list)

    async def imported() -> None:
        await controller.import_pbx_record()
        if logins is not None:
            await logins.put(len(server.connections))

    try:
        async with fs_rig(d, controller.conversations, server=server,
                          record=controller.record_attempt, mode=controller.mode,
                          voicemail=controller.voicemail, import_record=imported) as rig:
            yield controller, rig
    finally:
        await drain.close()
        await controller.close()
        journal.close()


def read(path: Path) -> bytes:
    return path.read_bytes()


def voicemail_files(store: Path) -> list[Path]:
    return sorted(store.glob("voicemail-*.wav")) if store.is_dir() else []


async def test_a_message_left_on_freeswitch_reaches_the_inbox_once_by_ownership(
        tmp_path: Path, inbox: InboxServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    d = practice(tmp_path, inbox.url)
    storage = tmp_path / "freeswitch-storage"
    async with controller_on(d) as (controller, rig):
        left = leave(storage)
        fire_left(rig, left)
        await inbox.wait_for(1, within=30)
        assert controller.inbox is not None
        await controller.inbox.drained(within=30)
        [message] = [a for a in controller.journal.attempts() if a.kind is AttemptKind.VOICEMAIL]
        assert (message.key, message.sender, message.recipient, message.outcome,
                message.detail) == (f"voicemail:{left.call.uuid}", PATIENT, TEAM,
                                    Outcome.VOICEMAIL, f"{SECONDS} s")
        # Backline's own copy: 0600 in a 0700 directory, the recording's bytes; FreeSWITCH's
        # stays where mod_voicemail keeps it, for the members' `voicemail check`.
        kept = Path(message.file)
        assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(kept.parent).st_mode) == 0o700
        assert read(kept) == left.audio and read(left.path) == left.audio
        assert controller.journal.attempt(message.key).delivery is Delivery.DELIVERED  # type: ignore[union-attr]
    [doc] = inbox.items()
    assert (doc["kind"], doc["from"], doc["to"]) == ("voicemail", PATIENT, TEAM)
    assert doc["conversation"] == {"number": TEAM, "party": PATIENT}
    assert doc["conversation_tags"] == ["scheduling"]
    # Only the number's members: front-desk's active members and ana; never lee
    # (deactivated) or mia.
    assert doc["notify"] == {"users": ["ana", "jo", "sam"]}
    assert base64.b64decode(doc["file"]["data"]) == left.audio
    assert doc["file"]["type"] == "audio/wav"
    assert doc["voicemail"] == {"duration_seconds": float(SECONDS)}
    assert inbox.tries() == 1
    # No log line names the caller, in any spelling.
    assert not [r for r in caplog.records if "7205550141" in r.getMessage()]


async def test_a_repeated_event_across_a_reconnect_and_a_restart_files_nothing_twice(
        tmp_path: Path, inbox: InboxServer) -> None:
    d = practice(tmp_path, inbox.url)
    storage = tmp_path / "freeswitch-storage"
    first, second, third = (leave(storage), leave(storage, OTHER, "+17205550142"),
                            leave(storage, caller="+17205550143"))
    db = MessageDb()
    async with controller_on(d, db) as (controller, rig):
        fire_left(rig, first, db=db)
        await inbox.wait_for(1, within=30)
        rig.server.connections[0].drop()  # the link drops; the driver logs in again
        await rig.server.wait_connection(2)
        await rig.driver.hub.wait_up(30)
        # The same event again, then a new message: events are taken in the order they
        # come, one at a time, so once the new one is filed the repeat has been judged.
        fire_left(rig, first)
        fire_left(rig, second, db=db)
        await inbox.wait_for(2, within=30)
        await rig.driver.stop_after()
        assert controller.inbox is not None
        await controller.inbox.drained(within=30)
    # A restart: a new controller on the same journal lists both at its login (vm_list)
    # and hears both again, then a third.
    async with controller_on(d, db) as (controller, rig):
        fire_left(rig, first)
        fire_left(rig, second)
        fire_left(rig, third)
        await inbox.wait_for(3, within=30)
        await rig.driver.stop_after()
        assert controller.inbox is not None
        await controller.inbox.drained(within=30)
        journal = controller.journal
        messages = [a for a in journal.attempts() if a.kind is AttemptKind.VOICEMAIL]
        assert sorted(a.key for a in messages) == sorted(
            f"voicemail:{m.call.uuid}" for m in (first, second, third))
        store = Path(messages[0].file).parent
    assert [(doc["from"], doc["to"]) for doc in inbox.items()] == [
        (PATIENT, TEAM), ("+17205550142", OTHER), ("+17205550143", TEAM)]
    assert inbox.items()[1]["notify"] == {"users": ["mia"]}
    assert inbox.tries() == 3
    assert len(voicemail_files(store)) == 3


async def test_an_event_naming_another_file_or_domain_reads_and_files_nothing(
        tmp_path: Path, inbox: InboxServer, caplog: pytest.LogCaptureFixture) -> None:
    d = practice(tmp_path, inbox.url)
    storage = tmp_path / "freeswitch-storage"
    secret = tmp_path / "not-voicemail.wav"
    secret.write_bytes(recording(tmp_path / "x" / "msg.wav"))
    async with controller_on(d) as (controller, rig):
        forged, elsewhere, good = leave(storage), leave(storage), leave(storage)
        fire_left(rig, forged, path=str(secret))  # not where mod_voicemail keeps a message
        fire_left(rig, forged, path=str(forged.path.parent / ".." / forged.path.name))
        fire_left(rig, elsewhere, domain="stock.example")  # another domain's box
        fire_left(rig, good)
        await inbox.wait_for(1, within=30)
        await rig.driver.stop_after()
        assert controller.inbox is not None
        await controller.inbox.drained(within=30)
        keys = [a.key for a in controller.journal.attempts()]
        store = Path(controller.voicemail.store)
    assert keys == [f"voicemail:{good.call.uuid}"]
    assert [doc["to"] for doc in inbox.items()] == [TEAM]
    assert len(voicemail_files(store)) == 1
    refused = [r.getMessage() for r in caplog.records
               if "voicemail report was ignored" in r.getMessage()]
    assert len(refused) == 2 and all("VM-File-Path" in m for m in refused)


def voicemail_application(arg: str) -> dict[str, str | int]:
    """How mod_voicemail.c's voicemail_function reads its argument (split at spaces): any
    leading ``check``/``auth``/``auth_only`` words, then profile, domain and box."""
    words = arg.split(" ")
    read: dict[str, str | int] = {"check": 0, "auth": 0}
    while words and words[0].lower() in ("check", "auth", "auth_only"):
        word = words.pop(0).lower()
        if word == "check":
            read["check"] = int(read["check"]) + 1
        else:
            read["auth"] = 2 if word == "auth_only" else int(read["auth"]) + 1
    for name, value in zip(("profile", "domain", "box"), words, strict=False):
        read[name] = value
    return read


def desk_call(phone: str, digits: str) -> Channel:
    return Channel(caller_id_number=phone, caller_id_name=phone, destination_number=digits,
                   context=names.DESK_CONTEXT,
                   variables={names.ROUTE: names.OUTBOUND, "user_name": phone})


async def test_star_97_opens_the_box_for_members_only_without_its_password(
        tmp_path: Path) -> None:
    """A member's ``*97`` reaches ``voicemail check auth``: the controller has checked the
    membership, so mod_voicemail asks no password (the box's is a secret nobody is given,
    so without ``auth`` nobody could listen). Anyone else is refused before any voicemail
    application runs."""
    d = practice(tmp_path, "http://127.0.0.1:9/")
    async with fs_rig(d) as rig:
        for phone in ("ana-p0", "mia-p0"):
            rig.register(phone)
        await rig.driver.wait_registered({"ana", "mia"}, 30)
        _, apps = await rig.call(desk_call("ana-p0", "*97"))
        [arg] = [a for app, a in apps if app == "voicemail"]
        assert voicemail_application(arg) == {"check": 1, "auth": 1, "profile": "default",
                                              "domain": DOMAIN, "box": TEAM[-10:]}
        _, refused = await rig.call(desk_call("mia-p0", "*97" + TEAM))
        assert [app for app, _ in refused] == ["answer", "playback", "hangup"]


async def test_a_message_left_while_the_controller_was_away_is_filed_once_at_each_login(
        tmp_path: Path, inbox: InboxServer) -> None:
    """No listener heard the event: the message is in mod_voicemail's database only, and
    ``vm_list`` at the controller's login brings it in; later logins (a reconnect, a restart)
    list it again and file nothing twice. A listed path not in mod_voicemail's shape is not
    read."""
    d = practice(tmp_path, inbox.url)
    storage = tmp_path / "freeswitch-storage"
    db = MessageDb()
    away, forged = leave(storage, caller="+17205550144"), leave(storage)
    db.keep(away)
    db.keep(forged, path=str(tmp_path / "journal.db"))
    logins: asyncio.Queue[int] = asyncio.Queue()
    async with controller_on(d, db, logins) as (controller, rig):
        assert await asyncio.wait_for(logins.get(), 30) == 1
        await inbox.wait_for(1, within=30)
        rig.server.connections[0].drop()  # the link drops: logged in again, listed again
        assert await asyncio.wait_for(logins.get(), 30) == 2
        assert controller.inbox is not None
        await controller.inbox.drained(within=30)
    async with controller_on(d, db, logins) as (controller, rig):  # a restart
        assert await asyncio.wait_for(logins.get(), 30) == 1
        assert controller.inbox is not None
        await controller.inbox.drained(within=30)
        keys = [a.key for a in controller.journal.attempts() if a.kind is AttemptKind.VOICEMAIL]
    assert keys == [f"voicemail:{away.call.uuid}"]
    [doc] = inbox.items()
    assert (doc["kind"], doc["from"], doc["to"]) == ("voicemail", "+17205550144", TEAM)
    assert doc["notify"] == {"users": ["ana", "jo", "sam"]}
    assert base64.b64decode(doc["file"]["data"]) == away.audio
    assert inbox.tries() == 1


U1, U2 = "3f0c2a4e-8d1b-4c5e-9a7f-1b2c3d4e5f60", "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
BOX_DIR = f"/var/lib/freeswitch/storage/voicemail/default/{DOMAIN}/3125550100"


@pytest.mark.parametrize(("line", "expected"), [
    (f"1790000000:0:3125550100:{DOMAIN}:inbox:{BOX_DIR}/msg_{U2}.wav:{U1}:Ann:+17205550141:7",
     (U1, "+17205550141", 7, f"{BOX_DIR}/msg_{U2}.wav")),
    # The caller's name is theirs to choose: colons in it move nothing.
    (f"1790000000:0:3125550100:{DOMAIN}:inbox:{BOX_DIR}/msg_{U2}.wav:{U1}:a:b::c:+1720555:12",
     (U1, "+1720555", 12, f"{BOX_DIR}/msg_{U2}.wav")),
    (f"1790000000:0:3125550100:{DOMAIN}:inbox:{BOX_DIR}/msg_{U2}.wav:{U1}::Unknown:x",
     (U1, "", 0, f"{BOX_DIR}/msg_{U2}.wav")),
    (f"1790000000:0:3125550199:{DOMAIN}:inbox:{BOX_DIR}/msg_{U2}.wav:{U1}:A:1:7", None),
    (f"1790000000:0:3125550100:stock.example:inbox:{BOX_DIR}/msg_{U2}.wav:{U1}:A:1:7", None),
    (f"1790000000:0:3125550100:{DOMAIN}:inbox:/etc/shadow:{U1}:A:1:7", None),
    (f"1790000000:0:3125550100:{DOMAIN}:inbox:{BOX_DIR}/../msg_{U2}.wav:{U1}:A:1:7", None),
    (f"1790000000:0:3125550100:{DOMAIN}:inbox:{BOX_DIR}/msg_{U2}.wav:not-a-uuid:A:1:7", None),
    (f"1790000000:0:3125550100:{DOMAIN}:inbox:{BOX_DIR}/msg_{U2}.wav", None),
    ("-ERR can't find user or profile.", None),
    ("", None),
])
def test_vm_list_lines_are_read_from_both_ends_and_anything_else_is_skipped(
        line: str, expected: tuple[str, str, int, str] | None) -> None:
    from backline.pbx.freeswitch.voicemail import listed_messages

    found = listed_messages(line + "\n", "3125550100", DOMAIN)
    if expected is None:
        assert found == []
    else:
        [(message, audio)] = found
        assert (message.msg_id, message.caller, message.seconds, str(audio)) == expected
        assert message.box == "3125550100" and message.at.timestamp() == 1790000000


async def test_a_recording_the_controller_cannot_read_yet_is_filed_at_the_next_login(
        tmp_path: Path, inbox: InboxServer) -> None:
    """The event names a recording this host cannot read (not there yet: another mount, a
    slow disk): nothing is journaled, nothing is lost; the next login lists it and, readable
    now, it is filed once."""
    d = practice(tmp_path, inbox.url)
    storage = tmp_path / "freeswitch-storage"
    db = MessageDb()
    logins: asyncio.Queue[int] = asyncio.Queue()
    async with controller_on(d, db, logins) as (controller, rig):
        assert await asyncio.wait_for(logins.get(), 30) == 1
        late, other = leave(storage, caller="+17205550145"), leave(storage, OTHER)
        hidden = left_aside(late.path)
        fire_left(rig, late, db=db)
        fire_left(rig, other, db=db)  # taken in after the first one has been judged
        await inbox.wait_for(1, within=30)
        assert [doc["to"] for doc in inbox.items()] == [OTHER]
        hidden.rename(late.path)  # readable now
        rig.server.connections[0].drop()
        assert await asyncio.wait_for(logins.get(), 30) == 2
        await inbox.wait_for(2, within=30)
        assert controller.inbox is not None
        await controller.inbox.drained(within=30)
    assert [(doc["from"], doc["to"]) for doc in inbox.items()] == [
        (PATIENT, OTHER), ("+17205550145", TEAM)]
    assert base64.b64decode(inbox.items()[1]["file"]["data"]) == late.audio
    assert inbox.tries() == 2


def left_aside(path: Path) -> Path:
    aside = path.with_name(path.name + ".elsewhere")
    path.rename(aside)
    return aside
