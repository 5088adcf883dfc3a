"""``backline doctor``: each check tried for real, one line each with its verdict and fix.

The local checks against a real SQLite journal and real files; the PBX checks against the
real Asterisk (AMI login, the modules Backline needs, a SIPp desk phone registered, the clock,
the trunk's registration to a SIPp carrier that checks the digest); the mail relay against a
real aiosmtpd (STARTTLS, a certificate from the test's CA or a stranger's, AUTH); the SMS
gateway and the inbox against the stand-ins the delivery tests use.  No secret is printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from backline.app.commands.doctor import pbx_findings
from backline.journal import open_journal
from tests.harness.certs import make_ca
from tests.harness.inbox_server import InboxServer
from tests.harness.practice_pbx import AMI_ENV, practice_pbx
from tests.harness.sipp import carrier_registrar, free_udp_port, register
from tests.harness.sms_gateway import ACCOUNT_SID, AUTH_TOKEN, TwilioGateway
from tests.harness.smtp_sink import SmtpSink

ROOT = Path(__file__).resolve().parent.parent

CONFIG = """\
practice: {{name: Maple, timezone: America/Chicago}}
connections:
  storage: {{url: "sqlite://{journal}"}}
  status: {{listen: "127.0.0.1:8089", token_file: {token}}}
"""


def doctor(config: Path, *extra: str, env: dict[str, str] | None = None,
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "backline.app.cli", "doctor", str(config),
                           *extra], capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={**os.environ, **(env or {})})


def verdicts(found: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Each check's line (``--json``), by name: verdict, what was seen and the fix."""
    return {r["check"]: f"{r['verdict']}: {r['seen']}; fix: {r['fix']}"
            for r in json.loads(found.stdout)}


def test_an_open_journal_and_secret_fail_with_the_fix_and_pass_once_fixed(
        tmp_path: Path) -> None:
    journal = tmp_path / "var" / "journal.db"
    open_journal(f"sqlite://{journal}").close()
    token = tmp_path / "status-token"
    token.write_text("s3cret\n")
    os.chmod(token, 0o644)
    os.chmod(journal, 0o644)
    config = tmp_path / "p.yaml"
    config.write_text(CONFIG.format(journal=journal, token=token))

    found = doctor(config)
    assert found.returncode == 1, found
    lines = found.stdout.splitlines()
    assert any(line.startswith("FAIL") and "journal modes" in line
               and f"{journal} is mode 0644" in line
               and f"fix: chmod go-rwx {journal}" in line for line in lines), lines
    assert any(line.startswith("FAIL") and f"secret {token}" in line
               and f"fix: chmod 600 {token}" in line for line in lines), lines
    assert any(line.startswith("ok") and "journal writable" in line for line in lines), lines
    assert "s3cret" not in found.stdout + found.stderr
    rows = json.loads(doctor(config, "--json").stdout)
    assert {r["check"]: r["verdict"] for r in rows}[f"secret {token}"] == "FAIL"
    assert all(set(r) == {"check", "verdict", "seen", "fix"} for r in rows)

    os.chmod(token, 0o600)
    os.chmod(journal, 0o600)
    fixed = doctor(config)
    assert fixed.returncode == 0, fixed
    assert not any(line.startswith("FAIL") for line in fixed.stdout.splitlines()), fixed.stdout
    assert f"secret {token}" in fixed.stdout


