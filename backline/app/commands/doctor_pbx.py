"""`backline doctor`'s checks of the PBX beyond its AMI login: its clock against this
machine's, the carrier trunk's outbound registration, the controller's FastAGI where
Asterisk's dialplan sends calls, and the voicemail folders' locks in its spool.  Each asks
Asterisk over the AMI link the doctor already holds; none changes anything.  And the desk
phones that refuse their encrypted ring, which only the running controller hears (its status
listener)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backline.app.commands.doctor_verdicts import FAIL, OK, SKIP, WARN, WITHIN, Finding
from backline.core.connections import AsteriskPbx, FreeswitchPbx
from backline.core.model import Directory
from backline.core.srtp_refusals import FIX
from backline.pbx.asterisk import dialplan_variables as v
from backline.pbx.asterisk.ami import AmiLink

# Call times, the 12-hour links and the import of calls the PBX took alone are compared
# across the two clocks: NTP keeps them within milliseconds, so seconds mean it is off.
CLOCK_WARN, CLOCK_FAIL = 0.5, 2.0
# The PBX's time, to the millisecond, read with a dialplan function (Asterisk's AMI says
# its start time but not the time now).
PBX_NOW = "STRFTIME(,UTC,%s.%3q)"
NTP_FIX = ("keep both machines' clocks on NTP (systemd-timesyncd or chrony; `timedatectl` "
           "says whether the clock is synchronized)")


async def clock_finding(link: AmiLink, now: Callable[[], float] = time.time) -> Finding:
    """The PBX's clock less this machine's (``now``), with the read's round trip as its
    margin: ``FAIL`` past 2 s, ``warn`` past 0.5 s."""
    before = now()
    answer = await link.action({"Action": "Getvar", "Variable": PBX_NOW}, within=WITHIN)
    after = now()
    try:
        pbx = float(str(answer.get("Value", "")))
    except ValueError:
        return Finding("clock", WARN, "the PBX did not say its time "
                       f"({answer.get('Message', 'no value')})", "check func_strftime is "
                       "loaded (`module show like strftime`)")
    offset, margin = pbx - (before + after) / 2, (after - before) / 2
    seen = (f"the PBX's clock is {abs(offset):.3f} s "
            f"{'ahead of' if offset > 0 else 'behind'} this machine's (±{margin:.3f} s)")
    if abs(offset) - margin > CLOCK_FAIL:
        return Finding("clock", FAIL, seen, NTP_FIX)
    if abs(offset) - margin > CLOCK_WARN:
        return Finding("clock", WARN, seen, NTP_FIX)
    return Finding("clock", OK, seen)


async def trunk_finding(link: AmiLink, pbx: AsteriskPbx) -> Finding:
    """With ``trunk.register``, the registration to the carrier as Asterisk holds it now
    (only each registration's ``Status`` is read: the listing also carries the password)."""
    trunk = pbx.trunk
    if not trunk.register:
        return Finding("carrier trunk", SKIP, "the carrier knows the practice by its address "
                       "(trunk.register is off): nothing to register")
    listing: Any = await link.action({"Action": "PJSIPShowRegistrationsOutbound"},
                                     as_list=True, within=WITHIN)
    states = [str(e.get("Status", "")) for e in listing
              if e.get("Event") == "OutboundRegistrationDetail"]
    where = f"{trunk.username}@{trunk.host}:{trunk.port}"
    if not states:
        return Finding("carrier trunk", FAIL, "Asterisk holds no registration to the carrier",
                       "render the PBX configuration again (`backline render`) and reload "
                       "Asterisk")
    if "Registered" in states:
        return Finding("carrier trunk", OK, f"{where}: registered")
    if "Rejected" in states:
        return Finding("carrier trunk", FAIL, f"{where}: rejected by the carrier",
                       "check connections.pbx.trunk.username and the password it names "
                       "against the carrier's account; then `pjsip send register *all` on "
                       "the Asterisk console")
    return Finding("carrier trunk", FAIL, f"{where}: {states[0].lower() or 'unknown'}",
                   "check connections.pbx.trunk.host and port and the network to the "
                   "carrier; Asterisk's log says what it answered (a registration just "
                   "started may take up to 10 s)")


async def fastagi_finding(link: AmiLink, pbx: AsteriskPbx) -> Finding:
    """Where Asterisk's dialplan sends calls (its ``BACKLINE_AGI`` global) against the config,
    then a FastAGI exchange there as Asterisk would start one: ``ok`` when the controller
    answers, ``warn`` when nothing listens (the controller is down: calls get the fail-safe
    announcement), ``FAIL`` when the address differs or something else answers."""
    answer = await link.action({"Action": "Getvar", "Variable": v.AGI_URL}, within=WITHIN)
    sent = str(answer.get("Value") or "")
    configured = f"agi://{pbx.agi.host}:{pbx.agi.port}"
    if sent != configured:
        seen = (f"Asterisk sends calls to {sent}, the config says {configured}" if sent
                else "Asterisk's dialplan names no controller (no BACKLINE_AGI global)")
        return Finding("FastAGI", FAIL, seen, "render the PBX configuration again "
                       "(`backline render`) and `dialplan reload` on the Asterisk console")
    try:
        async with asyncio.timeout(WITHIN):
            heard = await _agi_exchange(pbx.agi.host, pbx.agi.port)
    except (OSError, TimeoutError) as exc:
        why = "no answer" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        return Finding("FastAGI", WARN, f"nothing answers at {sent} ({why}): Asterisk answers "
                       "every call alone with the announcement", "start the controller "
                       "(`backline run CONFIG`, or the service), or open the network between "
                       "Asterisk and it")
    if heard != v.AGI_DOCTOR_REPLY:
        return Finding("FastAGI", FAIL, f"{sent} answered, but not as Backline's controller",
                       "another program holds that port: move it, or change "
                       "connections.pbx.agi and render again")
    return Finding("FastAGI", OK, f"{sent} answered as Backline's controller")


async def _agi_exchange(host: str, port: int) -> str:
    """The header block Asterisk sends for ``agi://HOST:PORT/doctor``, answered with
    success; the first line the server sends back (its command), or "" if none."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        url = f"agi://{host}:{port}/{v.AGI_DOCTOR}"
        writer.write(f"agi_network: yes\nagi_network_script: {v.AGI_DOCTOR}\n"
                     f"agi_request: {url}\n"
                     "agi_channel: doctor\nagi_type: doctor\n\n".encode())
        await writer.drain()
        heard = (await reader.readline()).decode("utf-8", "replace").strip()
        if heard:
            writer.write(b"200 result=0\n")
            await writer.drain()
        return heard
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def row_token_finding(pbx: FreeswitchPbx) -> Finding:
    """On FreeSWITCH: the call record's row token in connections.pbx.secrets_file, which the
    controller needs to import any row mod_cdr_csv writes (backline.pbx.freeswitch.cdr);
    FAIL naming the file and the fix when it cannot be read.  The token is never printed."""
    from backline.app.pbx_record import row_token_state

    secrets = Path(pbx.secrets_file)
    token, why = row_token_state(secrets)
    if token:
        return Finding("call record's row token", OK, f"kept in {secrets}")
    return Finding("call record's row token", FAIL, f"none to read ({why}): calls FreeSWITCH "
                   "takes while the controller is away are never imported",
                   f"`backline render CONFIG --out DIR --secrets {secrets}` (the controller "
                   "reads connections.pbx.secrets_file), then `reload mod_cdr_csv` in fs_cli")


async def encryption_finding(directory: Directory) -> list[Finding]:
    """With ``encryption: required`` on some desk phone: the phones the running controller
    heard refuse the encrypted call they were rung with (registered, yet they never ring),
    read from its ``/status.json`` (connections.status); nothing when no phone needs SRTP."""
    from backline.app.commands.doctor_relays import _get
    from backline.app.secrets import SecretMissing, read_secret

    if not any(directory.requires_srtp(p) for u in directory.users if u.active
               for p in u.desk_phones):
        return []
    check, status = "desk phones' encryption", directory.connections.status
    if status is None:
        return [Finding(check, SKIP, "no connections.status: the controller's status is not "
                        "served, so which phones refuse SRTP cannot be asked")]
    host = "127.0.0.1" if status.listen.host in ("0.0.0.0", "") else status.listen.host
    token = ""
    if status.token.env or status.token.file:
        try:
            token = read_secret(status.token, "connections.status.token")
        except SecretMissing as exc:
            return [Finding(check, SKIP, str(exc), "set the status token the config names")]
    code, body = await _get(f"http://{host}:{status.listen.port}/status.json",
                            f"Bearer {token}")
    try:
        names = json.loads(body)["desk_phones_refusing_encryption"] \
            if code == 200 and isinstance(body, bytes) else None
    except (ValueError, KeyError, TypeError):
        names = None
    if not isinstance(names, list):
        return [Finding(check, SKIP, f"the controller's status at {host}:{status.listen.port} "
                        "did not answer (it alone hears which phones refuse SRTP)",
                        "start the controller, then run doctor again")]
    if names:
        return [Finding(check, WARN, f"{', '.join(map(str, names))}: refused the encrypted "
                        "(SRTP) call they were rung with, so they do not ring", FIX)]
    return [Finding(check, OK, "no desk phone has refused the encrypted call it was rung "
                    "with since the controller started or last reloaded")]


async def voicemail_lock_finding(link: AmiLink, pbx: AsteriskPbx, directory: Directory,
                                 now: Callable[[], float] = time.time) -> Finding:
    """A voicemail folder's lock held past HELD_TOO_LONG (backline.pbx.spool_lock) is FAIL,
    naming the box and the lock to remove: app_voicemail drops every message left there,
    retention or not.  The spool is the config's ``spool_dir``, else where Asterisk says it
    is (``core show settings``, under its root when it runs in one).  Removes nothing."""
    from backline.features.voicemail.locks import lock_fix, lock_line
    from backline.localpbx.whereabouts import NotAsteriskSettings, parse_settings, root_of, under
    from backline.pbx.spool_lock import HELD_TOO_LONG, held_too_long
    from backline.pbx.voicemail_desk import VOICEMAIL_CONTEXT

    check = "voicemail folders"
    if pbx.spool_dir:
        spool = Path(pbx.spool_dir)
    else:
        answer: Any = await link.action({"Action": "Command", "Command": "core show settings"},
                                        within=WITHIN)
        output = answer.get("Output", "")
        try:
            dirs = parse_settings("\n".join(output) if isinstance(output, list) else str(output))
        except NotAsteriskSettings as exc:
            return Finding(check, SKIP, f"Asterisk did not say where its spool is ({exc})",
                           "set connections.pbx.spool_dir")
        root = await asyncio.to_thread(root_of, dirs.pid_file) or Path("/")
        spool = under(root, dirs.spool)
    if not await asyncio.to_thread(spool.is_dir):
        return Finding(check, WARN, f"Asterisk's spool is not at {spool} as seen from here: "
                       "its voicemail folders cannot be looked at", "set "
                       "connections.pbx.spool_dir to where this host sees Asterisk's spool")
    root_dir = spool / "voicemail" / VOICEMAIL_CONTEXT
    try:
        held = await asyncio.to_thread(held_too_long, root_dir, now())
    except OSError as exc:
        return Finding(check, FAIL, f"{root_dir} cannot be read ({exc.strerror or exc})",
                       "run doctor as the controller's user, or set connections.pbx.spool_dir "
                       "to where this host sees Asterisk's spool")
    if held:
        number_of = {n.voicemail_box: n.number for n in directory.numbers if n.voicemail_box}
        return Finding(check, FAIL, "; ".join(lock_line(lock, number_of.get(lock.box))
                                              for lock in held)
                       + ": app_voicemail drops every message left there after 5 s",
                       lock_fix(held, await _uptime(link)))
    return Finding(check, OK, f"none locked longer than {int(HELD_TOO_LONG)} s in {root_dir}")


async def _uptime(link: AmiLink) -> float | None:
    """How long the Asterisk at the other end has run, in seconds (``core show uptime
    seconds``); None if it did not say."""
    answer: Any = await link.action({"Action": "Command",
                                     "Command": "core show uptime seconds"}, within=WITHIN)
    output = answer.get("Output", "")
    found = re.search(r"System uptime: ([0-9]+)",
                      "\n".join(output) if isinstance(output, list) else str(output))
    return float(found.group(1)) if found else None
