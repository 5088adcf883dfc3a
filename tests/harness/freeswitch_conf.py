"""What FreeSWITCH makes of a configuration directory: its XML preprocessor and its section
lookup, re-implemented from ``src/switch_xml.c`` (signalwire/freeswitch, the copy read was
commit cc93a683), so that a test can load the files ``backline render`` wrote the way
FreeSWITCH loads them and look up each thing the driver relies on the way FreeSWITCH does.

Only the rules the rendered files and the stock layout use are here; anything else the
preprocessor knows (``<!--#`` comments, ``stun-set``, ``exec``) raises :class:`NotModelled`
instead of being guessed at.

* :func:`preprocess` follows ``preprocess()``: one line at a time, ``$${var}`` expanded
  (``expand_vars``), a line holding ``<include>``, ``</include>`` or ``<?`` dropped whole,
  ``X-PRE-PROCESS`` lines run (``set``, ``exec-set``, ``env-set``, ``include``) and never
  written, every other line written as it is. ``include`` globs relative to the including
  file's directory (``preprocess_glob``).
* :func:`find_child` and :func:`locate` follow ``switch_xml_find_child`` and
  ``switch_xml_locate``: the *first* ``section`` whose name matches, and in it the first child
  tag whose attribute matches (case-insensitively).
* :func:`network_lists` and :func:`check_network_list` follow ``switch_load_network_lists``
  and ``switch_check_network_list_ip_port_token`` (``src/switch_core.c``) and the list match
  of ``src/switch_utils.c``: acl.conf's lists (``cidr`` nodes only) and the ``.auto`` ones the
  rendered files name.
* :meth:`SipProfile.invite` and :meth:`SipProfile.register` follow mod_sofia's INVITE and
  REGISTER: the profile's ACLs, the digest challenge, and ``sofia_reg_parse_auth``'s user
  checks (``auth-acl``, the password).
* :func:`stock_tree` writes a configuration directory shaped like FreeSWITCH's stock one
  (``conf/vanilla/freeswitch.xml``: ``vars.xml`` first, then one ``configuration`` section
  including ``autoload_configs/*.xml``, one ``dialplan`` section including ``dialplan/*.xml``,
  one ``directory`` section including ``directory/*.xml``), with a stock-like neighbour in each
  folder, so the rendered files must coexist with others.
"""

from __future__ import annotations

import glob
import ipaddress
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# preprocess(): rlevel > 100 stops an include loop.
MAX_INCLUDE_DEPTH = 100


class NotModelled(Exception):
    """The files use a preprocessor feature this model does not follow."""


