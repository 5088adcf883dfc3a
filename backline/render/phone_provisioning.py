"""Desk phones' provisioning files, each in its vendor's format: the SIP account (user,
password, server and port), TLS and SRTP when the PBX asks for them, the time zone, and a
BLF key watching the outage lamp (``*28``).

Pure: the directory, the desk-phone secrets and where SIP listens in, file texts out.  Each
key written carries, beside it, the vendor document it comes from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from xml.sax.saxutils import escape, quoteattr
from zoneinfo import ZoneInfo

from backline.core.connections import AsteriskPbx, Encryption, FreeswitchPbx
from backline.core.model import Directory
from backline.core.provisioning import ProvisionedPhone, Vendor, file_names
from backline.pbx.names import ENGAGE_CODE
from backline.render.asterisk import RenderedFile

# The vendor documents every key below comes from.
YEALINK_GUIDE = "https://studylib.net/doc/18868229/guide"  # Yealink Auto Provisioning Guide
YEALINK_TEMPLATE = "https://pastebin.com/zCtZk4Ry"  # Yealink account.1.* template, annotated
POLYCOM_GUIDE = ("https://documents.pub/document/polycom-uc-software-543-administrator-guide-"
                 "administrator-guide-uc-software.html")  # Polycom UC Software 5.4.3 Admin Guide
POLYCOM_REG = "https://www.easymanua.ls/polycom/cx5500/manual/163087?p=293"  # reg.x.server.y.*
GRANDSTREAM_GUIDE = ("https://documentation.grandstream.com/knowledge-base/"
                     "sip-device-provisioning-guide/")  # Grandstream SIP Device Provisioning

OUTAGE_LAMP_LABEL = "Outage"


@dataclass(frozen=True, slots=True)
class PhoneAccount:
    """What one desk phone registers with: as its user (Asterisk's shared AOR per login) or
    as itself (FreeSWITCH), authenticating as the desk phone with its generated secret."""

    sip_user: str
    auth_user: str
    password: str
    display_name: str
    server: str
    port: int
    tls: bool
    srtp_required: bool
    utc_offset_minutes: int  # the practice's standard time; the phone applies DST itself


def account(directory: Directory, phone: ProvisionedPhone, secret: str) -> PhoneAccount:
    """The account ``phone`` is given, from the config and its desk-phone ``secret``."""
    pbx = directory.connections.pbx
    assert isinstance(pbx, AsteriskPbx | FreeswitchPbx), "provisioning needs a PBX"
    user = next(u for u in directory.users if phone.desk_phone in u.desk_phones)
    tls = isinstance(pbx, AsteriskPbx) and pbx.tls is not None
    return PhoneAccount(
        sip_user=user.id if isinstance(pbx, AsteriskPbx) else phone.desk_phone,
        auth_user=phone.desk_phone, password=secret, display_name=user.name or user.id,
        server=pbx.sip.host,
        port=pbx.tls.port if isinstance(pbx, AsteriskPbx) and pbx.tls else pbx.sip.port,
        tls=tls,
        srtp_required=isinstance(pbx, AsteriskPbx) and pbx.encryption is Encryption.REQUIRED,
        utc_offset_minutes=standard_offset_minutes(directory.practice.timezone))


def standard_offset_minutes(timezone: str) -> int:
    """The zone's standard (winter) offset from UTC in minutes: the lesser of January's and
    July's, so a southern zone's summer is not taken for its standard time."""
    zone = ZoneInfo(timezone)
    offsets = [datetime(2025, m, 15, tzinfo=zone).utcoffset() for m in (1, 7)]
    return min(int(o.total_seconds()) // 60 for o in offsets if o is not None)


def provisioning_files(directory: Directory, secrets: Mapping[str, str]
                       ) -> list[RenderedFile]:
    """Every provisioned desk phone's files under ``provisioning/`` (0600: they hold the SIP
    password).  A phone of a deactivated user is not provisioned."""
    out: list[RenderedFile] = []
    for user in directory.users:
        if not user.active:
            continue
        for phone in user.provisioned:
            for name, text in phone_files(phone, account(directory, phone,
                                                         secrets[phone.desk_phone])).items():
                out.append(RenderedFile(f"provisioning/{name}", text, private=True))
    return out


def phone_files(phone: ProvisionedPhone, acct: PhoneAccount) -> dict[str, str]:
    """The files ``phone`` requests, by name, each in its vendor's format."""
    names = file_names(phone)
    match phone.vendor:
        case Vendor.YEALINK:
            return {names[0]: yealink(acct)}
        case Vendor.POLYCOM:
            return {names[0]: polycom(acct), names[1]: polycom_master(names[0])}
        case Vendor.GRANDSTREAM:
            return {names[0]: grandstream(phone.mac, acct)}


def _hours(minutes: int) -> str:
    sign = "+" if minutes >= 0 else "-"
    h, m = divmod(abs(minutes), 60)
    return f"{sign}{h}" + (f":{m:02d}" if m else "")


