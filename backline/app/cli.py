"""``backline``: the command line ops' scripts and runbooks rely on: its commands,
options, output and exit codes keep their meaning (extend them, never rename them).

Exit codes: 0 success, 2 a usage or config error (message on stderr, never a traceback),
1 anything else that stopped the command (e.g. the journal cannot be opened).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import assert_never
from zoneinfo import ZoneInfo

from backline.app import config as config_mod
from backline.app import conversation_cli
from backline.core.mode_sync import Effect, InEffect, NoController, NotYet, effect_of
from backline.core.model import Directory
from backline.core.outage import AlreadyInMode, Mode, ModeChange, ModeState, Via, switch, switch_key
from backline.features.status.page import status_document
from backline.journal import Attempt, Journal, JournalError, open_journal
from backline.journal.delivery import InboxItem, ItemState
from backline.journal.replies import ReplyState, SmsReply

DEFAULT_CONFIG = "/etc/backline/backline.yaml"
CONFIG_HELP = ("the practice YAML (default: $BACKLINE_CONFIG, else "
               f"{DEFAULT_CONFIG})")


class UsageError(Exception):
    """The command line or the config is wrong: exit 2."""


# -- helpers ---------------------------------------------------------------------------------


def _load(path: str | None) -> Directory:
    path = path or os.environ.get("BACKLINE_CONFIG") or DEFAULT_CONFIG
    if not Path(path).exists():
        raise UsageError(f"{path}: no such config file (give --config PATH or set "
                         "BACKLINE_CONFIG)")
    try:
        loaded = config_mod.load(path)
    except config_mod.ConfigError as exc:
        raise UsageError(f"{exc}\n{path}: {len(exc.problems)} problem(s); nothing was "
                         "started") from exc
    for warning in loaded.warnings:
        print(warning, file=sys.stderr)
    return loaded.directory


def parse_since(text: str, now: datetime) -> datetime:
    """``2h``, ``30m``, ``7d`` (ago) or an ISO 8601 time (UTC when it names no zone)."""
    m = re.fullmatch(r"(\d+)\s*([smhd])", text.strip())
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        return now - timedelta(**{unit: int(m.group(1))})
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise UsageError(f"--since {text!r}: expected e.g. 2h, 30m, 7d or 2026-11-23T08:00"
                         ) from exc
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _who(explicit: str | None) -> str:
    return explicit or os.environ.get("SUDO_USER") or getpass.getuser()


# -- commands --------------------------------------------------------------------------------


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
    warnings += _journal_exposure(args.config, d.connections.storage.url)
    for warning in warnings:
        print(warning)
    print(f"{args.config}: ok: {d.practice.name}: {len(d.users)} users, {len(d.teams)} teams, "
          f"{len(d.numbers)} numbers" + (f", {len(warnings)} warning(s)"
                                         if warnings else ""))
    return 0


def _journal_exposure(config: str, url: str) -> list[str]:
    """A warning per existing journal file or directory other local users may read: it
    holds caller numbers, SMS texts and held emails."""
    if not url.startswith("sqlite://"):
        return []
    from backline.journal.sqlite import exposed_files

    return [f"{config}: warning: connections.storage.url: {path} is mode {mode:04o}, open to "
            f"other local users; it holds patient data (chmod {700 if path.is_dir() else 600}"
            f" {path})" for path, mode in exposed_files(Path(url.removeprefix("sqlite://")))]


def cmd_outage(args: argparse.Namespace) -> int:
    directory = _load(args.config)
    journal = open_journal(directory.connections.storage.url)
    try:
        if args.action == "status":
            return _outage_status(journal.mode_state(), journal.mode_history(args.history),
                                  directory, args.json, journal.held())
        target = Mode.OUTAGE if args.action == "engage" else Mode.NORMAL
        state = journal.mode_state()
        now = datetime.now(UTC)
        try:
            change = switch(state, target, at=now, by=_who(args.by), via=Via.CLI,
                            reason=getattr(args, "reason", "") or "")
        except AlreadyInMode as exc:
            since = exc.state.since
            print(f"backline: already {exc.state.mode.value}"
                  + (f" since {_local(since.at, directory)} by {since.by}" if since else "")
                  + "; nothing changed", file=sys.stderr)
            return 0
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        if args.wait < 0:
            raise UsageError("--wait: expected a number of seconds, 0 or more")
        from backline.features.inbox.progress import backlog_now, watch_drain

        held = backlog_now(journal) if target is Mode.NORMAL and not args.no_wait else None
        journal.record_mode_change(change, expected=state)
        word = "engaged" if target is Mode.OUTAGE else "ended"
        print(f"outage {word} at {_local(change.at, directory)} by {change.by}"
              + (f": {change.reason}" if change.reason else ""), end="", flush=True)
        effect = _await_effect(journal, change, 0.0 if args.no_wait else args.wait)
        print(_effect_words(effect, change, directory, args.no_wait), flush=True)
        status = 1 if isinstance(effect, NotYet) and not args.no_wait else 0
        if held is not None:
            drained = watch_drain(journal, sys.stdout, tty=sys.stdout.isatty(),
                                  has_inbox=directory.connections.inbox is not None,
                                  local=lambda at: _local(at, directory),
                                  blocked=_why_not_delivered(effect, journal), since=held)
            return status or drained
        return status
    finally:
        journal.close()


# A controller reports at least every REPORT_EVERY (10 s); unseen for three times as long,
# it is taken as not running.
LIVE_WITHIN = timedelta(seconds=30)
EFFECT_POLL_SECONDS = 0.1


def _await_effect(journal: Journal, change: ModeChange, within: float) -> Effect:
    """Until every running controller reports its PBX holds ``change`` (or ``within`` s
    pass, or no controller runs): what the controllers' reports in the journal say."""
    key = switch_key(change)
    deadline = time.monotonic() + within
    while True:
        effect = effect_of(journal.controllers(), key, datetime.now(UTC), LIVE_WITHIN)
        if not isinstance(effect, NotYet) or time.monotonic() >= deadline:
            return effect
        time.sleep(EFFECT_POLL_SECONDS)


