"""Alert mail is encrypted by default (issue 18, item 5): STARTTLS required and the relay's
certificate verified, against a real aiosmtpd offering STARTTLS with a certificate from a CA
the test makes; cleartext only to this machine or with ``insecure_cleartext``, the same for
the inbox and SMS gateway URLs, all through ``backline check``.  Loopback traffic only: a
"remote" host is a name in a config that is only checked."""

from __future__ import annotations

import re
import shutil
from email.message import EmailMessage
from pathlib import Path

import aiohttp
import pytest

from backline.app import config
from backline.core.connections import SmtpTls
from backline.features.sending import retry
from backline.features.sending.mail import MailError, SmtpMailer
from backline.journal import AttemptKind
from tests.harness.alert_site import ALERT_EMAILS, PRACTICE_NUMBER, AlertSite, Site
from tests.harness.certs import Authority, make_ca
from tests.harness.smtp_sink import SmtpSink
from tests.test_config import check

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def authorities(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, Authority]:
    """The relay's CA, and another that never signed anything the relay shows."""
    folder = tmp_path_factory.mktemp("ca")
    return make_ca(folder, "relay-ca"), make_ca(folder, "stranger-ca")


def message() -> EmailMessage:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = ("backline@maple.example", "ops@maple.example",
                                                 "Backline: calls are going to backup")
    mail.set_content("The link: http://127.0.0.1/a/x")
    return mail


async def test_mail_goes_over_verified_tls_by_default(
        authorities: tuple[Authority, Authority]) -> None:
    relay_ca, _ = authorities
    async with SmtpSink(relay_ca.server("relay")) as sink:
        mailer = SmtpMailer("127.0.0.1", sink.port, ca_file=str(relay_ca.cert))
        await mailer.send(message())
        await mailer.close()
        [received] = await sink.wait_for(1)
    assert received.over_tls and received.rcpt_tos == ("ops@maple.example",)


async def test_implicit_tls_is_verified_too(authorities: tuple[Authority, Authority]) -> None:
    relay_ca, stranger = authorities
    async with SmtpSink(relay_ca.server("relay"), implicit=True) as sink:
        with pytest.raises(MailError, match="certificate is not trusted"):
            await SmtpMailer("127.0.0.1", sink.port, tls=SmtpTls.IMPLICIT,
                             ca_file=str(stranger.cert)).send(message())
        mailer = SmtpMailer("127.0.0.1", sink.port, tls=SmtpTls.IMPLICIT,
                            ca_file=str(relay_ca.cert))
        await mailer.send(message())
        await mailer.close()
        [received] = await sink.wait_for(1)
    assert received.over_tls


@pytest.mark.parametrize("trusting", ["stranger-ca", "system CAs"])
async def test_a_certificate_the_mailer_cannot_verify_is_refused(
        authorities: tuple[Authority, Authority], trusting: str) -> None:
    relay_ca, stranger = authorities
    async with SmtpSink(relay_ca.server("relay")) as sink:
        mailer = SmtpMailer("127.0.0.1", sink.port,
                            ca_file=str(stranger.cert) if trusting == "stranger-ca" else "")
        with pytest.raises(MailError, match="the server's certificate is not trusted: "
                                            "unable to get local issuer certificate"):
            await mailer.send(message())
        assert sink.received == []


async def test_a_certificate_for_another_host_is_refused(
        authorities: tuple[Authority, Authority]) -> None:
    relay_ca, _ = authorities  # the right CA, but the certificate names another relay
    async with SmtpSink(relay_ca.server("other", "DNS:mail.maple.example")) as sink:
        mailer = SmtpMailer("127.0.0.1", sink.port, ca_file=str(relay_ca.cert))
        with pytest.raises(MailError, match="the server's certificate is not trusted: "
                                            "IP address mismatch"):
            await mailer.send(message())
        assert sink.received == []


async def test_a_server_offering_no_starttls_is_refused_not_written_to_in_the_clear() -> None:
    async with SmtpSink() as sink:  # takes mail in the clear, offers no STARTTLS
        mailer = SmtpMailer("127.0.0.1", sink.port)
        with pytest.raises(MailError) as raised:
            await mailer.send(message())
        assert raised.value.reason == "the server offers no STARTTLS"
        assert sink.received == []
        # Cleartext, as the config allows to this machine, still goes.
        await SmtpMailer("127.0.0.1", sink.port, tls=SmtpTls.NONE).send(message())
        [received] = await sink.wait_for(1)
        assert not received.over_tls


