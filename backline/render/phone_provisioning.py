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

from backline.core.connections import AsteriskPbx, FreeswitchPbx
from backline.core.model import Directory
from backline.core.provisioning import ProvisionedPhone, Vendor, file_names
from backline.pbx.names import ENGAGE_CODE
from backline.render.asterisk import RenderedFile

# The vendor documents every key below comes from (each key names its own beside it).  Where
# the vendor's own page could not be retrieved, the provisioning templates of Wazo (an anchor
# that provisions these phones in production) corroborate the key and its values.
# Yealink IP Phones Auto Provisioning Guide (MAC-oriented <mac>.cfg, its "#!version:1.0.0.1"
# header) and its parameter table for firmware 8x (account.X.sip_server.Y.*):
YEALINK_GUIDE = "https://studylib.net/doc/18868229/guide"
YEALINK_SERVER = "https://manualshive.com/ru/manual/yealink/sip-t2-series/3895848?page=172"
YEALINK_ACCOUNT = "https://pastebin.com/zCtZk4Ry"  # account.1.* keys, annotated template
_WAZO = ("https://github.com/wazo-platform/wazo-provd-plugins/blob/"
         "36197dbdbf4357ac1b41bed89be319b062cfb374/plugins/")
WAZO_YEALINK = _WAZO + "wazo_yealink/v87/templates/base.tpl"  # srtp_encryption 0/2
WAZO_YEALINK_BLF = _WAZO + "wazo_yealink/common/common.py"  # linekey.N.type = 16 (BLF)
# Polycom UC Software Administrator Guide: reg.x.* (registration), sec.srtp.* (sip-interop.cfg),
# tcpIpApp.sntp.gmtOffset, attendant.* (the busy lamp field), the master file's CONFIG_FILES.
POLYCOM_GUIDE = ("https://documents.pub/document/polycom-uc-software-543-administrator-guide-"
                 "administrator-guide-uc-software.html")
POLYCOM_REG = "https://manualsdump.com/en/manuals/polycom-version_1.4.x_17/126223/130"
POLYCOM_SERVER = "https://www.easymanua.ls/polycom/cx5500/manual/163087?p=293"
POLYCOM_SRTP = "https://www.easymanua.ls/polycom/cx5500/manual/163087?p=186"
POLYCOM_BLF = "https://www.manualsdir.com/manuals/187552/polycom-soundpoint-sip-31.html?page=276"
WAZO_POLYCOM = _WAZO + "wazo_polycom/common/templates/base.tpl"  # attendant.resourceList.N.*
# Grandstream: the SIP Device Provisioning Guide (cfg<mac>.xml, gs_provision) and Grandstream's
# configuration template for the GRP261x, firmware 1.0.5.15 (every P-value, with its values).
GRANDSTREAM_GUIDE = ("https://documentation.grandstream.com/knowledge-base/"
                     "sip-device-provisioning-guide/")
GRANDSTREAM_TEMPLATE = _WAZO + ("wazo-grandstream/docs/config-template/"
                                "grp261x_config_1.0.5.15.txt")

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
    utc_offset_minutes: int  # the practice's standard time
    # The zone as a POSIX TZ rule with its daylight-saving dates ("CST6CDT,M3.2.0,M11.1.0"),
    # where the caller could read it from the time zone database; "" for standard time only.
    posix_tz: str = ""


def account(directory: Directory, phone: ProvisionedPhone, secret: str, posix_tz: str = ""
            ) -> PhoneAccount:
    """The account ``phone`` is given, from the config and its desk-phone ``secret``
    (``posix_tz``: the practice's zone as a POSIX TZ rule, see :class:`PhoneAccount`)."""
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
        srtp_required=directory.requires_srtp(phone.desk_phone),
        utc_offset_minutes=standard_offset_minutes(directory.practice.timezone),
        posix_tz=posix_tz)


