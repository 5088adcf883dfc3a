"""FreeSWITCH configuration rendered from the practice directory: pure, config in, XML out.

Each file is an ``<include>`` fragment at the path it takes under FreeSWITCH's configuration
directory, as the stock ``autoload_configs/``, ``dialplan/`` and ``directory/`` files are:
the stock ``freeswitch.xml`` pastes every ``autoload_configs/*.xml`` inside its one
``configuration`` section (and ``dialplan/*.xml``, ``directory/*.xml`` inside theirs) with
``X-PRE-PROCESS cmd="include"``, and the preprocessor drops the ``<include>`` lines. A file
holding its own ``<document>``/``<section>`` would nest a section inside a section, where no
lookup ever finds it (``tests/harness/freeswitch_conf.py`` assembles the files that way).

* ``directory/backline.xml``: one domain, a user per desk phone (generated SIP secret) and a
  user per voicemail box (mod_voicemail keeps boxes in the directory);
* ``dialplan/backline.xml``: each practice number hands the call to the controller's socket,
  with the path of the rendered announcement on the channel; if the controller cannot be
  reached, ``socket`` returns and the next actions answer with
  the announcement (the fail-safe). Desk phones: 911 goes straight to the carrier;
  ``*28``/``*29`` + PIN ask the controller to engage/end the outage; in an outage
  (``${db(select/backline/mode)}``, the key the controller mirrors) other calls are refused by
  the PBX itself; otherwise the controller decides, and refuses if it is away;
* ``autoload_configs/event_socket.conf.xml``: ESL on loopback/private address; the password is
  *not* in it: ``$${backline_esl_password}`` is set while FreeSWITCH preprocesses the file, from
  the environment variable (or file) the config names (``X-PRE-PROCESS exec-set``);
* ``autoload_configs/sofia.conf.xml``: the SIP profile desk phones register to (their calls
  challenged), the carrier recognised by its address (its calls are not), presence managed
  (the outage lamp), and the carrier gateway;
* ``autoload_configs/cdr_csv.conf.xml``: mod_cdr_csv's row per carrier call, which the
  controller imports on its return (the calls and faxes the PBX answered alone).
* ``autoload_configs/acl.conf.xml``: the network lists the profile and the directory name:
  the carrier's address (``apply-inbound-acl``) and, with ``connections.pbx.lan``, the LAN
  (each directory user's ``auth-acl``: its digest is refused from anywhere else).
* ``autoload_configs/voicemail.conf.xml``: :mod:`backline.render.freeswitch_voicemail`.

Untrusted text (caller IDs, dialled strings) is never written here; what is written was
validated by the config loader, and ElementTree escapes every attribute value.
"""

from __future__ import annotations

import ipaddress
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from backline.core.connections import FreeswitchPbx
from backline.core.dialling import EXTENSION_DIGITS
from backline.core.emergency import emergency_callers
from backline.core.model import Carry, Directory
from backline.core.voicemail import voicemail_boxes
from backline.pbx.freeswitch import cdr, names
from backline.pbx.freeswitch.commands import fax_setup, greeting_setup
from backline.render.asterisk import RenderedFile

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_FILE_PATH = re.compile(r"/[A-Za-z0-9_./-]{1,255}")


class RenderError(ValueError):
    """The config names something that cannot be written safely into FreeSWITCH's XML."""


@dataclass(frozen=True, slots=True)
class FreeswitchSecrets:
    """Generated secrets rendered into the 0600 directory file, and the call record's row
    token into the 0600 cdr_csv.conf (:func:`backline.pbx.freeswitch.cdr.template`)."""

    desk_phones: Mapping[str, str]
    voicemail: Mapping[str, str]
    row_token: str = ""


# Where each file goes under FreeSWITCH's configuration directory (``--out`` mirrors it).
DIRECTORY_FILE = "directory/backline.xml"
DIALPLAN_FILE = "dialplan/backline.xml"
EVENT_SOCKET_FILE = "autoload_configs/event_socket.conf.xml"
SOFIA_FILE = "autoload_configs/sofia.conf.xml"
CDR_CSV_FILE = "autoload_configs/cdr_csv.conf.xml"
ACL_FILE = "autoload_configs/acl.conf.xml"
# acl.conf's lists (switch_load_network_lists in src/switch_core.c).
CARRIER_LIST = "backline-carrier"
LAN_LIST = "backline-lan"


def _include() -> ET.Element:
    return ET.Element("include")