def _effect_words(effect: Effect, change: ModeChange, directory: Directory,
                  no_wait: bool) -> str:
    """The rest of the engage/end line: when it took effect, or plainly why not yet."""
    match effect:
        case InEffect(applied):
            def one(at: datetime) -> str:
                took = max(0.0, (at - change.at).total_seconds())
                return f"{_local(at, directory)} ({took:.1f} s)"
            if len(applied) == 1:
                return f"; in effect on the PBX at {one(applied[0][1])}"
            return "; in effect on " + ", ".join(f"{node or 'the PBX'} at {one(at)}"
                                                 for node, at in applied)
        case NoController(last_seen):
            seen = f"last seen {_local(last_seen, directory)}" if last_seen else \
                "none seen on this journal"
            return (f"; NOT in effect yet: no controller is running ({seen}), so the PBX "
                    "does not have it; it takes effect when `backline run` or `backline up` "
                    "starts")
        case NotYet(waiting):
            if no_wait:
                return "; the running controller applies it within a few seconds (--no-wait)"
            nodes = ", ".join(f"{node or 'the controller'} (last seen "
                              f"{_local(seen, directory)})" for node, seen in waiting)
            return (f"; NOT in effect on the PBX after waiting: {nodes} has not confirmed it "
                    "(its PBX link may be down, or it stopped: see the status page)")
        case _:
            assert_never(effect)


def _why_not_delivered(effect: Effect, journal: Journal) -> str:
    """Why held items cannot be delivered now ("" if a running controller can)."""
    if isinstance(effect, NoController):
        return "no controller is running to deliver them (start `backline run`)"
    now = datetime.now(UTC)
    live = [r for r in journal.controllers() if now - r.seen_at <= LIVE_WITHIN]
    if live and all(r.inbox_blocked for r in live):
        return live[0].inbox_blocked
    return ""


def _outage_status(state: ModeState, history: list[ModeChange], directory: Directory,
                   as_json: bool, backlog: Mapping[str, int]) -> int:
    since = state.since
    if as_json:
        print(json.dumps(status_document(state, history, backlog), indent=2))
        return 0
    if state.mode is Mode.OUTAGE and since:
        print(f"outage ENGAGED since {_local(since.at, directory)} by {since.by} "
              f"(via {since.via.value}): {since.reason}")
    elif since:
        print(f"normal since {_local(since.at, directory)} by {since.by} "
              f"(via {since.via.value})")
    else:
        print("normal (the outage has never been engaged)")
    for c in history[1:]:
        print(f"  {_local(c.at, directory)}  {c.mode.value:<7} by {c.by} (via {c.via.value})"
              + (f": {c.reason}" if c.reason else ""))
    return 0