async def test_a_missing_ca_file_is_named_and_nothing_is_sent(
        authorities: tuple[Authority, Authority], tmp_path: Path) -> None:
    relay_ca, _ = authorities
    async with SmtpSink(relay_ca.server("relay")) as sink:
        mailer = SmtpMailer("127.0.0.1", sink.port, ca_file=str(tmp_path / "gone.pem"))
        with pytest.raises(MailError, match=r"cannot read connections\.smtp\.ca_file: "
                                            r"No such file or directory"):
            await mailer.send(message())
        assert sink.received == []


# -- the controller, from its config ---------------------------------------------------------


async def alerts_health(site: Site) -> dict[str, str]:
    async with aiohttp.ClientSession() as http, \
            http.get(f"{site.status_url}/status.json") as response:
        return dict((await response.json())["health"]["alerts"])


async def test_an_untrusted_certificate_holds_the_alert_until_the_ca_file_trusts_it(
        authorities: tuple[Authority, Authority], tmp_path: Path) -> None:
    relay_ca, stranger = authorities
    ca_file = tmp_path / "relay.pem"
    shutil.copy(stranger.cert, ca_file)  # the wrong CA first
    async with AlertSite(tmp_path, kind="email", smtp=f"ca_file: {ca_file}, ",
                         sink_tls=relay_ca.server("relay")) as site:
        await site.engage()
        await site.record(AttemptKind.CALL, "+17205550141", PRACTICE_NUMBER)
        await site.notifier.settle()
        health = await alerts_health(site)
        assert health["verdict"] == "failing"
        assert str(health["last_error"]).startswith(
            "email: the server's certificate is not trusted")
        assert site.sink.received == []
        shutil.copy(relay_ca.cert, ca_file)  # fixed: read again on the next connection
        site.clock.advance(retry.retry_delay(1))
        site.notifier.wake()
        received = await site.sink.wait_for(len(ALERT_EMAILS))
        await site.notifier.settle()
        assert (await alerts_health(site))["verdict"] == "ok"
    assert sorted(r.rcpt_tos[0] for r in received) == sorted(ALERT_EMAILS)
    assert all(r.over_tls for r in received)


async def test_a_config_without_tls_keys_will_not_mail_a_server_offering_no_starttls(
        tmp_path: Path) -> None:
    # Before issue 18 this config sent the alert (and its link) in the clear.
    async with AlertSite(tmp_path, kind="email", smtp="") as site:
        await site.engage()
        await site.record(AttemptKind.CALL, "+17205550141", PRACTICE_NUMBER)
        await site.notifier.settle()
        health = await alerts_health(site)
        assert health["last_error"] == "email: the server offers no STARTTLS"
        assert site.sink.received == []


# -- backline check --------------------------------------------------------------------------

PRACTICE = """\
practice: {{name: P, timezone: UTC}}
connections:
  {section}
  storage: {{url: 'sqlite:j.db'}}
"""
REMOTE = "mail.maple.example"


def checked(tmp_path: Path, section: str) -> tuple[int, list[str], list[str]]:
    """Exit status, errors and warnings of ``backline check`` on one connections entry."""
    path = tmp_path / "tls.yaml"
    path.write_text(PRACTICE.format(section=section))
    result = check(path)
    assert "Traceback" not in result.stderr
    lines = (result.stderr + result.stdout).splitlines()
    ours = [line.removeprefix(f"{path}:") for line in lines
            if re.match(rf"{re.escape(str(path))}:\d+: ", line)]
    return (result.returncode, [p for p in ours if "warning" not in p],
            [p for p in ours if "warning" in p])


