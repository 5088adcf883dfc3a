"""``connections.pbx``: which PBX, where its control ports are, and its paths on disk."""

from __future__ import annotations

import ipaddress
import re

from backline.app.settings.reader import Reader, entry, where_of
from backline.app.yamlsource import YMap
from backline.core.connections import (
    DEFAULT_RESERVED_DESCRIPTORS,
    AsteriskPbx,
    Bans,
    Encryption,
    FreeswitchPbx,
    HostPort,
    Pbx,
    PortRange,
    SipTls,
    Trunk,
)


def read_pbx(r: Reader, parent: YMap) -> Pbx | None:
    """``connections.pbx``: Asterisk (AMI, FastAGI) or FreeSWITCH (ESL, outbound socket)."""
    node = r.mapping(entry(parent, "pbx"), "connections.pbx", parent.where)
    if node is None:
        return None
    f = "connections.pbx"
    kind = r.text(node, "kind", f"{f}.kind", "asterisk", "asterisk or freeswitch")
    sip = r.sub(node, "sip", f)
    sip_hp = r.host_port(sip, f"{f}.sip", control=False, default_port=5060) \
        if sip else HostPort("127.0.0.1", 5060)
    ring = r.integer(node, "ring_seconds", f"{f}.ring_seconds", 25, 5, 120) or 25
    if kind == "freeswitch":
        r.keys(node, f, ["kind", "esl", "sip", "ring_seconds", "socket", "trunk",
                         "secrets_file", "fax_dir", "fax_spool", "cdr_file",
                         "reserved_descriptors", "lan", "bans", "insecure_cleartext"])
        esl = r.sub(node, "esl", f) or YMap({}, node.where)
        r.keys(esl, f"{f}.esl", ["host", "port", "password_env", "password_file"])
        sock = r.sub(node, "socket", f) or YMap({}, node.where)
        r.keys(sock, f"{f}.socket", ["host", "port"])
        trunk = _trunk(r, node, f)
        if trunk.username or trunk.register or trunk.addresses or trunk.tls or trunk.srtp:
            r.problem(where_of(node, "trunk"), f"{f}.trunk",
                      "with FreeSWITCH, host, port and from_user only (its gateway's "
                      "credentials, registration, address list and TLS are not rendered "
                      "yet)")
        return FreeswitchPbx(
            r.host_port(esl, f"{f}.esl", control=True, default_port=8021),
            r.secret(esl, "password", f"{f}.esl", True), sip_hp, ring,
            socket=r.host_port(sock, f"{f}.socket", control=True, default_port=8084),
            trunk=trunk,
            secrets_file=r.text(node, "secrets_file", f"{f}.secrets_file",
                                "/var/lib/backline/desk-phone-secrets.json",
                                "the path of the desk-phone secrets file (outside the "
                                "repo)") or "/var/lib/backline/desk-phone-secrets.json",
            fax_dir=_fax_dir(r, node, f),
            fax_spool=_plain_path(r, node, "fax_spool", f, "/var/lib/freeswitch/fax"),
            cdr_file=_plain_path(r, node, "cdr_file", f,
                                 "/var/log/freeswitch/cdr-csv/Master.csv"),
            reserved_descriptors=_reserve(r, node, f),
            lan=_networks(r, node, "lan", f), bans=_bans(r, node, f),
            insecure_cleartext=_consent(r, node, f))
    if kind != "asterisk":
        r.problem(where_of(node, "kind"), f"{f}.kind", "asterisk or freeswitch")
        return None
    r.keys(node, f, ["kind", "ami", "agi", "sip", "ring_seconds", "trunk", "rtp",
                     "udptl", "secrets_file", "cdr_file", "spool_dir", "fax_dir",
                     "node", "reserved_descriptors", "lan", "tls", "encryption",
                     "registrar", "desk_phones_behind_nat", "provisioning", "bans",
                     "insecure_cleartext"])
    trunk = _trunk(r, node, f)
    lan, public = _edge(r, node, sip, sip_hp, trunk, f)
    if trunk.tls and entry(node, "tls") is None:
        r.problem(where_of(node, "trunk"), f"{f}.trunk.tls",
                  "TLS to the carrier needs connections.pbx.tls (the TLS transport, and the "
                  "certificate Asterisk presents)")
    ami = r.sub(node, "ami", f) or YMap({}, node.where)
    r.keys(ami, f"{f}.ami", ["host", "port", "username", "secret_env", "secret_file"])
    agi = r.sub(node, "agi", f) or YMap({}, node.where)
    r.keys(agi, f"{f}.agi", ["host", "port"])
    username = r.text(ami, "username", f"{f}.ami.username", "backline",
                      "the AMI user name") or "backline"
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", username):
        r.problem(where_of(ami, "username"), f"{f}.ami.username",
                  "letters, digits, '-' and '_' only")
    return AsteriskPbx(
        ami=r.host_port(ami, f"{f}.ami", control=True, default_port=5038),
        ami_username=username,
        ami_secret=r.secret(ami, "secret", f"{f}.ami", True),
        agi=r.host_port(agi, f"{f}.agi", control=True, default_port=4573),
        sip=sip_hp,
        ring_seconds=ring,
        trunk=trunk,
        rtp=_port_range(r, node, "rtp", f, PortRange(10000, 10199)),
        udptl=_port_range(r, node, "udptl", f, PortRange(4000, 4039)),
        secrets_file=r.text(node, "secrets_file", f"{f}.secrets_file",
                            "/var/lib/backline/desk-phone-secrets.json",
                            "the path of the desk-phone secrets file (outside the repo)")
        or "/var/lib/backline/desk-phone-secrets.json",
        cdr_file=_absolute_path(r, node, "cdr_file", f,
                                "the absolute path of Asterisk's cdr-csv Master.csv "
                                "(leave it out: it is asked of Asterisk)"),
        spool_dir=_absolute_path(r, node, "spool_dir", f,
                                 "the absolute path of Asterisk's spool directory "
                                 "(leave it out: it is asked of Asterisk)"),
        fax_dir=_fax_dir(r, node, f),
        node=_node_name(r, node, f),
        reserved_descriptors=_reserve(r, node, f),
        lan=lan,
        public_address=public,
        desk_phones_behind_nat=r.flag(node, "desk_phones_behind_nat",
                                      f"{f}.desk_phones_behind_nat", False),
        tls=_tls(r, node, f, sip_hp.port),
        encryption=_encryption(r, node, f),
        registrar=_registrar(r, node, f),
        provisioning=_provisioning(r, node, f),
        bans=_bans(r, node, f),
        insecure_cleartext=_consent(r, node, f),
    )


