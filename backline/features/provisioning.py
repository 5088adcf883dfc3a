"""Desk-phone provisioning, as a feature (see backline.features.seam): each provisioned desk
phone fetches its file over HTTPS from the controller, at the path its vendor requests.

Why a listener of its own (``connections.pbx.provisioning``): the pages listener faces the
internet (the SMS provider, alert links) and the status listener is ops' own, behind a
bearer token; neither speaks TLS.  The phones are on the practice LAN and already trust the
certificate of the PBX's TLS transport (the practice CA's, or the configured one), so this
listener serves with that certificate and nothing is ever sent in the clear: the files hold
SIP passwords.

Each phone authenticates with HTTP basic credentials over that TLS: its MAC as the user name
and a password generated once per device and kept with the desk-phone secrets (0600).  A
path no provisioned phone requests is 404; a request without the right credentials is 401.
Every file served is audited (``provisioning.fetched``, by desk phone and file name).
Refusals go through the controller's refusal tally as the public listener's do: the first of
a kind from a source in a minute is audited in full, the rest counted (the audit upkeep
writes the counts), and a source past its limit is answered 429 unread, so a guesser cannot
try passwords at line rate.  No secret is in a URL or a log line.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import ssl
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from aiohttp import web

from backline.core.connections import (
    DEFAULT_RESERVED_DESCRIPTORS,
    AsteriskPbx,
    HostPort,
    ListenerLimits,
)
from backline.core.provisioning import ProvisionedPhone, common_file, phone_for_path
from backline.core.records import AuditEntry
from backline.core.refusals import Refusal
from backline.features.listeners import DescriptorBudget, PublicListener
from backline.features.seam import Context, Feature
from backline.journal import Journal
from backline.localpbx.output import device_credentials, posix_tz, provisioned_phones
from backline.localpbx.phone_secrets import load_or_create
from backline.localpbx.practice_ca import ensure_practice_ca
from backline.render.asterisk_pjsip import tls_files
from backline.render.phone_provisioning import account, phone_files

log = logging.getLogger("backline.provisioning")

REALM = "backline provisioning"
# Phones fetch once at boot; a whole practice rebooting at once is told 503 and retries.
PROVISIONING_LIMITS = ListenerLimits(max_connections=64)


class Provisioning(Feature):
    """The HTTPS listener that hands each desk phone its provisioning file."""

    def __init__(self, context: Context, pbx: AsteriskPbx, phones: list[ProvisionedPhone]
                 ) -> None:
        self._context = context
        self._pbx = pbx
        self._phones = phones
        self._journal: Journal = context.journal
        self._clock: Callable[[], datetime] = context.clock
        self._files: dict[str, str] = {}  # file name: text
        self._credentials: dict[str, str] = {}  # MAC: password
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        # Connections at once and dawdlers cut off, counted against the descriptors the
        # process may give other machines (`backline run` sets one shared with the other
        # listeners before start()): a LAN host holding idle TLS connections cannot take
        # the PBX's descriptors.
        self.listener = PublicListener("provisioning listener", PROVISIONING_LIMITS,
                                       DescriptorBudget(DEFAULT_RESERVED_DESCRIPTORS),
                                       http=True)

    @property
    def listen(self) -> HostPort:
        """Where the phones fetch their files (``connections.pbx.provisioning``)."""
        assert self._pbx.provisioning is not None, "built only when configured"
        return self._pbx.provisioning

    async def start(self) -> None:
        self._files, self._credentials, tls = await asyncio.to_thread(self._load)
        app = web.Application(middlewares=[self.listener.middleware])
        app.router.add_get("/{name}", self._serve)
        # No access log: the phone's files are named by MAC, and an access log line is
        # where a URL or header would leak; the audit log says who fetched what.
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        assert self._runner.server is not None
        listen = self.listen
        # The guard sits inside TLS (it reads request heads); a handshake that has not
        # finished within the head's allowance is dropped.
        self._server = await asyncio.get_running_loop().create_server(
            self.listener.protocol_factory(self._runner.server), listen.host, listen.port,
            ssl=tls, ssl_handshake_timeout=self.listener.limits.header_seconds)
        log.info("desk-phone provisioning on https://%s:%d/ (%d phones)", listen.host,
                 listen.port, len(self._phones))

    def _load(self) -> tuple[dict[str, str], dict[str, str], ssl.SSLContext]:
        """The files (rendered as ``backline render`` does), the devices' credentials and
        the TLS context: blocking reads, off the event loop."""
        d = self._context.directory
        secrets_path = Path(self._pbx.secrets_file)
        secrets = load_or_create(secrets_path, [p.desk_phone for p in self._phones])
        zone = posix_tz(d.practice.timezone)
        files: dict[str, str] = {}
        for phone in self._phones:
            files.update(phone_files(phone, account(d, phone, secrets[phone.desk_phone], zone)))
        credentials = device_credentials(d, secrets_path)
        tls = self._pbx.tls
        found = tls_files(self._pbx)
        assert tls is not None and found is not None, "the loader requires tls"
        if tls.practice_ca:
            ensure_practice_ca(Path(tls.practice_ca), self._pbx.sip.host, d.practice.name)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(found.certificate, found.key)
        return files, credentials, context

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _serve(self, request: web.Request) -> web.Response:
        source = request.remote or "-"
        refusals = self._context.refusals
        if refusals.over(source):
            refusals.refused(source, "provisioning.limited")
            raise web.HTTPTooManyRequests()
        name = request.match_info["name"].lower()
        if common_file(name):
            raise web.HTTPNotFound()  # asked on every boot: nothing to audit or count
        phone = phone_for_path(self._phones, name)
        if phone is None or name not in self._files:
            await self._refuse(source, "provisioning.unknown", "-", name[:64])
            raise web.HTTPNotFound()
        if not self._authenticated(request, phone):
            await self._refuse(source, "provisioning.refused", phone.desk_phone, name)
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": f'Basic realm="{REALM}"'})
        await self._audit("provisioning.fetched", phone.desk_phone, name)
        content_type = "application/xml" if name.endswith(".xml") else "text/plain"
        return web.Response(text=self._files[name], content_type=content_type,
                            headers={"Cache-Control": "no-store"})

    def _authenticated(self, request: web.Request, phone: ProvisionedPhone) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        expected = self._credentials.get(phone.mac, "")
        # Both compared in constant time: the user name is the MAC, the password its secret.
        return bool(expected) and hmac.compare_digest(user.lower().encode(), phone.mac.encode()) \
            and hmac.compare_digest(password.encode(), expected.encode())

    async def _refuse(self, source: str, action: str, desk_phone: str, name: str) -> None:
        """Counted; the first of its kind from ``source`` this minute audited in full;
        past the source's limit, 429."""
        verdict = self._context.refusals.refused(source, action)
        if verdict is Refusal.LIMITED:
            raise web.HTTPTooManyRequests()
        if verdict is Refusal.FIRST:
            await self._audit(action, desk_phone, name)

    async def _audit(self, action: str, desk_phone: str, name: str) -> None:
        await asyncio.to_thread(self._journal.audit, AuditEntry(
            self._clock(), f"desk-phone:{desk_phone}", action, name))


def build(context: Context) -> Provisioning | None:
    """None unless the PBX is an Asterisk with ``provisioning`` and a phone to provision."""
    pbx = context.directory.connections.pbx
    if not isinstance(pbx, AsteriskPbx) or pbx.provisioning is None:
        return None
    phones = provisioned_phones(context.directory)
    if not phones:
        log.warning("connections.pbx.provisioning: no desk phone has a mac and model; "
                    "nothing to serve")
        return None
    return Provisioning(context, pbx, phones)
