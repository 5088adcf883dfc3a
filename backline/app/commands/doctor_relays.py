"""`backline doctor`'s checks of the services alerts and deliveries go through, each tried
for real and leaving nothing behind: the mail relay (reached, STARTTLS offered, its
certificate valid for its name, the login accepted; a test message only when asked), the SMS
gateway's credentials (Twilio's Account resource read: a ``GET`` that sends nothing) and the
inbox's URL and token (an authenticated ``GET`` of the URL, which files nothing).

No secret is ever part of a line: only where it comes from.  The answers of the peers are
reported by status code and their own short reason, never echoed whole.
"""

from __future__ import annotations

import base64
import json
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import make_msgid
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import aiosmtplib

from backline.app.commands.doctor_verdicts import FAIL, OK, SKIP, WARN, WITHIN, Finding
from backline.app.secrets import SecretMissing, read_secret
from backline.core.connections import Secret, Smtp, SmtpTls
from backline.core.model import Directory
from backline.features.sending.mail import _certificate_error

CERT_WARN_DAYS = 14  # a relay certificate that lapses sooner is renewed before alerts stop
_SMTP_ERRORS = (aiosmtplib.SMTPException, OSError, TimeoutError)


def _secret(secret: Secret, what: str) -> tuple[str, Finding | None]:
    """The secret's value, or the finding that says it is missing (and where to set it)."""
    if not secret:
        return "", None
    try:
        return read_secret(secret, what), None
    except SecretMissing as exc:
        return "", Finding(what.split(".")[1].replace("_", " ") + " secret", FAIL, str(exc),
                           "set it where the config says, for the controller's user (its "
                           "service's environment, or the file, mode 0600)")


async def smtp_findings(directory: Directory, *, send_test: bool) -> list[Finding]:
    """The relay reached, STARTTLS offered and its certificate verified (as the alert mailer
    verifies it), the login accepted; with ``send_test``, a message to the alert recipients."""
    smtp = directory.connections.smtp
    if smtp is None:
        return [Finding("SMTP", SKIP, "connections.smtp is not configured: no alert email "
                        "can be sent")]
    username, missing = _secret(smtp.username, "connections.smtp.username")
    password, missing_too = _secret(smtp.password, "connections.smtp.password")
    out = [f for f in (missing, missing_too) if f is not None]
    where = f"{smtp.host}:{smtp.port}"
    context = None
    if smtp.tls is not SmtpTls.NONE:
        try:
            context = ssl.create_default_context(cafile=smtp.ca_file or None)
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return [*out, Finding("SMTP certificate", FAIL, f"cannot read "
                                  f"connections.smtp.ca_file ({why})", "fix its path: the "
                                  "PEM file of the CA that signed the relay's certificate")]
    client = aiosmtplib.SMTP(hostname=smtp.host, port=smtp.port, timeout=WITHIN,
                             use_tls=smtp.tls is SmtpTls.IMPLICIT, start_tls=False,
                             tls_context=context)
    try:
        try:
            await client.connect()
        except _SMTP_ERRORS as exc:
            untrusted = _certificate_error(exc)
            if untrusted is not None:
                return [*out, _untrusted(smtp, untrusted)]
            return [*out, Finding("SMTP reach", FAIL, f"{where}: {_why(exc)}",
                                  "start the relay, or fix connections.smtp.host and port")]
        out.append(Finding("SMTP reach", OK, f"{where} answered"))
        if smtp.tls is SmtpTls.STARTTLS:
            await client.ehlo()
            if not client.supports_extension("starttls"):
                out.append(Finding(
                    "SMTP STARTTLS", FAIL, f"{where} offers no STARTTLS: alert mail is "
                    "not sent in the clear", "turn STARTTLS on at the relay (or "
                    "connections.smtp.tls: implicit for port 465)"))
                return out
            out.append(Finding("SMTP STARTTLS", OK, "offered"))
            try:
                await client.starttls()
            except _SMTP_ERRORS as exc:
                untrusted = _certificate_error(exc)
                if untrusted is not None:
                    return [*out, _untrusted(smtp, untrusted)]
                return [*out, Finding("SMTP certificate", FAIL, f"TLS failed: {_why(exc)}",
                                      "check the relay's TLS setup")]
        elif smtp.tls is SmtpTls.IMPLICIT:
            out.append(Finding("SMTP STARTTLS", SKIP, "not needed: TLS from the first byte "
                               "(connections.smtp.tls: implicit)"))
        elif smtp.tls is SmtpTls.NONE:
            out.append(Finding("SMTP STARTTLS", SKIP, "connections.smtp.tls is none: "
                               "cleartext (this machine only, or consented to)"))
        if smtp.tls is not SmtpTls.NONE:
            out.append(_certificate(smtp, client))
        out.append(await _login(client, smtp, username, password))
        if out[-1].verdict == FAIL:
            return out
        out.append(await _test_message(client, directory, smtp) if send_test else Finding(
            "SMTP test message", SKIP, "none sent (--send-test sends one to the alert "
            "recipients)"))
        return out
    except _SMTP_ERRORS as exc:
        return [*out, Finding("SMTP reach", FAIL, f"{where}: the relay dropped the session "
                              f"({_why(exc)})", "see the relay's log")]
    finally:
        if client.is_connected:
            try:
                await client.quit()
            except _SMTP_ERRORS:
                client.close()


