"""Writing a render to disk: the PBX's files (private ones 0600) and the desk-phone
provisioning list that ops hand to the phones, shared by the Asterisk and FreeSWITCH renders;
and Kamailio's files.  The renderers (backline/render/) only make the text.
"""

from __future__ import annotations

import dataclasses
import zoneinfo
from collections.abc import Sequence
from pathlib import Path

from backline.core.connections import AsteriskPbx, HostPort
from backline.core.model import Directory
from backline.core.provisioning import ProvisionedPhone, file_names
from backline.core.wire import desk_phones_in_the_clear
from backline.localpbx.phone_secrets import load_or_create, write_private
from backline.localpbx.practice_ca import (
    KAMAILIO_CERT,
    KAMAILIO_KEY,
    PracticeCaError,
    ensure_practice_ca,
)
from backline.render.asterisk import RenderedFile
from backline.render.firewall import render_firewall
from backline.render.kamailio import (
    Registrar,
    RegistrarTls,
    location_db_url,
    parse_host_port,
    parse_node,
    render_kamailio,
)
from backline.render.phone_provisioning import provisioning_files


def write_render(out: Path, files: Sequence[RenderedFile], directory: Directory, domain: str,
                   secrets_path: Path, *, sip_user_is_login: bool) -> int:
    """Write ``files`` and ``desk-phones.csv`` into ``out``; return how many files that is.

    ``sip_user_is_login``: the phones register as their user (Asterisk's shared AOR per
    login) rather than as the desk phone itself (FreeSWITCH's directory user per phone).
    """
    out.mkdir(parents=True, exist_ok=True)
    for f in files:
        if f.private:
            write_private(out / f.name, f.text)
        else:
            (out / f.name).parent.mkdir(parents=True, exist_ok=True)
            (out / f.name).write_text(f.text)
    lines = ["desk_phone,user,sip_user,auth_user,domain,secret_file,secret_key"]
    lines += [f"{p},{u.id},{u.id if sip_user_is_login else p},{p},{domain},{secrets_path},{p}"
              for u in directory.users if u.active for p in u.desk_phones]
    (out / "desk-phones.csv").write_text("\n".join(lines) + "\n")
    return len(files) + 1 + write_provisioning(out, directory, secrets_path)


PROVISIONING_KEY_PREFIX = "provisioning:"  # never a desk phone's name (no ':' allowed there)


def provisioned_phones(directory: Directory) -> list[ProvisionedPhone]:
    return [p for u in directory.users if u.active for p in u.provisioned]


def device_credentials(directory: Directory, secrets_path: Path) -> dict[str, str]:
    """Each provisioned phone's password for fetching its file, by MAC (its user name):
    generated once and kept with the desk-phone secrets (0600), stable across renders."""
    phones = provisioned_phones(directory)
    kept = load_or_create(secrets_path, [PROVISIONING_KEY_PREFIX + p.mac for p in phones])
    return {p.mac: kept[PROVISIONING_KEY_PREFIX + p.mac] for p in phones}


def posix_tz(timezone: str) -> str:
    """The zone's POSIX TZ rule ("CST6CDT,M3.2.0,M11.1.0"): the footer of its TZif file
    (RFC 8536, section 3.3), which holds the rule in force after the last transition; ""
    when the zone file cannot be read or holds none (the phones then keep standard time)."""
    for folder in zoneinfo.TZPATH:
        try:
            data = (Path(folder) / timezone).read_bytes()
        except (OSError, ValueError):
            continue
        if data.startswith(b"TZif") and data.endswith(b"\n"):
            footer = data[:-1].rsplit(b"\n", 1)[-1]
            if footer and footer.isascii() and footer.decode().isprintable():
                return footer.decode()
        return ""
    return ""


def write_provisioning(out: Path, directory: Directory, secrets_path: Path) -> int:
    """Write each provisioned phone's files into ``out/provisioning/`` (0600) and
    ``provisioning.csv`` (the user name and where its password is kept, for the phone's
    provisioning settings); return how many files.  None provisioned: nothing written."""
    phones = provisioned_phones(directory)
    if not phones:
        return 0
    secrets = load_or_create(secrets_path, [p.desk_phone for p in phones])
    device_credentials(directory, secrets_path)
    files = provisioning_files(directory, secrets, posix_tz(directory.practice.timezone))
    for f in files:
        write_private(out / f.name, f.text)
    lines = ["desk_phone,mac,model,files,username,secret_file,secret_key"]
    lines += [f"{p.desk_phone},{p.mac},{p.model},{' '.join(file_names(p))},{p.mac},"
              f"{secrets_path},{PROVISIONING_KEY_PREFIX}{p.mac}" for p in phones]
    (out / "provisioning.csv").write_text("\n".join(lines) + "\n")
    return len(files) + 1