def yealink(a: PhoneAccount) -> str:
    """A Yealink T4x/T5x ``<mac>.cfg``: ``key = value`` lines after the required header."""
    y, t = YEALINK_GUIDE, YEALINK_TEMPLATE
    lines = [
        ("#!version:1.0.0.1", f"the first line, required ({y}, Editing MAC-Oriented CFG File)"),
        ("account.1.enable = 1", t),
        (f"account.1.label = {a.display_name}", t),
        (f"account.1.display_name = {a.display_name}", t),
        (f"account.1.auth_name = {a.auth_user}", t),
        (f"account.1.password = {a.password}", t),
        (f"account.1.user_name = {a.sip_user}", t),
        (f"account.1.sip_server_host = {a.server}", t),
        (f"account.1.sip_server_port = {a.port}", t),
        # 0 UDP, 1 TCP, 2 TLS, 3 DNS SRV
        (f"account.1.transport = {2 if a.tls else 0}", t),
        # 0 disabled, 1 optional, 2 compulsory
        (f"account.1.srtp_encryption = {2 if a.srtp_required else 0}", y),
        (f"local_time.time_zone = {_hours(a.utc_offset_minutes)}", y),
        # Line key 2 as BLF (type 16) watching the outage lamp, on account 1.
        ("linekey.2.type = 16", y),
        (f"linekey.2.value = {ENGAGE_CODE}", y),
        ("linekey.2.line = 1", y),
        (f"linekey.2.label = {OUTAGE_LAMP_LABEL}", y),
    ]
    return "".join(f"{key}\n" if i == 0 else f"# {src}\n{key}\n"
                   for i, (key, src) in enumerate(lines))


def polycom_master(phone_file: str) -> str:
    """A Polycom master configuration file (``<mac>.cfg``): the files the phone loads."""
    return (f"<?xml version=\"1.0\" standalone=\"yes\"?>\n"
            f"<!-- CONFIG_FILES: the configuration files the phone loads ({POLYCOM_GUIDE}) -->\n"
            f"<APPLICATION CONFIG_FILES={quoteattr(phone_file)}/>\n")


def polycom(a: PhoneAccount) -> str:
    """A Polycom VVX ``phone<mac>.cfg``: the parameters as attributes of one element."""
    g, r = POLYCOM_GUIDE, POLYCOM_REG
    params = [
        ("reg.1.address", a.sip_user, g),
        ("reg.1.label", a.display_name, g),
        ("reg.1.auth.userId", a.auth_user, g),
        ("reg.1.auth.password", a.password, g),
        ("reg.1.server.1.address", a.server, r),
        ("reg.1.server.1.port", str(a.port), r),
        ("reg.1.server.1.transport", "TLS" if a.tls else "UDPOnly", r),
        ("reg.1.srtp.enable", "1" if a.srtp_required else "0", g),
        ("reg.1.srtp.offer", "1" if a.srtp_required else "0", g),
        ("reg.1.srtp.require", "1" if a.srtp_required else "0", g),
        ("tcpIpApp.sntp.gmtOffset", str(a.utc_offset_minutes * 60), g),
        # The busy lamp field: a key whose lamp follows the outage code's state.
        ("attendant.resourceList.1.address", ENGAGE_CODE, g),
        ("attendant.resourceList.1.label", OUTAGE_LAMP_LABEL, g),
        ("attendant.resourceList.1.type", "normal", g),
    ]
    notes = "".join(f"<!-- {k}: {src} -->\n" for k, _, src in params)
    attrs = "".join(f"\n  {k}={quoteattr(v)}" for k, v, _ in params)
    return f"<?xml version=\"1.0\" standalone=\"yes\"?>\n{notes}<PHONE_CONFIG>\n<ALL{attrs}/>\n" \
           "</PHONE_CONFIG>\n"


def grandstream(mac: str, a: PhoneAccount) -> str:
    """A Grandstream GRP ``cfg<mac>.xml``: P-values inside ``gs_provision``."""
    g = GRANDSTREAM_GUIDE
    offset = -a.utc_offset_minutes  # POSIX TZ: hours west of UTC are positive
    params = [
        ("P271", "1", "account 1 active"),
        ("P270", a.display_name, "account 1 name"),
        ("P47", f"{a.server}:{a.port}", "SIP server"),
        ("P35", a.sip_user, "SIP user ID"),
        ("P36", a.auth_user, "authenticate ID"),
        ("P34", a.password, "authenticate password"),
        ("P3", a.display_name, "display name"),
        ("P130", "2" if a.tls else "0", "SIP transport: 0 UDP, 1 TCP, 2 TLS"),
        ("P183", "2" if a.srtp_required else "0", "SRTP mode: 0 disabled, 2 forced"),
        ("P64", "customize", "time zone: the self-defined one below"),
        ("P246", f"STD{_hours(offset)}", "self-defined time zone (POSIX)"),
        ("P323", "1", "multi-purpose key 1 mode: BLF"),
        ("P301", "0", "multi-purpose key 1 account: account 1"),
        ("P302", OUTAGE_LAMP_LABEL, "multi-purpose key 1 name"),
        ("P303", ENGAGE_CODE, "multi-purpose key 1 value"),
    ]
    body = "".join(f"    <!-- {what} ({g}) -->\n    <{p}>{escape(v)}</{p}>\n"
                   for p, v, what in params)
    return ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            f"<!-- cfg<mac>.xml, the file name in lower case ({g}) -->\n"
            f"<gs_provision version=\"1\">\n  <mac>{mac}</mac>\n  <config version=\"1\">\n"
            f"{body}  </config>\n</gs_provision>\n")
