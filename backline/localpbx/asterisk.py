"""A local Asterisk for a practice: render its configuration and set up its instance.

Used by ``backline up`` and by the tests, so that what the tests run is what ops run.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from backline.app.secrets import SecretMissing, read_secret
from backline.core.connections import AsteriskPbx
from backline.core.model import Directory
from backline.localpbx.announcement import (
    render_announcement,
    render_closed_clips,
    render_greeting_clips,
    render_notice_clips,
    write_hold_music,
)
from backline.localpbx.instance import AsteriskInstance
from backline.localpbx.phone_secrets import load_or_create
from backline.localpbx.ports import AsteriskPorts
from backline.localpbx.practice_ca import PracticeCaError, ensure_practice_ca
from backline.localpbx.whereabouts import holds_port, port_holders
from backline.render.asterisk import AsteriskSecrets, RenderedFile, render
from backline.render.asterisk_pjsip import TlsFiles, tls_files


class PbxNotReady(Exception):
    """``backline up`` cannot serve: another ``up`` holds this config's Asterisk, or the
    Asterisk did not bind its ports (another process holds them)."""


class NeedsAsterisk(Exception):
    """The command works on a local Asterisk only, and the config names another PBX (or
    none): a usage error, not a missing secret."""


def asterisk_pbx(directory: Directory) -> AsteriskPbx:
    pbx = directory.connections.pbx
    if not isinstance(pbx, AsteriskPbx):
        raise NeedsAsterisk("connections.pbx: this command needs an Asterisk PBX")
    return pbx


def desk_phone_secrets(directory: Directory, path: Path) -> dict[str, str]:
    phones = [p for u in directory.users if u.active for p in u.desk_phones]
    return load_or_create(path, phones)


class TlsNotReady(Exception):
    """``connections.pbx.tls`` names a certificate or key that cannot be read, or the
    practice CA could not be made: Asterisk would start without its TLS transport."""


def tls_certificate(directory: Directory) -> TlsFiles | None:
    """The TLS transport's certificate and key on this host: the practice CA's server
    certificate (made, or remade, when missing or no longer valid), or the config's files,
    which must be readable."""
    pbx = asterisk_pbx(directory)
    files = tls_files(pbx)
    if pbx.tls is None or files is None:
        return None
    if pbx.tls.practice_ca:
        try:
            ensure_practice_ca(Path(pbx.tls.practice_ca), pbx.sip.host,
                               directory.practice.name)
        except (PracticeCaError, OSError) as exc:
            raise TlsNotReady(f"connections.pbx.tls.practice_ca: cannot make the practice CA "
                              f"in {pbx.tls.practice_ca}: {exc}") from exc
        _readable_carrier_ca(files)
        return files
    for field, path in (("tls.certificate_file", files.certificate),
                        ("tls.key_file", files.key)):
        if not os.access(path, os.R_OK):
            raise TlsNotReady(f"connections.pbx.{field}: cannot read {path}")
    _readable_carrier_ca(files)
    return files


def _readable_carrier_ca(files: TlsFiles) -> None:
    if files.carrier_ca and not os.access(files.carrier_ca, os.R_OK):
        raise TlsNotReady(f"connections.pbx.trunk.ca_file: cannot read {files.carrier_ca}")


def render_files(directory: Directory, secrets_path: Path, announcement: str,
                 tls: TlsFiles | None = None) -> list[RenderedFile]:
    """``tls``: where Asterisk reads the TLS certificate and key, if not where the config
    names them (a chroot's copies)."""
    pbx = asterisk_pbx(directory)
    carrier = read_secret(pbx.trunk.password, "connections.pbx.trunk") \
        if pbx.trunk.username else ""
    if any(c in carrier for c in "\r\n\0"):
        raise SecretMissing("connections.pbx.trunk: the carrier password holds a line break, "
                            "which Asterisk's configuration cannot hold")
    secrets = AsteriskSecrets(read_secret(pbx.ami_secret, "connections.pbx.ami"),
                              desk_phone_secrets(directory, secrets_path), carrier)
    return render(directory, secrets, announcement, tls or tls_certificate(directory))


@dataclass(frozen=True, slots=True)
class LocalPbx:
    instance: AsteriskInstance
    files: tuple[RenderedFile, ...]


def local_instance(directory: Directory, name: str, *, root: Path | None = None
                   ) -> AsteriskInstance:
    """The instance ``directory`` runs as ``name``, as an object only: nothing is written
    (``backline console`` finds the running one with it)."""
    pbx = asterisk_pbx(directory)
    ports = AsteriskPorts(sip=pbx.sip.port, ami=pbx.ami.port, rtp_start=pbx.rtp.start,
                          rtp_end=pbx.rtp.end, udptl_start=pbx.udptl.start,
                          udptl_end=pbx.udptl.end)
    # ``bind`` is where start() looks for the AMI banner: AMI's address, not SIP's (which
    # faces the practice's LAN once it is off loopback).
    # verbose 1: the log keeps notices, warnings, errors and start-up, not a line per
    # dialplan step with its arguments: those hold every caller's number (patient data in a
    # log that grows with every call) and cost Asterisk a write per step on the call path.
    # Ops who follow a call turn it up in the console (`core set verbose 3`).
    return AsteriskInstance(name, ports, root=root, bind=pbx.ami.host, systemname=pbx.node,
                            verbose=1)


def prepare(directory: Directory, name: str, *, secrets_path: Path | None = None,
            root: Path | None = None) -> LocalPbx:
    """An Asterisk instance (not started) running ``directory``'s configuration."""
    pbx = asterisk_pbx(directory)
    instance = local_instance(directory, name, root=root)
    sounds = PurePosixPath(instance.dir("lib")) / "sounds"
    render_clips(directory, instance.host_path(sounds))
    write_hold_music(instance.host_path(sounds))
    files = render_files(directory, secrets_path or Path(pbx.secrets_file),
                         str(sounds / "announcement"), _tls_inside(directory, instance))
    instance.set_files({f.name: f.text for f in files}, write=True)
    # cdr_csv writes into log/cdr-csv/ but does not create it (Debian's package does).
    instance.host_path(instance.dir("log") / "cdr-csv").mkdir(parents=True, exist_ok=True)
    etc = instance.host_path(instance.dir("etc"))
    for f in files:
        if f.private:
            os.chmod(etc / f.name, 0o600)
    return LocalPbx(instance, tuple(files))


def render_clips(directory: Directory, sounds: Path) -> list[Path]:
    """The practice's own clips in ``sounds``: the outage announcement, the 911 notices, the
    closed announcements and the voicemail greetings; their paths."""
    wav = sounds / "announcement.wav"
    render_announcement(directory.backup.announcement, wav, Path(directory.source).parent)
    return [wav, *render_notice_clips(directory, sounds),
            *render_closed_clips(directory, sounds), *render_greeting_clips(directory, sounds)]


def replace_clips(directory: Directory, instance: AsteriskInstance) -> None:
    """The clips of :func:`render_clips` rendered again for a live reload (a greeting or an
    announcement changed in the YAML, a number added: no .conf file changes for them, the
    dialplan names each clip by its box or number).  Each is made aside and renamed into
    place, so a call playing one hears the old clip whole; none is touched if any fails."""
    sounds = instance.host_path(PurePosixPath(instance.dir("lib")) / "sounds")
    with tempfile.TemporaryDirectory(dir=sounds, prefix=".reload-") as aside:
        for clip in render_clips(directory, Path(aside)):
            os.replace(clip, sounds / clip.name)


def rendered_files(directory: Directory, instance: AsteriskInstance,
                   secrets_path: Path | None = None) -> dict[str, str]:
    """The files :func:`prepare` writes for ``directory`` into ``instance``, by name, as
    text, written nowhere (a live reload compares them with what Asterisk runs)."""
    pbx = asterisk_pbx(directory)
    sounds = PurePosixPath(instance.dir("lib")) / "sounds"
    files = render_files(directory, secrets_path or Path(pbx.secrets_file),
                         str(sounds / "announcement"), _tls_inside(directory, instance))
    return {f.name: f.text for f in files}


def _tls_inside(directory: Directory, instance: AsteriskInstance) -> TlsFiles | None:
    """The TLS certificate and key copied into the instance's tree (Asterisk runs chrooted
    and sees nothing outside it), the key 0600; None without ``tls``."""
    files = tls_certificate(directory)
    if files is None:
        return None
    keys = PurePosixPath(instance.dir("etc")) / "keys"
    host = instance.host_path(keys)
    host.mkdir(parents=True, exist_ok=True, mode=0o700)
    copies = [(files.certificate, "tls.pem"), (files.key, "tls.key")]
    if files.carrier_ca:
        copies.append((files.carrier_ca, "carrier-ca.pem"))
    for src, name in copies:
        dest = host / name
        dest.unlink(missing_ok=True)
        os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        shutil.copyfile(src, dest)
    return TlsFiles(str(keys / "tls.pem"), str(keys / "tls.key"),
                    str(keys / "carrier-ca.pem") if files.carrier_ca else "")


UP_LOCK = "up.lock"


def hold_instance(instance: AsteriskInstance, config: str) -> int:
    """Take the instance for this ``backline up`` (an flock the kernel drops when the process
    dies, even by SIGKILL); return the lock's descriptor, to keep open while serving.

    Raises PbxNotReady naming the other ``up``'s PID if one is still running: two would
    share one Asterisk, and the first one's Ctrl-C would stop it under the second.
    """
    home = instance.host_path(instance.home)
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / UP_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise PbxNotReady(f"another `backline up` (pid {other}) is running {config}: stop it "
                          "(Ctrl-C there), or reach its Asterisk with `backline console "
                          f"--config {config}`") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def check_bound(instance: AsteriskInstance, pbx: AsteriskPbx) -> None:
    """Raise PbxNotReady unless the instance's own process holds its SIP and AMI ports.

    Asterisk starts even when its SIP port is taken (it logs an error), and an AMI port held
    by another Asterisk answers our login in its place: only the kernel's table of sockets
    says whose port it is.
    """
    pid = instance.pid
    if pid is None:
        raise PbxNotReady("Asterisk is not running")
    for what, hp, kind in (("SIP", pbx.sip, "udp"), ("AMI", pbx.ami, "tcp")):
        if holds_port(pid, hp.port, kind):
            continue
        held = port_holders(hp.port, kind)
        by = ", ".join(f"{name} (pid {p})" for p, name in sorted(held.items()))
        raise PbxNotReady(f"Asterisk (pid {pid}) did not bind {what} on {hp}"
                          + (f": the port is held by {by}" if by else "")
                          + f"; see {instance.log_path}")
