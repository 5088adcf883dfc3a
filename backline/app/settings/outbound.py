"""Where Backline sends to: the mail relay, the SMS gateway and the inbox, and the rule they
share that cleartext goes only to this machine unless the user opts out by name."""

from __future__ import annotations

from urllib.parse import urlsplit

from backline.app.settings.reader import Reader, entry, where_of
from backline.app.yamlsource import YMap
from backline.core import e164
from backline.core.addresses import is_loopback
from backline.core.connections import Connections, Inbox, SmsGateway, Smtp, SmtpTls
from backline.core.model import AlertKind, Backup, Carry, Number
from backline.features.sms.twilio import api_url


def read_smtp(r: Reader, node: YMap, f: str) -> Smtp:
    """``connections.smtp``: the relay alert mails and emergency notices go through."""
    r.keys(node, f, ["host", "port", "tls", "starttls", "ca_file", "insecure_cleartext",
                     "from", "username_env", "username_file", "password_env",
                     "password_file"])
    tls = _smtp_tls(r, node, f)
    hp = r.host_port(node, f, control=False,
                     default_port=465 if tls is SmtpTls.IMPLICIT else 25)
    sender = r.text(node, "from", f"{f}.from", "backline@localhost",
                    "the sender address") or "backline@localhost"
    what = "the absolute path of a PEM file of CA certificates"
    ca_file = r.text(node, "ca_file", f"{f}.ca_file", "", what) or ""
    if ca_file and not ca_file.startswith("/"):
        r.problem(where_of(node, "ca_file"), f"{f}.ca_file", what)
    elif ca_file and tls is SmtpTls.NONE:
        r.problem(where_of(node, "ca_file"), f"{f}.ca_file",
                  "tls: starttls or implicit: a CA file verifies a TLS certificate, and "
                  "this relay is reached in cleartext")
    insecure = r.flag(node, "insecure_cleartext", f"{f}.insecure_cleartext", False)
    username = r.secret(node, "username", f, False)
    password = r.secret(node, "password", f, False)
    cleartext(r, node, f, "tls" if "tls" in node.entries else "starttls", hp.host,
              tls is SmtpTls.NONE, insecure,
              "alert mails, with their 12-hour links to patient data",
              "tls: starttls (the default) or implicit")
    if tls is SmtpTls.NONE and (username or password) and not is_loopback(hp.host):
        # Even with the opt-out: the mail is the user's to expose, the relay's password
        # would be reused by anyone who read it.
        r.problem(where_of(node, "tls" if "tls" in node.entries else "starttls"),
                  f"{f}.tls", "starttls or implicit: a username or password is never "
                  "sent in the clear to another machine")
    return Smtp(hp.host, hp.port, tls, sender, username, password, ca_file, insecure)


def _smtp_tls(r: Reader, node: YMap, f: str) -> SmtpTls:
    """``tls`` (starttls, implicit, none), or the older ``starttls`` flag: true is
    ``tls: starttls`` and false ``tls: none`` (so an old config still loads, and its
    cleartext is judged like any other).  Neither: STARTTLS."""
    what = "starttls, implicit or none"
    text = r.text(node, "tls", f"{f}.tls", "", what) if "tls" in node.entries else None
    legacy = entry(node, "starttls")
    starttls = r.flag(node, "starttls", f"{f}.starttls", True)
    if text is not None and legacy is not None:
        r.problem(legacy.where, f"{f}.starttls",
                  "tls alone: starttls is its older spelling, give one of them")
    if text is None:
        return SmtpTls.STARTTLS if starttls else SmtpTls.NONE
    try:
        return SmtpTls(text)
    except ValueError:
        r.problem(where_of(node, "tls"), f"{f}.tls", what)
        return SmtpTls.STARTTLS


def cleartext(r: Reader, node: YMap, f: str, key: str, host: str, clear: bool, insecure: bool,
              exposed: str, wanted: str) -> None:
    """Cleartext goes only to this machine, or where ``insecure_cleartext: true`` says
    the user accepts it (then a warning naming ``exposed``, what anyone on the path
    reads); otherwise ``key`` is refused, ``wanted`` instead."""
    if insecure and not clear:
        r.problem(where_of(node, "insecure_cleartext"), f"{f}.insecure_cleartext",
                  "removed: the connection is encrypted, so the opt-out has no effect",
                  warning=True)
    if not clear or is_loopback(host):
        return
    if insecure:
        r.problem(where_of(node, "insecure_cleartext"), f"{f}.insecure_cleartext",
                  f"false: INSECURE: {exposed} go to {host} unencrypted, readable by "
                  "anyone on the network path", warning=True)
        return
    r.problem(where_of(node, key), f"{f}.{key}",
              f"{wanted} (cleartext only to this machine: 127.0.0.1, ::1, localhost): "
              f"{exposed} would cross the network to {host} readable by anyone; to send "
              "them so anyway, set insecure_cleartext: true")