@dataclass
class Preprocessor:
    """FreeSWITCH's global variables while preprocessing (``switch_core_set_variable``).

    ``env`` is what ``exec-set`` commands and ``env-set`` see (the switch's environment)."""

    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    variables: dict[str, str] = field(default_factory=dict)

    def expand(self, line: str) -> str:
        """expand_vars: each ``$${name}`` becomes the global variable, or nothing."""
        return re.sub(r"\$\$\{([^}]*)\}", lambda m: self.variables.get(m.group(1), ""), line)

    def run(self, conf_dir: Path, file: Path) -> str:
        """preprocess(conf_dir, file): the text the XML parser is given."""
        out: list[str] = []
        self._file(conf_dir, file, out, 0)
        return "".join(out)

    def _file(self, cwd: Path, file: Path, out: list[str], depth: int) -> None:
        if depth > MAX_INCLUDE_DEPTH:
            raise NotModelled(f"include depth over {MAX_INCLUDE_DEPTH} at {file}")
        for raw in file.read_text().splitlines(keepends=True):
            line = self.expand(raw)
            # "we ignore <include> or </include> for the sake of validators as well as
            # <?xml version="1.0"?> type stuff": tested on the line as read, before expansion.
            if "<include>" in raw or "</include>" in raw or "<?" in raw:
                continue
            at = line.lower().find("x-pre-process")
            if at >= 0:
                if at == 0 or line[at - 1] != "<":
                    continue  # the whole line is skipped, not written
                self._command(cwd, line[at:], out, depth)
                continue
            if "<!--#" in line:
                raise NotModelled(f"<!--# comment in {file}")
            out.append(line)

    def _command(self, cwd: Path, text: str, out: list[str], depth: int) -> None:
        # tcmd: the value after the first "cmd", "=", '"' up to the next '"'; targ likewise
        # after "data" further on.
        found = re.search(r'cmd[^=]*=[^"]*"([^"]*)"(.*)', text, re.IGNORECASE | re.DOTALL)
        if found is None:
            return
        cmd, rest = found.group(1), found.group(2)
        data_found = re.search(r'data[^=]*=[^"]*"([^"]*)"', rest, re.IGNORECASE)
        if data_found is None:
            return
        data = data_found.group(1)
        name, eq, value = data.partition("=")
        match cmd.lower():
            case "set":
                if eq:
                    self.variables[name.rstrip(" ")] = value.lstrip(" ")
            case "exec-set":
                # preprocess_exec_set: the command's output, trailing spaces and newlines
                # cut, if it ran cleanly and said something.
                if eq:
                    done = subprocess.run(["/bin/sh", "-c", value.lstrip(" ")], env=self.env,
                                          capture_output=True, text=True, check=False)
                    result = done.stdout.rstrip(" \n")
                    if done.returncode == 0 and result:
                        self.variables[name.rstrip(" ")] = result
            case "env-set":
                if eq and value.startswith("$") and value[1:] in self.env:
                    self.variables[name] = self.env[value[1:]]
            case "include":
                # preprocess_glob: relative to the including file's directory; glob()
                # returns the names sorted; each file's own directory is its cwd.
                pattern = data if os.path.isabs(data) else str(cwd / data)
                for path in sorted(glob.glob(pattern)):
                    self._file(Path(path).parent, Path(path), out, depth + 1)
            case other:
                raise NotModelled(f"X-PRE-PROCESS cmd={other!r}")


def load(conf_dir: Path, env: dict[str, str] | None = None,
         main: str = "freeswitch.xml") -> tuple[ET.Element, Preprocessor]:
    """switch_xml_parse_file on ``conf_dir/main``: preprocessed, then parsed. The XML parser
    here (ElementTree) is stricter than FreeSWITCH's; anything it accepts FreeSWITCH's does."""
    pre = Preprocessor(env=dict(os.environ) if env is None else env)
    text = pre.run(conf_dir, conf_dir / main)
    return ET.fromstring(text), pre


def find_child(node: ET.Element, child: str, attr: str | None = None,
               value: str | None = None) -> ET.Element | None:
    """switch_xml_find_child: with no attribute to match, the node itself; else the first
    ``child`` tag whose ``attr`` equals ``value`` ignoring case."""
    if attr is None or value is None:
        return node
    for tag in node.findall(child):
        found = tag.get(attr)
        if found is not None and found.lower() == value.lower():
            return tag
    return None


def locate(root: ET.Element, section: str, tag: str | None = None, key: str | None = None,
           value: str | None = None) -> ET.Element | None:
    """switch_xml_locate on the static XML (no bindings): the first ``section`` named
    ``section``, then the first ``tag`` in it whose ``key`` is ``value``. A second section of
    the same name is never searched."""
    conf = find_child(root, "section", "name", section)
    if conf is None:
        return None
    return find_child(conf, tag or "", key, value) if tag else conf


def open_cfg(root: ET.Element, name: str) -> ET.Element | None:
    """switch_xml_open_cfg: how every module finds its ``NAME.conf``."""
    return locate(root, "configuration", "configuration", "name", name)


