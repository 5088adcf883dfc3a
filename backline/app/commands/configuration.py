"""``backline check`` and ``backline render``: what ops do with a config before anything runs
(validate it; write the PBX configuration and the desk-phone list from it)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from backline.app import config as config_mod
from backline.app.commands.shared import UsageError, add_command, load_directory
from backline.core.model import Directory


def add_check_parser(sub: Any) -> None:
    """The ``check`` command, on the top-level subparsers ``sub``."""
    p = add_command(
        sub, "check", cmd_check, "validate a practice YAML",
        "Validate CONFIG and the files it includes. Prints every problem as "
        "FILE:LINE: FIELD: what was expected, and exits 2 if there is any; warnings "
        "(e.g. an SMS number not registered for business texting) do not fail the check.")
    p.add_argument("config", metavar="CONFIG", help="the practice YAML")


def add_render_parser(sub: Any) -> None:
    """The ``render`` command, on the top-level subparsers ``sub``."""
    p = add_command(
        sub, "render", cmd_render, "write the PBX configuration and desk-phone list",
        "Write the Asterisk configuration for CONFIG into DIR (pjsip.conf, extensions.conf, "
        "voicemail.conf, manager.conf and pjsip_auth.conf, the last two mode 0600), the "
        "announcement audio, and desk-phones.csv, the provisioning list (SIP user, auth "
        "user, domain, where the generated secret is kept). Secrets are generated once and "
        "kept stable across renders. Needs the AMI secret in the environment variable the "
        "config names.")
    p.add_argument("config", metavar="CONFIG", help="the practice YAML")
    p.add_argument("--out", required=True, metavar="DIR", help="where to write the files")
    p.add_argument("--secrets", metavar="FILE", help="the desk-phone secrets file (default: "
                   "connections.pbx.secrets_file)")
    p.add_argument("--kamailio", metavar="HOST:PORT", help="also write DIR/kamailio/: a "
                   "Kamailio config listening on HOST:PORT that spreads calls over the --node "
                   "PBX nodes (round robin, fail-over to the next node)")
    p.add_argument("--node", action="append", default=[], metavar="NAME=HOST:PORT",
                   help="a PBX node's SIP address, for --kamailio (repeat for each node)")
    p.add_argument("--firewall", action="store_true", help="write only DIR/firewall.nft: "
                   "nftables rules (load with nft -f) admitting SIP, RTP and UDPTL only from "
                   "the carrier's addresses and connections.pbx.lan, AMI and FastAGI (or "
                   "FreeSWITCH's ESL and call socket) only from loopback or the controller, "
                   "with the set that scanners are banned into")
    p.add_argument("--kamailio-dir", default="/etc/kamailio", metavar="DIR",
                   help="where Kamailio will read dispatcher.list (default /etc/kamailio)")


def cmd_check(args: argparse.Namespace) -> int:
    try:
        loaded = config_mod.load(args.config)
    except config_mod.ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{args.config}: {len(exc.problems)} problem(s)", file=sys.stderr)
        return 2
    warnings = [str(w) for w in loaded.warnings]
    d = loaded.directory
    esl_problem = _esl_password_problem(d)
    if esl_problem:
        print(f"{args.config}: {esl_problem}", file=sys.stderr)
        print(f"{args.config}: 1 problem(s)", file=sys.stderr)
        return 2
    warnings += _journal_exposure(args.config, d.connections.storage.url)
    for warning in warnings:
        print(warning)
    print(f"{args.config}: {retention_line(d)}")
    print(f"{args.config}: ok: {d.practice.name}: {len(d.users)} users, {len(d.teams)} teams, "
          f"{len(d.numbers)} numbers" + (f", {len(warnings)} warning(s)"
                                         if warnings else ""))
    return 0


def retention_line(d: Directory) -> str:
    """What is kept of patient files on this host, said at every check (and at start)."""
    from backline.core.connections import FreeswitchPbx
    from backline.core.retention import describe

    return describe(d.connections.storage.delivered_days, inbox=d.connections.inbox is not None,
                    spool=not isinstance(d.connections.pbx, FreeswitchPbx))


def _esl_password_problem(d: Directory) -> str | None:
    """FreeSWITCH's ESL password, when it can be read here, checked as FreeSWITCH will load
    it (it may live only on the PBX host: then nothing is said)."""
    from backline.app.secrets import SecretMissing, read_secret
    from backline.core.connections import FreeswitchPbx
    from backline.render.freeswitch import RenderError, check_esl_password

    pbx = d.connections.pbx
    if not isinstance(pbx, FreeswitchPbx):
        return None
    try:
        check_esl_password(pbx, read_secret(pbx.esl_password, "connections.pbx.esl"))
    except SecretMissing:
        return None
    except RenderError as exc:
        return str(exc)
    return None


def _journal_exposure(config: str, url: str) -> list[str]:
    """A warning per existing journal file or directory other local users may read: it
    holds caller numbers, SMS texts and held emails."""
    if not url.startswith("sqlite://"):
        return []
    from backline.journal.sqlite import exposed_files

    return [f"{config}: warning: connections.storage.url: {path} is mode {mode:04o}, open to "
            f"other local users; it holds patient data (chmod {700 if path.is_dir() else 600}"
            f" {path})" for path, mode in exposed_files(Path(url.removeprefix("sqlite://")))]


def cmd_render(args: argparse.Namespace) -> int:
    from backline.app.secrets import SecretMissing
    from backline.core.connections import FreeswitchPbx
    from backline.localpbx.announcement import (
        AnnouncementError,
        render_announcement,
        render_closed_clips,
        render_greeting_clips,
        render_notice_clips,
        write_hold_music,
    )
    from backline.localpbx.asterisk import (
        NeedsAsterisk,
        TlsNotReady,
        asterisk_pbx,
        render_files,
    )
    from backline.localpbx.output import write_render

    directory = load_directory(args.config)
    out = Path(args.out).absolute()
    if args.firewall:
        from backline.localpbx.output import write_firewall

        try:
            rules = write_firewall(out, directory)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        print(f"rendered {rules}; load it with: nft -f {rules}")
        return 0
    if args.kamailio or args.node:
        from backline.localpbx.output import write_kamailio

        try:
            pbx_ = directory.connections.pbx
            count = write_kamailio(out / "kamailio", args.kamailio or "", args.node,
                                   args.kamailio_dir, pbx_.trunk.host if pbx_ else "",
                                   directory=directory,
                                   secrets_path=Path(args.secrets).absolute()
                                   if args.secrets else None)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        print(f"rendered {count} Kamailio files into {out / 'kamailio'}")
    if isinstance(directory.connections.pbx, FreeswitchPbx):
        from backline.localpbx.freeswitch import write_rendered
        from backline.render.freeswitch import RenderError

        fs = directory.connections.pbx
        problem = _esl_password_problem(directory)
        if problem:
            raise UsageError(problem)
        fs_secrets = Path(args.secrets or fs.secrets_file).absolute()
        try:
            count = write_rendered(directory, fs, out, fs_secrets)
        except (RenderError, AnnouncementError) as exc:
            raise UsageError(str(exc)) from exc
        print(f"rendered {count} files into {out}; desk-phone secrets in {fs_secrets} "
              "(mode 0600)")
        return 0
    try:
        pbx = asterisk_pbx(directory)
        secrets_path = Path(args.secrets or pbx.secrets_file).absolute()
        files = render_files(directory, secrets_path, str(out / "announcement"))
        if args.kamailio:  # every carrier INVITE now arrives from Kamailio's address
            from backline.render.asterisk import RenderedFile
            from backline.render.asterisk_pjsip import pjsip_conf
            from backline.render.kamailio import parse_host_port

            proxy = parse_host_port(args.kamailio, "--kamailio").host
            files = [RenderedFile(f.name, pjsip_conf(directory, pbx, proxy), f.private)
                     if f.name == "pjsip.conf" else f for f in files]
        render_announcement(directory.backup.announcement, out / "announcement.wav",
                            Path(directory.source).parent)
        clips = render_notice_clips(directory, out) + render_closed_clips(directory, out) + \
            render_greeting_clips(directory, out)
        clips.append(write_hold_music(out))
    except (SecretMissing, NeedsAsterisk, AnnouncementError, TlsNotReady) as exc:
        raise UsageError(str(exc)) from exc
    written = write_render(out, files, directory, str(pbx.sip), secrets_path,
                           sip_user_is_login=True) + 1 + len(clips)  # + the audio
    print(f"rendered {written} files into {out}; desk-phone secrets in {secrets_path} "
          "(mode 0600)")
    if pbx.tls is not None and pbx.tls.practice_ca:
        print(f"the desk phones trust the practice CA {pbx.tls.practice_ca}/ca.pem; "
              f"Asterisk serves {pbx.tls.practice_ca}/server.pem (keys mode 0600)")
    return 0