def _consent(r: Reader, node: YMap, f: str) -> bool:
    """``insecure_cleartext``: consent to plain SIP and RTP (backline.app.settings.edge)."""
    return r.flag(node, "insecure_cleartext", f"{f}.insecure_cleartext", False)


def _provisioning(r: Reader, node: YMap, f: str) -> HostPort | None:
    """``provisioning: {host, port}``: where the controller serves desk phones their files
    over HTTPS, with the TLS transport's certificate (which the phones already trust):
    the files hold SIP passwords, so never in the clear."""
    sub = r.sub(node, "provisioning", f)
    if sub is None:
        return None
    r.keys(sub, f"{f}.provisioning", ["host", "port"])
    if entry(node, "tls") is None:
        r.problem(where_of(node, "provisioning"), f"{f}.provisioning",
                  "connections.pbx.tls too: the files are served over HTTPS with its "
                  "certificate")
    return r.host_port(sub, f"{f}.provisioning", control=False, default_port=8443)


def _bans(r: Reader, node: YMap, f: str) -> Bans | None:
    """``bans: {failures, window_seconds, ban_minutes}``: when a scanner is banned."""
    sub = r.sub(node, "bans", f)
    if sub is None:
        return None
    r.keys(sub, f"{f}.bans", ["failures", "window_seconds", "ban_minutes"])
    d = Bans()
    return Bans(
        failures=r.integer(sub, "failures", f"{f}.bans.failures", d.failures, 1, 1000)
        or d.failures,
        window_seconds=r.integer(sub, "window_seconds", f"{f}.bans.window_seconds",
                                 d.window_seconds, 1, 86400) or d.window_seconds,
        ban_minutes=r.integer(sub, "ban_minutes", f"{f}.bans.ban_minutes", d.ban_minutes,
                              1, 525600) or d.ban_minutes)