@pytest.mark.asterisk
async def test_on_asterisk_the_ami_login_modules_and_registered_desk_phones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with practice_pbx(tmp_path, "doctor", controller_in_process=False) as pbx:
        before = await asyncio.to_thread(doctor, pbx.config_path)
        await asyncio.to_thread(register, ("127.0.0.1", pbx.ports.sip), tmp_path, "ana-desk",
                                pbx.secret("ana-desk"), contact_port=5999, aor="ana")
        after = await asyncio.to_thread(doctor, pbx.config_path, "--json")
        monkeypatch.setenv("BACKLINE_DOCTOR_WRONG", "not-the-secret")
        wrong = pbx.config_path.with_name("wrong.yaml")
        text = pbx.config_path.read_text()
        assert f"secret_env: {AMI_ENV}" in text
        wrong.write_text(text.replace(f"secret_env: {AMI_ENV}",
                                      "secret_env: BACKLINE_DOCTOR_WRONG"))
        refused = await asyncio.to_thread(doctor, wrong)
        # A module Backline needs, unloaded (the echo test no call of this test uses).
        await asyncio.to_thread(pbx.instance.cli, "module unload app_echo")
        unloaded = await asyncio.to_thread(doctor, pbx.config_path)
        await asyncio.to_thread(pbx.instance.cli, "module load app_echo")
    assert before.returncode == 0, before  # unregistered phones warn, they do not fail
    lines = before.stdout.splitlines()
    assert any(line.startswith("ok") and "AMI login" in line for line in lines), lines
    assert any(line.startswith("ok") and "modules" in line for line in lines), lines
    assert any(line.startswith("warn") and "desk phones" in line and "ana-desk" in line
               and "fix:" in line for line in lines), lines
    rows = {r["check"]: r for r in json.loads(after.stdout)}
    assert "ana-desk" not in rows["desk phones"]["seen"].partition("not:")[2], rows
    assert unloaded.returncode == 1, unloaded
    assert any(line.startswith("FAIL") and "modules" in line and "app_echo" in line
               and "fix:" in line for line in unloaded.stdout.splitlines()), unloaded.stdout
    assert refused.returncode == 1, refused
    assert any(line.startswith("FAIL") and "AMI login" in line and "fix:" in line
               for line in refused.stdout.splitlines()), refused.stdout


RELAY = """\
practice: {{name: Maple, timezone: America/Chicago}}
backup:
  alerts: {{kind: email, emails: [ops@maple.example]}}
connections:
  storage: {{url: "sqlite://{journal}"}}
  smtp: {{host: 127.0.0.1, port: {port}, tls: {tls}, ca_file: {ca}, from: backline@maple.example,
         username_env: BACKLINE_DOCTOR_SMTP_USER, password_env: BACKLINE_DOCTOR_SMTP_PASSWORD}}
"""
SMTP_USER, SMTP_PASSWORD = "backline", "relay-pass-" + os.urandom(6).hex()