def _text(include: ET.Element) -> str:
    """The fragment as FreeSWITCH's preprocessor reads it, one line at a time: it drops every
    line holding ``<include>``, ``</include>`` or ``<?``, so those tags stand on lines of
    their own (ElementTree's indent puts every element on its own line)."""
    ET.indent(include)
    return ("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
            "<!-- Rendered by `backline render`: edit the practice YAML, not this file. -->\n"
            + ET.tostring(include, encoding="unicode") + "\n")


def _params(parent: ET.Element, values: Mapping[str, str], tag: str | None = "params",
            item: str = "param") -> None:
    """``<params><param name= value=/>...``; ``tag=None`` puts the items straight in
    ``parent`` (a sofia gateway holds its params directly)."""
    box = parent if tag is None else ET.SubElement(parent, tag)
    for key, value in values.items():
        ET.SubElement(box, item, name=key, value=value)


def lan_only(pbx: FreeswitchPbx) -> dict[str, str]:
    """A directory user's ``auth-acl`` with ``connections.pbx.lan``: sofia_reg_parse_auth
    (sofia_reg.c) refuses its digest (403, REGISTER and INVITE alike) from an address outside
    the LAN list before it looks at the password; no ``lan``, no restriction."""
    return {"auth-acl": LAN_LIST} if pbx.lan else {}


def directory_xml(d: Directory, pbx: FreeswitchPbx, secrets: FreeswitchSecrets) -> str:
    doc = _include()
    domain = ET.SubElement(doc, "domain", name=pbx.sip.host)
    _params(domain, {"dial-string": "{^^:sip_invite_domain=${dialed_domain}:presence_id="
                     "${dialed_user}@${dialed_domain}}${sofia_contact(*/${dialed_user}@"
                     "${dialed_domain})}"})
    users = ET.SubElement(ET.SubElement(ET.SubElement(domain, "groups"), "group",
                                        name="default"), "users")
    emergency = {c.desk_phone: c for c in emergency_callers(d)}
    for user in d.users:
        if not user.active:
            continue  # a deactivated user's phones cannot register at all
        for phone in user.desk_phones:
            entry = ET.SubElement(users, "user", id=phone)
            _params(entry, {"password": secrets.desk_phones[phone], **lan_only(pbx)})
            caller = emergency.get(phone)
            _params(entry, {"user_context": names.DESK_CONTEXT,
                            "backline_user": user.id,
                            "effective_caller_id_name": "",
                            # What a 911 call from this phone presents (backline/core/emergency.py).
                            "backline_emergency_callback": caller.callback if caller else "",
                            "backline_emergency_name": caller.caller_id_name if caller else ""},
                    tag="variables", item="variable")
    for box in voicemail_boxes(d):
        entry = ET.SubElement(users, "user", id=box)
        # A box, not a phone: its SIP password is a generated secret nobody is given.
        _params(entry, {"password": secrets.voicemail[box], "vm-enabled": "true",
                        **lan_only(pbx)})
    return _text(doc)


def _dialled_forms(e164: str) -> str:
    digits = e164.lstrip("+")
    forms = [re.escape(e164), digits]
    if e164.startswith("+1"):
        forms.append(digits[1:])
    return "^(" + "|".join(forms) + ")$"


def _actions(condition: ET.Element, actions: list[tuple[str, str]]) -> None:
    for app, data in actions:
        attrs = {"application": app}
        if data:
            attrs["data"] = data
        ET.SubElement(condition, "action", attrs)


def _fax_setup() -> list[tuple[str, str]]:
    return [(app, arg or "") for app, arg in fax_setup()]