def cmd_attempts(args: argparse.Namespace) -> int:
    directory = _load(args.config)
    since = parse_since(args.since, datetime.now(UTC)) if args.since else None
    journal = open_journal(directory.connections.storage.url)
    if args.requeue_failed:
        try:
            n = journal.requeue_failed()
        finally:
            journal.close()
        print(f"{n} item(s) the inbox refused are held again; the controller delivers them in "
              "the order received")
        return 0
    try:
        rows = journal.attempts(since=since, limit=args.limit)
        queued = journal.item_of_attempts([a.id for a in rows])  # inbox delivery, if queued
        replies = journal.replies_of_attempts([a.id for a in rows])  # outage SMS auto-replies
    finally:
        journal.close()
    if args.json:
        print(json.dumps([_attempt_json(a) | _delivery_json(queued.get(a.id))
                          | _reply_json(replies.get(a.id)) for a in rows], indent=2))
        return 0
    if not rows:
        print("no attempts" + (f" since {_local(since, directory)}" if since else ""))
        return 0
    print(f"{'time':<19}  {'kind':<4}  {'mode':<7}  {'from':<16}  {'to':<13}  "
          f"{'outcome':<12}  delivery")
    for a in rows:
        print(f"{_local(a.at, directory):<19}  {a.kind.value:<4}  {a.mode.value:<7}  "
              f"{_printable(a.sender)[:16]:<16}  {a.recipient:<13}  {a.outcome.value:<12}  "
              f"{a.delivery.value}{_delivery_note(queued.get(a.id))}"
              f"{_reply_note(replies.get(a.id), directory)}")
    return 0


def _reply_json(reply: SmsReply | None) -> dict[str, object]:
    """An SMS's outage auto-reply: null when none was owed (normal mode, not an SMS)."""
    if reply is None:
        return {"reply": None}
    return {"reply": {"state": reply.state.value, "detail": reply.detail, "tries": reply.tries,
                      "sent_at": reply.sent_at.isoformat() if reply.sent_at else None,
                      "next_try_at": None if reply.state.final
                      else reply.next_try_at.isoformat()}}


def _reply_note(reply: SmsReply | None, directory: Directory) -> str:
    """``; reply sent``, ``; reply failed (why; next try at TIME)``, ``; reply not sent (why)``."""
    if reply is None:
        return ""
    match reply.state:
        case ReplyState.SENT:
            return "; reply sent"
        case ReplyState.PENDING:
            return "; reply pending"
        case ReplyState.FAILED:
            return (f"; reply failed ({reply.detail}; {reply.tries} "
                    f"tr{'y' if reply.tries == 1 else 'ies'}, next at "
                    f"{_local(reply.next_try_at, directory)})")
        case ReplyState.NOT_SENT:
            return f"; reply not sent ({reply.detail})"
        case _:
            assert_never(reply.state)


def _delivery_json(item: InboxItem | None) -> dict[str, object]:
    if item is None:
        return {"delivery_tries": 0, "delivery_error": ""}
    return {"delivery_tries": item.tries, "delivery_error": item.last_error}


def _delivery_note(item: InboxItem | None) -> str:
    """Why a held item is not in the inbox yet, or why the inbox refused it."""
    if item is None or not item.last_error or item.state is ItemState.DELIVERED:
        return ""
    return f" ({item.last_error}, {item.tries} tr{'y' if item.tries == 1 else 'ies'})"


def _attempt_json(a: Attempt) -> dict[str, object]:
    return {"id": a.id, "key": a.key, "at": a.at.isoformat(), "kind": a.kind.value,
            "mode": a.mode.value, "from": a.sender, "from_raw": a.sender_raw or a.sender,
            "to": a.recipient, "outcome": a.outcome.value, "text": a.text, "file": a.file,
            "node": a.node, "delivery": a.delivery.value}