async def test_the_mail_relay_starttls_certificate_and_login_fail_with_the_fix(
        tmp_path: Path) -> None:
    relay_ca, stranger = make_ca(tmp_path, "relay-ca"), make_ca(tmp_path, "stranger-ca")
    right = {"BACKLINE_DOCTOR_SMTP_USER": SMTP_USER,
             "BACKLINE_DOCTOR_SMTP_PASSWORD": SMTP_PASSWORD}
    wrong = {**right, "BACKLINE_DOCTOR_SMTP_PASSWORD": "not-" + SMTP_PASSWORD}

    def config(port: int, ca: Path, tls: str = "starttls") -> Path:
        path = tmp_path / f"relay-{port}-{ca.stem}.yaml"
        path.write_text(RELAY.format(journal=tmp_path / "journal.db", port=port, ca=ca,
                                     tls=tls))
        return path

    async with SmtpSink(relay_ca.server("lapsing"), credentials=(SMTP_USER, SMTP_PASSWORD)
                        ) as lapsing:  # valid 2 more days
        soon = await asyncio.to_thread(doctor, config(lapsing.port, relay_ca.cert), "--json",
                                       env=right)
    async with SmtpSink(relay_ca.server("relay", days=90),
                        credentials=(SMTP_USER, SMTP_PASSWORD)) as sink:
        good = config(sink.port, relay_ca.cert)
        passed = await asyncio.to_thread(doctor, good, "--json", env=right)
        refused = await asyncio.to_thread(doctor, good, "--json", env=wrong)
        untrusted = await asyncio.to_thread(doctor, config(sink.port, stranger.cert), "--json",
                                            env=right)
        assert sink.received == []  # no test message unless asked
        sent = await asyncio.to_thread(doctor, good, "--send-test", env=right)
        [test_message] = await sink.wait_for(1)
    async with SmtpSink(relay_ca.server("implicit", days=90), implicit=True,
                        credentials=(SMTP_USER, SMTP_PASSWORD)) as port_465:
        implicit = await asyncio.to_thread(doctor, config(port_465.port, relay_ca.cert,
                                                          "implicit"), "--json", env=right)
        implicit_untrusted = await asyncio.to_thread(
            doctor, config(port_465.port, stranger.cert, "implicit"), "--json", env=right)
    async with SmtpSink() as cleartext:  # offers no STARTTLS
        stripped = await asyncio.to_thread(doctor, config(cleartext.port, relay_ca.cert),
                                           "--json", env=right)

    assert passed.returncode == 0, passed
    checks = verdicts(passed)
    for check in ("SMTP reach", "SMTP STARTTLS", "SMTP certificate", "SMTP login"):
        assert checks[check].startswith("ok"), checks
    assert checks["SMTP test message"].startswith("skip"), checks
    assert sink.logins[:1] == [True], sink.logins
    assert soon.returncode == 0, soon  # a warning, not a failure
    line = verdicts(soon)["SMTP certificate"]
    assert line.startswith("warn") and "(1 days)" in line and "renew" in line, line

    assert refused.returncode == 1, refused
    assert verdicts(refused)["SMTP login"].startswith("FAIL: refused (535)"), refused.stdout
    assert "the relay's account" in verdicts(refused)["SMTP login"]

    assert untrusted.returncode == 1, untrusted
    line = verdicts(untrusted)["SMTP certificate"]
    assert line.startswith("FAIL: not trusted: unable to get local issuer certificate"), line
    assert "connections.smtp.ca_file" in line
    assert "SMTP login" not in verdicts(untrusted)  # nothing is sent over an untrusted link

    assert implicit.returncode == 0, implicit
    checks = verdicts(implicit)
    assert checks["SMTP STARTTLS"].startswith("skip: not needed"), checks
    assert checks["SMTP certificate"].startswith("ok: verified for 127.0.0.1"), checks
    assert checks["SMTP login"].startswith("ok"), checks
    assert implicit_untrusted.returncode == 1, implicit_untrusted
    assert verdicts(implicit_untrusted)["SMTP certificate"].startswith("FAIL: not trusted")

    assert stripped.returncode == 1, stripped
    line = verdicts(stripped)["SMTP STARTTLS"]
    assert line.startswith("FAIL") and "offers no STARTTLS" in line and "fix: turn " in line
    assert cleartext.received == [] and "SMTP login" not in verdicts(stripped)

    assert sent.returncode == 0, sent
    assert any(line.startswith("ok") and "SMTP test message" in line
               for line in sent.stdout.splitlines()), sent.stdout
    assert test_message.over_tls and test_message.rcpt_tos == ("ops@maple.example",)
    assert "doctor --send-test" in test_message.message().get_content()

    for found in (passed, refused, untrusted, implicit, implicit_untrusted, stripped, sent):
        assert SMTP_PASSWORD not in found.stdout + found.stderr


GATEWAY = """\
practice: {{name: Maple, timezone: America/Chicago}}
connections:
  storage: {{url: "sqlite://{journal}"}}
  sms_gateway: {{url: "{url}", account: {account}, from: "+13125550100",
                token_env: BACKLINE_DOCTOR_SMS_TOKEN}}
  inbox: {{url: "{inbox}", token_env: BACKLINE_DOCTOR_INBOX_TOKEN}}
"""
INBOX_TOKEN = "inbox-token-" + os.urandom(6).hex()