def locate_user(root: ET.Element, user: str, domain: str) -> ET.Element | None:
    """switch_xml_locate_domain then switch_xml_locate_user_in_domain: ``groups/group/users``
    when the domain has ``groups``, else ``users``, else the domain itself; a user matches on
    ``id`` or ``number-alias`` and is not ``type="pointer"`` (find_user_in_tag)."""
    dom = locate(root, "directory", "domain", "name", domain)
    if dom is None:
        return None
    groups = dom.find("groups")
    holders = [g.find("users") for g in groups.findall("group")] if groups is not None \
        else [dom.find("users") if dom.find("users") is not None else dom]
    for users in holders:
        if users is None:
            continue
        for entry in users.findall("user"):
            if entry.get("type") == "pointer":
                continue
            if user.lower() in ((entry.get("id") or "").lower(),
                                (entry.get("number-alias") or "").lower()):
                return entry
    return None


def voicemail_profile(root: ET.Element, name: str) -> dict[str, str] | None:
    """mod_voicemail.c, load_profile: ``voicemail.conf``'s ``profiles``, the ``profile`` of
    that name, and its ``param`` children (switch_event_import_xml); None if not found, when
    every ``voicemail NAME ...`` fails ("Error invalid profile")."""
    cfg = open_cfg(root, "voicemail.conf")
    profiles = cfg.find("profiles") if cfg is not None else None
    profile = find_child(profiles, "profile", "name", name) if profiles is not None else None
    return None if profile is None else params(profile, "param")


def keeps_recording(profile: dict[str, str], samples: int, rate: int = 8000) -> bool:
    """mod_voicemail.c, create_file: a message's recording of ``samples`` at ``rate`` is
    kept unless its whole seconds (``fh.samples_out / fh.samplerate``) are under the
    profile's ``min-record-len`` (default 3, 0 to 10000: load_profile's config item); under
    it, the file is deleted, no message is kept and no event fires."""
    value = profile.get("min-record-len") or "3"
    minimum = int(value) if value.isdigit() and int(value) <= 10000 else 3
    return samples // rate >= minimum


# What a caller can press (switch_utils.h, is_dtmf: the keys switch_channel_queue_dtmf
# queues, RFC 2833 or SIP INFO alike).
DTMF_KEYS = "0123456789ABCDabcd#*FfWw"


def voicemail_login_keys(profile: dict[str, str]) -> str:
    """mod_voicemail.c's ``login_keys`` as load_profile leaves them from the profile's
    params: switch_event_import_xml adds each param as an event header, and
    switch_event_base_add_header drops a header whose value is empty, so an empty
    ``login-keys`` is as good as none; switch_xml_config_parse_event then gives the default
    ``0`` to a missing one, and keeps a present one that matches ``[0-9#\\*]*`` (by
    switch_regex_match: pcre2_match, unanchored) or else gives the default, into a 16-byte
    buffer (15 characters)."""
    value = profile.get("login-keys") or None
    if value is None or re.search(r"[0-9#\*]*", value) is None:
        return "0"
    return value[:15]


def reaches_login(login_keys: str, key: str) -> bool:
    """voicemail_leave_main, ``greet_key_press``: a key pressed during the greeting (or that
    ends the recording) takes the caller to voicemail_check_main when
    ``switch_stristr(buf, profile->login_keys)`` finds it, i.e. when ``key`` is one of the
    login keys, case-insensitively (an empty string holds none)."""
    return key.upper() in login_keys.upper()


def params(node: ET.Element | None, path: str = "settings/param") -> dict[str, str]:
    """``<param name= value=/>`` under ``node`` as a dict (the last of a name wins, as the
    modules' loops over params overwrite)."""
    if node is None:
        return {}
    return {p.get("name") or "": p.get("value") or "" for p in node.findall(path)}


