"""A local Asterisk for a practice: render its configuration and set up its instance.

Used by ``backline up`` and by the tests, so that what the tests run is what ops run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from dialplan.announcement import render_announcement, render_notice_clips
from dialplan.asterisk import AsteriskSecrets, RenderedFile, render
from dialplan.secrets import load_or_create
from telephony.asterisk.instance import AsteriskInstance, AsteriskPorts
from telephony.model import AsteriskPbx, Directory, Secret


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


def asterisk_pbx(directory: Directory) -> AsteriskPbx:
    pbx = directory.connections.pbx
    if not isinstance(pbx, AsteriskPbx):
        raise SecretMissing("connections.pbx: this command needs an Asterisk PBX")
    return pbx


def desk_phone_secrets(directory: Directory, path: Path) -> dict[str, str]:
    phones = [p for u in directory.users if u.active for p in u.desk_phones]
    return load_or_create(path, phones)


def render_files(directory: Directory, secrets_path: Path, announcement: str
                 ) -> list[RenderedFile]:
    pbx = asterisk_pbx(directory)
    secrets = AsteriskSecrets(read_secret(pbx.ami_secret, "connections.pbx.ami"),
                              desk_phone_secrets(directory, secrets_path))
    return render(directory, secrets, announcement)


@dataclass(frozen=True, slots=True)
class LocalPbx:
    instance: AsteriskInstance
    files: tuple[RenderedFile, ...]


def prepare(directory: Directory, name: str, *, secrets_path: Path | None = None,
            root: Path | None = None) -> LocalPbx:
    """An Asterisk instance (not started) running ``directory``'s configuration."""
    pbx = asterisk_pbx(directory)
    ports = AsteriskPorts(sip=pbx.sip.port, ami=pbx.ami.port, rtp_start=pbx.rtp.start,
                          rtp_end=pbx.rtp.end, udptl_start=pbx.udptl.start,
                          udptl_end=pbx.udptl.end)
    instance = AsteriskInstance(name, ports, root=root, bind=pbx.sip.host,
                                systemname=pbx.node)
    sounds = PurePosixPath(instance.dir("lib")) / "sounds"
    wav = instance.host_path(sounds / "announcement.wav")
    render_announcement(directory.backup.announcement, wav, Path(directory.source).parent)
    render_notice_clips(directory, wav.parent)
    files = render_files(directory, secrets_path or Path(pbx.secrets_file),
                         str(sounds / "announcement"))
    instance.set_files({f.name: f.text for f in files}, write=True)
    # cdr_csv writes into log/cdr-csv/ but does not create it (Debian's package does).
    instance.host_path(instance.dir("log") / "cdr-csv").mkdir(parents=True, exist_ok=True)
    etc = instance.host_path(instance.dir("etc"))
    for f in files:
        if f.private:
            os.chmod(etc / f.name, 0o600)
    return LocalPbx(instance, tuple(files))
