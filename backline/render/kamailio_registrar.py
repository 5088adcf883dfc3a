"""Kamailio as the desk phones' registrar: its modules, routes and tables, rendered.  Pure.

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

With ``connections.pbx.tls`` the registrar listens for SIP over TLS too (Debian's
``kamailio-tls-modules``: ``tls.so``), with the practice's certificate, or one the practice
CA signs for Kamailio's address, so desk phones keep TLS behind several nodes.  A phone on
TCP or TLS is reached over the connection it opened (a phone accepts none: it has no server
certificate), whose source port is not the one its Contact names: Kamailio adds the
connection to each Contact it takes from such a phone (nathelper's ``set_contact_alias``,
``;alias=IP~PORT~PROTO``), and a request to such a Contact is sent over that connection
(``handle_ruri_alias``), from a node's INVITE to the dialog's ACK and BYE.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

_DIGEST_USER = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")  # a desk phone, as a node name
REALM = "backline"  # the digest realm of desk-phone registrations (in every HA1)
LOCATION_CHANNEL = "backline_location"  # NOTIFY channel: the location table changed


@dataclass(frozen=True, slots=True)
class RegistrarTls:
    """The registrar's SIP-over-TLS listener: its port on Kamailio's address, and the
    certificate and key it serves (files Kamailio can read)."""

    port: int
    certificate: str
    key: str

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"TLS port {self.port} out of range")
        for path in (self.certificate, self.key):
            if not re.fullmatch(r"/[A-Za-z0-9_./-]+", path):
                raise ValueError(f"{path!r}: Kamailio's TLS files need a plain absolute path")


@dataclass(frozen=True, slots=True)
class Registrar:
    """Kamailio as the registrar: where the location table is (a Kamailio db_url, no
    password: libpq reads it from PGPASSFILE), where the rendered ``subscriber`` table is,
    and the login limit (``devices.max_per_login``)."""

    location_db: str
    auth_dir: str
    max_per_login: int
    tls: RegistrarTls | None = None

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
        if not _DIGEST_USER.fullmatch(phone.lower()) or ":" in login:
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



# Within a dialog, a request towards a desk phone on TCP or TLS: over its connection.
REACH_PHONE_IN_DIALOG = """\
            if ($du == "") {
                handle_ruri_alias();
            }
"""


def registrar_phones(dispatcher_set: int) -> str:
    """The main route's lines for calls to and from registered desk phones."""
    return f"""    # A node calling a desk phone: its Request-URI is a contact the controller
    # took from the location table (over TCP or TLS: with the connection's alias); relay
    # it there and stay in the path.
    if (is_method("INVITE") && ds_is_from_list("{dispatcher_set}", "2")) {{
        remove_hf("Route");
        record_route();
        if (handle_ruri_alias() < 0) {{
            sl_send_reply("400", "Bad alias");
            exit;
        }}
        t_on_reply("PHONE_ANSWER");
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
        if (!(proto == UDP)) {{
            set_contact_alias();  # the node's BYE comes back over this connection
        }}
        if (!ds_select_dst("{dispatcher_set}", "0")) {{
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


def registrar_tls_module(r: Registrar) -> str:
    """tls.so and its settings, for the top of kamailio.cfg: it must be loaded before any
    module that uses libssl (db_postgres, through libpq: Debian's README.tls.gz, section
    1).  TLS 1.2 or newer, as Asterisk's transport; phones present no certificate."""
    if r.tls is None:
        return ""
    return f"""loadmodule "tls.so"
modparam("tls", "tls_method", "TLSv1.2+")
modparam("tls", "certificate", "{r.tls.certificate}")
modparam("tls", "private_key", "{r.tls.key}")
modparam("tls", "verify_certificate", 0)
modparam("tls", "require_certificate", 0)
"""


def registrar_modules(r: Registrar) -> str:
    return f"""loadmodule "db_postgres.so"
loadmodule "db_text.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
loadmodule "nathelper.so"

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


def registrar_routes(r: Registrar) -> str:
    return f"""
# A desk phone on TCP or TLS answering: its Contact names its connection, for the ACK and
# BYE the node sends within the dialog.
onreply_route[PHONE_ANSWER] {{
    if (!(proto == UDP) && is_present_hf("Contact")) {{
        set_contact_alias();
    }}
}}

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
    if (!(proto == UDP)) {{
        set_contact_alias(1);  # reached over this connection (see the module docstring)
    }}
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
    if (!(proto == UDP)) {{  # as saved: with the connection's alias
        $var(contact) = $var(contact) + ";alias=" + $si + "~" + $sp + "~" + $prid;
    }}
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