def dialplan_xml(d: Directory, pbx: FreeswitchPbx, announcement: str) -> str:
    socket = f"{pbx.socket.host}:{pbx.socket.port} full"
    if not _FILE_PATH.fullmatch(pbx.fax_spool):
        raise RenderError(f"connections.pbx.fax_spool: {pbx.fax_spool!r} must be an absolute "
                          "path of letters, digits, '_', '.', '/' and '-'")
    if not _FILE_PATH.fullmatch(announcement):
        raise RenderError(f"--out: the announcement's path {announcement!r} must be absolute, "
                          "of letters, digits, '_', '.', '/' and '-'")
    mode = f"${{db(select/{names.DB_REALM}/{names.DB_MODE})}}"
    doc = _include()
    carrier = ET.SubElement(doc, "context", name=names.CARRIER_CONTEXT)
    for number in d.numbers:
        voice, fax = Carry.VOICE in number.carries, Carry.FAX in number.carries
        if not (voice or fax):
            continue
        ext = ET.SubElement(carrier, "extension", name="number" + number.number)
        cond = ET.SubElement(ext, "condition", field="destination_number",
                             expression=_dialled_forms(number.number))
        # A voice number's own greeting before its voicemail (mod_voicemail reads these
        # when the controller sends the call there); a fax number is marked for the CDR.
        marks = greeting_setup(number.voicemail_box, announcement) if voice \
            else [("set", f"{names.KIND}={names.KIND_FAX}")]
        # Reached only when the controller did not carry the call through: fail-safe.  A fax
        # number keeps receiving (T.38 or audio) into the spool, which the controller takes
        # in on its return (the CDR import); any other number answers with the announcement.
        fallback = [("answer", ""), ("playback", announcement), ("hangup", "")] if voice else \
            [*_fax_setup(), ("answer", ""), ("rxfax", f"{pbx.fax_spool}/"
                                             + names.FAX_FILE.format(uuid="${uuid}")),
             ("hangup", "")]
        _actions(cond, [
            ("set", f"{names.ROUTE}={names.INBOUND}"),
            ("set", f"{names.NUMBER}={number.number}"),
            ("set", f"{names.ANNOUNCEMENT}={announcement}"),
            *marks,
            # The mode in force, kept in the call record for the fail-safe import.
            ("set", f"backline_mode={mode}"),
            ("socket", socket),
            *fallback])
    unknown = ET.SubElement(carrier, "extension", name="unknown-number")
    cond = ET.SubElement(unknown, "condition", field="destination_number", expression="^.*$")
    _actions(cond, [("answer", ""), ("playback", names.REFUSAL_SOUND), ("hangup", "")])

    desk = ET.SubElement(doc, "context", name=names.DESK_CONTEXT)
    for emergency in d.emergency_numbers:
        ext = ET.SubElement(desk, "extension", name=f"emergency-{emergency}")
        cond = ET.SubElement(ext, "condition", field="destination_number",
                             expression=f"^({re.escape(emergency)})$")
        # Never through the controller, in every mode; with the desk phone's callback number
        # and the practice's name (its directory variables), in From and P-Asserted-Identity.
        _actions(cond, [
            ("set", "effective_caller_id_number=${backline_emergency_callback}"),
            ("set", "effective_caller_id_name=${backline_emergency_name}"),
            ("set", "sip_cid_type=pid"),
            ("bridge", f"sofia/gateway/{names.GATEWAY}/{emergency}")])
    # The outage switch for admins, before the outage refusal: it must end an outage too;
    # and the hours override (*26 closed, *27 open until the next scheduled change).
    for code, action, name in ((names.ENGAGE_CODE, "engage", "outage-engage"),
                               (names.END_CODE, "end", "outage-end"),
                               (names.HOURS_CLOSED_CODE, "closed", "hours-closed"),
                               (names.HOURS_OPEN_CODE, "open", "hours-open")):
        ext = ET.SubElement(desk, "extension", name=name)
        cond = ET.SubElement(ext, "condition", field="destination_number",
                             expression=f"^{re.escape(code)}$")
        _actions(cond, [
            ("set", f"{names.ROUTE}={names.FEATURE}"),
            ("set", f"{names.FEATURE_ACTION}={action}"),
            ("answer", ""),
            # min max tries timeout terminator prompt invalid-prompt variable digit-regex
            ("play_and_get_digits", f"4 12 3 7000 # {names.PIN_PROMPT_SOUND} "
                                    f"{names.PIN_INVALID_SOUND} {names.FEATURE_PIN} \\d+"),
            ("socket", socket),
            ("playback", names.FEATURE_REFUSED_SOUND), ("hangup", "")])
    # A colleague's or a team's extension, before the outage refusal: internal calls never
    # touch the carrier, so they ring in every mode (the controller decides who rings).
    ext = ET.SubElement(desk, "extension", name="internal")
    cond = ET.SubElement(ext, "condition", field="destination_number",
                         expression=f"^({EXTENSION_DIGITS})$")
    _actions(cond, [("set", f"{names.ROUTE}={names.OUTBOUND}"), ("socket", socket),
                    ("answer", ""), ("playback", names.OUTBOUND_REFUSAL_SOUND),
                    ("hangup", "")])
    refused = ET.SubElement(desk, "extension", name="outage-refusal")
    ET.SubElement(refused, "condition", field=mode, expression="^outage$")
    cond = ET.SubElement(refused, "condition", field="destination_number", expression="^.+$")
    _actions(cond, [("answer", ""), ("playback", names.OUTBOUND_REFUSAL_SOUND),
                    ("hangup", "")])
    ask = ET.SubElement(desk, "extension", name="ask-the-controller")
    cond = ET.SubElement(ask, "condition", field="destination_number", expression="^(.+)$")
    _actions(cond, [("set", f"{names.ROUTE}={names.OUTBOUND}"), ("socket", socket),
                    ("answer", ""), ("playback", names.OUTBOUND_REFUSAL_SOUND),
                    ("hangup", "")])
    return _text(doc)