async def test_the_sms_gateway_and_inbox_credentials_are_tried_and_nothing_is_sent_or_filed(
        tmp_path: Path) -> None:
    inbox = InboxServer(tmp_path / "inbox.db", token=INBOX_TOKEN)
    await inbox.start()
    right = {"BACKLINE_DOCTOR_SMS_TOKEN": AUTH_TOKEN, "BACKLINE_DOCTOR_INBOX_TOKEN": INBOX_TOKEN}
    wrong = {"BACKLINE_DOCTOR_SMS_TOKEN": "not-" + AUTH_TOKEN,
             "BACKLINE_DOCTOR_INBOX_TOKEN": "not-" + INBOX_TOKEN}
    try:
        async with TwilioGateway() as gw:
            def config(prefix: str = "", url: str = inbox.url) -> Path:
                path = tmp_path / f"gw{prefix.replace('/', '-')}-{url.rsplit('/', 1)[1]}.yaml"
                path.write_text(GATEWAY.format(journal=tmp_path / "journal.db",
                                               url=gw.base_url + prefix, account=ACCOUNT_SID,
                                               inbox=url))
                return path

            passed = await asyncio.to_thread(doctor, config(), "--json", env=right)
            refused = await asyncio.to_thread(doctor, config(), "--json", env=wrong)
            elsewhere = await asyncio.to_thread(
                doctor, config("/nowhere", inbox.url.replace("/inbox", "/nowhere")),
                "--json", env=right)
            gw.account_status = "suspended"
            suspended = await asyncio.to_thread(doctor, config(), "--json", env=right)
            assert gw.account_reads == 3 and gw.requests == 0 and gw.sent == []
        assert inbox.probes == 3 and inbox.requests == 0 and inbox.count() == 0
    finally:
        await inbox.stop()

    assert passed.returncode == 0, passed
    checks = verdicts(passed)
    assert checks["SMS gateway"].startswith(f"ok: credentials accepted: account {ACCOUNT_SID}")
    assert checks["inbox"].startswith("ok") and "nothing filed" in checks["inbox"], checks

    assert refused.returncode == 1, refused
    checks = verdicts(refused)
    assert checks["SMS gateway"].startswith("FAIL: the credentials were refused (HTTP 401)")
    assert "Auth Token" in checks["SMS gateway"]
    assert checks["inbox"].startswith("FAIL: the token was refused (HTTP 401)"), checks

    assert elsewhere.returncode == 1, elsewhere
    checks = verdicts(elsewhere)
    assert checks["SMS gateway"].startswith("FAIL: no account") and \
        "its url (the API base)" in checks["SMS gateway"], checks
    assert checks["inbox"].startswith("FAIL") and "HTTP 404" in checks["inbox"] and \
        "fix: fix connections.inbox.url" in checks["inbox"], checks

    assert suspended.returncode == 1, suspended
    assert verdicts(suspended)["SMS gateway"].startswith(f"FAIL: account {ACCOUNT_SID} is "
                                                         "suspended")
    for found in (passed, refused, elsewhere, suspended):
        assert AUTH_TOKEN not in found.stdout + found.stderr
        assert INBOX_TOKEN not in found.stdout + found.stderr


async def test_an_inbox_url_whose_query_carries_a_key_is_never_printed_whole(
        tmp_path: Path) -> None:
    # Some inboxes take their key in the URL's query: doctor names where it went, never that.
    key = "inbox-key-" + os.urandom(6).hex()
    inbox = InboxServer(tmp_path / "inbox.db", token=INBOX_TOKEN)
    await inbox.start()
    path = tmp_path / "practice.yaml"
    try:
        for url, name in ((f"{inbox.url}?key={key}", "ok"),
                          (f"{inbox.url.replace('/inbox', '/nowhere')}?key={key}", "FAIL")):
            path.write_text(
                "practice: {name: Maple, timezone: America/Chicago}\n"
                "connections:\n"
                f"  storage: {{url: \"sqlite://{tmp_path / 'journal.db'}\"}}\n"
                f"  inbox: {{url: \"{url}\", token_env: BACKLINE_DOCTOR_INBOX_TOKEN}}\n")
            found = await asyncio.to_thread(doctor, path, "--json",
                                            env={"BACKLINE_DOCTOR_INBOX_TOKEN": INBOX_TOKEN})
            checks = verdicts(found)
            assert checks["inbox"].startswith(name), checks
            assert key not in found.stdout + found.stderr, checks["inbox"]
        assert inbox.count() == 0
    finally:
        await inbox.stop()


