"""Desk-phone provisioning as a phone meets it: the controller serves each vendor's file over
HTTPS at the path the vendor requests, only with the device's credentials, 404 for an
unknown MAC; each file parsed and checked against what the config says.  ``backline check``
refuses a malformed MAC, an unknown model and a MAC listed twice."""

from __future__ import annotations

import asyncio
import base64
import configparser
import json
import re
import ssl
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from backline.app import config as config_mod
from backline.app.controller import Controller
from backline.core.connections import (
    DEFAULT_REFUSALS_PER_MINUTE,
    DEFAULT_RESERVED_DESCRIPTORS,
    AsteriskPbx,
    ListenerLimits,
)
from backline.core.provisioning import Vendor, normal_mac, vendor_of
from backline.features.listeners import DescriptorBudget, PublicListener
from backline.features.provisioning import Provisioning
from backline.journal import open_journal
from backline.localpbx.ports import free_port

from .test_tls_config import backline, config

PHONES = {  # desk phone: (as written in the YAML, model, vendor's file)
    "ana-desk": ("00:15:65:AA:BB:01", "T46U", "001565aabb01.cfg"),
    "sam-desk": ("0004f2-aa-bb-02".replace("-", ""), "VVX 411", "phone0004f2aabb02.cfg"),
    "jo-desk": ("00-0b-82-aa-bb-03", "GRP2614", "cfg000b82aabb03.xml"),
}


def provisioned(tmp_path: Path, extra: str = "", encryption: str = "required") -> Path:
    path = config(tmp_path, f"    tls: {{port: 5061, practice_ca: {tmp_path}/ca}}\n"
                            f"    encryption: {encryption}\n"
                            f"    secrets_file: {tmp_path}/secrets.json\n"
                            f"    provisioning: {{host: 127.0.0.1, port: {free_port()}}}\n")
    text = path.read_text()
    for phone, (mac, model, _) in PHONES.items():
        text = text.replace(f"desk_phones: [{phone}]",
                            f"desk_phones: [{{name: {phone}, mac: \"{mac}\", "
                            f"model: \"{model}\"}}{extra if phone == 'jo-desk' else ''}]", 1)
    path.write_text(text)
    return path


def test_check_refuses_a_malformed_mac_an_unknown_model_and_a_mac_twice(
        tmp_path: Path) -> None:
    path = provisioned(tmp_path, extra=", {name: jo-exam, mac: \"00:15:65:aa:bb:01\", "
                                       "model: T46U}")
    text = path.read_text()
    text = text.replace('"00:15:65:AA:BB:01", model: "T46U"',
                        '"00:15:65:AA:BB:01", model: "SPA504G"')
    text = text.replace('"0004f2aabb02"', '"00:04:f2:aa:bb"')
    path.write_text(text)
    done = backline("check", str(path))
    assert done.returncode == 2, done.stdout
    assert "desk_phones[0].mac: a MAC address of six bytes" in done.stderr  # sam's, malformed
    assert "model: a Yealink T4x/T5x, Polycom VVX or Grandstream GRP model" in done.stderr
    assert "desk_phones[1].mac: a MAC of its own (00:15:65:aa:bb:01 is already" in done.stderr
    assert done.stderr.count("problem") == 1 and "3 problem(s)" in done.stderr, done.stderr


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def _fetch(session: aiohttp.ClientSession, port: int, name: str,
                 auth: str | None) -> tuple[int, str]:
    headers = {"Authorization": auth} if auth else {}
    async with session.get(f"https://127.0.0.1:{port}/{name}", headers=headers) as response:
        return response.status, await response.text()