def _secret_source(pbx: FreeswitchPbx) -> str:
    secret = pbx.esl_password
    if secret.env:
        if not _ENV_NAME.fullmatch(secret.env):
            raise RenderError(f"connections.pbx.esl.password_env: {secret.env!r} is not a "
                              "plain environment variable name")
        return f"printenv {secret.env}"
    if secret.file:
        if not _FILE_PATH.fullmatch(secret.file):
            raise RenderError(f"connections.pbx.esl.password_file: {secret.file!r} must be an "
                              "absolute path of letters, digits, '_', '.', '/' and '-'")
        return f"cat {secret.file}"
    raise RenderError("connections.pbx.esl: no password_env or password_file")


# The preprocessor pastes the password raw into an XML attribute ("$${...}", expand_vars in
# src/switch_xml.c), where '"', '<' or '&' break the load ('>' is legal there); exec-set
# cuts trailing whitespace and the ESL "auth" line ends at a newline.
_ESL_PASSWORD = re.compile(r'[^"<&\s\x00-\x1f\x7f]+')


def check_esl_password(pbx: FreeswitchPbx, password: str) -> None:
    """Refuse an ESL password FreeSWITCH could not load, naming where it comes from (never
    the value)."""
    if _ESL_PASSWORD.fullmatch(password):
        return
    secret = pbx.esl_password
    where = (f"connections.pbx.esl.password_env: the environment variable {secret.env}"
             if secret.env else f"connections.pbx.esl.password_file: {secret.file}")
    raise RenderError(f"{where} holds a password FreeSWITCH cannot load: it is pasted as it "
                      "is into event_socket.conf.xml, so it must not contain '\"', '<', '&', "
                      "spaces or control characters")


def event_socket_xml(pbx: FreeswitchPbx) -> str:
    """mod_event_socket on the config's address. The password line reads
    ``$${backline_esl_password}``, which the ``exec-set`` line above it sets from the
    environment (or file) the config names while FreeSWITCH preprocesses this file: the
    password is in no file we write. The preprocessor pastes the value in raw, unescaped
    (check_esl_password refuses a password that would break the file)."""
    doc = _include()
    ET.SubElement(doc, "X-PRE-PROCESS", cmd="exec-set",
                  data=f"backline_esl_password={_secret_source(pbx)}")
    conf = ET.SubElement(doc, "configuration", name="event_socket.conf",
                         description="Socket Client")
    _params(conf, {"nat-map": "false", "listen-ip": pbx.esl.host,
                   "listen-port": str(pbx.esl.port),
                   "password": "$${backline_esl_password}",
                   "apply-inbound-acl": "loopback.auto"}, tag="settings")
    return _text(doc)


def carrier_acl(pbx: FreeswitchPbx) -> str:
    """The carrier's address as the CIDR of its list's node. An address, not a name:
    acl.conf's nodes hold networks (switch_network_list_add_cidr_port_token in
    src/switch_utils.c), never resolved names."""
    try:
        address = ipaddress.ip_address(pbx.trunk.host)
    except ValueError:
        raise RenderError(f"connections.pbx.trunk.host: {pbx.trunk.host!r} must be the "
                          "carrier's IP address: FreeSWITCH recognises the carrier's calls "
                          "by it (apply-inbound-acl)") from None
    return str(ipaddress.ip_network(address))


def acl_xml(pbx: FreeswitchPbx) -> str:
    """acl.conf's network lists, each denying what it does not list: the carrier's address,
    and with ``connections.pbx.lan`` the LAN's networks. Lists are built when FreeSWITCH
    starts and on ``reloadacl`` (switch_load_network_lists), which loads the XML again."""
    doc = _include()
    conf = ET.SubElement(doc, "configuration", name="acl.conf", description="Network Lists")
    lists = ET.SubElement(conf, "network-lists")
    carrier = ET.SubElement(lists, "list", name=CARRIER_LIST, default="deny")
    ET.SubElement(carrier, "node", type="allow", cidr=carrier_acl(pbx))
    if pbx.lan:
        lan = ET.SubElement(lists, "list", name=LAN_LIST, default="deny")
        for network in pbx.lan:
            ET.SubElement(lan, "node", type="allow", cidr=network)
    return _text(doc)