def _printable(text: str) -> str:
    """Caller IDs are untrusted: never let one move the cursor or clear the screen."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _local(at: datetime, directory: Directory) -> str:
    return at.astimezone(ZoneInfo(directory.practice.timezone)).strftime("%Y-%m-%d %H:%M:%S")


def _controller(args: argparse.Namespace, *, start_pbx: bool) -> int:
    from backline.app.secrets import SecretMissing
    from backline.app.serve import run_controller
    from backline.localpbx.asterisk import PbxNotReady
    from backline.localpbx.instance import AsteriskError
    from backline.pbx.asterisk.ami import LoginRefused
    from backline.pbx.ports import LinkDown

    directory = _load(args.config)
    try:
        return run_controller(directory, start_pbx=start_pbx)
    except SecretMissing as exc:
        raise UsageError(str(exc)) from exc
    except (LinkDown, LoginRefused, PbxNotReady, AsteriskError, OSError) as exc:
        # OSError: a port of ours taken (FastAGI, the pages), e.g. by a `run` already serving
        print(f"backline: {exc}", file=sys.stderr)
        return 1


def cmd_run(args: argparse.Namespace) -> int:
    return _controller(args, start_pbx=False)


def cmd_up(args: argparse.Namespace) -> int:
    return _controller(args, start_pbx=True)


def cmd_console(args: argparse.Namespace) -> int:
    import subprocess

    from backline.app.controller import config_path
    from backline.app.secrets import SecretMissing
    from backline.app.serve import instance_name
    from backline.localpbx.asterisk import local_instance
    from backline.localpbx.pbxroot import default_root

    directory = _load(args.config)
    try:
        instance = local_instance(directory, instance_name(directory), root=default_root())
    except SecretMissing as exc:
        raise UsageError(str(exc)) from exc
    if instance.find_running() is None:
        print(f"backline: no Asterisk started by `backline up` is running for "
              f"{config_path(directory)} (start it with `backline up CONFIG`)", file=sys.stderr)
        return 1
    argv = instance.console_argv(args.x)
    if args.x is None:
        sys.stdout.flush()
        os.execvp(argv[0], argv)  # the operator's terminal is Asterisk's console now
    return subprocess.run(argv, check=False).returncode


def cmd_render(args: argparse.Namespace) -> int:
    from backline.app.secrets import SecretMissing
    from backline.core.model import FreeswitchPbx
    from backline.localpbx.asterisk import asterisk_pbx, render_files
    from backline.render.announcement import (
        AnnouncementError,
        render_announcement,
        render_closed_clips,
        render_notice_clips,
    )
    from backline.render.output import write_render

    directory = _load(args.config)
    out = Path(args.out).absolute()
    if args.kamailio or args.node:
        from backline.render.kamailio import write_kamailio

        try:
            pbx_ = directory.connections.pbx
            count = write_kamailio(out / "kamailio", args.kamailio or "", args.node,
                                   args.kamailio_dir, pbx_.trunk.host if pbx_ else "")
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        print(f"rendered {count} Kamailio files into {out / 'kamailio'}")
    if isinstance(directory.connections.pbx, FreeswitchPbx):
        from backline.localpbx.freeswitch import write_rendered
        from backline.render.freeswitch import RenderError

        fs = directory.connections.pbx
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
            from backline.render.asterisk import RenderedFile, pjsip_conf
            from backline.render.kamailio import parse_host_port

            proxy = parse_host_port(args.kamailio, "--kamailio").host
            files = [RenderedFile(f.name, pjsip_conf(directory, pbx, proxy), f.private)
                     if f.name == "pjsip.conf" else f for f in files]
        render_announcement(directory.backup.announcement, out / "announcement.wav",
                            Path(directory.source).parent)
        clips = render_notice_clips(directory, out) + render_closed_clips(directory, out)
    except (SecretMissing, AnnouncementError) as exc:
        raise UsageError(str(exc)) from exc
    written = write_render(out, files, directory, str(pbx.sip), secrets_path,
                           sip_user_is_login=True) + 1 + len(clips)  # + the audio
    print(f"rendered {written} files into {out}; desk-phone secrets in {secrets_path} "
          "(mode 0600)")
    return 0


# -- the parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backline",
        description="Backline: routing by number ownership and a backup (outage) mode for a "
                    "medical practice's own PBX.",
        epilog="Each command has --help.  Exit status: 0 success, 2 usage or config error, "
               "1 other failure.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str,
            description: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=description)
        p.set_defaults(func=func)
        return p

    p = add("check", cmd_check, "validate a practice YAML",
            "Validate CONFIG and the files it includes. Prints every problem as "
            "FILE:LINE: FIELD: what was expected, and exits 2 if there is any; warnings "
            "(e.g. an SMS number not registered for business texting) do not fail the check.")
    p.add_argument("config", metavar="CONFIG", help="the practice YAML")

    p = add("render", cmd_render, "write the PBX configuration and desk-phone list",
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
    p.add_argument("--kamailio-dir", default="/etc/kamailio", metavar="DIR",
                   help="where Kamailio will read dispatcher.list (default /etc/kamailio)")

    p = add("run", cmd_run, "run the controller against a running PBX",
            "Run the controller alone, against a PBX that is already running. Prints a line "
            "starting 'ready' when it is serving, runs until interrupted (Ctrl-C or SIGTERM).")
    p.add_argument("config", metavar="CONFIG", help="the practice YAML")

    p = add("up", cmd_up, "set up and run the PBX and the controller",
            "Set up what is missing, start the PBX and the controller on the config's "
            "loopback ports, print a line starting 'ready', run until interrupted, and stop "
            "everything it started.")
    p.add_argument("config", metavar="CONFIG", help="the practice YAML")

    p = add("console", cmd_console, "the Asterisk console of the PBX `up` started",
            "Attach to the Asterisk CLI (asterisk -r) of the Asterisk `backline up` started for "
            "the config, inside its root; with -x, run one command and print its output "
            "(asterisk -rx). The outage is switched there with `database put backline mode "
            "outage`. Exits 1 if that Asterisk is not running.")
    p.add_argument("-x", metavar="COMMAND", help="run COMMAND (e.g. 'core show channels') "
                   "and exit")
    p.add_argument("--config", metavar="CONFIG", help=CONFIG_HELP)

    p = add("outage", cmd_outage, "engage, end or show the backup (outage) mode",
            "The backup (outage) mode covers calls, SMS and fax together. Every switch is "
            "recorded with who, when, why and from where.")
    osub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    e = osub.add_parser("engage", help="engage the outage mode",
                        description="Engage the outage mode: callers hear the announcement, "
                                    "SMS senders get the auto-reply, faxes are still received.")
    e.add_argument("--reason", required=True, help="why (shown on the status page and to "
                   "whoever ends it)")
    end = osub.add_parser("end", help="end the outage mode",
                          description="End the outage mode; held attempts and emails are then "
                                      "delivered to the inbox by the running controller, and "
                                      "this shows its progress until the backlog is empty.")
    for q in (e, end):
        q.description = (q.description or "") + (
            " Waits until the running controller has the PBX in the new mode and says when "
            "it took effect (exit 1 if a running controller has not confirmed it in time), "
            "or says that no controller is running.")
        q.add_argument("--wait", type=float, default=5.0, metavar="SECONDS",
                       help="how long to wait for the PBX to have the mode (default 5)")
    e.add_argument("--no-wait", action="store_true",
                   help="return once the switch is recorded, without waiting for the PBX")
    end.add_argument("--no-wait", action="store_true",
                     help="return once the switch is recorded, without waiting for the PBX "
                          "or showing the delivery's progress")
    s = osub.add_parser("status", help="show the mode",
                        description="Show whether the outage is engaged, since when, by whom "
                                    "and why, and recent switches.")
    s.add_argument("--json", action="store_true", help="machine-readable output for scripts")
    s.add_argument("--history", type=int, default=10, metavar="N",
                   help="how many recent switches to show (default 10)")
    for q in (e, osub.choices["end"], s):
        q.add_argument("--config", metavar="CONFIG", help=CONFIG_HELP)
        q.add_argument("--by", metavar="NAME", help="who is switching (default: your login)")

    p = add("attempts", cmd_attempts, "list recent calls, SMS and faxes",
            "List recent inbound attempts (calls, SMS, faxes) with their outcome and delivery "
            "state, oldest first; for an SMS received in an outage, its automatic reply: "
            "sent, pending, failed (why, next try) or not sent (why).")
    p.add_argument("--since", metavar="TIME", help="only attempts since TIME: 2h, 30m, 7d or "
                   "an ISO 8601 time")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="at most N (default 100)")
    p.add_argument("--json", action="store_true", help="machine-readable output for scripts")
    p.add_argument("--requeue-failed", action="store_true",
                   help="put the items the inbox refused back in its queue (once the cause "
                   "is fixed), then exit")
    p.add_argument("--config", metavar="CONFIG", help=CONFIG_HELP)

    conversation_cli.add_parser(sub, conversation_cli.Shared(_load, _local, _who, UsageError))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 with usage on stderr for a usage error
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"backline: {exc}", file=sys.stderr)
        return 2
    except JournalError as exc:
        print(f"backline: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
