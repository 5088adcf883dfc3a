"""Desk-phone SIP secrets: generated strong, kept outside the repo (0600), stable across
renders so that re-rendering never logs every phone out."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

SECRET_BYTES = 24  # 192 bits, URL-safe: survives every phone's provisioning UI


class SecretsFileError(Exception):
    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.path = path


def kept(path: Path) -> dict[str, str]:
    """The secrets kept in ``path``; nothing generated (FileNotFoundError if none is)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise SecretsFileError(path, f"cannot read the desk-phone secrets ({exc})") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise SecretsFileError(path, "expected a JSON object of desk phone: secret")
    return {str(k): v for k, v in data.items()}


def load_or_create(path: Path, desk_phones: Iterable[str]) -> dict[str, str]:
    """Secrets for ``desk_phones``: existing ones kept, missing ones generated and saved."""
    current: dict[str, str] = {}
    if path.exists():
        current = kept(path)
    wanted = list(desk_phones)
    missing = [p for p in wanted if p not in current]
    for phone in missing:
        current[phone] = secrets.token_urlsafe(SECRET_BYTES)
    if missing or not path.exists():
        write_private(path, json.dumps(current, indent=1, sort_keys=True) + "\n")
    return {p: current[p] for p in wanted}


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 from the first byte, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