def _untrusted(smtp: Smtp, exc: ssl.SSLCertVerificationError) -> Finding:
    return Finding("SMTP certificate", FAIL, f"not trusted: {exc.verify_message}",
                   f"give the relay a certificate for {smtp.host} from a CA this machine "
                   "trusts, or set connections.smtp.ca_file to the CA that signed it")


def _certificate(smtp: Smtp, client: aiosmtplib.SMTP) -> Finding:
    """The verified certificate's end date: a warning when it lapses within two weeks."""
    tls = client.transport.get_extra_info("ssl_object") if client.transport else None
    cert = tls.getpeercert() if isinstance(tls, ssl.SSLObject) else None
    if not cert or "notAfter" not in cert:
        return Finding("SMTP certificate", OK, f"verified for {smtp.host}")
    ends = datetime.fromtimestamp(ssl.cert_time_to_seconds(str(cert["notAfter"])), UTC)
    days = (ends - datetime.now(UTC)).days
    seen = f"verified for {smtp.host}, valid until {ends:%Y-%m-%d}"
    if days < CERT_WARN_DAYS:
        return Finding("SMTP certificate", WARN, f"{seen} ({days} days)",
                       "renew the relay's certificate before alerts stop")
    return Finding("SMTP certificate", OK, seen)


async def _login(client: aiosmtplib.SMTP, smtp: Smtp, username: str,
                 password: str) -> Finding:
    if not username:
        if smtp.username:
            return Finding("SMTP login", FAIL, "not tried: the username is missing",
                           "set the username the config names")
        return Finding("SMTP login", SKIP, "no username configured: the relay takes mail "
                       "without a login")
    try:
        await client.login(username, password)
    except aiosmtplib.SMTPAuthenticationError as exc:
        return Finding("SMTP login", FAIL, f"refused ({exc.code})", "set the username "
                       "and password the config names to the relay's account")
    except aiosmtplib.SMTPException as exc:
        return Finding("SMTP login", FAIL, f"not possible: {_why(exc)}", "the relay must "
                       "offer AUTH (after STARTTLS), or drop the username from the config")
    return Finding("SMTP login", OK, "accepted")


async def _test_message(client: aiosmtplib.SMTP, directory: Directory,
                        smtp: Smtp) -> Finding:
    recipients = directory.backup.alerts.emails
    if not recipients:
        return Finding("SMTP test message", WARN, "no alert recipients to send it to",
                       "list them in backup.alerts.emails")
    mail = EmailMessage()
    mail["From"], mail["To"] = smtp.sender, ", ".join(recipients)
    mail["Subject"] = f"Backline: test message for {directory.practice.name}"
    mail["Message-ID"] = make_msgid(domain=smtp.sender.rpartition("@")[2] or None)
    mail.set_content("This is a test sent by `backline doctor --send-test`: Backline's alerts "
                     "reach this address. Nothing needs doing.\n")
    try:
        await client.send_message(mail)
    except aiosmtplib.SMTPRecipientsRefused as exc:
        return Finding("SMTP test message", FAIL, f"{len(exc.recipients)} recipient(s) "
                       "refused", "check backup.alerts.emails, and that the relay may send "
                       f"to them from {smtp.sender}")
    except aiosmtplib.SMTPResponseException as exc:
        return Finding("SMTP test message", FAIL, f"refused ({exc.code})",
                       f"the relay must take mail from {smtp.sender} (connections.smtp.from)")
    return Finding("SMTP test message", OK, f"sent to {len(recipients)} alert recipient(s)")


