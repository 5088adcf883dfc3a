"""`backline render` for ``kind: freeswitch``: the files are loaded the way FreeSWITCH loads
them (copied beside a stock-like ``freeswitch.xml``, preprocessed and looked up by the rules of
``src/switch_xml.c``: ``tests/harness/freeswitch_conf.py``), then checked against what the
practice needs (who can register, what each number does, 911 first, the fail-safe, no secret
in a file that is not 0600)."""

from __future__ import annotations

import json
import re
import shutil
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from backline.app.cli import main
from backline.pbx.freeswitch import names
from backline.render.freeswitch import (
    ACL_FILE,
    CDR_CSV_FILE,
    DIALPLAN_FILE,
    DIRECTORY_FILE,
    EVENT_SOCKET_FILE,
    SOFIA_FILE,
)
from backline.render.freeswitch_voicemail import VOICEMAIL_FILE
from tests.harness.freeswitch_conf import (
    DTMF_KEYS,
    Refused,
    Registered,
    Routed,
    find_child,
    hunt,
    load,
    locate,
    open_cfg,
    params,
    reaches_login,
    sip_profile,
    stock_tree,
    voicemail_login_keys,
    voicemail_profile,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "example.yaml"
FREESWITCH_PBX = """\
  pbx:
    kind: freeswitch
    esl: {host: 127.0.0.1, port: 8021, password_env: BACKLINE_ESL_PASSWORD}
    socket: {host: 127.0.0.1, port: 8084}
    sip: {host: 127.0.0.1, port: 5060}
    trunk: {host: 10.200.0.1, port: 5060, insecure_cleartext: true}
"""
CARRIER_IP = "10.200.0.1"
PHONE_IP = "10.200.0.2"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("fs")
    text = EXAMPLE.read_text()
    start = text.index("  pbx:\n")
    end = text.index("  smtp:")
    config = tmp / "practice.yaml"
    config.write_text(text[:start] + FREESWITCH_PBX + text[end:])
    out = tmp / "out"
    with pytest.MonkeyPatch.context() as env:  # set, to show it is not written anywhere
        env.setenv("BACKLINE_ESL_PASSWORD", "not-written-anywhere-3f9c")
        assert main(["render", str(config), "--out", str(out),
                     "--secrets", str(tmp / "secrets.json")]) == 0
    return out


ESL_PASSWORD = "not-written-anywhere-3f9c"


def installed(rendered: Path, conf: Path) -> ET.Element:
    """The render copied into a stock-like configuration directory and loaded as FreeSWITCH
    loads ``freeswitch.xml`` (the ESL password in the switch's environment)."""
    shutil.copytree(rendered, conf, dirs_exist_ok=True)
    root, _ = load(stock_tree(conf), env={"PATH": "/usr/bin:/bin",
                                          "BACKLINE_ESL_PASSWORD": ESL_PASSWORD})
    return root


@pytest.fixture(scope="module")
def loaded(rendered: Path) -> ET.Element:
    return installed(rendered, rendered.parent / "conf")


def fragment(path: Path) -> ET.Element:
    """One rendered file on its own: an ``<include>`` fragment, as the stock ones are."""
    root = ET.parse(path).getroot()
    assert root.tag == "include", path
    return root


def domain_of(loaded: ET.Element) -> ET.Element:
    found = locate(loaded, "directory", "domain", "name", "127.0.0.1")
    assert found is not None, "the rendered domain is not found in the directory section"
    return found


def context(loaded: ET.Element, name: str) -> ET.Element:
    # mod_dialplan_xml: switch_xml_locate("dialplan") then the context by name.
    dialplan = locate(loaded, "dialplan")
    assert dialplan is not None
    found = find_child(dialplan, "context", "name", name)
    assert found is not None, f"context {name} is not found in the dialplan section"
    return found


def test_the_files_load_into_a_stock_freeswitch_xml_and_every_lookup_finds_them(
        rendered: Path, loaded: ET.Element) -> None:
    """Each file is an <include> fragment at its stock path; assembled by the preprocessor's
    include rule into the stock sections, every configuration, context and user the driver
    relies on is found by FreeSWITCH's own lookups, and the stock neighbours still are."""
    for name in (DIRECTORY_FILE, DIALPLAN_FILE, EVENT_SOCKET_FILE, SOFIA_FILE, CDR_CSV_FILE,
                 ACL_FILE, VOICEMAIL_FILE):
        fragment(rendered / name)
    for conf in ("event_socket.conf", "sofia.conf", "cdr_csv.conf", "acl.conf",
                 "modules.conf", "voicemail.conf"):
        assert open_cfg(loaded, conf) is not None, conf
    sofia = open_cfg(loaded, "sofia.conf")
    assert sofia is not None and sofia.find("profiles/profile[@name='backline']") is not None
    for name in (names.CARRIER_CONTEXT, names.DESK_CONTEXT, "default"):
        context(loaded, name)
    from tests.harness.freeswitch_conf import locate_user

    assert locate_user(loaded, "ana-desk", "127.0.0.1") is not None
    assert locate_user(loaded, "1000", "stock.example") is not None
    # The password: set from the environment while preprocessing, in no rendered file.
    assert params(open_cfg(loaded, "event_socket.conf"))["password"] == ESL_PASSWORD
    assert [s.get("name") for s in loaded.findall("section")] == \
        ["configuration", "dialplan", "directory"]  # nothing nested, nothing added


def test_directory_has_a_user_per_active_desk_phone_with_a_generated_secret(
        rendered: Path, loaded: ET.Element) -> None:
    domain = domain_of(loaded)
    assert domain.get("name") == "127.0.0.1"
    users = {u.get("id"): u for u in domain.findall("groups/group/users/user")}
    assert "pat-desk" not in users  # deactivated: cannot register at all
    secrets = (rendered.parent / "secrets.json").read_text()
    for phone in ("ana-desk", "sam-desk"):
        (password,) = [p.get("value") for p in users[phone].findall("params/param")
                       if p.get("name") == "password"]
        assert password and len(password) >= 32 and password in secrets
        context = [x.get("value") for x in users[phone].findall("variables/variable")
                   if x.get("name") == "user_context"]
        assert context == [names.DESK_CONTEXT]
    assert stat.S_IMODE((rendered / DIRECTORY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE((rendered.parent / "secrets.json").stat().st_mode) == 0o600


def test_dialplan_hands_each_number_to_the_controller_with_the_announcement_after(
        loaded: ET.Element) -> None:
    carrier = context(loaded, names.CARRIER_CONTEXT)
    ext = carrier.find("extension[@name='number+13125550100']")
    assert ext is not None
    (cond,) = ext.findall("condition")
    assert cond.get("field") == "destination_number"
    pattern = re.compile(cond.get("expression") or "")
    assert all(pattern.match(s) for s in ("+13125550100", "13125550100", "3125550100"))
    assert not pattern.match("+131255501000")
    actions = [(a.get("application"), a.get("data")) for a in cond.findall("action")]
    socket = actions.index(("socket", "127.0.0.1:8084 full"))
    # Fail-safe: what follows the socket runs only if the controller did not finish the call.
    assert [a for a, _ in actions[socket + 1:]] == ["answer", "playback", "hangup"]
    assert (actions[socket + 2][1] or "").endswith("announcement.wav")
    unknown = carrier.findall("extension")[-1]
    assert unknown.get("name") == "unknown-number"


def test_911_goes_out_before_anything_asks_the_controller_or_the_mode(
        loaded: ET.Element) -> None:
    desk = context(loaded, names.DESK_CONTEXT)
    first = desk.findall("extension")[0]
    (cond,) = first.findall("condition")
    assert cond.get("expression") == "^(911)$"
    # The desk phone's callback number and the practice's name (its directory variables,
    # below) in From and P-Asserted-Identity, then straight out.
    assert [(a.get("application"), a.get("data")) for a in cond.findall("action")] == [
        ("set", "effective_caller_id_number=${backline_emergency_callback}"),
        ("set", "effective_caller_id_name=${backline_emergency_name}"),
        ("set", "sip_cid_type=pid"),
        ("bridge", f"sofia/gateway/{names.GATEWAY}/911")]
    users = domain_of(loaded)
    for phone, number in (("ana-desk", "+13125550101"), ("jo-desk", "+13125550100")):
        variables = {v.get("name"): v.get("value") for v in users.findall(
            f".//user[@id='{phone}']/variables/variable")}
        assert variables["backline_emergency_callback"] == number
        assert variables["backline_emergency_name"] == "Maple Street"
    outage = desk.find("extension[@name='outage-refusal']")
    assert outage is not None
    assert outage.findall("condition")[0].get("field") == "${db(select/backline/mode)}"
    # *28/*29 come before the outage refusal: an outage must be endable from a desk phone.
    order = [e.get("name") for e in desk.findall("extension")]
    assert order.index("outage-end") < order.index("outage-refusal")
    # Extensions are asked of the controller before the outage refusal: they ring in outages.
    assert order.index("internal") < order.index("outage-refusal")
    internal = desk.find("extension[@name='internal']/condition")
    assert internal is not None and internal.get("expression") == "^([1-9][0-9]{1,5})$"
    end = desk.find("extension[@name='outage-end']/condition")
    assert end is not None and end.get("expression") == "^\\*29$"
    apps = [a.get("application") for a in end.findall("action")]
    assert apps.index("play_and_get_digits") < apps.index("socket")
    # *26/*27 (the hours override) likewise: after the PIN, to the controller.
    for name, code, action in (("hours-closed", "^\\*26$", "closed"),
                               ("hours-open", "^\\*27$", "open")):
        forced = desk.find(f"extension[@name='{name}']/condition")
        assert forced is not None and forced.get("expression") == code
        steps = [(a.get("application"), a.get("data")) for a in forced.findall("action")]
        assert ("set", f"{names.FEATURE_ACTION}={action}") in steps
        assert [a for a, _ in steps].index("play_and_get_digits") < \
            [a for a, _ in steps].index("socket")


def test_event_socket_on_loopback_with_the_password_from_the_environment(
        rendered: Path, loaded: ET.Element) -> None:
    conf = open_cfg(loaded, "event_socket.conf")
    assert conf is not None and conf.get("name") == "event_socket.conf"
    settings = params(conf)
    assert settings["listen-ip"] == "127.0.0.1" and settings["listen-port"] == "8021"
    # As written: the preprocessor variable, set by the exec-set line before it.
    include = fragment(rendered / EVENT_SOCKET_FILE)
    assert params(include, "configuration/settings/param")["password"] == \
        "$${backline_esl_password}"
    (pre,) = include.findall("X-PRE-PROCESS")
    assert pre.get("cmd") == "exec-set"
    assert pre.get("data") == "backline_esl_password=printenv BACKLINE_ESL_PASSWORD"
    assert settings["password"] == ESL_PASSWORD  # as loaded
    for f in rendered.rglob("*"):
        assert f.is_dir() or ESL_PASSWORD.encode() not in f.read_bytes(), f.name


def test_sofia_profile_and_carrier_gateway(loaded: ET.Element) -> None:
    sofia = open_cfg(loaded, "sofia.conf")
    assert sofia is not None
    profile = sofia.find("profiles/profile")
    assert profile is not None
    settings = {p.get("name"): p.get("value") for p in profile.findall("settings/param")}
    assert settings["context"] == names.CARRIER_CONTEXT and settings["sip-port"] == "5060"
    gateway = profile.find(f"gateways/gateway[@name='{names.GATEWAY}']")
    assert gateway is not None and gateway.findall("param")


def test_the_carriers_invite_is_taken_by_its_address_and_anyone_elses_is_challenged(
        rendered: Path, loaded: ET.Element) -> None:
    """sofia_handle_sip_i_invite on the rendered profile: the carrier neither registers nor
    answers a challenge, so its INVITE must pass apply-inbound-acl (taken as authenticated
    under auth-calls) and run in the carrier's context; from any other address the same
    INVITE is challenged (407), and a desk phone that answers runs in its own context."""
    profile = sip_profile(loaded, "backline")
    carrier = profile.invite(CARRIER_IP, "+13125550100")
    assert isinstance(carrier, Routed), carrier
    assert carrier.context == names.CARRIER_CONTEXT
    apps = hunt(loaded, carrier)
    assert ("set", f"{names.NUMBER}=+13125550100") in apps
    assert ("socket", "127.0.0.1:8084 full") in apps
    assert profile.invite(PHONE_IP, "+13125550100") == Refused(407)
    secret = json.loads((rendered.parent / "secrets.json").read_text())["ana-desk"]
    phone = profile.invite(PHONE_IP, "3035550123", ("ana-desk", secret))
    assert isinstance(phone, Routed), phone
    assert (phone.context, phone.variables["user_name"]) == (names.DESK_CONTEXT, "ana-desk")
    assert profile.invite(PHONE_IP, "3035550123", ("ana-desk", "not-" + secret)) == Refused(403)


def test_911_from_a_desk_phone_leaves_with_its_callback_number_and_the_practices_name(
        rendered: Path, loaded: ET.Element) -> None:
    """The call as FreeSWITCH runs it: the desk phone's INVITE answers the challenge, its
    directory variables land on the channel (sofia_reg_parse_auth, then sofia.c), the desk
    context's first extension sets the caller ID from them (each action's data expanded as it
    runs) and bridges to the carrier's gateway, which puts that number in From
    (caller-id-in-from) and, with sip_cid_type=pid carried to the outbound leg (mod_sofia.c,
    sofia_outgoing_channel), in P-Asserted-Identity: the callback number and the practice's
    name, as on Asterisk (backline/core/emergency.py), never the phone's SIP user."""
    from tests.harness.freeswitch_conf import expand

    secrets = json.loads((rendered.parent / "secrets.json").read_text())
    profile = sip_profile(loaded, "backline")
    for phone, callback in (("ana-desk", "+13125550101"), ("jo-desk", "+13125550100")):
        routed = profile.invite(PHONE_IP, "911", (phone, secrets[phone]))
        assert isinstance(routed, Routed), routed
        channel = dict(routed.variables)
        actions = hunt(loaded, routed)
        assert actions[-1] == ("bridge", f"sofia/gateway/{names.GATEWAY}/911")
        for app, data in actions[:-1]:
            assert app == "set", (app, data)
            name, _, value = expand(data, channel).partition("=")
            channel[name] = value
        assert (channel["effective_caller_id_number"], channel["effective_caller_id_name"],
                channel["sip_cid_type"]) == (callback, "Maple Street", "pid")
    sofia = open_cfg(loaded, "sofia.conf")
    assert sofia is not None
    gateway = sofia.find(f"profiles/profile/gateways/gateway[@name='{names.GATEWAY}']")
    assert gateway is not None and params(gateway, "param")["caller-id-in-from"] == "true"


def test_a_carrier_freeswitch_cannot_recognise_by_address_is_refused_at_render(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "practice.yaml"
    text = EXAMPLE.read_text()
    start, end = text.index("  pbx:\n"), text.index("  smtp:")
    config.write_text(text[:start] + FREESWITCH_PBX.replace(
        "trunk: {host: 10.200.0.1", "trunk: {host: sip.carrier.example") + text[end:])
    assert main(["render", str(config), "--out", str(tmp_path / "out"),
                 "--secrets", str(tmp_path / "secrets.json")]) == 2
    assert "connections.pbx.trunk.host" in capsys.readouterr().err


@pytest.mark.parametrize("password", ['pa"ss', "a<b", "R&D-2026", "two words"])
def test_an_esl_password_freeswitch_cannot_load_is_refused_naming_its_variable(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        password: str) -> None:
    """FreeSWITCH's preprocessor pastes the password raw into event_socket.conf.xml, so with
    '"', '<' or '&' in it the file does not parse (shown with the preprocessor model);
    check and render refuse it, naming the variable, never the value, and write nothing."""
    config = tmp_path / "practice.yaml"
    text = EXAMPLE.read_text()
    start, end = text.index("  pbx:\n"), text.index("  smtp:")
    config.write_text(text[:start] + FREESWITCH_PBX + text[end:])
    monkeypatch.setenv("BACKLINE_ESL_PASSWORD", password)
    out = tmp_path / "out"
    assert main(["check", str(config)]) == 2
    assert main(["render", str(config), "--out", str(out),
                 "--secrets", str(tmp_path / "secrets.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("connections.pbx.esl.password_env") == 2
    assert "BACKLINE_ESL_PASSWORD" in err and password not in err
    assert not out.exists()
    if password != "two words":  # why: loaded as FreeSWITCH loads it, the XML breaks
        monkeypatch.setenv("BACKLINE_ESL_PASSWORD", ESL_PASSWORD)
        assert main(["render", str(config), "--out", str(out),
                     "--secrets", str(tmp_path / "secrets.json")]) == 0
        conf = stock_tree(tmp_path / "conf")
        shutil.copytree(out, conf, dirs_exist_ok=True)
        with pytest.raises(ET.ParseError):
            load(conf, env={"PATH": "/usr/bin:/bin", "BACKLINE_ESL_PASSWORD": password})


def test_rendering_twice_keeps_the_secrets(rendered: Path, tmp_path: Path) -> None:
    before = (rendered / DIRECTORY_FILE).read_text()
    config = rendered.parent / "practice.yaml"
    assert main(["render", str(config), "--out", str(rendered),
                 "--secrets", str(rendered.parent / "secrets.json")]) == 0
    assert (rendered / DIRECTORY_FILE).read_text() == before


def test_a_public_socket_or_esl_address_is_refused_before_anything_starts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = EXAMPLE.read_text()
    start, end = text.index("  pbx:\n"), text.index("  smtp:")
    config = tmp_path / "practice.yaml"
    config.write_text(text[:start] + FREESWITCH_PBX.replace(
        "socket: {host: 127.0.0.1", "socket: {host: 8.8.8.8") + text[end:])
    assert main(["check", str(config)]) == 2
    err = capsys.readouterr()
    assert "connections.pbx.socket.host" in err.out + err.err


def test_a_fax_number_is_decided_by_the_controller_and_received_by_the_pbx_without_it(
        loaded: ET.Element) -> None:
    carrier = context(loaded, names.CARRIER_CONTEXT)
    ext = carrier.find("extension[@name='number+13125550109']")
    assert ext is not None
    (cond,) = ext.findall("condition")
    actions = [(a.get("application"), a.get("data") or "") for a in cond.findall("action")]
    assert ("set", f"{names.KIND}={names.KIND_FAX}") in actions  # kept in the CDR
    socket = actions.index(("socket", "127.0.0.1:8084 full"))
    # Controller away: T.38 both ways, then rxfax into the spool under the call's uuid.
    assert actions[socket + 1:] == [
        ("set", "fax_enable_t38=true"), ("set", "fax_enable_t38_request=true"),
        ("answer", ""),
        ("rxfax", "/var/lib/freeswitch/fax/fax-${uuid}.tif"), ("hangup", "")]


def test_cdr_csv_writes_master_csv_with_the_columns_the_import_reads(
        loaded: ET.Element, rendered: Path) -> None:
    from backline.pbx.freeswitch import cdr

    conf = open_cfg(loaded, "cdr_csv.conf")
    assert conf is not None and conf.get("name") == "cdr_csv.conf"
    settings = {p.get("name"): p.get("value") for p in conf.findall("settings/param")}
    # log-base + "/cdr-csv/Master.csv" is the controller's default cdr_file.
    assert settings == {"log-base": "/var/log/freeswitch", "default-template": "backline",
                        "rotate-on-hup": "false", "legs": "a", "master-file-only": "true"}
    (template,) = conf.findall("templates/template")
    token = json.loads((rendered.parent / "secrets.json").read_text())[cdr.TOKEN_KEY]
    assert template.get("name") == "backline" and template.text == cdr.template(token)
    assert re.findall(r"\$\{([a-z_]+)\}", template.text or "") == list(cdr.COLUMNS)


def freeswitch_config(tmp: Path, extra: str) -> Path:
    text = EXAMPLE.read_text()
    start, end = text.index("  pbx:\n"), text.index("  smtp:")
    path = tmp / "practice.yaml"
    path.write_text(text[:start] + FREESWITCH_PBX + extra + text[end:])
    return path


def test_fax_and_cdr_paths_are_read_and_a_path_freeswitch_would_split_is_refused(
        tmp_path: Path) -> None:
    from backline.app import config
    from backline.core.connections import FreeswitchPbx

    pbx = config.load(freeswitch_config(tmp_path, "    fax_dir: /srv/faxes\n"
                                        "    fax_spool: /srv/fs-spool\n")).directory \
        .connections.pbx
    assert isinstance(pbx, FreeswitchPbx)
    assert (pbx.fax_dir, pbx.fax_spool, pbx.cdr_file) == \
        ("/srv/faxes", "/srv/fs-spool", "/var/log/freeswitch/cdr-csv/Master.csv")
    with pytest.raises(config.ConfigError) as caught:
        config.load(freeswitch_config(tmp_path, '    fax_spool: "/srv/a b${x}"\n'
                                      "    cdr_file: log/Master.csv\n"))
    assert [p.field for p in caught.value.problems] == ["connections.pbx.fax_spool",
                                                        "connections.pbx.cdr_file"]


LAN = "192.168.10.0/24"
LAN_PHONE_IP = "192.168.10.20"
OUTSIDER_IP = "203.0.113.9"


def test_with_a_lan_sofia_refuses_desk_phones_from_elsewhere_and_911_goes_out_from_the_lan(
        tmp_path: Path) -> None:
    """``connections.pbx.lan`` enforced by FreeSWITCH itself, not only by the firewall: the
    rendered acl.conf's lists loaded as switch_load_network_lists builds them, a REGISTER and
    an INVITE run through the loaded profile as sofia.c and sofia_reg.c take them. A desk
    phone's credentials from outside the LAN are refused (403: its directory user's
    ``auth-acl``), REGISTER and INVITE alike, 911 too (as on Asterisk); from the LAN it
    registers and 911 goes out; the carrier, off the LAN, is still taken by its address;
    and a LAN address without credentials is challenged, never bound (so no
    ``apply-register-acl``, which binds a REGISTER from its list without a challenge)."""
    config = freeswitch_config(tmp_path, f"    lan: [{LAN}]\n    insecure_cleartext: true\n")
    out = tmp_path / "out"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("BACKLINE_ESL_PASSWORD", ESL_PASSWORD)
        assert main(["render", str(config), "--out", str(out),
                     "--secrets", str(tmp_path / "secrets.json")]) == 0
    loaded = installed(out, tmp_path / "conf")
    secret = json.loads((tmp_path / "secrets.json").read_text())["ana-desk"]
    profile = sip_profile(loaded, "backline")
    ana = ("ana-desk", secret)

    assert profile.register(LAN_PHONE_IP, ana) == Registered("ana-desk")
    assert profile.register(OUTSIDER_IP, ana) == Refused(403)
    assert profile.register(LAN_PHONE_IP) == Refused(401)  # challenged, not bound
    assert profile.invite(OUTSIDER_IP, "3035550123", ana) == Refused(403)
    assert profile.invite(OUTSIDER_IP, "911", ana) == Refused(403)
    assert profile.invite(OUTSIDER_IP, "+13125550100") == Refused(407)
    emergency = profile.invite(LAN_PHONE_IP, "911", ana)
    assert isinstance(emergency, Routed), emergency
    assert hunt(loaded, emergency)[-1] == ("bridge", f"sofia/gateway/{names.GATEWAY}/911")
    carrier = profile.invite(CARRIER_IP, "+13125550100")
    assert isinstance(carrier, Routed) and carrier.context == names.CARRIER_CONTEXT, carrier
    assert ("socket", "127.0.0.1:8084 full") in hunt(loaded, carrier)
    # Every directory user is kept to the LAN: desk phones and voicemail boxes.
    users = domain_of(loaded).findall("groups/group/users/user")
    assert users and all(params(u, "params/param").get("auth-acl") for u in users)
    assert profile.setting("apply-register-acl") is None


def test_without_a_lan_no_directory_user_is_kept_to_one(loaded: ET.Element) -> None:
    """No ``lan``: desk phones authenticate from anywhere (the config warns off loopback)."""
    users = domain_of(loaded).findall("groups/group/users/user")
    assert users and not any("auth-acl" in params(u, "params/param") for u in users)
    assert sip_profile(loaded, "backline").register(
        "198.51.100.7", ("ana-desk", "wrong")) == Refused(403)


def test_each_voice_number_has_a_box_in_the_profile_mod_voicemail_loads_with_no_way_out(
        rendered: Path, loaded: ET.Element) -> None:
    """The ``voicemail`` applications the driver sends name the ``default`` profile: loaded
    as mod_voicemail loads it (load_profile), it is ours, in place of the stock one, whose
    ``operator-key`` 9 and ``vmain-key`` * send a caller pressing them during the greeting to
    the stock ``default`` context; it records WAVE files (what the controller takes in).
    Each voice number's box is a user of the rendered domain (mod_voicemail looks it up with
    switch_xml_locate_user_merged by id), voicemail on, with no email of FreeSWITCH's own."""
    from backline.app.config import load
    from backline.core.model import Carry
    from tests.harness.freeswitch_conf import locate_user

    profile = voicemail_profile(loaded, names.VOICEMAIL_PROFILE)
    # No operator or vmain key; no login key either (the next test).
    assert profile == {"file-extension": "wav", "min-record-len": "1",
                       "max-record-len": "180", "login-keys": "none"}, profile
    d = load(rendered.parent / "practice.yaml").directory
    boxes = [n.voicemail_box for n in d.numbers if Carry.VOICE in n.carries]
    assert len(boxes) == 4
    for box in boxes:
        entry = locate_user(loaded, box, "127.0.0.1")
        assert entry is not None, box
        settings = params(entry, "params/param")
        assert settings["vm-enabled"] == "true"
        assert not {"vm-mailto", "vm-notify-mailto", "vm-email-all-messages"} & set(settings)


def test_a_caller_leaving_a_message_can_press_no_key_that_reaches_a_voicemail_login(
        loaded: ET.Element) -> None:
    """mod_voicemail's ``login-keys`` (default ``0``) take a caller who presses one during
    the greeting to the box's login (voicemail_leave_main, greet_key_press). Loaded as
    load_profile reads it, the rendered profile holds none of the keys a phone can send.
    An empty value would not do: it is dropped as the profile loads and ``0`` comes back,
    as with no param at all (the stock profile sets none)."""
    profile = voicemail_profile(loaded, names.VOICEMAIL_PROFILE)
    assert profile is not None
    keys = voicemail_login_keys(profile)
    assert [key for key in DTMF_KEYS if reaches_login(keys, key)] == []
    for unset in ({}, {"login-keys": ""}):
        assert [key for key in DTMF_KEYS if reaches_login(voicemail_login_keys(unset), key)] \
            == ["0"]


def test_each_voice_number_gives_mod_voicemail_its_own_greeting(
        rendered: Path, loaded: ET.Element) -> None:
    """Before the socket, a voice number's extension sets ``voicemail_greeting_path`` to its
    greeting, rendered beside the announcement (mod_voicemail's voicemail_leave_main plays
    that file, when it exists, in place of its own greeting), and ``skip_instructions``
    (the greeting itself asks for the message after the tone); a fax number sets neither."""
    from backline.app.config import load
    from backline.core.model import Carry

    carrier = context(loaded, names.CARRIER_CONTEXT)
    d = load(rendered.parent / "practice.yaml").directory
    for number in d.numbers:
        ext = carrier.find(f"extension[@name='number{number.number}']")
        assert ext is not None, number.number
        actions = [(a.get("application"), a.get("data") or "")
                   for a in ext.findall("condition/action")]
        before = dict(data.split("=", 1) for app, data in
                      actions[:actions.index(("socket", "127.0.0.1:8084 full"))]
                      if app == "set")
        if Carry.VOICE not in number.carries:
            assert names.VOICEMAIL_GREETING not in before, number.number
            assert names.SKIP_INSTRUCTIONS not in before
            continue
        greeting = Path(before[names.VOICEMAIL_GREETING])
        assert greeting == rendered / f"greeting-{number.voicemail_box}.wav"
        assert greeting.read_bytes()[:4] == b"RIFF" and greeting.read_bytes()[8:12] == b"WAVE"
        assert before[names.SKIP_INSTRUCTIONS] == "true"