TRUNK_ENV, TRUNK_PASSWORD = "BACKLINE_DOCTOR_TRUNK", "trunk-" + os.urandom(6).hex()


@pytest.mark.asterisk
@pytest.mark.parametrize("carrier_takes", ["our password", "another password"])
async def test_on_asterisk_the_clock_and_the_carrier_trunk_registration(
        tmp_path: Path, carrier_takes: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TRUNK_ENV, TRUNK_PASSWORD)
    right = carrier_takes == "our password"
    port = free_udp_port()
    # The carrier checks our REGISTER's digest answer: 200 if right, 403 if not.
    carrier = await asyncio.to_thread(carrier_registrar, tmp_path, port, "practice",
                                      TRUNK_PASSWORD if right else "other-" + TRUNK_PASSWORD)
    trunk = f", username: practice, password_env: {TRUNK_ENV}, register: true"
    try:
        async with practice_pbx(tmp_path, "doctor-trunk", controller_in_process=False,
                                carrier_from_user=False, trunk_port=port,
                                trunk_extra=trunk) as pbx:
            assert (await asyncio.to_thread(carrier.wait, 30)).ok, carrier.describe()
            await until_carrier_answer_is_held(pbx.instance.cli)
            found = await asyncio.to_thread(doctor, pbx.config_path, "--json")
            # This machine's clock 90 s behind the PBX's (the clock is the doctor's seam).
            skewed = {f.check: f for f in await pbx_findings(
                pbx.directory, now=lambda: time.time() - 90)}
    finally:
        carrier.kill()

    checks = verdicts(found)
    assert TRUNK_PASSWORD not in found.stdout + found.stderr
    assert checks["clock"].startswith("ok: the PBX's clock is "), checks
    offset = re.search(r"clock is ([0-9.]+) s ahead of this machine's \(±([0-9.]+) s\)",
                       skewed["clock"].seen)
    assert skewed["clock"].verdict == "FAIL" and offset, skewed["clock"]
    # 90 s off, to within the read's own round trip (its margin; a loaded machine's AMI may
    # take seconds to answer) and the PBX clock's millisecond.
    assert abs(float(offset.group(1)) - 90) <= float(offset.group(2)) + 0.002, skewed["clock"]
    assert "NTP" in skewed["clock"].fix
    if right:
        assert found.returncode == 0, found
        assert checks["carrier trunk"] == f"ok: practice@127.0.0.1:{port}: registered; fix: "
    else:
        assert found.returncode == 1, found
        line = checks["carrier trunk"]
        assert line.startswith(f"FAIL: practice@127.0.0.1:{port}: rejected by the carrier"), \
            line
        assert "connections.pbx.trunk.username" in line


