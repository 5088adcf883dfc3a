"""``connections.pbx.tls`` and ``encryption`` as ops meet them: ``backline check`` says what
is missing, ``backline render`` makes the practice CA once and keeps it (a phone that trusts
it must go on trusting it), and pjsip.conf gets the TLS transport and SRTP.  The calls
themselves: tests/test_tls_phones.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PBX_SIP = "    sip: {host: 127.0.0.1, port: 5060}\n"


def config(tmp_path: Path, pbx_lines: str, sip_host: str = "127.0.0.1") -> Path:
    """The example config with ``pbx_lines`` added to ``connections.pbx``."""
    text = (ROOT / "config" / "example.yaml").read_text()
    assert PBX_SIP in text
    text = text.replace(PBX_SIP, PBX_SIP.replace("127.0.0.1", sip_host) + pbx_lines)
    text = text.replace("sqlite:///var/lib/backline/journal.db", f"sqlite://{tmp_path}/j.db")
    path = tmp_path / "practice.yaml"
    path.write_text(text)
    return path


def backline(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BACKLINE_AMI_SECRET": "test-ami-secret"}
    return subprocess.run([sys.executable, "-m", "backline.app.cli", *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
                          check=False)


def test_check_says_what_tls_and_required_encryption_are_missing(tmp_path: Path) -> None:
    cases = {
        "    encryption: required\n": "connections.pbx.encryption: required needs tls:",
        "    tls: {port: 5061}\n": "connections.pbx.tls.certificate_file: where the "
                                  "certificate comes from",
        "    tls: {certificate_file: /etc/backline/pbx.pem}\n":
            "connections.pbx.tls.key_file: both certificate_file and key_file",
        "    tls: {port: 5060, practice_ca: /var/lib/backline/ca}\n":
            "connections.pbx.tls.port: a port other than SIP's own",
        "    encryption: always\n": "connections.pbx.encryption: required or optional",
        "    trunk: {host: 203.0.113.5, port: 5061, tls: true}\n":
            "connections.pbx.trunk.tls: TLS to the carrier needs connections.pbx.tls",
    }
    for lines, said in cases.items():
        done = backline("check", str(config(tmp_path, lines)))
        assert done.returncode == 2, (lines, done.stdout)
        assert said in done.stderr, (lines, done.stderr)
        assert "Traceback" not in done.stderr
    done = backline("check", str(config(
        tmp_path, "    tls: {practice_ca: /var/lib/backline/ca}\n    encryption: required\n")))
    assert done.returncode == 0, done.stderr


def test_render_makes_the_practice_ca_once_and_keeps_it_and_the_key_private(
        tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    path = config(tmp_path, f"    tls: {{practice_ca: {ca}}}\n    encryption: required\n",
                  sip_host="10.20.30.1")
    out = tmp_path / "out"

    def render() -> dict[str, bytes]:
        done = backline("render", str(path), "--out", str(out),
                        "--secrets", str(tmp_path / "secrets.json"))
        assert done.returncode == 0, done.stderr
        assert f"{ca}/ca.pem" in done.stdout
        return {f.name: f.read_bytes() for f in ca.iterdir()}

    first = render()
    assert sorted(first) == ["ca.key", "ca.pem", "server.key", "server.pem"]
    for key in ("ca.key", "server.key"):
        assert (ca / key).stat().st_mode & 0o777 == 0o600
    # The server certificate is the CA's, for the SIP address, and a phone verifies it.
    verified = subprocess.run(["openssl", "verify", "-CAfile", ca / "ca.pem",
                               ca / "server.pem"], capture_output=True, text=True, check=False)
    assert verified.returncode == 0, verified.stderr
    names = subprocess.run(["openssl", "x509", "-noout", "-in", ca / "server.pem", "-checkip",
                            "10.20.30.1"], capture_output=True, text=True, check=True)
    assert "does match" in names.stdout
    pjsip = (out / "pjsip.conf").read_text()
    assert "[transport-tls]\ntype=transport\nprotocol=tls\nbind=10.20.30.1:5061\n" in pjsip
    assert f"cert_file={ca}/server.pem\npriv_key_file={ca}/server.key\n" in pjsip
    assert "media_encryption=sdes\nmedia_encryption_optimistic=no\n" in pjsip
    # ... in the twin that rings each phone; the phone's own endpoint takes a plain offer
    # (911 must never be refused by PJSIP), and the dialplan refuses any other call on it.
    assert ("[ana-desk-SRTP](desk-phone)\naors=ana\nauth=ana-desk-auth\n"
            "context=backline-refuse\nidentify_by=auth_username\n") in pjsip
    assert "media_encryption=sdes\nmedia_encryption_optimistic=yes\n" in pjsip
    # Calls over plain SIP are refused in the dialplan, never an emergency call.
    dialplan = (out / "extensions.conf").read_text()
    assert "[backline-desk-tls]\nexten => 911,1,Goto(backline-desk,911,1)\n" in dialplan

    # Rendered again: nothing is made anew.
    assert render() == first
    # The SIP address moves: a new server certificate, from the same CA the phones trust.
    config(tmp_path, f"    tls: {{practice_ca: {ca}}}\n    insecure_cleartext: true\n",
           sip_host="10.20.30.2")
    moved = render()
    assert moved["ca.pem"] == first["ca.pem"] and moved["ca.key"] == first["ca.key"]
    assert moved["server.pem"] != first["server.pem"]
    assert (ca / "server.key").stat().st_mode & 0o777 == 0o600
    assert "media_encryption" not in (out / "pjsip.conf").read_text()  # optional: plain RTP


def test_render_refuses_certificate_files_it_cannot_read(tmp_path: Path) -> None:
    path = config(tmp_path, "    tls: {certificate_file: /nonexistent/pbx.pem, "
                            "key_file: /nonexistent/pbx.key}\n")
    done = backline("render", str(path), "--out", str(tmp_path / "out"),
                    "--secrets", str(tmp_path / "secrets.json"))
    assert done.returncode == 2, done.stdout
    assert "connections.pbx.tls.certificate_file: cannot read /nonexistent/pbx.pem" \
        in done.stderr
    assert "Traceback" not in done.stderr


def endpoint(pjsip: str, name: str) -> str:
    """The lines of pjsip.conf's section ``[name](...)`` or ``[name]``."""
    at = pjsip.index(f"[{name}]")
    return pjsip[at:pjsip.find("\n\n", at)]