def _registrar(r: Reader, node: YMap, f: str) -> HostPort | None:
    """``registrar: {host, port}``: Kamailio's SIP address, when it is the registrar."""
    sub = r.sub(node, "registrar", f)
    if sub is None:
        return None
    r.keys(sub, f"{f}.registrar", ["host", "port"])
    return r.host_port(sub, f"{f}.registrar", control=False, default_port=5060)


def _networks(r: Reader, node: YMap, key: str, f: str) -> tuple[str, ...]:
    """A list of IP addresses or CIDR networks, each as a network (``a.b.c.d/32``)."""
    out = []
    for text, where in r.strings(node, key, f"{f}.{key}", None,
                                 "an IP address or network, e.g. 192.168.1.0/24"):
        try:
            out.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            r.problem(where, f"{f}.{key}", "an IP address or network (CIDR), e.g. "
                      "192.168.1.0/24")
    return tuple(out)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _edge(r: Reader, node: YMap, sip: YMap | None, sip_hp: HostPort, trunk: Trunk,
          f: str) -> tuple[tuple[str, ...], str]:
    """``lan`` (where desk phones may be) and ``sip.public_address`` (behind NAT), checked
    against where SIP listens and where the carrier is."""
    lan = _networks(r, node, "lan", f)
    public = ""
    if sip is not None:
        r.keys(sip, f"{f}.sip", ["host", "port", "public_address"])
        public = r.text(sip, "public_address", f"{f}.sip.public_address", "",
                        "the public IP address or host name") or ""
        if public and not re.fullmatch(r"[A-Za-z0-9.:-]{1,253}", public):
            r.problem(where_of(sip, "public_address"), f"{f}.sip.public_address",
                      "the public IP address or host name")
    loopback = sip_hp.host == "localhost" or (_is_ip(sip_hp.host)
                                             and ipaddress.ip_address(sip_hp.host).is_loopback)
    if not lan and not loopback:  # a warning: configs from before `lan` still load
        r.problem(where_of(sip, "host") if sip is not None else node.where, f"{f}.lan",
                  "the networks desk phones are on (e.g. [192.168.1.0/24]): with SIP off "
                  "loopback and no lan, any address may register and call", warning=True)
    if public and not lan:
        r.problem(where_of(sip, "public_address") if sip is not None else node.where,
                  f"{f}.lan", "the LAN's networks (local_net): behind NAT, what is not "
                  "on them is reached through public_address")
    if lan and not trunk.from_user and not all(
            _is_ip(s.split("/")[0]) for s in trunk.sources):
        r.problem(where_of(node, "trunk"), f"{f}.trunk.addresses",
                  "the carrier's signalling addresses or networks (its host is a name, and "
                  "the address rules admit addresses only)")
    return lan, public


def _tls(r: Reader, node: YMap, f: str, sip_port: int) -> SipTls | None:
    """``tls``: SIP over TLS for desk phones, from the practice's certificate and key
    files, or from a practice CA that ``backline render`` makes (``practice_ca``)."""
    sub = r.sub(node, "tls", f)
    if sub is None:
        return None
    f = f"{f}.tls"
    r.keys(sub, f, ["port", "certificate_file", "key_file", "practice_ca"])
    port = r.integer(sub, "port", f"{f}.port", 5061, 1, 65535) or 5061
    if port == sip_port:
        r.problem(where_of(sub, "port"), f"{f}.port",
                  f"a port other than SIP's own ({sip_port}): TCP for TLS, UDP for SIP, "
                  "but phones and Asterisk tell them apart by port")
    paths = {}
    for key in ("certificate_file", "key_file", "practice_ca"):
        path = r.text(sub, key, f"{f}.{key}", "", "an absolute path") or ""
        if path and not re.fullmatch(r"/[A-Za-z0-9_./-]{1,255}", path):
            r.problem(where_of(sub, key), f"{f}.{key}", "an absolute path of letters, "
                      "digits, '_', '.', '/' and '-'")
            path = ""
        paths[key] = path
    cert, key, ca = paths["certificate_file"], paths["key_file"], paths["practice_ca"]
    if bool(cert) != bool(key):
        r.problem(where_of(sub, "certificate_file" if cert else "key_file"),
                  f"{f}.{'key_file' if cert else 'certificate_file'}",
                  "both certificate_file and key_file (the server certificate, then its "
                  "private key, each a PEM file)")
    elif cert and ca:
        r.problem(where_of(sub, "practice_ca"), f"{f}.practice_ca",
                  "either certificate_file and key_file, or practice_ca, not both")
    elif not cert and not ca:
        r.problem(sub.where, f"{f}.certificate_file",
                  "where the certificate comes from: certificate_file and key_file (PEM "
                  "files, e.g. from the practice's CA or a public one), or practice_ca: a "
                  "folder where `backline render` makes a CA of the practice's own and the "
                  "server certificate it signs (the phones are given its ca.pem to trust)")
    return SipTls(port, cert, key, ca)