@pytest.mark.parametrize(("section", "field", "words"), [
    (f"smtp: {{host: {REMOTE}, starttls: false}}", "connections.smtp.starttls",
     "alert mails, with their 12-hour links"),
    (f"smtp: {{host: {REMOTE}, tls: none}}", "connections.smtp.tls",
     "set insecure_cleartext: true"),
    ("smtp: {host: 192.168.1.20, tls: none}", "connections.smtp.tls",
     "cleartext only to this machine"),
    # The opt-out covers the mail, never a password.
    (f"smtp: {{host: {REMOTE}, tls: none, insecure_cleartext: true, "
     "password_env: SMTP_PASSWORD}", "connections.smtp.tls",
     "never sent in the clear"),
    ('inbox: {url: "http://inbox.maple.example/inbox", token_env: T}',
     "connections.inbox.url", "an https:// URL"),
    ('sms_gateway: {url: "http://sms.maple.example", token_env: T}',
     "connections.sms_gateway.url", "the SMS texts and the gateway's API token"),
    (f"smtp: {{host: {REMOTE}, tls: tls}}", "connections.smtp.tls",
     "starttls, implicit or none"),
    (f"smtp: {{host: {REMOTE}, tls: starttls, starttls: true}}", "connections.smtp.starttls",
     "give one of them"),
    (f"smtp: {{host: {REMOTE}, ca_file: certs/ca.pem}}", "connections.smtp.ca_file",
     "absolute path"),
    ("smtp: {host: 127.0.0.1, tls: none, ca_file: /etc/ca.pem}", "connections.smtp.ca_file",
     "tls: starttls or implicit"),
])
def test_check_refuses_cleartext_to_another_machine(
        tmp_path: Path, section: str, field: str, words: str) -> None:
    status, errors, _ = checked(tmp_path, section)
    assert status == 2
    [error] = errors
    assert f": {field}: " in error and words in error, error


@pytest.mark.parametrize(("section", "exposed"), [
    (f"smtp: {{host: {REMOTE}, starttls: false, insecure_cleartext: true}}",
     f"alert mails, with their 12-hour links to patient data go to {REMOTE} unencrypted"),
    ('inbox: {url: "http://inbox.maple.example/inbox", token_env: T, '
     "insecure_cleartext: true}",
     "held emails, faxes, SMS texts, caller numbers and the inbox token go to "
     "inbox.maple.example unencrypted"),
    ('sms_gateway: {url: "http://sms.maple.example", token_env: T, account: AC1, '
     "insecure_cleartext: true}",
     "the SMS texts and the gateway's API token go to sms.maple.example unencrypted"),
])
def test_the_named_opt_out_is_accepted_with_a_warning_naming_what_is_exposed(
        tmp_path: Path, section: str, exposed: str) -> None:
    status, errors, warnings = checked(tmp_path, section)
    assert (status, errors) == (0, [])
    [warning] = warnings
    assert ": warning: " in warning and ".insecure_cleartext: false: INSECURE: " in warning
    assert exposed in warning


@pytest.mark.parametrize(("section", "tls", "port"), [
    ("smtp: {host: 127.0.0.1, port: 2525, starttls: false}", SmtpTls.NONE, 2525),
    ("smtp: {host: localhost, tls: none}", SmtpTls.NONE, 25),
    ("smtp: {host: '::1', tls: none}", SmtpTls.NONE, 25),
    (f"smtp: {{host: {REMOTE}}}", SmtpTls.STARTTLS, 25),
    (f"smtp: {{host: {REMOTE}, port: 587, starttls: true, ca_file: /etc/ca.pem}}",
     SmtpTls.STARTTLS, 587),
    (f"smtp: {{host: {REMOTE}, tls: implicit}}", SmtpTls.IMPLICIT, 465),
])
def test_tls_by_default_cleartext_to_this_machine_without_a_word(
        tmp_path: Path, section: str, tls: SmtpTls, port: int) -> None:
    status, errors, warnings = checked(tmp_path, section)
    assert (status, errors, warnings) == (0, [], [])
    smtp = config.load(tmp_path / "tls.yaml").directory.connections.smtp
    assert smtp is not None and (smtp.tls, smtp.port) == (tls, port)


@pytest.mark.parametrize("section", [
    f"smtp: {{host: {REMOTE}, insecure_cleartext: true}}",
    'inbox: {url: "https://inbox.maple.example/inbox", token_env: T, insecure_cleartext: true}',
])
def test_an_opt_out_on_an_encrypted_connection_is_pointed_out(
        tmp_path: Path, section: str) -> None:
    status, errors, warnings = checked(tmp_path, section)
    assert (status, errors) == (0, [])
    [warning] = warnings
    assert ".insecure_cleartext: removed: the connection is encrypted" in warning


@pytest.mark.parametrize("section", [
    'inbox: {url: "http://127.0.0.1:8082/inbox", token_env: T}',
    'inbox: {url: "https://inbox.maple.example/inbox", token_env: T}',
    'sms_gateway: {url: "http://127.0.0.1:8081", token_env: T}',
])
def test_https_or_loopback_urls_need_no_opt_out(tmp_path: Path, section: str) -> None:
    assert checked(tmp_path, section) == (0, [], [])


