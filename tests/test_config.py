"""The YAML loader: the example is valid, and every seeded mistake is named with file, line
and field, all in one run, through the real ``backline check`` command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from backline.app import config
from backline.core import e164
from backline.core.connections import AsteriskPbx
from backline.core.dialling import extension_clash
from backline.core.model import Carry, OwnerKind

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "example.yaml"


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "backline.app.cli", "check", str(path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_example_config_is_valid() -> None:
    result = check(EXAMPLE)
    assert result.returncode == 0, result.stderr
    assert "ok: Maple Street Family Medicine" in result.stdout
    d = config.load(EXAMPLE).directory
    owners = {n.number: n.owner for n in d.numbers}
    assert owners["+13125550100"].kind is OwnerKind.PRACTICE
    assert owners["+13125550101"].kind is OwnerKind.USER  # the doctor's direct line
    assert owners["+13125550102"].kind is OwnerKind.TEAM
    assert {Carry.FAX} == next(n.carries for n in d.numbers if n.number == "+13125550109")
    assert len(d.teams) >= 2


# Each line that carries a mistake ends with "#! FIELD: expected words"; the test finds the
# line numbers itself, so the table cannot drift from the YAML.
BROKEN = """\
practice: {name: Broken Clinic, timezone: Mars/Olympus}  #! practice.timezone: IANA time zone
devices: {max_per_login: 3}
users:
  - {id: ana, name: Ana, email: ana@x.example, extension: "101",
     desk_phones: [ana-desk]}  #! users[0].desk_phones[0]: emergency callback number
  - {id: old, name: Old, email: old@x.example, active: false, desk_phones: [old-desk]}
  - id: bob  #! users[2].email: required
    name: Bob
    emial: bob@x.example  #! users[2].emial: did you mean 'email'
teams:
  - {id: desk, name: Desk, members: [ana, ghost]}  #! teams[0].members[1]: no user 'ghost'
numbers:
  - number: "(720) 555-0141"
    owner: team:desk
  - number: "+1 720 555 0141"  #! numbers[1].number: already listed as '(720) 555-0141'
  - number: "720-555-014"  #! numbers[2].number: E.164
  - number: "+13125550100"
    carries: [voice, smss]  #! numbers[3].carries[1]: did you mean 'sms'
    owner: user:old  #! numbers[3].owner: user old is deactivated
  - number: "+13125550101"
    owner: practice
    auto_assign: true  #! numbers[4].auto_assign: practice-owned
    caller_id_name: Maple Street Family Medicine  #! numbers[4].caller_id_name: at most 15
  - number: "+13125550102"
    owner: team:nobody  #! numbers[5].owner: no team 'nobody'
    members: [user:ana, group:x]  #! numbers[5].members[1]: user:ID or team:ID
connections:
  pbx:
    kind: asterisk
    ami: {host: 127.0.0.1, port: 5038, username: backline,
          secret: hunter2}  #! connections.pbx.ami.secret: no secret written in the file
    agi: {host: 8.8.8.8, port: 4573}  #! connections.pbx.agi.host: loopback or private
  storage: {url: "sqlite:///tmp/never-created.db"}
