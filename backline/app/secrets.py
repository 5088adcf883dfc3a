"""The secrets the config names (``Secret``: an environment variable or a file), read when
a service starts.  Not in core: reading them is I/O.
"""

from __future__ import annotations

import os
from pathlib import Path

from backline.core.connections import Secret


class SecretMissing(Exception):
    """A secret the config names is not available (environment variable unset, file gone)."""


def read_secret(secret: Secret, what: str) -> str:
    if secret.env:
        value = os.environ.get(secret.env, "")
        if not value:
            raise SecretMissing(f"{what}: the environment variable {secret.env} is not set")
        return value
    if secret.file:
        try:
            return Path(secret.file).read_text().strip()
        except OSError as exc:
            raise SecretMissing(f"{what}: cannot read {secret.file} ({exc.strerror})") from exc
    raise SecretMissing(f"{what}: no secret configured")