@pytest.mark.parametrize("encryption", ["required", "optional"])
def test_each_vendor_fetches_its_file_with_its_credentials_only(tmp_path: Path,
                                                                 encryption: str) -> None:
    path = provisioned(tmp_path, encryption=encryption)
    d = config_mod.load(path).directory
    pbx = d.connections.pbx
    assert isinstance(pbx, AsteriskPbx) and pbx.tls is not None
    journal = open_journal(d.connections.storage.url)
    controller = Controller(d, journal, clock=lambda: datetime(2026, 1, 5, tzinfo=UTC))

    async def scenario() -> dict[str, tuple[int, str]]:
        await controller.start()
        try:
            feature = controller.feature(Provisioning)
            assert feature is not None
            port = feature.listen.port
            secrets = json.loads(await asyncio.to_thread(Path(pbx.secrets_file).read_text))
            trust = ssl.create_default_context(cafile=f"{tmp_path}/ca/ca.pem")
            out: dict[str, tuple[int, str]] = {}
            async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=trust)) as http:
                for phone, (_, _, name) in PHONES.items():
                    mac = name.removeprefix("phone").removeprefix("cfg")[:12]
                    good = basic(mac, secrets[f"provisioning:{mac}"])
                    if phone == "sam-desk":  # Polycom's master file, then the one it names
                        out["master"] = await _fetch(http, port, f"{mac}.cfg", good)
                    out[phone] = await _fetch(http, port, name, good)
                    out[f"{phone}:none"] = await _fetch(http, port, name, None)
                    out[f"{phone}:wrong"] = await _fetch(
                        http, port, name, basic(mac, secrets[phone]))
                    # Another phone's credentials do not fetch this one's file.
                    other = "001565aabb01" if mac != "001565aabb01" else "000b82aabb03"
                    out[f"{phone}:other"] = await _fetch(
                        http, port, name,
                        basic(other, secrets[f"provisioning:{other}"]))
                # What phones ask for on every boot besides their own file: 404, not
                # counted or audited as guessing.
                for common in ("y000000000028.cfg", "000000000000.cfg", "cfggrp2614.xml",
                               "cfg.xml"):
                    out[common] = await _fetch(http, port, common, None)
                out["unknown"] = await _fetch(http, port, "001565ffffff.cfg", good)
                # A guesser: past the source's refusals this minute, even the right
                # credentials are answered 429 unread.
                pages = d.connections.pages
                limit = pages.refusals_per_minute if pages else DEFAULT_REFUSALS_PER_MINUTE
                for _ in range(limit):
                    await _fetch(http, port, "cfg000b82aabb03.xml", basic("x", "y"))
                out["limited"] = await _fetch(http, port, "cfg000b82aabb03.xml", good)
            return out
        finally:
            await controller.close()

    got = asyncio.run(scenario())
    secrets = json.loads(Path(pbx.secrets_file).read_text())
    for phone in PHONES:
        for refused in ("none", "wrong", "other"):
            assert got[f"{phone}:{refused}"][0] == 401, (phone, refused)
    assert got["unknown"][0] == 404
    assert got["limited"][0] == 429
    for common in ("y000000000028.cfg", "000000000000.cfg", "cfggrp2614.xml", "cfg.xml"):
        assert got[common][0] == 404, common

    required = encryption == "required"
    assert d.practice.timezone == "America/Chicago"
    offset = -360  # Central Standard Time, UTC-6: known, not computed by the code under test
    users = {p: u for u in d.users for p in u.desk_phones}

    # Yealink: key = value lines.
    status, text = got["ana-desk"]
    assert status == 200 and text.startswith("#!version:1.0.0.1\n")
    parser = configparser.ConfigParser(delimiters=("=",), comment_prefixes=("#",),
                                       interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string("[yealink]\n" + text)
    y = parser["yealink"]
    assert y["account.1.user_name"] == users["ana-desk"].id
    assert y["account.1.auth_name"] == "ana-desk"
    assert y["account.1.password"] == secrets["ana-desk"]
    assert y["account.1.sip_server.1.address"] == pbx.sip.host
    assert int(y["account.1.sip_server.1.port"]) == pbx.tls.port
    assert y["account.1.sip_server.1.transport_type"] == "2"
    assert y["account.1.srtp_encryption"] == ("2" if required else "0")
    assert int(y["local_time.time_zone"]) * 60 == offset
    assert (y["linekey.2.type"], y["linekey.2.value"]) == ("16", "*28")

    # Polycom: the master file names the phone file; the parameters are attributes.
    status, master = got["master"]
    assert status == 200
    assert ET.fromstring(master).get("CONFIG_FILES") == "phone0004f2aabb02.cfg"
    status, text = got["sam-desk"]
    assert status == 200
    element = ET.fromstring(text).find("ALL")
    assert element is not None
    p = element.attrib
    assert p["reg.1.address"] == users["sam-desk"].id
    assert p["reg.1.auth.userId"] == "sam-desk"
    assert p["reg.1.auth.password"] == secrets["sam-desk"]
    assert (p["reg.1.server.1.address"], int(p["reg.1.server.1.port"])) == (
        pbx.sip.host, pbx.tls.port)
    assert p["reg.1.server.1.transport"] == "TLS"
    assert p["sec.srtp.require"] == p["sec.srtp.offer"] == ("1" if required else "0")
    assert int(p["tcpIpApp.sntp.gmtOffset"]) == offset * 60
    assert (p["attendant.reg"], p["attendant.resourceList.1.address"]) == ("1", "*28")

    # Grandstream: P-values under gs_provision/config.
    status, text = got["jo-desk"]
    assert status == 200
    root = ET.fromstring(text)
    assert root.findtext("mac") == "000b82aabb03"
    g = {e.tag: e.text or "" for e in root.find("config") or []}
    assert g["P35"] == users["jo-desk"].id and g["P36"] == "jo-desk"
    assert g["P34"] == secrets["jo-desk"]
    assert g["P47"] == f"{pbx.sip.host}:{pbx.tls.port}"
    assert g["P130"] == "2"
    assert g["P183"] == ("2" if required else "0")
    # The zone as a POSIX rule: its standard offset, and the daylight-saving dates.
    std = re.match(r"(?:[A-Za-z]{3,}|<[^>]+>)([+-]?\d+)", g["P246"])
    assert std is not None and int(std.group(1)) * -60 == offset
    assert ",M" in g["P246"] and g["P64"] == "customize"  # Chicago keeps daylight saving
    assert (g["P1365"], g["P1366"], g["P1468"]) == ("1", "0", "*28")

    # Audited by desk phone and file, with no secret in the log.
    fetched = journal.audit_entries("provisioning.fetched")
    assert {(e.actor, e.detail) for e in fetched} == {
        ("desk-phone:ana-desk", "001565aabb01.cfg"),
        ("desk-phone:sam-desk", "phone0004f2aabb02.cfg"),
        ("desk-phone:sam-desk", "0004f2aabb02.cfg"),
        ("desk-phone:jo-desk", "cfg000b82aabb03.xml")}
    # Refusals: the first from this source this minute in full, the rest counted.
    assert [(e.actor, e.detail) for e in journal.audit_entries("provisioning.refused")] == [
        ("desk-phone:ana-desk", "001565aabb01.cfg")]
    # The unknown MAC is the first unknown file audited: the boot-time files came before it.
    assert [e.detail for e in journal.audit_entries("provisioning.unknown")] == [
        "001565ffffff.cfg"]
    every = [e.detail + e.actor for a in ("provisioning.fetched", "provisioning.refused",
                                          "provisioning.unknown")
             for e in journal.audit_entries(a)]
    assert not any(s in line for s in secrets.values() for line in every)
    journal.close()


def test_the_listener_is_capped_and_counted_like_the_other_public_ones(
        tmp_path: Path) -> None:
    """A LAN host holding TLS connections open gets no more than the listener's cap: the
    next connection is told 503 and closed, before any handler reads it."""
    path = provisioned(tmp_path)
    d = config_mod.load(path).directory
    journal = open_journal(d.connections.storage.url)
    controller = Controller(d, journal, clock=lambda: datetime(2026, 1, 5, tzinfo=UTC))
    feature = controller.feature(Provisioning)
    assert feature is not None
    feature.listener = PublicListener("provisioning listener",
                                      ListenerLimits(max_connections=1),
                                      DescriptorBudget(DEFAULT_RESERVED_DESCRIPTORS),
                                      http=True)

    async def scenario() -> tuple[bytes, bytes]:
        await controller.start()
        try:
            port = feature.listen.port
            trust = ssl.create_default_context(cafile=f"{tmp_path}/ca/ca.pem")
            head = b"GET /cfg.xml HTTP/1.1\r\nHost: x\r\n\r\n"
            # The first connection is answered and kept open (keep-alive): admitted.
            answers, held = await asyncio.open_connection("127.0.0.1", port, ssl=trust)
            held.write(head)
            first = await answers.readuntil(b"\r\n\r\n")
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=trust)
            writer.write(head)
            second = await reader.readuntil(b"\r\n\r\n")
            if second.startswith(b"HTTP/1.1 503"):
                second += await reader.read()  # and closed
            writer.close()
            held.close()
            return first, second
        finally:
            await controller.close()

    first, second = asyncio.run(scenario())
    journal.close()
    assert first.startswith(b"HTTP/1.1 404"), first
    assert second.startswith(b"HTTP/1.1 503"), second
    assert feature.listener.refused == 1