async def until_carrier_answer_is_held(cli: Callable[[str], str], within: float = 30) -> None:
    """Until Asterisk has taken in the carrier's answer to its REGISTER (it may still be
    reading it when the carrier's scenario ends)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        text = await asyncio.to_thread(cli, "pjsip show registrations")
        if re.search(r"\s(Registered|Rejected)", text):
            return
        assert loop.time() < deadline, f"the carrier's answer never reached Asterisk: {text}"
        await asyncio.sleep(0.1)  # a poll of Asterisk's state, not a wait for time


@pytest.mark.asterisk
async def test_fastagi_is_tried_where_asterisk_sends_calls_with_the_controller_up_and_down(
        tmp_path: Path) -> None:
    async with practice_pbx(tmp_path, "doctor-agi") as pbx:
        up = await asyncio.to_thread(doctor, pbx.config_path, "--json")
        sessions = pbx.driver.agi.sessions
        attempts = len(pbx.controller.journal.attempts())
        # The config moved to another port while Asterisk still sends calls to the old one
        # (rendered and loaded before the change).
        moved = pbx.config_path.with_name("moved.yaml")
        agi = f"agi: {{host: 127.0.0.1, port: {pbx.ports.agi}}}"
        assert agi in pbx.config_path.read_text()
        moved.write_text(pbx.config_path.read_text().replace(
            agi, f"agi: {{host: 127.0.0.1, port: {free_udp_port()}}}"))
        elsewhere = await asyncio.to_thread(doctor, moved, "--json")
        await pbx.driver.stop()  # the controller down: nothing serves FastAGI
        down = await asyncio.to_thread(doctor, pbx.config_path, "--json")
    where = f"agi://127.0.0.1:{pbx.ports.agi}"
    assert verdicts(up)["FastAGI"] == f"ok: {where} answered as Backline's controller; fix: ", \
        up.stdout
    assert sessions >= 1 and attempts == 0  # the doctor's exchange is no call
    line = verdicts(elsewhere)["FastAGI"]
    assert line.startswith(f"FAIL: Asterisk sends calls to {where}, the config says "), line
    assert "render" in line.partition("fix:")[2], line
    assert elsewhere.returncode == 1, elsewhere
    line = verdicts(down)["FastAGI"]
    assert line.startswith(f"warn: nothing answers at {where}"), line
    assert "start the controller" in line.partition("fix:")[2], line


FREESWITCH = """\
  pbx:
    kind: freeswitch
    esl: {{host: 127.0.0.1, port: 8021, password_env: X_ESL}}
    trunk: {{host: 10.200.0.1, port: 5060, insecure_cleartext: true}}
    secrets_file: {secrets}
"""


def test_on_freeswitch_the_call_records_row_token_fails_with_the_fix_until_rendered(
        tmp_path: Path) -> None:
    # Without the row token in connections.pbx.secrets_file the controller imports no row
    # mod_cdr_csv writes: doctor says so, naming the file and the render that writes it,
    # missing or unreadable alike; once rendered, ok, and the token itself is never printed.
    journal, secrets = tmp_path / "journal.db", tmp_path / "fs" / "secrets.json"
    config = tmp_path / "p.yaml"
    config.write_text(CONFIG.split("  status:")[0].format(journal=journal)
                      + FREESWITCH.format(secrets=secrets))

    def token_line() -> str:
        found = doctor(config, "--json")
        return verdicts(found)["call record's row token"]

    missing = token_line()
    assert missing.startswith(f"FAIL: none to read ({secrets}") and \
        f"--secrets {secrets}`" in missing, missing
    assert doctor(config).returncode == 1
    secrets.parent.mkdir()
    secrets.write_text('{"ana-desk": "x"')  # cut short: no JSON
    os.chmod(secrets, 0o600)
    unreadable = token_line()
    assert unreadable.startswith(f"FAIL: none to read ({secrets}: cannot read") and \
        f"--secrets {secrets}`" in unreadable, unreadable
    secrets.write_text('{"ana-desk": "x"}')  # the desk phones' only, from before the token
    assert token_line().startswith(f"FAIL: none to read ({secrets} holds none)")

    rendered = subprocess.run(
        [sys.executable, "-m", "backline.app.cli", "render", str(config), "--out",
         str(tmp_path / "out"), "--secrets", str(secrets)], capture_output=True, text=True,
        cwd=ROOT, timeout=60, env={**os.environ, "X_ESL": "x"})
    assert rendered.returncode == 0, rendered
    fixed = doctor(config)
    token = json.loads(secrets.read_text())["cdr-csv:row-token"]
    assert any(line.startswith("ok") and "call record's row token" in line
               and f"kept in {secrets}" in line for line in fixed.stdout.splitlines()), fixed
    assert token not in fixed.stdout + fixed.stderr + token_line()
