"""Sending alert emails: a thin aiosmtplib shell.

One connection is opened on the first :meth:`SmtpMailer.send` and reused for the rest of a
sending round; :meth:`close` ends it (the notifier closes it after each round, so no idle
connection is left for the server to time out under us).  Any failure drops the connection:
a link that failed mid-exchange is never reused (what aiosmtplib's own timeout tests check).

**Duplicates.**  A message counts as sent when the server answers 250 to its DATA.  If the
connection breaks after the server took the message but before that answer arrives, we cannot
know and the notifier tries again; the retry carries the same Message-ID, which is what lets
the receiving side recognise it.  That window is one round trip wide.
"""

from __future__ import annotations

import logging
from email.message import EmailMessage

import aiosmtplib

from telephony.addresses import is_loopback

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

    def __init__(self, host: str, port: int, *, starttls: bool, username: str = "",
                 password: str = "", timeout: float = DEFAULT_TIMEOUT) -> None:
        if username and not starttls and not is_loopback(host):
            raise ValueError("SMTP authentication without STARTTLS to another machine would "
                             "send the password in the clear; set connections.smtp.starttls")
        self._host = host
        self._port = port
        self._starttls = starttls
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
                self._client = aiosmtplib.SMTP(
                    hostname=self._host, port=self._port, timeout=self._timeout,
                    start_tls=self._starttls, username=self._username or None,
                    password=self._password or None)
                await self._client.connect()
            await self._client.send_message(message)
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
            raise MailError(f"cannot reach the server: {type(exc).__name__}") from None

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
