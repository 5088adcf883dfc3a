"""A certificate authority of the practice's own, for SIP over TLS on a LAN that has no
public certificate (``connections.pbx.tls.practice_ca``): ``ca.pem`` is what the desk
phones are given to trust, ``server.pem`` and ``server.key`` what Asterisk serves.

Made with the ``openssl`` command (no Python crypto library is installed).  Kept across
renders: phones trust this one CA, so it is made once and reused while it is valid; the
server certificate is reissued (by the same CA) only when it no longer verifies, names
another address, is near its end, or does not match its key.  Keys are 0600.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from backline.render.asterisk_pjsip import PRACTICE_CA_CERT, SERVER_CERT, SERVER_KEY

CA_KEY = "ca.key"
# Kamailio's server certificate (the registrar's TLS listener, on its own address), signed by
# the same CA, so the phones trust it as they trust Asterisk's.
KAMAILIO_CERT, KAMAILIO_KEY = "kamailio.pem", "kamailio.key"
CA_DAYS = 3650
SERVER_DAYS = 825  # what Apple's and the browsers' rules allow a server certificate
RENEW_DAYS = 30  # reissued when it ends within this


class PracticeCaError(Exception):
    """The practice CA could not be made or read (openssl failed, or its folder is not
    writable): what failed, in openssl's words."""


@dataclass(frozen=True, slots=True)
class PracticeCa:
    ca: Path  # what the phones trust
    certificate: Path
    key: Path
    made: tuple[str, ...]  # what this call made ("ca", "server"): nothing when reused


def ensure_practice_ca(folder: Path, host: str, practice: str, *,
                       certificate: str = SERVER_CERT, key_file: str = SERVER_KEY) -> PracticeCa:
    """The CA and the server certificate for ``host`` (the SIP address) in ``folder``,
    made only when missing or no longer valid.  ``certificate`` and ``key_file``: the
    server certificate's file names, when another listener on another address (Kamailio
    as the registrar, KAMAILIO_CERT) needs one of its own from the same CA."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca, ca_key = folder / PRACTICE_CA_CERT, folder / CA_KEY
    cert, key = folder / certificate, folder / key_file
    made: list[str] = []
    if not (_valid_for(ca, RENEW_DAYS) and _matches(ca, ca_key)):
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", _fresh(ca_key), "-out", ca, "-days", str(CA_DAYS),
                 "-subj", f"/O={_subject(practice)}/CN={_subject(practice)} phones CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        made.append("ca")
    if made or not (_valid_for(cert, RENEW_DAYS) and _matches(cert, key)
                    and _signed_by(cert, ca) and _names(cert, host)):
        _issue(folder, ca, ca_key, cert, key, host)
        made.append("server")
    for private in (ca_key, key):
        os.chmod(private, 0o600)
    return PracticeCa(ca, cert, key, tuple(made))


def _issue(folder: Path, ca: Path, ca_key: Path, cert: Path, key: Path, host: str) -> None:
    try:
        ipaddress.ip_address(host)
        name = f"IP:{host}"
    except ValueError:
        name = f"DNS:{host}"
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        csr, ext = Path(tmp) / "server.csr", Path(tmp) / "server.ext"
        ext.write_text(f"subjectAltName = {name}\nextendedKeyUsage = serverAuth\n"
                       "basicConstraints = critical,CA:FALSE\n")
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", _fresh(key), "-out", csr, "-subj", f"/CN={host}")
        _openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-set_serial",
                 str(int.from_bytes(os.urandom(16), "big") >> 1), "-days", str(SERVER_DAYS),
                 "-out", cert, "-extfile", ext)


def _fresh(key: Path) -> Path:
    """``key`` emptied and made 0600 before openssl writes it (never readable by others,
    not even for a moment)."""
    key.unlink(missing_ok=True)
    os.close(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return key


def _subject(practice: str) -> str:
    """The practice's name as a certificate subject's value: no '/', '=', '+' or ','."""
    return "".join(c for c in practice if c.isalnum() or c in " .-_")[:48] or "Practice"


def _valid_for(cert: Path, days: int) -> bool:
    return cert.exists() and _ok("x509", "-noout", "-in", cert, "-checkend",
                                 str(days * 86400))


def _matches(cert: Path, key: Path) -> bool:
    """The certificate carries the key's public half."""
    if not key.exists():
        return False
    try:
        return _out("x509", "-noout", "-pubkey", "-in", cert) == _out("pkey", "-pubout",
                                                                         "-in", key)
    except PracticeCaError:
        return False


def _signed_by(cert: Path, ca: Path) -> bool:
    return _ok("verify", "-CAfile", ca, cert)


def _names(cert: Path, host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        check = "-checkip"
    except ValueError:
        check = "-checkhost"
    try:
        return "does match" in _out("x509", "-noout", "-in", cert, check, host)
    except PracticeCaError:
        return False


def _ok(*args: str | Path) -> bool:
    done = subprocess.run(["openssl", *map(str, args)], capture_output=True, timeout=30,
                          check=False, stdin=subprocess.DEVNULL)
    return done.returncode == 0


def _out(*args: str | Path) -> str:
    done = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True,
                          timeout=30, check=False, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise PracticeCaError(f"openssl {args[0]}: {done.stderr.strip()}")
    return done.stdout


def _openssl(*args: str | Path) -> None:
    _out(*args)
