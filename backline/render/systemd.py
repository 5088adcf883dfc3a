"""The systemd unit that runs Backline on a server (``backline install``): text out, nothing
written.

One unit, ``backline.service``: the controller (``backline run``), or with the local PBX the
controller and the Asterisk it runs (``backline up``).  The local Asterisk stays in the
controller's unit, not one of its own, because ``up`` renders its files and reloads them
live and adopts it after a crash; ``KillMode=process`` leaves it running when the controller
dies, so callers still hear the announcement while systemd restarts the controller, which
then adopts it (docs/operating.md, "Installing on a server").

``Type=notify``: the controller says ``READY=1`` when calls can be placed.  ``ExecReload``
is ``backline reload``, which checks the YAML first: a broken file makes ``systemctl
reload`` fail with the reason and changes nothing.  Logs go to the journal.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

UNIT_NAME = "backline.service"
DEFAULT_NOFILE = 65536  # public listeners + the PBX's links (backline.features.listeners)


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """What the unit needs: ``command`` runs backline (argv before the subcommand),
    ``config`` the absolute path of the practice YAML, ``writable`` the directories the
    controller writes (the journal, the desk-phone secrets, faxes; with ``local_pbx`` the
    Asterisk instances), ``env_file`` where the secrets' variables are set."""

    practice: str
    command: tuple[str, ...]
    config: str
    user: str
    writable: tuple[str, ...]
    env_file: str
    local_pbx: bool = False
    nofile: int = DEFAULT_NOFILE
    docs: str = ""


def controller_unit(spec: ServiceSpec) -> str:
    """``backline.service`` for ``spec``."""
    run = shlex.join([*spec.command, "up" if spec.local_pbx else "run", spec.config])
    reload = shlex.join([*spec.command, "reload", spec.config])
    # The home directories are hidden unless backline or its config lives in one.
    home = "read-only" if any(c.startswith(("/home/", "/root/"))
                              for c in (*spec.command, spec.config)) else "yes"
    lines = [
        "[Unit]",
        f"Description=Backline controller for {_one_line(spec.practice)}",
        *([f"Documentation=file://{spec.docs}"] if spec.docs else []),
        "Wants=network-online.target",
        "After=network-online.target postgresql.service",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"User={spec.user}",
        f"Group={spec.user}",
        f"EnvironmentFile=-{spec.env_file}",
        f"ExecStart={run}",
        f"ExecReload={reload}",
        "Restart=on-failure",
        "RestartSec=2",
        # `up` may wait on Asterisk's boot, and builds nothing here (install says so).
        "TimeoutStartSec=120",
        f"LimitNOFILE={spec.nofile}",
        "UMask=0077",
        "StandardOutput=journal",
        "StandardError=journal",
        "SyslogIdentifier=backline",
        "",
        "# Hardening: the controller writes only its own directories.",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        f"ProtectHome={home}",
        "PrivateTmp=yes",
        f"ReadWritePaths={' '.join(spec.writable)}",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "SystemCallArchitectures=native",
    ]
    if spec.local_pbx:
        lines += [
            "# The local Asterisk runs in its chroot (chroot needs this one capability).",
            "CapabilityBoundingSet=CAP_SYS_CHROOT",
            "AmbientCapabilities=CAP_SYS_CHROOT",
            "# A dying controller leaves Asterisk answering alone; the restart adopts it.",
            "KillMode=process",
        ]
    else:
        lines += ["CapabilityBoundingSet=", "PrivateDevices=yes", "RestrictNamespaces=yes"]
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def unit_command(unit: str, key: str) -> list[str]:
    """The argv of ``key`` (``ExecStart``, ``ExecReload``) in ``unit``'s text."""
    for line in unit.splitlines():
        if line.startswith(f"{key}="):
            return shlex.split(line.removeprefix(f"{key}="))
    raise KeyError(key)


def _one_line(text: str) -> str:
    """A name safe on one unit line (systemd expands % specifiers)."""
    return " ".join(text.split()).replace("%", "%%")