"""


def expected_marks(text: str, file: str) -> list[tuple[str, int, str, str]]:
    marks = []
    for i, line in enumerate(text.splitlines(), start=1):
        if "#!" in line:
            field, words = line.split("#!", 1)[1].strip().split(": ", 1)
            marks.append((file, i, field, words))
    return marks


def parse_problems(stderr: str) -> list[tuple[str, int, str, str]]:
    out = []
    for line in stderr.splitlines():
        m = re.match(r"(.+?):(\d+): (\S+): (.*)", line)
        if m:
            out.append((m.group(1), int(m.group(2)), m.group(3), m.group(4)))
    return out


def test_every_seeded_mistake_reported_in_one_run(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    result = check(path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    problems = parse_problems(result.stderr)
    for file, line, field, words in expected_marks(BROKEN, str(path)):
        hits = [p for p in problems if p[:3] == (file, line, field)]
        assert hits, f"no problem reported at {file}:{line} {field}; got:\n{result.stderr}"
        assert any(words.lower() in p[3].lower() for p in hits), (words, hits)
    # Nothing reported that was not seeded: every problem line carries a mark.
    marked = {(f, ln) for f, ln, _, _ in expected_marks(BROKEN, str(path))}
    assert {(p[0], p[1]) for p in problems} <= marked, result.stderr


def test_error_inside_an_included_file_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "people.yaml").write_text(
        "users:\n"
        "  - {id: zed, name: Zed, email: zed@x.example}\n"
        "  - {id: amy, name: Amy, email: not-an-email}\n")
    (tmp_path / "main.yaml").write_text(
        "include: [people.yaml]\n"
        "practice: {name: P, timezone: UTC}\n"
        "numbers:\n"
        "  - {number: '+13125550100', owner: user:zed}\n"
        "connections: {storage: {url: 'sqlite:j.db'}}\n")
    result = check(tmp_path / "main.yaml")
    assert result.returncode == 2
    assert f"{tmp_path / 'people.yaml'}:3: users[1].email: an email address" in result.stderr
    loaded_ok = tmp_path / "people.yaml"
    loaded_ok.write_text("users:\n  - {id: zed, name: Zed, email: zed@x.example}\n")
    assert check(tmp_path / "main.yaml").returncode == 0


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("practice: {name: P, timezone: UTC}\nusers:\n  - {id: a, name: [oops}\n")
    result = check(path)
    assert result.returncode == 2
    assert re.search(rf"{re.escape(str(path))}:3: file: YAML syntax error", result.stderr), \
        result.stderr
    assert "Traceback" not in result.stderr


def test_unregistered_sms_number_is_a_warning_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "warn.yaml"
    path.write_text("practice: {name: P, timezone: UTC}\n"
                    "numbers:\n"
                    "  - number: '+13125550100'\n"
                    "    carries: [voice, sms]\n"
                    "connections: {storage: {url: 'sqlite:j.db'}}\n")
    result = check(path)
    assert result.returncode == 0, result.stderr
    assert f"{path}:4: warning: numbers[0].texting_registered" in result.stdout
    assert "will send no SMS" in result.stdout


def test_duplicate_key_and_unknown_section(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("practice: {name: P, timezone: UTC}\n"
                    "practice: {name: Q, timezone: UTC}\n"
                    "numbrs: []\n"
                    "connections: {storage: {url: 'sqlite:j.db'}}\n")
    result = check(path)
    assert result.returncode == 2
    assert f"{path}:2: practice: each key once" in result.stderr
    assert f"{path}:3: numbrs: a known key (did you mean 'numbers'?)" in result.stderr


@pytest.mark.parametrize(("text", "canonical"), [
    ("(720) 555-0141", "+17205550141"),
    ("720-555-0141", "+17205550141"),
    ("+1 720 555 0141", "+17205550141"),
    ("1 720 555 0141", "+17205550141"),
    ("720.555.0141", "+17205550141"),
    ("+44 20 7946 0958", "+442079460958"),
])
def test_e164_spellings_normalise(text: str, canonical: str) -> None:
    assert e164.normalise(text) == canonical


@pytest.mark.parametrize("text", ["720-555-014", "555-0141", "+1 120 555 0141", "+0123456789",
                                  "hello", "+1 720 555 01411", ""])
def test_not_e164_is_refused(text: str) -> None:
    with pytest.raises(e164.NotE164):
        e164.normalise(text)


# -- an SMS gateway that cannot send is refused whenever anything would send SMS ---------------

SID = "AC" + "0123456789abcdef" * 2
MESSAGES_URL = f"https://api.twilio.com/2010-04-01/Accounts/{SID}/Messages.json"
SMS_PRACTICE = """\
practice: {{name: P, timezone: UTC}}
numbers:
  - {{number: "+13125550101", carries: [voice, sms], texting_registered: {registered}}}
backup:
  alerts: {{kind: {kind}, emails: [ops@x.example], sms: ["+13125550199"]}}
connections:
  {gateway}
  storage: {{url: 'sqlite:j.db'}}
