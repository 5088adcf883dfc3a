"""`backline run` against FreeSWITCH: the controller with the FreeSWITCH driver.

Everything but the driver is the controller's own (:func:`backline.app.controller.serve_with`:
journal, mode agreement, alerts, pages). `backline up` cannot start a FreeSWITCH (it is in no
package registry reachable here), so it needs one already running.
"""

from __future__ import annotations

import asyncio

from backline.core.model import Directory, FreeswitchPbx


async def serve_freeswitch(directory: Directory, *, start_pbx: bool,
                           stop: asyncio.Event | None = None) -> int:
    from backline.app.controller import Controller, serve_with, stop_on_signals
    from backline.journal import open_journal
    from backline.localpbx.asterisk import SecretMissing, read_secret
    from backline.pbx.freeswitch.driver import FreeswitchDriver

    pbx = directory.connections.pbx
    assert isinstance(pbx, FreeswitchPbx)
    if start_pbx:
        raise SecretMissing("connections.pbx: `backline up` starts Asterisk only; start "
                            "FreeSWITCH yourself and use `backline run`")
    password = read_secret(pbx.esl_password, "connections.pbx.esl")
    journal = await asyncio.to_thread(open_journal, directory.connections.storage.url)
    controller = Controller(directory, journal)
    try:
        driver = FreeswitchDriver(pbx, password, controller.book, controller.conversations,
                                  controller.mode, controller.record_attempt,
                                  feature=controller.desk_phone_switch, faxes=controller.faxes,
                                  import_record=controller.import_pbx_record,
                                  clock=lambda: controller.clock(),
                                  hours_override=lambda: controller.hours_override,
                                  hours_feature=controller.desk_phone_hours)
        return await serve_with(
            controller, driver, stop or stop_on_signals(),
            lambda: f"ready: {directory.practice.name}: mode {controller.mode().value}; "
                    f"FreeSWITCH ESL {pbx.esl} ({'up' if driver.up else 'connecting'}), call "
                    f"socket on {pbx.socket.host}:{driver.socket_port}; Ctrl-C stops")
    finally:
        await controller.close()
        journal.close()
