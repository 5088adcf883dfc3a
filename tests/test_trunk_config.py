"""The carrier trunk's and the LAN's keys through the real ``backline check``: registration
or addresses, the account's digest credentials from the environment or a file (never the
YAML), the LAN's networks and the public address behind NAT, each mistake named with its
line and field; and what a valid edge renders."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backline.app import config
from backline.core.connections import AsteriskPbx, Secret
from backline.render.asterisk_dialplan import extensions_conf
from backline.render.asterisk_pjsip import pjsip_auth_conf, pjsip_conf
from tests.test_config import check

PRACTICE = """\
practice: {{name: P, timezone: UTC}}
numbers:
  - {{number: "+13125550101", carries: [voice]}}
connections:
  pbx:
    kind: {kind}
    ami: {{secret_env: AMI}}
    trunk: {trunk}
{extra}
  storage: {{url: 'sqlite:j.db'}}
"""


SIP_ON_LAN = "    sip: {host: 192.168.1.5}\n"


@pytest.mark.parametrize(("kind", "trunk", "expected", "extra"), [
    ("asterisk", "{host: sip.carrier.example, register: true}",
     ":8: connections.pbx.trunk.username: the carrier account's user name", ""),
    ("asterisk", "{host: sip.carrier.example, username: acct}",
     ":8: connections.pbx.trunk.password_env: where the carrier account's password comes from", ""),
    ("asterisk", "{host: sip.carrier.example, username: acct, password: hunter2}",
     ":8: connections.pbx.trunk.password: no secret written in the file", ""),
    ("asterisk", "{host: sip.carrier.example, username: 'a;b', password_env: P}",
     ":8: connections.pbx.trunk.username: letters, digits", ""),
    ("asterisk", "{host: sip.carrier.example, addresses: [203.0.113.0/28, nowhere]}",
     ":8: connections.pbx.trunk.addresses: an IP address or network (CIDR)", ""),
    ("asterisk", "{host: 'sip.carrier.example;x=y'}",
     ":8: connections.pbx.trunk.host: a host name or IP address", ""),
    ("asterisk", "{host: h.example, username: a, password_env: P, register: true, from_user: c}",
     ":8: connections.pbx.trunk.from_user: no from_user with register: true", ""),
    ("freeswitch", "{host: sip.carrier.example, username: a, password_env: P, register: true}",
     ":8: connections.pbx.trunk: with FreeSWITCH, host, port and from_user only", ""),
    # The LAN: networks only; behind NAT it is local_net; the carrier by address, not name.
    ("asterisk", "{host: 203.0.113.4}", ":10: connections.pbx.lan: an IP address or network",
     SIP_ON_LAN + "    lan: [192.168.1.0/24, the-office]\n"),
    ("asterisk", "{host: 203.0.113.4}", ":9: connections.pbx.lan: the LAN's networks",
     "    sip: {host: 192.168.1.5, public_address: 198.51.100.20}\n"),
    ("asterisk", "{host: sip.carrier.example}",
     ":8: connections.pbx.trunk.addresses: the carrier's signalling addresses",
     SIP_ON_LAN + "    lan: [192.168.1.0/24]\n"),
    ("asterisk", "{host: 203.0.113.4}", ":9: connections.pbx.sip.bind: a known key",
     "    sip: {host: 192.168.1.5, bind: 0.0.0.0}\n    lan: [192.168.1.0/24]\n"),
])
def test_a_trunk_or_lan_mistake_is_named_with_its_line_and_field(
        tmp_path: Path, kind: str, trunk: str, expected: str, extra: str) -> None:
    path = tmp_path / "trunk.yaml"
    path.write_text(PRACTICE.format(kind=kind, trunk=trunk, extra=extra))
    result = check(path)
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr
    problems = [line for line in result.stderr.splitlines()
                if re.match(rf"{re.escape(str(path))}:\d+: ", line)]
    assert any(expected in line for line in problems), result.stderr


def test_a_registration_trunk_renders_its_registration_credentials_and_addresses(
        tmp_path: Path) -> None:
    path = tmp_path / "trunk.yaml"
    path.write_text(PRACTICE.format(kind="asterisk", trunk=(
        "{host: sip.carrier.example, port: 5060, username: '100200', "
        "password_file: /etc/backline/trunk-password, register: true, "
        "addresses: [203.0.113.0/28, 198.51.100.7], insecure_cleartext: true}"), extra=""))
    assert check(path).returncode == 0
    d = config.load(path).directory
    pbx = d.connections.pbx
    assert isinstance(pbx, AsteriskPbx)
    assert pbx.trunk.password == Secret(file="/etc/backline/trunk-password")
    assert pbx.trunk.sources == ("203.0.113.0/28", "198.51.100.7/32")
    pjsip = pjsip_conf(d, pbx)
    assert "outbound_auth=carrier-auth" in pjsip
    assert "server_uri=sip:sip.carrier.example:5060" in pjsip
    assert "client_uri=sip:100200@sip.carrier.example:5060" in pjsip
    assert "line=yes\nendpoint=carrier" in pjsip
    assert "match=203.0.113.0/28,198.51.100.7/32" in pjsip
    assert "hunter" not in pjsip  # the password is only in the 0600 auth file
    auth = pjsip_auth_conf(d, {}, "hunter;2")
    assert "[carrier-auth]\ntype=auth\nauth_type=userpass\nusername=100200\n" \
        "password=hunter\\;2\n" in auth
    # The account's user is all digits: as the Request-URI's user it names no number (the
    # number is then in To).
    dialplan = extensions_conf(d, pbx, "/x/announcement")
    assert "exten => 100200,1,Goto(backline-carrier-to,s,1)" in dialplan


def test_behind_nat_the_public_address_and_the_lan_are_rendered(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text(PRACTICE.format(
        kind="asterisk",
        trunk="{host: 203.0.113.4, addresses: [203.0.113.0/28], insecure_cleartext: true}",
        extra="    sip: {host: 192.168.1.5, port: 5060, public_address: 198.51.100.20}\n"
              "    lan: [192.168.1.0/24, 10.20.0.0/16]\n"))
    result = check(path)
    assert result.returncode == 0, result.stderr
    d = config.load(path).directory
    pbx = d.connections.pbx
    assert isinstance(pbx, AsteriskPbx)
    pjsip = pjsip_conf(d, pbx)
    transport = pjsip.split("[transport-udp]\n", 1)[1].split("\n\n", 1)[0]
    assert transport.splitlines() == [
        "type=transport", "protocol=udp", "bind=192.168.1.5:5060",
        "external_signaling_address=198.51.100.20", "external_media_address=198.51.100.20",
        "local_net=192.168.1.0/24", "local_net=10.20.0.0/16"]
    rules = pjsip.split("[backline-address-rules]\n", 1)[1].split("\n\n", 1)[0]
    assert rules.splitlines() == [
        "type=acl", "deny=0.0.0.0/0.0.0.0", "deny=::/0", "permit=192.168.1.0/24",
        "permit=10.20.0.0/16", "permit=203.0.113.0/28"]
    desk = pjsip.split("[desk-phone](!)\n", 1)[1].split("\n\n", 1)[0]
    assert desk.endswith("deny=0.0.0.0/0.0.0.0\ndeny=::/0\npermit=192.168.1.0/24\n"
                         "permit=10.20.0.0/16")
    carrier = pjsip.split("[carrier]\ntype=endpoint\n", 1)[1].split("\n\n", 1)[0]
    assert "media_address=192.168.1.5" in carrier
    assert "t38_bind_udptl_to_media_address=yes" in carrier
    assert carrier.endswith("deny=0.0.0.0/0.0.0.0\ndeny=::/0\npermit=203.0.113.0/28")


def test_off_loopback_without_a_lan_check_warns(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text(PRACTICE.format(kind="asterisk", trunk="{host: 127.0.0.1}",
                                    extra=SIP_ON_LAN))
    result = check(path)
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert "1 warning(s)" in out
    assert "connections.pbx.lan: the networks desk phones are on" in out