def write_kamailio(out: Path, listen: str, nodes: Sequence[str], config_dir: str,
                   carrier: str, *, directory: Directory | None = None,
                   secrets_path: Path | None = None) -> int:
    """Validate the command line's Kamailio options, then write its files into ``out``;
    return how many.  Raises ValueError (nothing written) on a bad option.

    With ``directory`` whose PBX names a ``registrar``, Kamailio is the desk phones'
    registrar: its ``subscriber`` table (HA1 digests of the secrets in ``secrets_path``, the
    same the nodes' pjsip.conf gets, 0600) and ``location.sql`` are written too.  Its
    listeners take the desk phones' SIP: off loopback, the rule `backline check` applies to
    ``connections.pbx.registrar`` applies to ``listen`` too (backline.app.settings.edge)."""
    registrar = logins = secrets = None
    pbx = directory.connections.pbx if directory is not None else None
    address = parse_host_port(listen, "--kamailio")
    if directory is not None and isinstance(pbx, AsteriskPbx) and pbx.registrar is not None:
        clear = desk_phones_in_the_clear(dataclasses.replace(pbx, registrar=address),
                                         directory.users)
        if clear and not pbx.insecure_cleartext:
            raise ValueError(
                f"--kamailio {listen}: desk phones {', '.join(clear)}: their SIP and call "
                "audio would cross the network to and from Kamailio readable by anyone "
                "(behind Kamailio as the registrar their audio is never SRTP); listen on "
                "loopback, or to send them so anyway set "
                "connections.pbx.insecure_cleartext: true")
        registrar = Registrar(location_db_url(directory.connections.storage.url), config_dir,
                              directory.max_per_login,
                              registrar_tls(directory, pbx, address))
        logins = {p: u.id for u in directory.users if u.active for p in u.desk_phones}
        secrets = load_or_create(secrets_path or Path(pbx.secrets_file), logins)
    files = render_kamailio(address,
                            [parse_node(n) for n in nodes], config_dir, carrier=carrier,
                            registrar=registrar, logins=logins, secrets=secrets)
    out.mkdir(parents=True, exist_ok=True)
    for f in files:
        if f.private:
            write_private(out / f.name, f.text)
        else:
            (out / f.name).write_text(f.text)
    return len(files)


def registrar_tls(directory: Directory, pbx: AsteriskPbx, listen: HostPort
                  ) -> RegistrarTls | None:
    """Kamailio's TLS listener as the registrar, when the practice has ``tls``: on the
    config's TLS port at Kamailio's address, serving the practice's certificate and key, or
    (``practice_ca``) a certificate the practice CA signs for Kamailio's address (made, or
    remade, beside Asterisk's: the phones trust the one CA).  Raises ValueError when the CA
    cannot be made."""
    tls = pbx.tls
    if tls is None:
        return None
    if not tls.practice_ca:
        return RegistrarTls(tls.port, tls.certificate_file, tls.key_file)
    try:
        made = ensure_practice_ca(Path(tls.practice_ca), listen.host, directory.practice.name,
                                  certificate=KAMAILIO_CERT, key_file=KAMAILIO_KEY)
    except (PracticeCaError, OSError) as exc:
        raise ValueError(f"connections.pbx.tls.practice_ca: cannot make Kamailio's "
                         f"certificate in {tls.practice_ca}: {exc}") from exc
    return RegistrarTls(tls.port, str(made.certificate), str(made.key))


FIREWALL_FILE = "firewall.nft"


def write_firewall(out: Path, directory: Directory) -> Path:
    """Write the PBX host's nftables rules (backline/render/firewall.py) into ``out``; return
    the file.  Raises ValueError (nothing written) when the config cannot be made into rules.
    """
    pbx = directory.connections.pbx
    if pbx is None:
        raise ValueError("--firewall: the rules are the PBX's: connections.pbx is missing")
    text = render_firewall(pbx, directory.connections.pages)
    out.mkdir(parents=True, exist_ok=True)
    (out / FIREWALL_FILE).write_text(text)
    return out / FIREWALL_FILE
