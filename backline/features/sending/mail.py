"""Sending alert emails: a thin aiosmtplib shell.

One connection is opened on the first :meth:`SmtpMailer.send` and reused for the rest of a
sending round; :meth:`close` ends it (the notifier closes it after each round, so no idle
connection is left for the server to time out under us).  Any failure drops the connection:
a link that failed mid-exchange is never reused (what aiosmtplib's own timeout tests check).

**Duplicates.**  A message counts as sent when the server answers 250 to its DATA.  If the
connection breaks after the server took the message but before that answer arrives, we cannot
know and the notifier tries again; the retry carries the same Message-ID, which is what lets
the receiving side recognise it.  That window is one round trip wide.

**TLS.**  STARTTLS is required by default and the relay's certificate verified (the system's
CAs, or ``ca_file``, read again on each connection so a renewed file needs no restart).  A
server that offers no STARTTLS is refused rather than written to in the clear: an attacker
on the path can strip the offer (RFC 3207 §6).  Either failure is a :class:`MailError`, so
the alert stays queued and is retried like any other.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from email.message import EmailMessage

import aiosmtplib

from backline.core.addresses import is_loopback
from backline.core.connections import SmtpTls

log = logging.getLogger("backline.notifier.mail")

DEFAULT_TIMEOUT = 30.0  # seconds per SMTP command; a stuck server must not hold alerts forever


class MailError(Exception):
    """The server did not take the message.  ``code`` is its SMTP reply code, if it gave one
    (None: no connection, a timeout, a dropped link)."""

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class SmtpMailer:
    """Sends one message at a time through the configured SMTP server."""

    def __init__(self, host: str, port: int, *, tls: SmtpTls = SmtpTls.STARTTLS,
                 ca_file: str = "", username: str = "", password: str = "",
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        if username and tls is SmtpTls.NONE and not is_loopback(host):
            raise ValueError("SMTP authentication without STARTTLS to another machine would "
                             "send the password in the clear; set connections.smtp.tls")
        self._host = host
        self._port = port
        self._tls = tls
        self._ca_file = ca_file
        self._username = username
        self._password = password
        self._timeout = timeout
        self._client: aiosmtplib.SMTP | None = None

    def __repr__(self) -> str:
        return f"SmtpMailer({self._host}:{self._port})"  # never the password

    async def send(self, message: EmailMessage) -> None:
        """Send ``message`` to its To address; raise :class:`MailError` unless the server
        accepted it."""
        try:
            if self._client is None or not self._client.is_connected:
                self._client = await self._connect()
            await self._client.send_message(message)
        except MailError:
            await self._drop()
            raise
        except aiosmtplib.SMTPRecipientsRefused as exc:
            await self._drop()
            codes = [r.code for r in exc.recipients]
            raise MailError("the server refused the recipient", codes[0] if codes else None
                            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            await self._drop()
            raise MailError(f"the server answered {exc.code}", exc.code) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self._drop()
            untrusted = _certificate_error(exc)
            if untrusted is not None:
                raise MailError("the server's certificate is not trusted: "
                                f"{untrusted.verify_message}") from None
            if isinstance(exc, ssl.SSLError):
                raise MailError(f"TLS with the server failed: {exc.reason}") from None
            raise MailError(f"cannot reach the server: {type(exc).__name__}") from None

    async def _connect(self) -> aiosmtplib.SMTP:
        """A connection ready to send: TLS up (unless ``tls`` is none) and logged in."""
        context = None
        if self._tls is not SmtpTls.NONE:
            context = await asyncio.to_thread(self._tls_context)
        client = aiosmtplib.SMTP(
            hostname=self._host, port=self._port, timeout=self._timeout,
            use_tls=self._tls is SmtpTls.IMPLICIT, start_tls=False, tls_context=context)
        self._client = client  # dropped with the rest if anything below fails
        await client.connect()
        if self._tls is SmtpTls.STARTTLS:
            await client.ehlo()
            if not client.supports_extension("starttls"):
                raise MailError("the server offers no STARTTLS")
            await client.starttls()
        if self._username:
            await client.login(self._username, self._password)
        return client

    def _tls_context(self) -> ssl.SSLContext:
        """Verifies the certificate and the host name, against ``ca_file`` alone if given."""
        try:
            return ssl.create_default_context(cafile=self._ca_file or None)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise MailError(f"cannot read connections.smtp.ca_file: {why}") from None

    async def close(self) -> None:
        """End the connection politely (QUIT), or just drop it if that fails."""
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


def _certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate failure behind ``exc``, however aiosmtplib wrapped it."""
    seen: BaseException | None = exc
    for _ in range(5):  # a short chain: connect errors wrap the OSError once or twice
        if seen is None or isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