"""
TOKENS = "token_env: SMS_TOKEN, signing_secret_env: SMS_SIGNING"


@pytest.mark.parametrize(("registered", "kind", "gateway", "expected"), [
    # The config: the Messages URL pasted whole, alerts by SMS, no `from`.  The
    # account now comes from the URL; the missing sender is named.
    ("true", "email+sms", f'sms_gateway: {{url: "{MESSAGES_URL}", {TOKENS}}}',
     [":7: connections.sms_gateway.from: the E.164 number SMS alerts are sent from"]),
    # The base alone and no account: neither the reply nor the alerts could authenticate.
    ("true", "email", f'sms_gateway: {{url: "https://api.twilio.com", {TOKENS}}}',
     [":7: connections.sms_gateway.account: the provider's account id",
      "(the outage auto-reply from +13125550101)"]),
    ("false", "email+sms",
     f'sms_gateway: {{url: "https://api.twilio.com", from: "+13125550101", {TOKENS}}}',
     [":7: connections.sms_gateway.account: the provider's account id",
      "SMS is sent (backup.alerts.kind is email+sms)"]),
    # No token: nothing can be sent, whatever else is there.
    ("true", "email", f'sms_gateway: {{url: "{MESSAGES_URL}", signing_secret_env: S}}',
     [":7: connections.sms_gateway.token_env: where the API token comes from"]),
    # SMS alerts with no gateway at all.
    ("false", "email+sms", "pages: {listen: '127.0.0.1:8080', base_url: 'https://x.example'}",
     [":5: connections.sms_gateway: an SMS gateway (url, account, token_env, from)"]),
    # Two accounts that disagree; a URL that would carry the token in the clear.
    ("true", "email", f'sms_gateway: {{url: "{MESSAGES_URL}", account: AC1, {TOKENS}}}',
     [":7: connections.sms_gateway.account: the account the url names (they differ)"]),
    ("true", "email",
     f'sms_gateway: {{url: "http://api.twilio.com", account: {SID}, {TOKENS}}}',
     [":7: connections.sms_gateway.url: an https:// URL"]),
])
def test_a_gateway_that_cannot_send_is_refused_naming_the_missing_key(
        tmp_path: Path, registered: str, kind: str, gateway: str, expected: list[str]) -> None:
    path = tmp_path / "sms.yaml"
    path.write_text(SMS_PRACTICE.format(registered=registered, kind=kind, gateway=gateway))
    result = check(path)
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr
    [problem] = [line for line in result.stderr.splitlines()
                 if re.match(rf"{re.escape(str(path))}:\d+: ", line) and "warning" not in line]
    assert all(words in problem for words in expected), result.stderr


@pytest.mark.parametrize("url", [
    MESSAGES_URL, MESSAGES_URL.removesuffix(".json"), MESSAGES_URL + "/",
    f"https://api.twilio.com/2010-04-01/Accounts/{SID}.json",
    f"https://api.twilio.com/2010-04-01/Accounts/{SID}",
])
def test_the_providers_messages_url_as_pasted_gives_base_and_account(
        tmp_path: Path, url: str) -> None:
    path = tmp_path / "sms.yaml"
    path.write_text(SMS_PRACTICE.format(registered="true", kind="email+sms", gateway=(
        f'sms_gateway: {{url: "{url}", from: "+13125550101", {TOKENS}}}')))
    result = check(path)
    assert result.returncode == 0, result.stderr
    gateway = config.load(path).directory.connections.sms_gateway
    assert gateway is not None
    assert (gateway.url, gateway.account) == ("https://api.twilio.com", SID)


def test_a_gateway_nothing_sends_through_needs_no_account_or_token(tmp_path: Path) -> None:
    # Receiving only: no number registered for texting, alerts by email.
    path = tmp_path / "sms.yaml"
    path.write_text(SMS_PRACTICE.format(registered="false", kind="email", gateway=(
        'sms_gateway: {url: "https://api.twilio.com", signing_secret_env: S}')))
    result = check(path)
    assert result.returncode == 0, result.stderr


def test_where_asterisk_keeps_its_files_is_asked_of_it_unless_given_as_absolute_paths(
        tmp_path: Path) -> None:
    path = tmp_path / "pbx.yaml"
    head = ("practice: {name: P, timezone: UTC}\n"
            "connections:\n"
            "  storage: {url: 'sqlite:j.db'}\n"
            "  pbx:\n"
            "    ami: {secret_env: AMI}\n")
    path.write_text(head)
    pbx = config.load(path).directory.connections.pbx
    assert isinstance(pbx, AsteriskPbx) and (pbx.cdr_file, pbx.spool_dir) == ("", "")  # asked
    path.write_text(head + "    cdr_file: log/Master.csv\n    spool_dir: /srv/pbx/spool\n")
    result = check(path)
    assert result.returncode == 2
    assert f"{path}:6: connections.pbx.cdr_file: the absolute path" in result.stderr
    assert "spool_dir" not in result.stderr


# Extensions a desk phone could not reach, each located: another's (user or team), an
# emergency number (911 and 933 by default, and any listed), a feature code's digits.
CLASHING_EXTENSIONS = """\
practice: {name: Clinic, timezone: UTC}
emergency_numbers: ["911", "933", "912"]
users:
  - {id: ana, name: Ana, email: ana@x.example, extension: "101"}
  - {id: raj, name: Raj, email: raj@x.example,
     extension: "101"}  #! users[1].extension: 101 is already ana's
  - {id: sam, name: Sam, email: sam@x.example,
     extension: "911"}  #! users[2].extension: dials the emergency number 911
  - {id: jo, name: Jo, email: jo@x.example, active: false,
     extension: "933"}  #! users[3].extension: dials the emergency number 933
  - {id: lee, name: Lee, email: lee@x.example, extension: "102"}
