"""pjsip.conf, its secrets and geolocation.conf rendered from the practice directory: pure,
config in, text out.  Desk phones, the carrier trunk (and its 911 twin that carries the
caller's location), each desk phone's emergency callback number.

What is written (desk-phone names, numbers, caller-ID names, addresses) was validated by the
config loader; the secrets go only into pjsip_auth.conf, which is written 0600.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from backline.core.connections import AsteriskPbx
from backline.core.emergency import emergency_callers
from backline.core.model import Directory, Location
from backline.pbx.asterisk import dialplan_variables as v
from backline.render.asterisk_srtp import (
    SECURE_DESK_CONTEXT,
    carrier_media,
    clear_emergency,
    desk_phone_media,
    srtp_twin,
)


def carrier_endpoint(pbx: AsteriskPbx) -> str:
    """The carrier's endpoint name: its From user when it is recognised by that."""
    return pbx.trunk.from_user or "carrier"


def emergency_endpoint(pbx: AsteriskPbx) -> str:
    """Where 911 calls go out: the carrier, or with ``trunk.geolocation`` an outbound-only
    twin of it that sends the caller's location, so that no other call ever carries it."""
    carrier = carrier_endpoint(pbx)
    return f"{carrier}-911" if pbx.trunk.geolocation else carrier


def location_profile(location: Location) -> str:
    return f"backline-at-{location.id}"


def location_site(location: Location) -> str:
    return f"backline-site-{location.id}"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The TLS transport's certificate and key, at the paths Asterisk reads them."""

    certificate: str
    key: str
    carrier_ca: str = ""  # with trunk.tls: what verifies the carrier's certificate


# Debian's bundle of the CAs it trusts (ca-certificates): the carrier's default.
SYSTEM_CAS = "/etc/ssl/certs/ca-certificates.crt"


PRACTICE_CA_CERT, SERVER_CERT, SERVER_KEY = "ca.pem", "server.pem", "server.key"


def desk_context(d: Directory, desk_phone: str) -> str:
    """Where a desk phone's calls enter the dialplan."""
    return SECURE_DESK_CONTEXT if d.requires_srtp(desk_phone) else v.DESK_CONTEXT


def tls_files(pbx: AsteriskPbx) -> TlsFiles | None:
    """Where the config puts the certificate and key (``tls.practice_ca``: the server
    certificate ``backline render`` makes there)."""
    tls = pbx.tls
    if tls is None:
        return None
    carrier_ca = (pbx.trunk.ca_file or SYSTEM_CAS) if pbx.trunk.tls else ""
    if tls.practice_ca:
        return TlsFiles(f"{tls.practice_ca}/{SERVER_CERT}", f"{tls.practice_ca}/{SERVER_KEY}",
                        carrier_ca)
    return TlsFiles(tls.certificate_file, tls.key_file, carrier_ca)