# A configuration directory shaped like the stock one (conf/vanilla/): the same includes in
# the same sections, and one stock-like neighbour in each folder.
STOCK_MAIN = """\
<?xml version="1.0"?>
<document type="freeswitch/xml">
  <X-PRE-PROCESS cmd="include" data="vars.xml"/>
  <section name="configuration" description="Various Configuration">
    <X-PRE-PROCESS cmd="include" data="autoload_configs/*.xml"/>
  </section>
  <section name="dialplan" description="Regex/XML Dialplan">
    <X-PRE-PROCESS cmd="include" data="dialplan/*.xml"/>
  </section>
  <section name="directory" description="User Directory">
    <X-PRE-PROCESS cmd="include" data="directory/*.xml"/>
  </section>
</document>
"""
STOCK_FILES = {
    "vars.xml": """\
<include>
  <X-PRE-PROCESS cmd="set" data="domain=stock.example"/>
</include>
""",
    "autoload_configs/modules.conf.xml": """\
<configuration name="modules.conf" description="Modules">
  <modules>
    <load module="mod_event_socket"/>
    <load module="mod_sofia"/>
    <load module="mod_voicemail"/>
  </modules>
</configuration>
""",
    # conf/vanilla's profile, the keys that leave the greeting for the stock dialplan kept.
    "autoload_configs/voicemail.conf.xml": """\
<configuration name="voicemail.conf" description="Voicemail">
  <settings>
  </settings>
  <profiles>
    <profile name="default">
      <param name="file-extension" value="wav"/>
      <param name="max-record-len" value="300"/>
      <param name="operator-extension" value="operator XML default"/>
      <param name="operator-key" value="9"/>
      <param name="vmain-extension" value="vmain XML default"/>
      <param name="vmain-key" value="*"/>
    </profile>
  </profiles>
</configuration>
""",
    "dialplan/default.xml": """\
<?xml version="1.0" encoding="utf-8"?>
<include>
  <context name="default">
    <extension name="stock">
      <condition field="destination_number" expression="^9196$">
        <action application="echo"/>
      </condition>
    </extension>
  </context>
</include>
""",
    "directory/default.xml": """\
<include>
  <domain name="$${domain}">
    <groups>
      <group name="default">
        <users>
          <user id="1000"/>
        </users>
      </group>
    </groups>
  </domain>
</include>
""",
}


def stock_tree(conf_dir: Path) -> Path:
    """Write the stock-like ``freeswitch.xml``, ``vars.xml`` and neighbours into ``conf_dir``
    (the rendered files go beside them, at the paths they name); return ``conf_dir``."""
    for name, text in {"freeswitch.xml": STOCK_MAIN, **STOCK_FILES}.items():
        path = conf_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text(text)
    return conf_dir


# --------------------------------------------------------------------------- a call comes in
#
# mod_sofia's inbound INVITE (src/mod/endpoints/mod_sofia/sofia.c, sofia_handle_sip_i_invite;
# sofia_reg.c, sofia_reg_handle_register and sofia_reg_parse_auth) on one profile, and
# mod_dialplan_xml's hunt in the context it lands in (src/mod/dialplans/mod_dialplan_xml/
# mod_dialplan_xml.c, dialplan_hunt and parse_exten).


@dataclass(frozen=True, slots=True)
class Refused:
    """A final response instead of a call: 403 (ACL or bad credentials), 407 (challenged)."""

    status: int


@dataclass(frozen=True, slots=True)
class Routed:
    """The INVITE became a channel: the context it runs in and the variables it carries."""

    context: str
    variables: dict[str, str]


@dataclass(frozen=True, slots=True)
class Registered:
    """A REGISTER accepted: the directory user it is bound to (``authenticated`` False when
    an apply-register-acl let it in without a challenge: REG_AUTO_REGISTER)."""

    user: str
    authenticated: bool = True