def standard_offset_minutes(timezone: str) -> int:
    """The zone's standard (winter) offset from UTC in minutes: the lesser of January's and
    July's, so a southern zone's summer is not taken for its standard time."""
    zone = ZoneInfo(timezone)
    offsets = [datetime(2025, m, 15, tzinfo=zone).utcoffset() for m in (1, 7)]
    return min(int(o.total_seconds()) // 60 for o in offsets if o is not None)


def provisioning_files(directory: Directory, secrets: Mapping[str, str], posix_tz: str = ""
                       ) -> list[RenderedFile]:
    """Every provisioned desk phone's files under ``provisioning/`` (0600: they hold the SIP
    password).  A phone of a deactivated user is not provisioned."""
    out: list[RenderedFile] = []
    for user in directory.users:
        if not user.active:
            continue
        for phone in user.provisioned:
            acct = account(directory, phone, secrets[phone.desk_phone], posix_tz)
            for name, text in phone_files(phone, acct).items():
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
    g, sv, acct = YEALINK_GUIDE, YEALINK_SERVER, YEALINK_ACCOUNT
    lines = [
        ("#!version:1.0.0.1", f"{g} (Editing MAC-Oriented CFG File: the first line)"),
        ("account.1.enable = 1", acct),
        (f"account.1.label = {a.display_name}", acct),
        (f"account.1.display_name = {a.display_name}", acct),
        (f"account.1.auth_name = {a.auth_user}", acct),
        (f"account.1.password = {a.password}", acct),
        (f"account.1.user_name = {a.sip_user}", acct),
        (f"account.1.sip_server.1.address = {a.server}", sv),
        (f"account.1.sip_server.1.port = {a.port}", sv),
        # 0 UDP, 1 TCP, 2 TLS, 3 DNS-NAPTR
        (f"account.1.sip_server.1.transport_type = {2 if a.tls else 0}", sv),
        # 0 disabled, 1 optional, 2 compulsory
        (f"account.1.srtp_encryption = {2 if a.srtp_required else 0}",
         f"{g}; {WAZO_YEALINK}"),
        (f"local_time.time_zone = {_hours(a.utc_offset_minutes)}", f"{g}; {WAZO_YEALINK}"),
        # Line key 2 as BLF (type 16) watching the outage lamp, on account 1.
        ("linekey.2.type = 16", f"{g}; {WAZO_YEALINK_BLF}"),
        (f"linekey.2.value = {ENGAGE_CODE}", f"{g}; {WAZO_YEALINK_BLF}"),
        ("linekey.2.line = 1", f"{g}; {WAZO_YEALINK_BLF}"),
        (f"linekey.2.label = {OUTAGE_LAMP_LABEL}", f"{g}; {WAZO_YEALINK_BLF}"),
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
    srtp = "1" if a.srtp_required else "0"
    params = [
        ("reg.1.address", a.sip_user, POLYCOM_REG),
        ("reg.1.label", a.display_name, POLYCOM_REG),
        ("reg.1.auth.userId", a.auth_user, POLYCOM_REG),
        ("reg.1.auth.password", a.password, POLYCOM_REG),
        ("reg.1.server.1.address", a.server, POLYCOM_SERVER),
        ("reg.1.server.1.port", str(a.port), POLYCOM_SERVER),
        # TLS: TLS only (if it fails, transport fails); UDPOnly: UDP only.
        ("reg.1.server.1.transport", "TLS" if a.tls else "UDPOnly", POLYCOM_SERVER),
        # Secure media offered and required in every INVITE (SDES, RFC 4568).
        ("sec.srtp.enable", srtp, POLYCOM_SRTP),
        ("sec.srtp.offer", srtp, POLYCOM_SRTP),
        ("sec.srtp.require", srtp, POLYCOM_SRTP),
        ("tcpIpApp.sntp.gmtOffset", str(a.utc_offset_minutes * 60), POLYCOM_GUIDE),
        # The busy lamp field on registration 1: a key whose lamp follows the outage code.
        ("attendant.reg", "1", POLYCOM_BLF),
        ("attendant.resourceList.1.address", ENGAGE_CODE, f"{POLYCOM_GUIDE}; {WAZO_POLYCOM}"),
        ("attendant.resourceList.1.label", OUTAGE_LAMP_LABEL,
         f"{POLYCOM_GUIDE}; {WAZO_POLYCOM}"),
        ("attendant.resourceList.1.type", "normal", f"{POLYCOM_GUIDE}; {WAZO_POLYCOM}"),
    ]
    notes = "".join(f"<!-- {k}: {src} -->\n" for k, _, src in params)
    attrs = "".join(f"\n  {k}={quoteattr(v)}" for k, v, _ in params)
    return f"<?xml version=\"1.0\" standalone=\"yes\"?>\n{notes}<PHONE_CONFIG>\n<ALL{attrs}/>\n" \
           "</PHONE_CONFIG>\n"


def grandstream(mac: str, a: PhoneAccount) -> str:
    """A Grandstream GRP ``cfg<mac>.xml``: P-values inside ``gs_provision``, each named in
    Grandstream's GRP261x configuration template (GRANDSTREAM_TEMPLATE)."""
    offset = -a.utc_offset_minutes  # POSIX TZ: hours west of UTC are positive
    params = [
        ("P271", "1", "Account 1 Active: 1 - Yes"),
        ("P270", a.display_name, "Account Name"),
        ("P47", f"{a.server}:{a.port}", "SIP Server"),
        ("P35", a.sip_user, "SIP User ID"),
        ("P36", a.auth_user, "Authenticate ID"),
        ("P34", a.password, "Authenticate Password"),
        ("P3", a.display_name, "Name"),
        ("P130", "2" if a.tls else "0", "SIP Transport: 0 - UDP, 2 - TLS/TCP"),
        ("P183", "2" if a.srtp_required else "0",
         "SRTP Mode: 0 - Disabled, 2 - Enabled and forced"),
        ("P64", "customize", "Time Zone: Self-Defined Time Zone"),
        ("P246", a.posix_tz or f"STD{_hours(offset)}",
         "Self Defined Time Zone (POSIX TZ, with its daylight-saving rule)"),
        # VPK 2 (a fixed VPK on every GRP261x) as BLF on account 1, watching *28.
        ("P1365", "1", "VPK 2 Key Mode: BLF (1)"),
        ("P1366", "0", "VPK 2 Account: 0 - Account 1"),
        ("P1467", OUTAGE_LAMP_LABEL, "VPK 2 Description"),
        ("P1468", ENGAGE_CODE, "VPK 2 Value"),
    ]
    body = "".join(f"    <!-- {what} ({GRANDSTREAM_TEMPLATE}) -->\n    <{p}>{escape(v)}</{p}>\n"
                   for p, v, what in params)
    return ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            f"<!-- cfg<mac>.xml, gs_provision, its name in lower case ({GRANDSTREAM_GUIDE}) -->\n"
            f"<gs_provision version=\"1\">\n  <mac>{mac}</mac>\n  <config version=\"1\">\n"
            f"{body}  </config>\n</gs_provision>\n")
