"""The features a missing secret turns off, said once at start (ops read the log then)."""

from __future__ import annotations

import logging

from backline.app.secrets import SecretMissing, read_secret
from backline.core.model import Directory

log = logging.getLogger("backline.controller")


def warn_missing_secrets(directory: Directory) -> list[str]:
    """Log each feature a missing secret turns off; return the lines."""
    d = directory
    checks = []
    gateway = d.connections.sms_gateway
    if gateway is not None:
        if d.connections.pages is not None:
            checks.append(("inbound SMS", gateway.signing_secret,
                           "connections.sms_gateway.signing_secret",
                           "every inbound SMS webhook is refused (403)"))
        checks.append(("SMS sending", gateway.token, "connections.sms_gateway.token",
                       "automatic replies wait (retried until it is set) and alerts go by "
                       "email only"))
    status = d.connections.status
    if status is not None and (status.token.env or status.token.file):
        checks.append(("the status listener", status.token, "connections.status.token",
                       "every request for /status, /status.json and /metrics gets 401"))
    inbox = d.connections.inbox
    if inbox is not None and inbox.url and inbox.token:
        checks.append(("inbox delivery", inbox.token, "connections.inbox.token",
                       "held items cannot be delivered to the inbox"))
    lines = []
    if not d.backup.pin:
        lines.append("desk-phone outage switching (*28/*29) is off: backup.pin_env is "
                     "not set in the config")
    else:
        checks.append(("desk-phone outage switching (*28/*29)", d.backup.pin,
                       "backup.pin", "admins cannot switch the outage from a desk phone"))
    for feature, secret, what, effect in checks:
        try:
            read_secret(secret, what)
        except SecretMissing as exc:
            lines.append(f"{feature} is off: {exc}: {effect}")
    for line in lines:
        log.warning("%s", line)
    return lines