@dataclass(frozen=True, slots=True)
class NetworkList:
    """One network list (switch_network_list_t): its default and its nodes, each a network
    and whether it allows (src/switch_utils.c)."""

    default: bool
    nodes: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, bool], ...] = ()

    def allows(self, ip: str) -> bool:
        """switch_network_list_validate_ip_port_token (port 0): of the nodes of the
        address's family that hold it, the one with the most bits decides (a later node
        with as many bits wins: ``node->bits >= bits``); none: the list's default."""
        address = ipaddress.ip_address(ip)
        ok, bits = self.default, 0
        for network, allow in self.nodes:
            if network.version == address.version and network.prefixlen >= bits \
                    and address in network:
                ok, bits = allow, network.prefixlen
        return ok


def _true(value: str) -> bool:
    """switch_true (src/include/switch_utils.h): yes, on, true, t, enabled, active, allow,
    or a number other than 0."""
    text = value.strip().lower()
    return text in ("yes", "on", "true", "t", "enabled", "active", "allow") or (
        text.lstrip("-").isdigit() and int(text) != 0)


# The lists switch_load_network_lists makes before reading acl.conf (those these tests use).
AUTO_LISTS = {
    "loopback.auto": NetworkList(False, ((ipaddress.ip_network("127.0.0.0/8"), True),
                                         (ipaddress.ip_network("::1/128"), True))),
    "rfc1918.auto": NetworkList(False, tuple((ipaddress.ip_network(n), True) for n in (
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fe80::/10"))),
}


def network_lists(root: ET.Element) -> dict[str, NetworkList]:
    """switch_load_network_lists (src/switch_core.c): the ``.auto`` lists, then each ``list``
    of acl.conf's ``network-lists`` (no name: skipped; ``default`` absent: allow), each node
    ``type`` (absent: the list's default) with a ``cidr``. A node naming a ``domain``, a
    ``host``/``mask`` or ports is not modelled."""
    lists = dict(AUTO_LISTS)
    acl = open_cfg(root, "acl.conf")
    holder = None if acl is None else acl.find("network-lists")
    if holder is None:
        return lists
    for entry in holder.findall("list"):
        name = entry.get("name")
        if not name:
            continue
        default = _true(entry.get("default", "true"))
        nodes = []
        for node in entry.findall("node"):
            if set(node.attrib) - {"type", "cidr"} or node.get("cidr") is None:
                raise NotModelled(f"acl.conf node {node.attrib}")
            kind = node.get("type")
            nodes.append((ipaddress.ip_network(node.get("cidr") or "", strict=False),
                          default if kind is None else _true(kind)))
        lists[name] = NetworkList(default, tuple(nodes))
    return lists


def check_network_list(lists: dict[str, NetworkList], ip: str, name: str) -> bool:
    """switch_check_network_list_ip_port_token (src/switch_core.c, port 0): a list by that
    name, else a name holding ``/`` is one CIDR or comma-separated CIDRs, else nothing
    matches (an unknown list allows no one)."""
    found = lists.get(name)
    if found is not None:
        return found.allows(ip)
    if "/" in name:
        address = ipaddress.ip_address(ip)
        return any(address in ipaddress.ip_network(cidr, strict=False)
                   for cidr in name.split(","))
    return False


@dataclass(frozen=True, slots=True)
class SipProfile:
    """One ``<profile>`` of sofia.conf as mod_sofia reads it (config_sofia_profile)."""

    root: ET.Element
    name: str
    settings: list[tuple[str, str]]
    lists: dict[str, NetworkList] = field(default_factory=dict)  # acl.conf's, as loaded

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.setting(name)
        return default if value is None else value.lower() in ("true", "yes", "on", "1",
                                                               "enabled", "active", "allow")

    def setting(self, name: str) -> str | None:
        found = [v for k, v in self.settings if k.lower() == name]
        return found[-1] if found else None

    def inbound_acls(self) -> list[tuple[str, str | None, str | None]]:
        """``apply-inbound-acl``: each one ``list[:pass_context[:fail_context]]``; ``none``
        clears those before it."""
        acls: list[tuple[str, str | None, str | None]] = []
        for key, value in self.settings:
            if key.lower() != "apply-inbound-acl" or not value:
                continue
            if value.lower() == "none":
                acls = []
                continue
            name, _, rest = value.partition(":")
            passed, _, failed = rest.partition(":")
            acls.append((name, passed or None, failed or None))
        return acls

    def invite(self, network_ip: str, destination: str,
               credentials: tuple[str, str] | None = None) -> Refused | Routed:
        """An INVITE from ``network_ip`` for ``destination``; ``credentials`` (user,
        password) answer the digest challenge, if one comes (the answer is taken as computed
        right: only the password is compared)."""
        auth_calls = self.flag("auth-calls")
        is_auth = False
        acl_context: str | None = None
        acls = self.inbound_acls()
        if acls:
            ok = False
            for acl, passed, failed in acls:
                ok = check_network_list(self.lists, network_ip, acl)
                if ok:
                    acl_context = passed or acl_context
                    break
                acl_context = failed
            if ok:
                is_auth = auth_calls  # "Approved by acl ... Access Granted" only with auth-calls
            elif not auth_calls and acl_context is None:
                return Refused(403)  # "Rejected by acl"
        variables: dict[str, str] = {}
        if not is_auth and (auth_calls or credentials is not None):
            # sofia_reg_handle_register(REG_INVITE): no Proxy-Authorization → 407; a user the
            # directory does not have, or a wrong password → 403 (AUTH_FORBIDDEN).
            if credentials is None:
                return Refused(407)
            user, password = credentials
            domain, entry = self.authenticate(network_ip, user, password)
            if entry is None:
                return Refused(403)
            # sofia_reg_parse_auth: user_name, domain_name, then the user's variables (empty
            # names or values skipped); sofia.c sets each on the channel.
            variables = {"user_name": user, "domain_name": domain}
            for var in entry.findall("variables/variable"):
                name, value = var.get("name") or "", var.get("value") or ""
                if name and value:
                    variables[name] = value
        context = acl_context or variables.get("user_context") or self.setting("context") \
            or "default"
        variables.update({"sip_network_ip": network_ip, "destination_number": destination})
        return Routed(context, variables)

    def authenticate(self, network_ip: str, user: str,
                     password: str) -> tuple[str, ET.Element | None]:
        """sofia_reg_parse_auth (sofia_reg.c) for a digest from ``network_ip``: the domain and
        the directory user, or None (AUTH_FORBIDDEN: no such user, ``sip-forbid-register``,
        the address outside the user's ``auth-acl`` (no ``apply-proxy-acl`` rendered), or
        the wrong password). The answer is taken as computed right: only the password is
        compared."""
        domain = self.setting("force-register-domain") or self.setting("sip-ip") or ""
        entry = locate_user(self.root, user, domain)
        if entry is None:
            return domain, None
        given = params(entry, "params/param")
        if _true(given.get("sip-forbid-register", "false")):
            return domain, None
        auth_acl = given.get("auth-acl")
        if auth_acl and not check_network_list(self.lists, network_ip, auth_acl):
            if self.setting("apply-proxy-acl"):
                raise NotModelled("apply-proxy-acl")
            return domain, None  # "IP ... Rejected by user acl [...] and no proxy acl"
        return domain, entry if given.get("password") == password else None

    def register(self, network_ip: str,
                 credentials: tuple[str, str] | None = None) -> Refused | Registered:
        """A REGISTER from ``network_ip`` (sofia_reg_handle_sip_i_register, then
        sofia_reg_handle_register_token): with ``apply-register-acl``, an address outside any
        of the lists is refused (403) and one inside all of them is bound without a
        challenge (REG_AUTO_REGISTER); otherwise no Authorization is
        challenged (401), and one sofia_reg_parse_auth forbids is refused (403). With
        ``blind-reg`` every REGISTER is bound without a challenge."""
        reg_acls = [v for k, v in self.settings if k.lower() == "apply-register-acl" and v]
        if any(v.lower() == "none" for v in reg_acls):
            raise NotModelled("apply-register-acl none")
        if reg_acls and not all(check_network_list(self.lists, network_ip, a)
                                for a in reg_acls):
            return Refused(403)  # "IP ... Rejected by register acl"
        if reg_acls or self.flag("blind-reg"):  # REG_AUTO_REGISTER, or blind-reg: no auth
            return Registered(credentials[0] if credentials else "", False)
        if credentials is None:
            return Refused(401)
        user, password = credentials
        _, entry = self.authenticate(network_ip, user, password)
        return Refused(403) if entry is None else Registered(user)


def sip_profile(root: ET.Element, name: str) -> SipProfile:
    sofia = open_cfg(root, "sofia.conf")
    profile = None if sofia is None else sofia.find(f"profiles/profile[@name='{name}']")
    if profile is None:
        raise LookupError(f"no sofia profile {name!r}")
    settings = [(p.get("name") or "", p.get("value") or "")
                for p in profile.findall("settings/param")]
    return SipProfile(root, name, settings, network_lists(root))


Api = Callable[[str, str], str]


def expand(text: str, variables: dict[str, str], api: Api | None = None) -> str:
    """switch_channel_expand_variables (src/switch_channel.c): ``${name}`` is the channel
    variable (unknown: empty); ``${cmd(arg)}`` is the output of the API command ``cmd arg``
    (``api`` answers it; without one it is not modelled)."""
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        call = re.fullmatch(r"([a-z_]+)\((.*)\)", name)
        if call is not None:
            if api is None:
                raise NotModelled(f"API expansion ${{{name}}}")
            return api(call.group(1), call.group(2))
        return variables.get(name, "")

    return re.sub(r"\$\{([^{}]*)\}", one, text)


def until_socket(actions: list[tuple[str, str]], variables: dict[str, str],
                 api: Api | None = None) -> dict[str, str]:
    """Run a hunt's actions up to ``socket`` the way the channel runs them (each one's data
    expanded when it runs: switch_core_session_execute_application_get_flags in
    src/switch_core_session.c; ``set`` is name=value at the first ``=``: mod_dptools.c,
    base_set) and return the channel's variables as the controller's socket then sees them."""
    channel = dict(variables)
    for app, data in actions:
        if app == "socket":
            return channel
        if app == "set":
            name, _, value = expand(data, channel, api).partition("=")
            channel[name] = value
        else:
            raise NotModelled(f"application {app!r} before socket")
    raise LookupError("no socket action: the call never reaches the controller")


def hunt(root: ET.Element, routed: Routed, api: Api | None = None) -> list[tuple[str, str]]:
    """dialplan_hunt: the context (else ``global``), its extensions in order; in each,
    conditions in order (a failing one ends the extension: break="on-false"), and the
    first extension whose conditions all pass gives its actions (continue="false").
    Returns the ``(application, data)`` pairs, data as written (expanded when run)."""
    dialplan = locate(root, "dialplan")
    if dialplan is None:
        return []
    ctx = find_child(dialplan, "context", "name", routed.context) or \
        find_child(dialplan, "context", "name", "global")
    if ctx is None:
        return []
    for extension in ctx.findall("extension"):
        if extension.get("continue") is not None:
            raise NotModelled("extension continue=")
        actions: list[tuple[str, str]] = []
        for condition in extension.findall("condition"):
            if condition.get("break") is not None:
                raise NotModelled("condition break=")
            fieldname = condition.get("field") or ""
            value = expand(fieldname, routed.variables, api) if "$" in fieldname \
                else routed.variables.get(fieldname, "")
            if re.search(condition.get("expression") or "", value) is None:
                actions = []
                break
            actions += [(a.get("application") or "", a.get("data") or "")
                        for a in condition.findall("action")]
        else:
            return actions
    return []