def pjsip_conf(d: Directory, pbx: AsteriskPbx, proxy: str = "",
               tls: TlsFiles | None = None) -> str:
    """pjsip.conf; ``proxy`` is Kamailio's address when one sits in front of the nodes: every
    carrier INVITE then arrives from it, so it identifies the carrier too (Kamailio itself
    refuses INVITEs that did not come from the carrier).  ``tls``: the certificate and key
    where Asterisk reads them, when not where the config names them (a chroot's copies)."""
    tls = tls or tls_files(pbx)
    trunk = pbx.trunk
    carrier = carrier_endpoint(pbx)
    registrar = pbx.registrar
    if registrar is not None and not proxy:
        proxy = registrar.host  # the carrier's calls come through the registrar's Kamailio
    # Behind Kamailio as the registrar a desk phone is reached through it (the phone's
    # registration, NAT pinhole and firewall are with Kamailio, not with this node).
    via_registrar = ([f"outbound_proxy=sip:{registrar.host}:{registrar.port}\\;lr"]
                     if registrar is not None else [])
    out = [
        "; Rendered by `backline render`: edit the practice YAML, not this file.",
        "[global]",
        "type=global",
        "user_agent=Backline PBX",
        # Credentials before names, names before addresses.  A desk phone's first request
        # carries no credentials and its From names its login: the login's gate endpoint
        # (below) is found by that name and challenges; the answer names the desk phone,
        # found by its digest user before the login's name or the carrier's address is
        # tried.  Were the address tried while nothing else matched, a desk phone on the
        # carrier's address (one host, all on loopback) would be taken for the carrier.
        "endpoint_identifier_order=auth_username,username,ip",
        "",
        "[transport-udp]",
        "type=transport",
        "protocol=udp",
        f"bind={pbx.sip.host}:{pbx.sip.port}",
        *_nat(pbx),
        "",
        *_address_rules(pbx, proxy),
        *_tls_transport(pbx, tls),
        "; Desk phones: one endpoint and auth per phone, one AOR per login (user), so that a",
        "; login holds at most devices.max_per_login registrations and the oldest is dropped.",
        "[desk-phone](!)",
        "type=endpoint",
        f"context={v.DESK_CONTEXT}",
        "disallow=all",
        "allow=ulaw,alaw",
        "direct_media=no",
        "rtp_symmetric=yes",
        "force_rport=yes",
        # RTP on the SIP address, not the wildcard: on 0.0.0.0 Asterisk resolves its own host
        # name (and then a root server) for every call's RTCP, off the machine, and a lost
        # query stalls the PJSIP thread for the resolver's timeout.
        f"media_address={pbx.sip.host}",
        "bind_rtp_to_media_address=yes",
        # Desk phones are on the practice LAN: their Contact is true.  Over TLS it names
        # where the phone listens, not the connection it opened (a phone accepts none of
        # its own): its calls go down that connection, so the Contact is rewritten to it.
        # Behind a NAT of their own (desk_phones_behind_nat) it names a private address:
        # the phone is reached where its REGISTER came from.
        f"rewrite_contact={'yes' if tls or pbx.desk_phones_behind_nat else 'no'}",
        "identify_by=username,auth_username",
        "send_pai=yes",
        *via_registrar,
        *_only_from(pbx.lan),
        "",
        "[login](!)",
        "type=aor",
        f"max_contacts={d.max_per_login}",
        "remove_existing=yes",
        "qualify_frequency=0",
        "",
        "; The carrier trunk: inbound calls from it go to the controller; outbound calls go",
        "; to it with the practice number's caller ID (From and P-Asserted-Identity).",
        f"[{carrier}]",
        "type=endpoint",
        f"context={v.CARRIER_CONTEXT}",
        "disallow=all",
        "allow=ulaw,alaw",
        "direct_media=no",
        "rtp_symmetric=yes",
        f"aors={carrier}",
        "send_pai=yes",
        "trust_id_outbound=yes",
        "trust_id_inbound=no",
        f"media_address={pbx.sip.host}",
        "bind_rtp_to_media_address=yes",
        "t38_udptl=yes",
        "t38_udptl_ec=redundancy",
        "t38_udptl_maxdatagram=400",
        "t38_bind_udptl_to_media_address=yes",  # UDPTL on the SIP address too
        # A fax machine calling a number taken as voice is heard by its calling tone (CNG,
        # which SendFax and fax machines send from the start) and sent to the `fax`
        # extension of the voice contexts; after 30 s of a call nobody listens any more.
        "fax_detect=yes",
        "fax_detect_timeout=30",
        f"identify_by={'username' if trunk.from_user else 'ip'}",
        # The account's credentials answer the carrier's challenge to our INVITEs.
        *([f"outbound_auth={carrier}-auth"] if trunk.username else []),
        *(_only_from(_carrier_sources(pbx, proxy)) if pbx.lan else []),
        *_carrier_transport(pbx),
        *carrier_media(pbx),
        "",
        f"[{carrier}]",
        "type=aor",
        f"contact={carrier_uri(pbx)}",
        "",
    ]
    if trunk.register:
        out += _registration(pbx, carrier)
    if trunk.geolocation:
        out += ["; 911 only: the carrier again, outbound, with the location the desk phone's",
                "; profile put on the call (PIDF-LO by value).  identify_by=ip and no identify",
                "; section: no inbound call is ever matched to it.",
                f"[{emergency_endpoint(pbx)}]", "type=endpoint", f"context={v.CARRIER_CONTEXT}",
                "disallow=all", "allow=ulaw,alaw", "direct_media=no", "rtp_symmetric=yes",
                f"aors={carrier}", "send_pai=yes", "trust_id_outbound=yes",
                "trust_id_inbound=no", f"media_address={pbx.sip.host}",
                "bind_rtp_to_media_address=yes", "identify_by=ip",
                "geoloc_outgoing_call_profile=<prefer_incoming>", *_carrier_transport(pbx),
                # The account's credentials, as the trunk's: a carrier that challenges our
                # INVITEs would otherwise refuse every 911 call sent with its location.
                *([f"outbound_auth={carrier}-auth"] if trunk.username else []),
                *carrier_media(pbx), ""]
    out += clear_emergency(pbx, carrier, _carrier_transport(pbx))
    if not trunk.from_user:
        out += [f"[{carrier}-identify]", "type=identify", f"endpoint={carrier}",
                f"match={','.join(_carrier_sources(pbx, proxy))}", ""]
    # What each desk phone presents on a 911 call (validated by the loader: E.164, and a
    # caller-ID name of plain characters), set on its channel by the endpoint itself.
    emergency = {c.desk_phone: c for c in emergency_callers(d)}
    for user in d.users:
        if not user.active:
            continue  # a deactivated user's phones are not provisioned at all
        out += [f"[{user.id}](login)", ""]
        for phone in user.desk_phones:
            out += [f"[{phone}](desk-phone)", f"aors={user.id}", f"auth={phone}-auth",
                    f"callerid={user.name.replace(chr(34), '')[:40]} <{user.extension}>"
                    if user.extension else f"callerid={phone}"]
            caller = emergency.get(phone)
            if caller is not None:
                out += [f"set_var={v.EMERGENCY_CALLBACK}={caller.callback}",
                        f"set_var={v.EMERGENCY_NAME}={caller.caller_id_name}"]
                if trunk.geolocation and caller.location is not None:
                    # Rendered for every location below: a profile name that does not exist
                    # would keep the endpoint from loading at all (no 911 from that phone).
                    out.append(f"geoloc_incoming_call_profile="
                               f"{location_profile(caller.location)}")
            out += [*desk_phone_media(d, phone), ""]
            if d.requires_srtp(phone):
                out += srtp_twin(user.id, phone)
        if user.desk_phones and user.id not in user.desk_phones:
            out += _login_gate(user.id, user.desk_phones[0])
    out.append("#include pjsip_auth.conf")
    return "\n".join(out) + "\n"