teams:
  - {id: front, name: Front, members: [ana], extension: "200"}
  - {id: nurses, name: Nurses, members: [lee],
     extension: "102"}  #! teams[1].extension: 102 is already user lee's
  - {id: billing, name: Billing, members: [lee],
     extension: "200"}  #! teams[2].extension: 200 is already team front's
  - {id: lab, name: Lab, members: [lee],
     extension: "912"}  #! teams[3].extension: dials the emergency number 912
  - {id: xray, name: X-ray, members: [lee],
     extension: "*28"}  #! teams[4].extension: 2 to 6 digits
  - {id: desk, name: Desk, members: [lee], extension: "300"}
numbers:
  - {number: "+13125550100", owner: team:desk}
connections: {storage: {url: "sqlite:j.db"}}
"""


def test_clashing_extensions_are_located_errors(tmp_path: Path) -> None:
    path = tmp_path / "extensions.yaml"
    path.write_text(CLASHING_EXTENSIONS)
    result = check(path)
    assert result.returncode == 2, result.stdout
    problems = parse_problems(result.stderr)
    for file, line, field, words in expected_marks(CLASHING_EXTENSIONS, str(path)):
        hits = [p for p in problems if p[:3] == (file, line, field)]
        assert hits, f"no problem reported at {file}:{line} {field}; got:\n{result.stderr}"
        assert any(words.lower() in p[3].lower() for p in hits), (words, hits)
    marked = {(f, ln) for f, ln, _, _ in expected_marks(CLASHING_EXTENSIONS, str(path))}
    assert {(p[0], p[1]) for p in problems} <= marked, result.stderr
    # Each marked extension made one of its own: the same file loads, teams with theirs.
    fresh = iter(["103", "104", "105", "400", "500", "600", "700"])
    fixed = "".join(re.sub(r'extension: "[^"]*"', f'extension: "{next(fresh)}"',
                           line.split("  #!")[0]) + "\n" if "#!" in line else line + "\n"
                    for line in CLASHING_EXTENSIONS.splitlines())
    path.write_text(fixed)
    assert check(path).returncode == 0, check(path).stderr
    d = config.load(path).directory
    assert {t.id: t.extension for t in d.teams} == {
        "front": "200", "nurses": "400", "billing": "500", "lab": "600", "xray": "700",
        "desk": "300"}


@pytest.mark.parametrize(("extension", "clash"), [
    ("911", "the emergency number 911"),
    ("28", None),  # a desk phone dialling 28 never reaches *28
    ("*97", "the feature code *97"),  # the loader refuses it already (digits only)
    ("*7", "the feature code *7"),
    ("3125550100", "the practice number +13125550100"),
    ("13125550100", "the practice number +13125550100"),
    ("7205550141", "the outside number +17205550141"),
    ("101", None),
])
def test_what_an_extension_would_dial_instead(extension: str, clash: str | None) -> None:
    assert extension_clash(extension, ("911", "933"), ["+13125550100"]) == clash