def test_render_writes_each_vendors_file_0600(tmp_path: Path) -> None:
    path = provisioned(tmp_path)
    out = tmp_path / "out"
    done = backline("render", str(path), "--out", str(out))
    assert done.returncode == 0, done.stderr
    for _, _, name in PHONES.values():
        assert (out / "provisioning" / name).stat().st_mode & 0o777 == 0o600
    csv = (out / "provisioning.csv").read_text()
    secrets = json.loads((tmp_path / "secrets.json").read_text())
    assert not any(s in csv for s in secrets.values())
    assert "001565aabb01.cfg" in csv and "provisioning:000b82aabb03" in csv


def test_check_refuses_provisioning_without_tls(tmp_path: Path) -> None:
    path = config(tmp_path, "    provisioning: {host: 127.0.0.1, port: 8443}\n")
    done = backline("check", str(path))
    assert done.returncode == 2, done.stdout
    assert "connections.pbx.provisioning: connections.pbx.tls too" in done.stderr


@pytest.mark.parametrize(("written", "mac"), [
    ("00:15:65:AA:BB:01", "001565aabb01"), ("00-15-65-aa-bb-01", "001565aabb01"),
    ("001565AABB01", "001565aabb01"), ("00:15:65:aa:bb", None), ("00:15:65-aa:bb:01", None),
    ("0015.65aa.bb01", None), ("00:15:65:aa:bb:0g", None), ("", None)])