def read_sms_gateway(r: Reader, node: YMap, f: str) -> SmsGateway:
    """``connections.sms_gateway``: the provider SMS alerts and auto-replies go through."""
    r.keys(node, f, ["url", "from", "account", "token_env", "token_file",
                     "signing_secret_env", "signing_secret_file", "insecure_cleartext"])
    reported = len(r.problems)
    url = r.url(node, "url", f)
    insecure = r.flag(node, "insecure_cleartext", f"{f}.insecure_cleartext", False)
    url_account = ""
    if url and len(r.problems) == reported:
        cleartext(r, node, f, "url", urlsplit(url).hostname or "",
                  url.startswith("http:"), insecure,
                  "the SMS texts and the gateway's API token", "an https:// URL")
    if url and len(r.problems) == reported:
        # The base, or the provider's full Messages URL as a user pastes it: the client
        # wants the base, and the account may come from the URL.
        try:
            api = api_url(url, insecure_cleartext=insecure)
        except ValueError as exc:
            r.problem(where_of(node, "url"), f"{f}.url", str(exc))
        else:
            url, url_account = api.base, api.account
    sender = r.text(node, "from", f"{f}.from", "", "the E.164 number alerts come from")
    if sender:
        try:
            sender = e164.normalise(sender)
        except e164.NotE164 as exc:
            r.problem(where_of(node, "from"), f"{f}.from", exc.why)
    account = r.text(node, "account", f"{f}.account", "",
                     "the provider's account id (Twilio: the Account SID)") or ""
    if account and url_account and account != url_account:
        r.problem(where_of(node, "account"), f"{f}.account",
                  "the account the url names (they differ): give it once, in either")
    elif ":" in account:
        r.problem(where_of(node, "account"), f"{f}.account",
                  "an account id without ':' (it is the basic-auth user)")
    account = account or url_account
    return SmsGateway(url, sender or "", r.secret(node, "token", f, False),
                      r.secret(node, "signing_secret", f, False), account, insecure)


def check_sms_senders(r: Reader, top: YMap, numbers: list[Number], backup: Backup,
                      connections: Connections) -> None:
    """Whatever would send SMS must find a gateway that can: SMS alerts (``email+sms``)
    and, with a gateway to receive SMS, the outage auto-reply from every number that
    carries SMS and is registered for texting.  Otherwise an outage would find out."""
    f = "connections.sms_gateway"
    alerts = backup.alerts.kind is AlertKind.EMAIL_SMS and bool(backup.alerts.sms)
    gateway = connections.sms_gateway
    replying = [n.number for n in numbers
                if Carry.SMS in n.carries and n.texting_registered]
    senders = ["backup.alerts.kind is email+sms"] if alerts else []
    if replying and gateway is not None:
        others = len(replying) - 1
        senders.append(f"the outage auto-reply from {replying[0]}"
                       + (f" and {others} other number(s)" if others else ""))
    if not senders:
        return
    why = f"SMS is sent ({'; '.join(senders)})"
    connections_node = entry(top, "connections")
    node = entry(connections_node, "sms_gateway") if isinstance(connections_node, YMap) \
        else None
    if gateway is None or not isinstance(node, YMap):
        backup_node = entry(top, "backup")
        alerts_node = entry(backup_node, "alerts") if isinstance(backup_node, YMap) \
            else None
        where = where_of(alerts_node, "kind") if isinstance(alerts_node, YMap) \
            else top.where
        r.problem(where, f, "an SMS gateway (url, account, token_env, from) to text "
                  "backup.alerts.sms, since backup.alerts.kind is email+sms")
        return
    if gateway.url and not gateway.account:
        r.problem(node.where, f"{f}.account",
                  "the provider's account id (Twilio: the Account SID), or the full "
                  "Messages URL as url (https://api.twilio.com/2010-04-01/Accounts/"
                  f"AC…/Messages.json): {why}")
    if not gateway.token.env and not gateway.token.file:
        r.problem(node.where, f"{f}.token_env",
                  f"where the API token comes from: token_env or token_file: {why}")
    if alerts and not gateway.sender:
        r.problem(node.where, f"{f}.from",
                  "the E.164 number SMS alerts are sent from: backup.alerts.kind is "
                  "email+sms")


def read_inbox(r: Reader, node: YMap, f: str) -> Inbox:
    """``connections.inbox``: where held emails, faxes and SMS are delivered."""
    r.keys(node, f, ["url", "token_env", "token_file", "insecure_cleartext"])
    reported = len(r.problems)
    url = r.url(node, "url", f)
    insecure = r.flag(node, "insecure_cleartext", f"{f}.insecure_cleartext", False)
    if url and len(r.problems) == reported:
        cleartext(r, node, f, "url", urlsplit(url).hostname or "",
                  url.startswith("http:"), insecure,
                  "held emails, faxes, SMS texts, caller numbers and the inbox token",
                  "an https:// URL")
    return Inbox(url, r.secret(node, "token", f, False), insecure)