def test_a_desk_phones_own_encryption_is_checked_and_rendered_on_its_endpoint(
        tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    raj = "desk_phones: [raj-desk, {name: raj-exam2, location: exam-rooms}]"

    def practice(pbx_lines: str, own: str) -> Path:
        path = config(tmp_path, pbx_lines)
        text = path.read_text()
        assert raj in text
        path.write_text(text.replace(raj, raj.replace("location: exam-rooms}",
                                                      f"location: exam-rooms, {own}}}")))
        return path

    # Checked at its line, by its field, like the practice's own.
    lobby = practice("", "encryption: sometimes")
    done = backline("check", str(lobby))
    assert done.returncode == 2
    assert (f"{lobby}:13: users[1].desk_phones[1].encryption: required or optional"
            in done.stderr), done.stderr
    done = backline("check", str(practice("", "encryption: required")))
    assert done.returncode == 2
    assert ("users[1].desk_phones[1].encryption: required needs connections.pbx.tls"
            in done.stderr), done.stderr
    fs = practice("", "encryption: optional")
    fs.write_text(fs.read_text().replace(
        "    kind: asterisk\n    ami: {host: 127.0.0.1, port: 5038, username: backline, "
        "secret_env: BACKLINE_AMI_SECRET}\n    agi: {host: 127.0.0.1, port: 4573}\n",
        "    kind: freeswitch\n    esl: {host: 127.0.0.1, port: 8021, password_env: X_ESL}\n"))
    done = backline("check", str(fs))
    assert done.returncode == 2
    assert ("users[1].desk_phones[1].encryption: no encryption: with FreeSWITCH"
            in done.stderr), done.stderr

    def render(path: Path) -> str:
        done = backline("render", str(path), "--out", str(tmp_path / "out"),
                        "--secrets", str(tmp_path / "secrets.json"))
        assert done.returncode == 0, done.stderr
        return (tmp_path / "out" / "pjsip.conf").read_text()

    # The practice requires SRTP, the exam-room phone cannot: plain on its endpoint alone.
    pjsip = render(practice(f"    tls: {{practice_ca: {ca}}}\n    encryption: required\n",
                            "encryption: optional"))
    assert "media_encryption" not in endpoint(pjsip, "raj-exam2")
    assert "context=backline-desk\n" in endpoint(pjsip, "desk-phone") + "\n"
    assert "[raj-exam2-SRTP]" not in pjsip
    for phone in ("raj-desk", "ana-desk"):
        assert ("context=backline-desk-tls\nmedia_encryption=sdes\n"
                "media_encryption_optimistic=yes\ntransport=transport-tls") in \
            endpoint(pjsip, phone)
        assert f"[{phone}-SRTP](desk-phone)" in pjsip
    # The other way round: only the phone that asks for it.
    pjsip = render(practice(f"    tls: {{practice_ca: {ca}}}\n", "encryption: required"))
    assert "media_encryption=sdes" in endpoint(pjsip, "raj-exam2")
    assert "[raj-exam2-SRTP](desk-phone)" in pjsip
    assert "media_encryption" not in endpoint(pjsip, "raj-desk")
    assert "[raj-desk-SRTP]" not in pjsip
    extensions = (tmp_path / "out" / "extensions.conf").read_text()
    assert "[backline-desk-tls]" in extensions  # its calls are checked there