def test_a_mac_is_six_bytes_in_one_spelling(written: str, mac: str | None) -> None:
    assert normal_mac(written) == mac


@pytest.mark.parametrize(("model", "vendor"), [
    ("T46U", Vendor.YEALINK), ("SIP-T54W", Vendor.YEALINK), ("yealink t48s", Vendor.YEALINK),
    ("VVX 411", Vendor.POLYCOM), ("vvx450", Vendor.POLYCOM), ("GRP2614", Vendor.GRANDSTREAM),
    ("GRP2612W", Vendor.GRANDSTREAM), ("T28P", None), ("SPA504G", None), ("GXP2160", None)])
def test_a_model_is_known_by_its_family(model: str, vendor: Vendor | None) -> None:
    assert vendor_of(model) is vendor


def test_a_desk_phones_own_encryption_is_what_its_provisioning_file_says(
        tmp_path: Path) -> None:
    """The practice requires SRTP; Jo's phone is left optional (``encryption`` on the
    phone): her Grandstream is told SRTP off, the others SRTP compulsory."""
    from backline.render.phone_provisioning import provisioning_files

    path = provisioned(tmp_path)
    text = path.read_text()
    mac, model, _ = PHONES["jo-desk"]
    text = text.replace(f'{{name: jo-desk, mac: "{mac}", model: "{model}"}}',
                        f'{{name: jo-desk, mac: "{mac}", model: "{model}", '
                        'encryption: optional}')
    path.write_text(text)
    d = config_mod.load(path).directory
    files = {f.name.removeprefix("provisioning/"): f.text
             for f in provisioning_files(d, {p: "secret" for p in PHONES})}
    grandstream = {e.tag: e.text or "" for e in
                   ET.fromstring(files[PHONES["jo-desk"][2]]).find("config") or []}
    assert grandstream["P183"] == "0"
    assert "account.1.srtp_encryption = 2" in files[PHONES["ana-desk"][2]].splitlines()
