"""Certificates for the TLS tests, made with the ``openssl`` command (neither trustme nor
cryptography is installed): a CA of the test's own, and a server certificate it signs for
127.0.0.1 and localhost, so a client verifies the loopback server exactly as it would a
real relay."""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Authority:
    cert: Path  # what a client trusts (ca_file)
    key: Path

    def server(self, name: str, names: str = "IP:127.0.0.1, DNS:localhost", *,
               days: int = 2) -> ssl.SSLContext:
        """A server-side context whose certificate this CA signed for ``names`` (a
        subjectAltName: by default 127.0.0.1 and localhost), valid ``days``."""
        folder = self.cert.parent
        key, csr, cert = (folder / f"{name}.{ext}" for ext in ("key", "csr", "pem"))
        ext = folder / f"{name}.ext"
        ext.write_text(f"subjectAltName = {names}\n"
                       "extendedKeyUsage = serverAuth\n")
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
        _openssl("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
                 "-CAcreateserial", "-days", str(days), "-out", cert, "-extfile", ext)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        return context


def make_ca(folder: Path, name: str) -> Authority:
    """A fresh self-signed CA in ``folder`` (``name``.pem and ``name``.key)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}.pem", folder / f"{name}-ca.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", key, "-out", cert, "-days", "120", "-subj", f"/CN=Backline test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return Authority(cert, key)


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)