async def sms_findings(directory: Directory) -> list[Finding]:
    """The gateway's credentials tried with a read of the account (nothing is sent)."""
    from backline.features.sms.twilio import account_path

    gw = directory.connections.sms_gateway
    if gw is None:
        return [Finding("SMS gateway", SKIP, "connections.sms_gateway is not configured")]
    if not gw.account:
        return [Finding("SMS gateway", FAIL, "no account configured", "set "
                        "connections.sms_gateway.account (Twilio: the Account SID)")]
    token, missing = _secret(gw.token, "connections.sms_gateway.token")
    if missing is not None:
        return [missing]
    credentials = base64.b64encode(f"{gw.account}:{token}".encode()).decode("ascii")
    status, answer = await _get(gw.url.rstrip("/") + account_path(gw.account),
                                f"Basic {credentials}")
    if isinstance(answer, Exception):
        return [Finding("SMS gateway", FAIL, f"{gw.url}: {_why(answer)}",
                        "fix connections.sms_gateway.url, or the network to it")]
    if status in (401, 403):
        return [Finding("SMS gateway", FAIL, f"the credentials were refused (HTTP {status})",
                        "set the token the config names to the account's Auth Token")]
    if status == 404:
        return [Finding("SMS gateway", FAIL, f"no account {gw.account} there (HTTP 404)",
                        "fix connections.sms_gateway.account, or its url (the API base)")]
    if not 200 <= status < 300:
        return [Finding("SMS gateway", FAIL, f"HTTP {status}", "the gateway is failing, or "
                        "the url is not its API base: see the provider's status page")]
    try:
        state = str(json.loads(answer).get("status", "active"))
    except (ValueError, AttributeError):
        state = "answered"
    if state in ("suspended", "closed"):
        return [Finding("SMS gateway", FAIL, f"account {gw.account} is {state}",
                        "reactivate it with the provider")]
    return [Finding("SMS gateway", OK, f"credentials accepted: account {gw.account} "
                    f"({state[:20]}), nothing sent")]


async def inbox_findings(directory: Directory) -> list[Finding]:
    """The inbox URL and token tried with a ``GET`` of the URL, which files nothing."""
    inbox = directory.connections.inbox
    if inbox is None:
        return [Finding("inbox", SKIP, "connections.inbox is not configured: held items stay "
                        "in the journal")]
    token, missing = _secret(inbox.token, "connections.inbox.token")
    if missing is not None:
        return [missing]
    status, answer = await _get(inbox.url, f"Bearer {token}")
    where = _without_query(inbox.url)
    if isinstance(answer, Exception):
        return [Finding("inbox", FAIL, f"{where}: {_why(answer)}",
                        "fix connections.inbox.url, or the network to it")]
    if status in (401, 403, 407):
        return [Finding("inbox", FAIL, f"the token was refused (HTTP {status})",
                        "set the token the config names to the one the inbox expects")]
    if status in (404, 410):
        return [Finding("inbox", FAIL, f"{where}: no such endpoint (HTTP {status})",
                        "fix connections.inbox.url")]
    if status == 405:
        return [Finding("inbox", WARN, "the URL answers, but not to GET (HTTP 405): the token "
                        "is tried only by the first delivery", "have the inbox answer a GET "
                        "of its URL with the token (2xx; 401 without): docs/inbox.md")]
    if 300 <= status < 400:
        return [Finding("inbox", FAIL, f"the URL redirects (HTTP {status}); deliveries do not "
                        "follow redirects", "set connections.inbox.url to where it leads")]
    if not 200 <= status < 300:
        return [Finding("inbox", FAIL, f"HTTP {status}", "the inbox is failing: see its log")]
    return [Finding("inbox", OK, f"{where} accepted the token (HTTP {status}), nothing "
                    "filed")]


async def _get(url: str, authorization: str) -> tuple[int, bytes | Exception]:
    """One GET (no redirects: they would carry the credentials elsewhere); the status and at
    most 64 KB of the answer, or the exception that stopped it."""
    timeout = aiohttp.ClientTimeout(total=WITHIN)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(
                url, headers={"Authorization": authorization}, allow_redirects=False) as got:
            return got.status, await got.content.read(64 * 1024)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return 0, exc


def _without_query(url: str) -> str:
    """``url`` as a finding names it: no query string, which may carry the inbox's key."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _why(exc: BaseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{exc.code} {exc.message[:80]}"
    if isinstance(exc, aiosmtplib.SMTPException) and exc.message:
        return exc.message[:80]
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__