def _encryption(r: Reader, node: YMap, f: str) -> Encryption:
    what = "required or optional"
    text = r.text(node, "encryption", f"{f}.encryption", "optional", what) or "optional"
    try:
        encryption = Encryption(text)
    except ValueError:
        r.problem(where_of(node, "encryption"), f"{f}.encryption", what)
        return Encryption.OPTIONAL
    if encryption is Encryption.REQUIRED and entry(node, "tls") is None:
        r.problem(where_of(node, "encryption"), f"{f}.encryption",
                  "required needs tls: (SRTP's keys travel in the phones' SIP, so their SIP "
                  "must be TLS): add connections.pbx.tls with certificate_file and key_file, "
                  "or practice_ca")
    if encryption is Encryption.REQUIRED and entry(node, "registrar") is not None:
        # The nodes reach the phones through Kamailio over UDP, so nothing would ring.
        r.problem(where_of(node, "encryption"), f"{f}.encryption",
                  "optional behind Kamailio as the registrar: required (SRTP to desk "
                  "phones) is not supported there yet, and no desk phone would ring")
    return encryption


def _reserve(r: Reader, node: YMap, f: str) -> int:
    """Descriptors kept for the PBX's connections: no public connection may take one."""
    return r.integer(node, "reserved_descriptors", f"{f}.reserved_descriptors",
                     DEFAULT_RESERVED_DESCRIPTORS, 16, 65536) or DEFAULT_RESERVED_DESCRIPTORS


def _node_name(r: Reader, node: YMap, f: str) -> str:
    what = "a node name: lower-case letters, digits and '-' (at most 32)"
    name = r.text(node, "node", f"{f}.node", "", what) or ""
    # Asterisk's systemname, so it must fit a uniqueid ([systemname-]EPOCH.SEQ).
    if name and not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", name):
        r.problem(where_of(node, "node"), f"{f}.node", what)
        return ""
    return name


def _absolute_path(r: Reader, node: YMap, key: str, f: str, what: str) -> str:
    """An optional absolute path ("" when left out)."""
    path = r.text(node, key, f"{f}.{key}", "", what) or ""
    if path and not path.startswith("/"):
        r.problem(where_of(node, key), f"{f}.{key}", what)
        return ""
    return path


def _fax_dir(r: Reader, node: YMap, f: str) -> str:
    default = "/var/lib/backline/fax"
    what = "the absolute path of the directory where received faxes are kept"
    path = r.text(node, "fax_dir", f"{f}.fax_dir", default, what) or default
    if not path.startswith("/"):
        r.problem(where_of(node, "fax_dir"), f"{f}.fax_dir", what)
        return default
    return path


def _plain_path(r: Reader, node: YMap, key: str, f: str, default: str) -> str:
    """An absolute path FreeSWITCH's XML and applications take verbatim: plain
    characters only (no spaces, quotes or ``$``)."""
    what = "an absolute path of letters, digits, '_', '.', '/' and '-'"
    path = r.text(node, key, f"{f}.{key}", default, what) or default
    if not re.fullmatch(r"/[A-Za-z0-9_./-]{1,255}", path):
        r.problem(where_of(node, key), f"{f}.{key}", what)
        return default
    return path


