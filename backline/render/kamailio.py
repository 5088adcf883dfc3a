"""Kamailio in front of several PBX nodes: its configuration, rendered.  Pure.

The carrier sends every call to Kamailio (Debian's ``kamailio``, 5.6), which hands each new
dialog to the next node in turn (the dispatcher module's round robin) and stays in the path
(Record-Route) for the rest of it.  A node that does not reply at all within
``answer_timeout_ms`` is marked inactive and the call goes to the next node, so a node that
died costs the caller a short delay, not the call; one that answers 500/503 has the call
re-sent to the next node but stays in service.  A call still ringing when the INVITE timer
runs out (a reply came, so the node is alive) is not re-sent and marks nothing down.
Inactive nodes are probed with OPTIONS every ``probe_seconds`` and come back when they answer.

Without a registrar, REGISTERs are refused here: a desk phone registers with its own node,
and a call reaches only the phones registered with the node it was dispatched to.  Initial
INVITEs from anyone but the carrier are refused too: the nodes recognise the carrier by
Kamailio's address.

With a ``Registrar`` Kamailio is the desk phones' registrar for every node (see
backline/render/kamailio_registrar.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from backline.core.connections import HostPort
from backline.render.asterisk import RenderedFile
from backline.render.kamailio_registrar import (
    LOCATION_CHANNEL,
    LOCATION_SQL,
    REACH_PHONE_IN_DIALOG,
    REALM,
    Registrar,
    RegistrarTls,
    location_db_url,
    registrar_modules,
    registrar_phones,
    registrar_routes,
    registrar_tls_module,
    subscriber_table,
)

__all__ = [
    "DISPATCHER_SET",
    "LOCATION_CHANNEL",
    "LOCATION_SQL",
    "REALM",
    "Node",
    "Registrar",
    "RegistrarTls",
    "dispatcher_list",
    "kamailio_cfg",
    "location_db_url",
    "parse_host_port",
    "parse_node",
    "render_kamailio",
    "subscriber_table",
]

_NODE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")  # an Asterisk systemname too
_HOST = re.compile(r"[A-Za-z0-9.:-]+")
DISPATCHER_SET = 1


@dataclass(frozen=True, slots=True)
class Node:
    """One PBX node: its name (as attempts record it) and its SIP address."""

    name: str
    sip: HostPort

    def __post_init__(self) -> None:
        if not _NODE_NAME.fullmatch(self.name):
            raise ValueError(f"node name {self.name!r}: lower-case letters, digits and -")
        if not _HOST.fullmatch(self.sip.host):
            raise ValueError(f"node {self.name}: {self.sip.host!r} is not a host name or address")
        if not 0 < self.sip.port < 65536:
            raise ValueError(f"node {self.name}: port {self.sip.port} out of range")


def dispatcher_list(nodes: Sequence[Node]) -> str:
    """dispatcher.list: one line per node, all in one set."""
    if not nodes:
        raise ValueError("at least one PBX node (--node NAME=HOST:PORT)")
    if len({n.name for n in nodes}) != len(nodes):
        raise ValueError("node names must differ")
    lines = ["# Rendered by Backline (backline/render/kamailio.py): setid destination flags "
             "priority attributes"]
    lines += [f"{DISPATCHER_SET} sip:{n.sip.host}:{n.sip.port} 0 0 duid={n.name}"
              for n in nodes]
    return "\n".join(lines) + "\n"


def kamailio_cfg(listen: HostPort, list_file: str, module_dir: str, *, carrier: str,
                 answer_timeout_ms: int = 1500, ring_timeout_ms: int = 120_000,
                 probe_seconds: int = 2, registrar: Registrar | None = None) -> str:
    """kamailio.cfg: stateless checks, then the dispatcher with fail-over.  Only ``carrier``
    (the trunk's host) may start a call: the nodes recognise the carrier by Kamailio's
    address, so Kamailio must not relay anyone else's INVITE; with a ``registrar``, a
    registered login's desk phone and the nodes (towards a desk phone) may too."""
    if not _HOST.fullmatch(carrier):
        raise ValueError(f"carrier {carrier!r} is not a host name or address")
    listen_tls = tls_module = in_dialog = ""
    if registrar is None:
        modules = ""
        register = """    if (is_method("REGISTER")) {
        sl_send_reply("403", "Register with your own PBX node");
        exit;
    }"""
        phones = ""
        routes = ""
    else:
        modules = registrar_modules(registrar)
        register = """    if (is_method("REGISTER")) {
        route(REGISTRAR);
        exit;
    }"""
        phones = registrar_phones(DISPATCHER_SET)
        routes = registrar_routes(registrar)
        in_dialog = REACH_PHONE_IN_DIALOG
        if registrar.tls is not None:
            listen_tls = f"enable_tls=yes\nlisten=tls:{listen.host}:{registrar.tls.port}\n"
            tls_module = registrar_tls_module(registrar)
    return f"""#!KAMAILIO
# Rendered by Backline (backline/render/kamailio.py).  Calls are spread over the PBX nodes in
# {list_file}; see that module for why each line is here.
debug=2
log_stderror=yes
memdbg=5
memlog=5
children=4
listen=udp:{listen.host}:{listen.port}
listen=tcp:{listen.host}:{listen.port}
{listen_tls}auto_aliases=no
alias="{listen.host}:{listen.port}"

mpath="{module_dir}"
{tls_module}loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "dispatcher.so"
{modules}
modparam("tm", "fr_timer", {answer_timeout_ms})
modparam("tm", "fr_inv_timer", {ring_timeout_ms})
modparam("rr", "enable_full_lr", 1)
modparam("dispatcher", "list_file", "{list_file}")
modparam("dispatcher", "flags", 2)
modparam("dispatcher", "ds_ping_method", "OPTIONS")
modparam("dispatcher", "ds_ping_interval", {probe_seconds})
modparam("dispatcher", "ds_probing_mode", 0)
modparam("dispatcher", "ds_probing_threshold", 1)
modparam("dispatcher", "ds_inactive_threshold", 1)
modparam("dispatcher", "ds_ping_reply_codes", "class=2;code=404;code=405")

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (!sanity_check("17895", "7")) {{
        exit;
    }}
    # Within a dialog: follow the Route set we recorded.
    if (has_totag()) {{
        if (loose_route()) {{
{in_dialog}            t_relay();
            exit;
        }}
        if (is_method("ACK")) {{
            if (t_check_trans()) {{
                t_relay();
            }}
            exit;
        }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (t_check_trans()) {{
        exit;  # a retransmission: tm answers it
    }}
    if (is_method("OPTIONS") && uri == myself) {{
        sl_send_reply("200", "OK");
        exit;
    }}
{register}
{phones}    # The nodes take every INVITE from here as the carrier's: relay only the carrier's.
    if (is_method("INVITE") && !(src_ip == {carrier})) {{
        sl_send_reply("403", "Calls come from the carrier only");
        exit;
    }}
    remove_hf("Route");
    record_route();
    # Round robin over the set; the other nodes are kept for fail-over.
    if (!ds_select_dst("{DISPATCHER_SET}", "4")) {{
        sl_send_reply("503", "No PBX node available");
        exit;
    }}
    t_on_failure("NEXT_NODE");
    if (!t_relay()) {{
        sl_reply_error();
    }}
    exit;
}}

failure_route[NEXT_NODE] {{
    if (t_is_canceled()) {{
        exit;
    }}
    # A node that refused (500/503) or never replied at all is tried no further; a branch
    # that timed out after a provisional reply was a call still ringing: it stays failed,
    # and the node stays in service.
    if (t_check_status("500|503") || (t_branch_timeout() && !t_branch_replied())) {{
        if (t_branch_timeout() && !t_branch_replied()) {{
            ds_mark_dst("ip");  # silent: inactive, probed until it answers again
        }}
        if (ds_next_dst()) {{
            t_on_failure("NEXT_NODE");
            t_relay();
            exit;
        }}
    }}
}}
{routes}"""


def render_kamailio(listen: HostPort, nodes: Sequence[Node], config_dir: str,
                    module_dir: str = "/usr/lib/x86_64-linux-gnu/kamailio/modules", *,
                    carrier: str, ring_timeout_ms: int = 120_000,
                    registrar: Registrar | None = None,
                    logins: Mapping[str, str] | None = None,
                    secrets: Mapping[str, str] | None = None) -> list[RenderedFile]:
    """kamailio.cfg and dispatcher.list, to be written into ``config_dir``; with a
    ``registrar`` also its db_text ``subscriber`` and ``version`` tables (in
    ``registrar.auth_dir``; ``logins``: desk phone -> login, ``secrets``: desk phone ->
    secret) and ``location.sql``, the tables to create in the shared database."""
    list_file = f"{config_dir.rstrip('/')}/dispatcher.list"
    files = [RenderedFile("kamailio.cfg", kamailio_cfg(listen, list_file, module_dir,
                                                       carrier=carrier,
                                                       ring_timeout_ms=ring_timeout_ms,
                                                       registrar=registrar)),
             RenderedFile("dispatcher.list", dispatcher_list(nodes))]
    if registrar is not None:
        files += [RenderedFile("subscriber", subscriber_table(logins or {}, secrets or {}),
                               private=True),
                  RenderedFile("version", "table_name(str) table_version(int)\n"
                                          "subscriber:7\n"),
                  RenderedFile("location.sql", LOCATION_SQL)]
    return files


def parse_host_port(text: str, what: str) -> HostPort:
    """``HOST:PORT`` from the command line."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{what}: expected HOST:PORT, got {text!r}")
    return HostPort(host, int(port))


def parse_node(text: str) -> Node:
    """``NAME=HOST:PORT`` from the command line."""
    name, sep, address = text.partition("=")
    if not sep:
        raise ValueError(f"--node: expected NAME=HOST:PORT, got {text!r}")
    return Node(name, parse_host_port(address, f"--node {name}"))