def sofia_xml(pbx: FreeswitchPbx) -> str:
    doc = _include()
    conf = ET.SubElement(doc, "configuration", name="sofia.conf",
                         description="sofia Endpoint")
    profile = ET.SubElement(ET.SubElement(conf, "profiles"), "profile", name="backline")
    gateway = ET.SubElement(ET.SubElement(profile, "gateways"), "gateway", name=names.GATEWAY)
    _params(gateway, {"proxy": f"{pbx.trunk.host}:{pbx.trunk.port}", "register": "false",
                      "caller-id-in-from": "true"}, tag=None)
    ET.SubElement(profile, "domains")
    # auth-calls: a desk phone's INVITE is challenged, then runs in its directory user's
    # context. The carrier neither registers nor answers a challenge: an INVITE from its
    # address passes the inbound ACL, is taken as authenticated and runs in the profile's
    # context (the carrier's). manage-presence: the outage lamp (SUBSCRIBE and the dialog
    # package accepted, PRESENCE_IN turned into NOTIFYs); unset, the profile is passive and
    # skips both. The LAN is kept by each directory user's auth-acl, not by
    # apply-register-acl: sofia binds a REGISTER from an address on that list without any
    # challenge (REG_AUTO_REGISTER in sofia_reg.c), so any LAN host could take a phone's name.
    _params(profile, {"sip-ip": pbx.sip.host, "rtp-ip": pbx.sip.host,
                      "sip-port": str(pbx.sip.port), "context": names.CARRIER_CONTEXT,
                      "auth-calls": "true", "apply-inbound-acl": CARRIER_LIST,
                      "manage-presence": "true",
                      "force-register-domain": pbx.sip.host,
                      "force-register-db-domain": pbx.sip.host, "dialplan": "XML",
                      "inbound-codec-prefs": "PCMU,PCMA", "outbound-codec-prefs": "PCMU,PCMA"},
            tag="settings")
    return _text(doc)


def cdr_csv_xml(pbx: FreeswitchPbx, row_token: str) -> str:
    """mod_cdr_csv: one row per carrier call (a legs only) in ``Master.csv`` with the columns
    the controller's fail-safe import reads (:mod:`backline.pbx.freeswitch.cdr`), each led by
    the install's ``row_token``; never rotated away on a HUP, so no row is lost to the
    import."""
    if not cdr.TOKEN.fullmatch(row_token):
        raise RenderError("the call record's row token is missing or malformed: render with "
                          "the secrets file the controller reads (connections.pbx.secrets_file)")
    path = PurePosixPath(pbx.cdr_file)
    if path.name != "Master.csv" or path.parent.name != "cdr-csv" \
            or not _FILE_PATH.fullmatch(pbx.cdr_file):
        raise RenderError(f"connections.pbx.cdr_file: {pbx.cdr_file!r} must be "
                          "LOG_BASE/cdr-csv/Master.csv, where mod_cdr_csv writes")
    doc = _include()
    conf = ET.SubElement(doc, "configuration", name="cdr_csv.conf",
                         description="CDR CSV Format")
    _params(conf, {"log-base": str(path.parent.parent), "default-template": cdr.TEMPLATE_NAME,
                   "rotate-on-hup": "false", "legs": "a", "master-file-only": "true"},
            tag="settings")
    templates = ET.SubElement(conf, "templates")
    ET.SubElement(templates, "template", name=cdr.TEMPLATE_NAME).text = cdr.template(row_token)
    return _text(doc)


def render(d: Directory, secrets: FreeswitchSecrets, announcement: str) -> list[RenderedFile]:
    pbx = d.connections.pbx
    if not isinstance(pbx, FreeswitchPbx):
        raise RenderError("connections.pbx: this renders FreeSWITCH configuration only")
    return [
        RenderedFile(DIRECTORY_FILE, directory_xml(d, pbx, secrets), private=True),
        RenderedFile(DIALPLAN_FILE, dialplan_xml(d, pbx, announcement)),
        RenderedFile(EVENT_SOCKET_FILE, event_socket_xml(pbx)),
        RenderedFile(SOFIA_FILE, sofia_xml(pbx)),
        RenderedFile(CDR_CSV_FILE, cdr_csv_xml(pbx, secrets.row_token), private=True),
        RenderedFile(ACL_FILE, acl_xml(pbx)),
    ]