def _trunk(r: Reader, node: YMap, f: str) -> Trunk:
    sub = r.sub(node, "trunk", f)
    if sub is None:
        return Trunk()
    f = f"{f}.trunk"
    r.keys(sub, f, ["host", "port", "from_user", "geolocation", "addresses", "username",
                    "password_env", "password_file", "register", "tls", "ca_file", "srtp",
                    "insecure_cleartext"])
    hp = r.host_port(sub, f, control=False, default_port=5080)
    if not re.fullmatch(r"[A-Za-z0-9.:-]{1,253}", hp.host):
        r.problem(where_of(sub, "host"), f"{f}.host", "a host name or IP address")
    user = r.text(sub, "from_user", f"{f}.from_user", "", "a SIP user name") or ""
    if user and not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", user):
        r.problem(where_of(sub, "from_user"), f"{f}.from_user",
                  "letters, digits, '.', '-' and '_' only")
    geolocation = r.flag(sub, "geolocation", f"{f}.geolocation", False)
    addresses = []
    for text, where in r.strings(sub, "addresses", f"{f}.addresses", None,
                                 "an IP address or network, e.g. 203.0.113.0/28"):
        try:
            addresses.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            r.problem(where, f"{f}.addresses",
                      "an IP address or network (CIDR), e.g. 203.0.113.0/28")
    # The account's digest user: written into pjsip.conf, so plain characters only.
    username = r.text(sub, "username", f"{f}.username", "", "the carrier account's user") or ""
    if username and not re.fullmatch(r"[A-Za-z0-9_.+-]{1,64}", username):
        r.problem(where_of(sub, "username"), f"{f}.username",
                  "letters, digits, '.', '+', '-' and '_' only")
    password = r.secret(sub, "password", f, False)
    register = r.flag(sub, "register", f"{f}.register", False)
    if (username or register) and not password:
        r.problem(where_of(sub, "username") if username else where_of(sub, "register"),
                  f"{f}.password_env", "where the carrier account's password comes from: "
                  "password_env or password_file (never in this file)")
    if (password or register) and not username:
        r.problem(sub.where, f"{f}.username", "the carrier account's user name (its digest "
                  "credentials: username, and password_env or password_file)")
    if register and user:
        r.problem(where_of(sub, "from_user"), f"{f}.from_user",
                  "no from_user with register: true (the registration recognises the "
                  "carrier's calls)")
    tls = r.flag(sub, "tls", f"{f}.tls", False)
    what = "the absolute path of a PEM file of the CAs that sign the carrier's certificate"
    ca_file = r.text(sub, "ca_file", f"{f}.ca_file", "", what) or ""
    if ca_file and not re.fullmatch(r"/[A-Za-z0-9_./-]{1,255}", ca_file):
        r.problem(where_of(sub, "ca_file"), f"{f}.ca_file", what)
        ca_file = ""
    if ca_file and not tls:
        r.problem(where_of(sub, "ca_file"), f"{f}.ca_file",
                  "ca_file with tls: true only (it verifies the carrier's TLS certificate)")
    srtp = r.flag(sub, "srtp", f"{f}.srtp", False)
    if srtp and not tls:
        r.problem(where_of(sub, "srtp"), f"{f}.srtp", "srtp with tls: true only (SRTP's "
                  "keys travel in the calls' SIP, which must then be TLS)")
    return Trunk(hp.host, hp.port, user, geolocation, tuple(addresses), username, password,
                 register, tls, ca_file, srtp, _consent(r, sub, f))


def _port_range(r: Reader, node: YMap, key: str, f: str, default: PortRange) -> PortRange:
    sub = r.sub(node, key, f)
    if sub is None:
        return default
    r.keys(sub, f"{f}.{key}", ["start", "end"])
    start = r.integer(sub, "start", f"{f}.{key}.start", default.start, 1024, 65535)
    end = r.integer(sub, "end", f"{f}.{key}.end", default.end, 1024, 65535)
    if start is None or end is None or end - start < 1:
        r.problem(sub.where, f"{f}.{key}", "start below end")
        return default
    return PortRange(start, end)
