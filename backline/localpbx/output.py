"""Writing a render to disk: the PBX's files (private ones 0600) and the desk-phone
provisioning list that ops hand to the phones, shared by the Asterisk and FreeSWITCH renders;
and Kamailio's files.  The renderers (backline/render/) only make the text.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from backline.core.connections import AsteriskPbx
from backline.core.model import Directory
from backline.localpbx.phone_secrets import load_or_create, write_private
from backline.render.asterisk import RenderedFile
from backline.render.firewall import render_firewall
from backline.render.kamailio import (
    Registrar,
    location_db_url,
    parse_host_port,
    parse_node,
    render_kamailio,
)


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
    return len(files) + 1


def write_kamailio(out: Path, listen: str, nodes: Sequence[str], config_dir: str,
                   carrier: str, *, directory: Directory | None = None,
                   secrets_path: Path | None = None) -> int:
    """Validate the command line's Kamailio options, then write its files into ``out``;
    return how many.  Raises ValueError (nothing written) on a bad option.

    With ``directory`` whose PBX names a ``registrar``, Kamailio is the desk phones'
    registrar: its ``subscriber`` table (HA1 digests of the secrets in ``secrets_path``, the
    same the nodes' pjsip.conf gets, 0600) and ``location.sql`` are written too."""
    registrar = logins = secrets = None
    pbx = directory.connections.pbx if directory is not None else None
    if directory is not None and isinstance(pbx, AsteriskPbx) and pbx.registrar is not None:
        registrar = Registrar(location_db_url(directory.connections.storage.url), config_dir,
                              directory.max_per_login)
        logins = {p: u.id for u in directory.users if u.active for p in u.desk_phones}
        secrets = load_or_create(secrets_path or Path(pbx.secrets_file), logins)
    files = render_kamailio(parse_host_port(listen, "--kamailio"),
                            [parse_node(n) for n in nodes], config_dir, carrier=carrier,
                            registrar=registrar, logins=logins, secrets=secrets)
    out.mkdir(parents=True, exist_ok=True)
    for f in files:
        if f.private:
            write_private(out / f.name, f.text)
        else:
            (out / f.name).write_text(f.text)
    return len(files)


FIREWALL_FILE = "firewall.nft"


def write_firewall(out: Path, directory: Directory) -> Path:
    """Write the PBX host's nftables rules (backline/render/firewall.py) into ``out``; return
    the file.  Raises ValueError (nothing written) when the config cannot be made into rules.
    """
    pbx = directory.connections.pbx
    if not isinstance(pbx, AsteriskPbx):
        raise ValueError("--firewall: only an Asterisk PBX (connections.pbx.kind: asterisk) "
                         "has rendered firewall rules so far")
    text = render_firewall(pbx, directory.connections.pages)
    out.mkdir(parents=True, exist_ok=True)
    (out / FIREWALL_FILE).write_text(text)
    return out / FIREWALL_FILE