def carrier_uri(pbx: AsteriskPbx, user: str = "") -> str:
    """The carrier's SIP URI (``user@`` it when given), over TLS with ``trunk.tls``."""
    trunk = pbx.trunk
    return (f"sip:{f'{user}@' if user else ''}{trunk.host}:{trunk.port}"
            f"{';transport=tls' if trunk.tls else ''}")


def _carrier_transport(pbx: AsteriskPbx) -> list[str]:
    """``trunk.tls``: every request to the carrier over TLS (the transport's client side
    verifies its certificate)."""
    return ["transport=transport-tls"] if pbx.trunk.tls else []


def _tls_transport(pbx: AsteriskPbx, tls: TlsFiles | None) -> list[str]:
    """SIP over TLS on the SIP address, TLS 1.2 (what desk phones speak); the phones verify
    the certificate, Asterisk asks none of them (they prove themselves by digest).  With
    ``trunk.tls`` Asterisk connects to the carrier through it too, and verifies the
    carrier's certificate (its chain and its name) against ``carrier_ca``."""
    if pbx.tls is None or tls is None:
        return []
    carrier = (["verify_server=yes", f"ca_list_file={tls.carrier_ca}"]
               if pbx.trunk.tls and tls.carrier_ca else [])
    return ["; Desk phones over TLS (connections.pbx.tls).", "[transport-tls]",
            "type=transport", "protocol=tls", f"bind={pbx.sip.host}:{pbx.tls.port}",
            f"cert_file={tls.certificate}", f"priv_key_file={tls.key}", "method=tlsv1_2",
            "verify_client=no", "require_client_cert=no", *carrier, *_nat(pbx), ""]


def _login_gate(login: str, first_phone: str) -> list[str]:
    """An endpoint named after a login, found by the From of a desk phone's first request
    (a REGISTER or INVITE from ``ana`` by the phone ``ana-desk``) only to challenge it.

    Without it that request names no endpoint, and when the carrier is recognised by address
    and shares it (one host), the carrier's ``ip`` rule took it: REGISTER got 404, INVITE went
    in as a carrier call.  The phone's answer carries its digest user, which the
    ``auth_username`` identifier (first in the order) matches to its own endpoint, so the gate
    never lets anything through; were it passed anyway, it has no AOR to register to and its
    calls are refused.  Its one auth (any of the login's) only makes the challenge."""
    return [f"[{login}]", "type=endpoint", f"context={v.context(v.REFUSE)}", "disallow=all",
            "allow=ulaw", "identify_by=username", f"auth={first_phone}-auth", ""]


def _carrier_sources(pbx: AsteriskPbx, proxy: str) -> tuple[str, ...]:
    sources = pbx.trunk.sources
    return (*sources, proxy) if proxy and proxy not in sources else sources


def _only_from(networks: tuple[str, ...]) -> list[str]:
    """An endpoint's ACL: requests identified as it only from ``networks``."""
    if not networks:
        return []
    return ["deny=0.0.0.0/0.0.0.0", "deny=::/0", *(f"permit={n}" for n in networks)]


