"""What FreeSWITCH does with a carrier call once the controller's socket is gone, and the row
mod_cdr_csv writes of it, both from the files ``backline render`` wrote, loaded as
FreeSWITCH loads them (:mod:`tests.harness.freeswitch_conf`).  From signalwire/freeswitch
(the copy read was commit cc93a683):

* mod_event_socket.c, socket_function: the rendered ``socket HOST:PORT full`` is sync, so
  each ``sendmsg execute`` runs its application in the channel's own thread before the reply
  (parse_command, switch_ivr_parse_event).  A controller killed meanwhile is noticed only once
  that application has returned: read_packet fails, listener_run ends (no ``resume``), and
  ``socket`` returns.  A channel still up goes on with the extension's next actions (the
  rendered fallback); one that is down runs nothing more.
* mod_cdr_csv.c, my_on_reporting: in the reporting state, the template ``default-template``
  names, expanded with the channel's variables (switch_channel_expand_variables: an unknown
  one is empty, nothing is quoted or escaped), is appended to ``LOG_BASE/cdr-csv/Master.csv``
  (``master-file-only``); with ``legs: a`` only a channel no originator made (the caller's).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from backline.core.connections import FreeswitchPbx
from backline.core.model import Directory
from backline.localpbx.phone_secrets import load_or_create
from backline.pbx.freeswitch import cdr, names
from backline.render.freeswitch import (
    CDR_CSV_FILE,
    DIALPLAN_FILE,
    cdr_csv_xml,
    dialplan_xml,
)
from backline.render.freeswitch_voicemail import VOICEMAIL_FILE, voicemail_xml
from tests.harness.eslserver import Channel, EslServer
from tests.harness.freeswitch_conf import Routed, expand, hunt, load, open_cfg, stock_tree


@dataclass
class RenderedSwitch:
    """The rendered dialplan, cdr_csv.conf and voicemail.conf, loaded into a stock-like
    configuration."""

    root: ET.Element

    @classmethod
    def render(cls, conf_dir: Path, d: Directory, announcement: str) -> RenderedSwitch:
        pbx = d.connections.pbx
        assert isinstance(pbx, FreeswitchPbx)
        stock_tree(conf_dir)
        # The row token as `backline render` keeps it, where the controller reads it.
        token = load_or_create(Path(pbx.secrets_file), [cdr.TOKEN_KEY])[cdr.TOKEN_KEY]
        for name, text in ((DIALPLAN_FILE, dialplan_xml(d, pbx, announcement)),
                           (CDR_CSV_FILE, cdr_csv_xml(pbx, token)),
                           (VOICEMAIL_FILE, voicemail_xml())):
            (conf_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (conf_dir / name).write_text(text)
        root, _ = load(conf_dir, env={"PATH": "/usr/bin:/bin"})
        return cls(root)

    def after_socket(self, channel: Channel) -> list[tuple[str, str]]:
        """The actions of the call's extension after ``socket``."""
        actions = hunt(self.root, Routed(channel.context,
                                         {"destination_number": channel.destination_number}))
        at = [app for app, _ in actions].index("socket")
        return actions[at + 1:]

    async def socket_returned(self, server: EslServer, channel: Channel) -> None:
        """``socket`` returned: a channel still up runs the fallback, each application with
        its data expanded as it runs, until one ends the call."""
        for app, data in self.after_socket(channel):
            if not channel.up:
                return
            await server._execute(channel, app, expand(data, channel.all_variables()), None)

    def report(self, channel: Channel, start: int, end: int) -> Path:
        """mod_cdr_csv's row of ``channel`` (which started at epoch ``start`` and ended at
        ``end``), appended to Master.csv; returns the file."""
        conf = open_cfg(self.root, "cdr_csv.conf")
        assert conf is not None
        settings = {p.get("name"): p.get("value") or "" for p in conf.findall("settings/param")}
        assert settings.get("legs") == "a" and settings.get("master-file-only") == "true"
        template = next(t.text or "" for t in conf.findall("templates/template")
                        if t.get("name") == settings["default-template"])
        # switch_channel_set_timestamps and the caller profile's fields, beside the variables.
        variables = {"start_epoch": str(start), "end_epoch": str(end),
                     "last_app": channel.variables.get("current_application", ""),
                     "hangup_cause": channel.hangup_cause,
                     "caller_id_number": channel.caller_id_number,
                     "destination_number": channel.destination_number,
                     **channel.all_variables()}
        line = expand(template, variables)
        path = Path(settings["log-base"]) / "cdr-csv" / "Master.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as out:
            out.write(line if line.endswith("\n") else line + "\n")  # a template gets its \n
        return path


def carrier_channel(to: str, caller: str, uuid: str) -> Channel:
    """A carrier call to ``to`` as the rendered dialplan hands it over: its marks set."""
    return Channel(uuid=uuid, caller_id_number=caller, caller_id_name="Bob Caller",
                   destination_number=to, context=names.CARRIER_CONTEXT,
                   variables={names.ROUTE: names.INBOUND, names.NUMBER: to})
