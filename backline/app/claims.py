"""One controller per config: before anything starts, the addresses it will listen on are
checked, and one already taken is reported with who holds it (backline/app/serve.py)."""

from __future__ import annotations

from pathlib import Path

from backline.core.connections import FreeswitchPbx, HostPort
from backline.core.model import Directory


class AlreadyRunning(Exception):
    """An address the controller listens on is taken, most likely by a controller already
    running on this config; nothing was started."""


def controller_addresses(directory: Directory) -> list[tuple[str, HostPort]]:
    """What the controller will listen on (TCP), each with its name for ops."""
    c = directory.connections
    out: list[tuple[str, HostPort]] = []
    if isinstance(c.pbx, FreeswitchPbx):
        out.append(("FreeSWITCH call socket", c.pbx.socket))
    elif c.pbx is not None:
        out.append(("FastAGI", c.pbx.agi))
    if c.pages is not None:
        out.append(("pages", c.pages.listen))
    if c.status is not None:
        out.append(("status", c.status.listen))
    if c.email_intake is not None:
        out.append(("email intake", c.email_intake.listen))
    return [(name, at) for name, at in out if at.port]


def claim_addresses(directory: Directory) -> None:
    """Raise AlreadyRunning, naming who holds it, if any address the controller listens on
    is taken; called before anything starts.

    A second controller on the same config used to start its journal and alert tasks, then
    die binding FastAGI: the kernel's table of sockets says who holds the port (with its
    command line, which names the config), so ops learn which controller to stop.
    """
    import errno
    import socket

    from backline.localpbx.whereabouts import port_holders

    for name, at in controller_addresses(directory):
        try:
            infos = socket.getaddrinfo(at.host, at.port, type=socket.SOCK_STREAM)
        except OSError:
            continue  # the real bind reports an unresolvable host in its own words
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            # As asyncio's servers bind: a port left in TIME_WAIT by a stopped controller
            # is free for it, so it must not be reported as taken here.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    continue
                held = port_holders(at.port, "tcp")
                raise AlreadyRunning(
                    f"the {name} address {at} is already in use"
                    + (" by " + ", ".join(f"pid {pid} ({_command_line(pid) or comm})"
                                          for pid, comm in sorted(held.items()))
                       if held else "")
                    + ": a controller is most likely already running on this config "
                    "(stop it first, or apply a change to it with `backline reload CONFIG`); "
                    "nothing was started") from None


def _command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return " ".join(part.decode("utf-8", "replace") for part in raw.split(b"\0") if part)[:300]