def _address_rules(pbx: AsteriskPbx, proxy: str) -> list[str]:
    """With a LAN: SIP from the LAN and the carrier only.  res_pjsip_acl answers anything
    else 403 before any endpoint is looked for, REGISTER and INVITE alike; each endpoint's
    own ACL then keeps desk phones to the LAN and the carrier to its addresses."""
    if not pbx.lan:
        return []
    return ["; Address rules: the practice's LAN and the carrier's addresses, nobody else.",
            "[backline-address-rules]", "type=acl",
            *_only_from((*pbx.lan, *_carrier_sources(pbx, proxy))), ""]


def _nat(pbx: AsteriskPbx) -> list[str]:
    """Behind NAT: what leaves for anywhere off the LAN carries the public address (Via,
    Contact, SDP), so the carrier's answers and media come back through the NAT."""
    if not pbx.public_address:
        return []
    return [f"external_signaling_address={pbx.public_address}",
            f"external_media_address={pbx.public_address}",
            *(f"local_net={n}" for n in pbx.lan)]


def _registration(pbx: AsteriskPbx, carrier: str) -> list[str]:
    """Our REGISTER to the carrier, with the account's credentials, renewed before it
    expires and retried while the carrier refuses it.  ``line``: the contact carries a
    token the carrier sends back on each call to it, which names the carrier's endpoint
    whatever address the call comes from; the carrier's addresses still let it through the
    address rules."""
    trunk = pbx.trunk
    server = carrier_uri(pbx)
    transport = "transport-tls" if trunk.tls else "transport-udp"
    return ["; Registration: the carrier sends the practice's calls to this contact.",
            f"[{carrier}-registration]", "type=registration", f"transport={transport}",
            f"outbound_auth={carrier}-auth", f"server_uri={server}",
            f"client_uri={carrier_uri(pbx, trunk.username)}",
            f"contact_user={trunk.username}", "expiration=600", "retry_interval=30",
            "forbidden_retry_interval=300", "max_retries=10000", "auth_rejection_permanent=no",
            "line=yes", f"endpoint={carrier}", ""]


def pjsip_auth_conf(d: Directory, desk_phones: Mapping[str, str],
                    carrier_password: str = "") -> str:
    """The desk phones' credentials and, with ``carrier_password``, the carrier account's
    (``trunk.username``): its password comes from the environment or a file, never the
    YAML."""
    out = ["; Desk-phone credentials: generated, kept outside the repo. Mode 0600."]
    pbx = d.connections.pbx
    if carrier_password and isinstance(pbx, AsteriskPbx) and pbx.trunk.username:
        if any(c in carrier_password for c in "\r\n\0"):
            raise ValueError("connections.pbx.trunk: the carrier password holds a line break, "
                             "which Asterisk's configuration cannot")
        # A ';' would start a comment: Asterisk reads '\;' as the character itself.
        escaped = carrier_password.replace(";", "\\;")
        out += ["; The carrier account (connections.pbx.trunk.username).",
                f"[{carrier_endpoint(pbx)}-auth]", "type=auth", "auth_type=userpass",
                f"username={pbx.trunk.username}", f"password={escaped}", ""]
    for user in d.users:
        if not user.active:
            continue
        for phone in user.desk_phones:
            out += [f"[{phone}-auth]", "type=auth", "auth_type=userpass",
                    f"username={phone}", f"password={desk_phones[phone]}", ""]
    return "\n".join(out) + "\n"


def geolocation_conf(d: Directory, pbx: AsteriskPbx) -> str:
    """Each location as a civic address (RFC 5139 fields) and a profile desk phones there
    carry; the 911 endpoint sends it.  Empty unless ``trunk.geolocation`` is on."""
    out = ["; Rendered by `backline render`: edit the practice YAML, not this file."]
    if not pbx.trunk.geolocation:
        return "\n".join([*out, "; trunk.geolocation is off: no location is sent."]) + "\n"
    for loc in d.locations:
        number, _, street = loc.address.partition(" ")
        if not (number[:1].isdigit() and street):
            number, street = "", loc.address
        civic = [("country", loc.country), ("A1", loc.state), ("A3", loc.city),
                 ("HNO", number), ("RD", street), ("PC", loc.zip), ("LOC", loc.where)]
        # The loader allows no double quote in these; quoting keeps commas and spaces whole.
        fields = ", ".join(f'{k}="{value}"' for k, value in civic if value)
        out += ["", f"[{location_site(loc)}]", "type=location", "format=civicAddress",
                "method=Manual", f"location_info={fields}",
                "", f"[{location_profile(loc)}]", "type=profile",
                # What a desk phone sends itself is dropped: the practice's record wins.
                "profile_precedence=discard_incoming",
                f"location_reference={location_site(loc)}"]
    return "\n".join(out) + "\n"
