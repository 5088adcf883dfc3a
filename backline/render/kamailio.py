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

With a ``Registrar`` Kamailio is the desk phones' registrar for every node.  The registrations
live in the ``location`` table of the shared PostgreSQL (usrloc ``db_mode`` 3: no cache, every
Kamailio reads and writes the table, so a restarted or second Kamailio holds them all, and no
node holds any).  A desk phone authenticates with the credentials Backline renders for
Asterisk: the same secrets, as HA1 digests in a db_text ``subscriber`` table written with the
render (0600), so no secret is stored in the shared database and each Kamailio needs only its
render.  A login holds at most ``max_per_login`` registrations: a new one past that removes the
one that expires soonest (Asterisk's rule; Kamailio's own limit would refuse the new one).  The
controllers read the same table for their ring set (a trigger NOTIFYs them of each change), and
a node reaches each contact through Kamailio (the desk-phone endpoints' outbound proxy).  A
desk phone's own INVITE goes to a node chosen by its Call-ID, so the node's digest challenge
and the phone's answer meet on one node.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from backline.core.connections import HostPort
from backline.render.asterisk import RenderedFile

_NODE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")  # an Asterisk systemname too
_HOST = re.compile(r"[A-Za-z0-9.:-]+")
DISPATCHER_SET = 1
REALM = "backline"  # the digest realm of desk-phone registrations (in every HA1)
LOCATION_CHANNEL = "backline_location"  # NOTIFY channel: the location table changed


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


@dataclass(frozen=True, slots=True)
class Registrar:
    """Kamailio as the registrar: where the location table is (a Kamailio db_url, no
    password: libpq reads it from PGPASSFILE), where the rendered ``subscriber`` table is,
    and the login limit (``devices.max_per_login``)."""

    location_db: str
    auth_dir: str
    max_per_login: int

    def __post_init__(self) -> None:
        if not re.fullmatch(r"postgres://[A-Za-z0-9_.-]+@[A-Za-z0-9.:-]+/[A-Za-z0-9_]+",
                            self.location_db):
            raise ValueError(f"{self.location_db!r}: expected postgres://USER@HOST:PORT/DB")
        if not 1 <= self.max_per_login <= 99:
            raise ValueError(f"max_per_login {self.max_per_login} out of range")


def location_db_url(storage_url: str) -> str:
    """Kamailio's db_url for the journal's PostgreSQL database (``postgresql://USER@HOST:PORT/DB``
    without options: Kamailio's URL takes none)."""
    m = re.fullmatch(r"postgres(?:ql)?://([A-Za-z0-9_.-]+)@([A-Za-z0-9.-]+)(:\d+)?/"
                     r"([A-Za-z0-9_]+)", storage_url)
    if m is None:
        raise ValueError("the registrar's location table needs a storage URL of the form "
                         "postgresql://USER@HOST:PORT/DB")
    user, host, port, db = m.groups()
    return f"postgres://{user}@{host}{port or ':5432'}/{db}"


def subscriber_table(logins: Mapping[str, str], secrets: Mapping[str, str]) -> str:
    """The db_text ``subscriber`` table: one row per desk phone (its digest user), its HA1
    in ``REALM`` and the login it may register (``logins``: desk phone -> login)."""
    rows = ["id(int,auto) username(str) domain(str,null) password(str,null) ha1(str) "
            "ha1b(str,null) login(str)"]
    for i, (phone, login) in enumerate(sorted(logins.items()), start=1):
        if not _NODE_NAME.fullmatch(phone.lower()) or ":" in login:
            raise ValueError(f"desk phone {phone!r} cannot be a digest user")
        ha1 = hashlib.md5(f"{phone}:{REALM}:{secrets[phone]}".encode()).hexdigest()
        rows.append(f"{i}:{phone}:::{ha1}::{login}")
    return "\n".join(rows) + "\n"


# The tables Kamailio's registrar needs in the shared database (Debian's
# /usr/share/kamailio/postgres/usrloc-create.sql, version 9), and the trigger that tells the
# controllers (LISTEN backline_location) that the registrations changed.
LOCATION_SQL = f"""\
CREATE TABLE IF NOT EXISTS version (
    id SERIAL PRIMARY KEY NOT NULL,
    table_name VARCHAR(32) NOT NULL,
    table_version INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT version_table_name_idx UNIQUE (table_name));
CREATE TABLE IF NOT EXISTS location (
    id SERIAL PRIMARY KEY NOT NULL,
    ruid VARCHAR(64) DEFAULT '' NOT NULL,
    username VARCHAR(64) DEFAULT '' NOT NULL,
    domain VARCHAR(64) DEFAULT NULL,
    contact VARCHAR(512) DEFAULT '' NOT NULL,
    received VARCHAR(128) DEFAULT NULL,
    path VARCHAR(512) DEFAULT NULL,
    expires TIMESTAMP WITHOUT TIME ZONE DEFAULT '2030-05-28 21:32:15' NOT NULL,
    q REAL DEFAULT 1.0 NOT NULL,
    callid VARCHAR(255) DEFAULT 'Default-Call-ID' NOT NULL,
    cseq INTEGER DEFAULT 1 NOT NULL,
    last_modified TIMESTAMP WITHOUT TIME ZONE DEFAULT '2000-01-01 00:00:01' NOT NULL,
    flags INTEGER DEFAULT 0 NOT NULL,
    cflags INTEGER DEFAULT 0 NOT NULL,
    user_agent VARCHAR(255) DEFAULT '' NOT NULL,
    socket VARCHAR(64) DEFAULT NULL,
    methods INTEGER DEFAULT NULL,
    instance VARCHAR(255) DEFAULT NULL,
    reg_id INTEGER DEFAULT 0 NOT NULL,
    server_id INTEGER DEFAULT 0 NOT NULL,
    connection_id INTEGER DEFAULT 0 NOT NULL,
    keepalive INTEGER DEFAULT 0 NOT NULL,
    partition INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT location_ruid_idx UNIQUE (ruid));
CREATE INDEX IF NOT EXISTS location_account_contact_idx ON location (username, domain, contact);
CREATE INDEX IF NOT EXISTS location_expires_idx ON location (expires);
CREATE TABLE IF NOT EXISTS location_attrs (
    id SERIAL PRIMARY KEY NOT NULL,
    ruid VARCHAR(64) DEFAULT '' NOT NULL,
    username VARCHAR(64) DEFAULT '' NOT NULL,
    domain VARCHAR(64) DEFAULT NULL,
    aname VARCHAR(64) DEFAULT '' NOT NULL,
    atype INTEGER DEFAULT 0 NOT NULL,
    avalue VARCHAR(512) DEFAULT '' NOT NULL,
    last_modified TIMESTAMP WITHOUT TIME ZONE DEFAULT '2000-01-01 00:00:01' NOT NULL);
CREATE INDEX IF NOT EXISTS location_attrs_account_record_idx
    ON location_attrs (username, domain, ruid);
INSERT INTO version (table_name, table_version) VALUES ('location', 9), ('location_attrs', 1)
    ON CONFLICT (table_name) DO NOTHING;
CREATE OR REPLACE FUNCTION backline_location_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('{LOCATION_CHANNEL}', '');
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE OR REPLACE TRIGGER backline_location_changed
    AFTER INSERT OR UPDATE OR DELETE ON location
    FOR EACH STATEMENT EXECUTE FUNCTION backline_location_changed();
CREATE OR REPLACE TRIGGER backline_location_attrs_changed
    AFTER INSERT OR UPDATE OR DELETE ON location_attrs
    FOR EACH STATEMENT EXECUTE FUNCTION backline_location_changed();
"""


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
    if registrar is None:
        modules = ""
        register = """    if (is_method("REGISTER")) {
        sl_send_reply("403", "Register with your own PBX node");
        exit;
    }"""
        phones = ""
        routes = ""
    else:
        modules = _registrar_modules(registrar)
        register = """    if (is_method("REGISTER")) {
        route(REGISTRAR);
        exit;
    }"""
        phones = f"""    # A node calling a desk phone: its Request-URI is a contact the controller
    # took from the location table; relay it there and stay in the path.
    if (is_method("INVITE") && ds_is_from_list("{DISPATCHER_SET}", "2")) {{
        remove_hf("Route");
        record_route();
        if (!t_relay()) {{
            sl_reply_error();
        }}
        exit;
    }}
    # A registered login's desk phone placing a call: to a node picked by the Call-ID, so
    # that the node's challenge and the phone's answer meet on the same node.
    if (is_method("INVITE") && registered("location", "$fu")) {{
        remove_hf("Route");
        record_route();
        if (!ds_select_dst("{DISPATCHER_SET}", "0")) {{
            sl_send_reply("503", "No PBX node available");
            exit;
        }}
        t_on_failure("NEXT_NODE");
        if (!t_relay()) {{
            sl_reply_error();
        }}
        exit;
    }}
"""
        routes = _registrar_routes(registrar)
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
auto_aliases=no
alias="{listen.host}:{listen.port}"

mpath="{module_dir}"
loadmodule "kex.so"
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
            t_relay();
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


def _registrar_modules(r: Registrar) -> str:
    return f"""loadmodule "db_postgres.so"
loadmodule "db_text.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
loadmodule "auth_db.so"

# Registrations only in the shared database (no cache): every Kamailio, restarted or not,
# sees every registration, and the controllers read the same rows.
modparam("usrloc", "db_url", "{r.location_db}")
modparam("usrloc", "db_mode", 3)
modparam("usrloc", "use_domain", 0)
# The desk phone (digest user) that made each contact, kept in location_attrs.
modparam("usrloc", "xavp_contact", "ulattrs")
modparam("registrar", "max_contacts", {r.max_per_login})
modparam("registrar", "min_expires", 1)
# The desk phones' HA1 digests, rendered with pjsip.conf's secrets (never in the database).
modparam("auth_db", "db_url", "text://{r.auth_dir}")
modparam("auth_db", "calculate_ha1", 0)
modparam("auth_db", "password_column", "ha1")
modparam("auth_db", "use_domain", 0)
modparam("auth_db", "load_credentials", "$avp(login)=login")
"""


def _registrar_routes(r: Registrar) -> str:
    return f"""
route[REGISTRAR] {{
    if (!www_authorize("{REALM}", "subscriber")) {{
        www_challenge("{REALM}", "0");
        exit;
    }}
    # The digest user is a desk phone; it registers its own login (To) only.
    if ($avp(login) != $tU) {{
        sl_send_reply("403", "Not this desk phone's login");
        exit;
    }}
    consume_credentials();
    $xavp(ulattrs=>phone) = $au;
    route(OLDEST_OUT);
    if (!save("location")) {{
        sl_reply_error();
    }}
    exit;
}}

# A new contact past the login's limit: remove the one that expires soonest first (a
# refresh or a removal changes nothing here).
route[OLDEST_OUT] {{
    if ($hdr(Expires) == "0" || $(ct{{tobody.params}}) =~ "expires=0") {{
        return;
    }}
    if (!reg_fetch_contacts("location", "$tu", "held")) {{
        return;
    }}
    $var(contact) = $(ct{{tobody.uri}});
    $var(i) = 0;
    $var(oldest) = 0;
    while ($var(i) < $ulc(held=>count)) {{
        if ($(ulc(held=>addr)[$var(i)]) == $var(contact)) {{
            reg_free_contacts("held");
            return;
        }}
        if ($(ulc(held=>expires)[$var(i)]) < $(ulc(held=>expires)[$var(oldest)])) {{
            $var(oldest) = $var(i);
        }}
        $var(i) = $var(i) + 1;
    }}
    if ($ulc(held=>count) >= {r.max_per_login}) {{
        unregister("location", "$tu", "$(ulc(held=>ruid)[$var(oldest)])");
    }}
    reg_free_contacts("held");
}}
"""


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
