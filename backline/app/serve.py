"""Serving either PBX: `backline run`/`up` with the Asterisk driver (:func:`_serve`, which starts
a local Asterisk for `up`) or the FreeSWITCH one (:func:`serve_freeswitch`, which needs one
already running: FreeSWITCH is in no package registry reachable here), around the same
controller (:func:`serve_with`: journal, mode agreement, alerts, pages).  Split from
controller.py so that the controller imports no driver's serve and no driver imports the
controller.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from backline.app.claims import claim_addresses
from backline.app.controller import Controller, ModeMirror, config_path
from backline.app.hangups import HeldHangups, notify_ready
from backline.app.log_output import BatchedStream
from backline.core.connections import (
    DEFAULT_RESERVED_DESCRIPTORS,
    AsteriskPbx,
    FreeswitchPbx,
    HostPort,
    ListenerLimits,
)
from backline.core.model import Directory
from backline.features.bans import ScannerBans
from backline.features.listeners import DescriptorBudget, PublicListener, raise_descriptor_limit
from backline.features.parking import ParkRecords
from backline.features.provisioning import Provisioning
from backline.journal import open_journal

if TYPE_CHECKING:
    from backline.app.reload import Reloader
    from backline.localpbx.instance import AsteriskInstance
    from backline.pbx.asterisk.driver import AsteriskDriver
    from backline.pbx.ports import FaxDesk

log = logging.getLogger("backline.controller")


def instance_name(directory: Directory) -> str:
    """One local Asterisk per config file, so two practices' `up` never share a tree; the
    same file named another way (relative, absolute) is the same instance."""
    return "up-" + hashlib.sha256(config_path(directory).encode()).hexdigest()[:10]


class PbxDriver(ModeMirror, Protocol):
    """A PBX driver as `run` and `up` use it: started, stopped, and the PBX's mode."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def asterisk_reloader(controller: Controller, driver: AsteriskDriver,
                      instance: AsteriskInstance | None, *,
                      reload_within: float | None = None) -> Reloader:
    """The live reload of ``controller``'s config; with ``instance`` (``backline up``: the
    files are ours) the PBX's files are rendered again and their modules reloaded over the
    driver's AMI link, each confirmed within ``reload_within`` s (RELOAD_WITHIN); without it
    (``backline run``) only the controller's view changes."""
    from backline.app.reload import MODULE_OF_FILE, RELOAD_WITHIN, PbxFiles, Reloader
    from backline.localpbx.asterisk import rendered_files, replace_clips
    from backline.pbx.ports import LinkDown, PbxRefused

    files = None
    if instance is not None:
        running = instance

        async def reload_module(module: str, within: float) -> None:
            if not driver.ami.up:
                raise LinkDown(f"the AMI link is down: Asterisk was not asked to reload "
                               f"{module}; the new files are written, the next `backline "
                               "reload` asks for it")
            try:
                answer = await driver.ami.action({"Action": "ModuleLoad", "Module": module,
                                                  "LoadType": "reload"}, within=within)
            except LinkDown as exc:
                raise LinkDown(f"Asterisk did not confirm the reload of {module} within "
                               f"{within:.0f} s ({exc}): the new files are written and it may "
                               "still re-read them; the next `backline reload` asks for it "
                               "again") from exc
            if answer.get("Response") != "Success":
                raise PbxRefused(f"ModuleLoad reload {module}",
                                 str(answer.get("Message", "")))

        etc = running.host_path(running.dir("etc"))
        # What Asterisk runs now, as written in its etc/ (a missing file counts as changed).
        current = {n: (etc / n).read_text() for n in MODULE_OF_FILE if (etc / n).exists()}

        def write(texts: Mapping[str, str]) -> None:
            for name, text in texts.items():
                # 0600 if new (pjsip_auth.conf holds the phones' secrets); an existing
                # file keeps its mode.
                fd = os.open(etc / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as out:
                    out.write(text)

        files = PbxFiles(current, lambda d: rendered_files(d, running), write, reload_module,
                         lambda d: replace_clips(d, running),
                         reload_within=reload_within or RELOAD_WITHIN)
    def applied() -> None:
        driver.practice_changed()
        # The phones' encryption may have been changed: each is judged again when next rung.
        controller.refusing_encryption.clear()

    return Reloader(config_path(controller.directory), controller, files,
                    lambda: controller.clock(), applied)


def reload_action(reloader: Reloader) -> Callable[[], None]:
    """What SIGHUP (``systemctl reload``, ``backline reload``) runs once the controller is
    ready: a reload of the config, one at a time; the result is logged and audited."""
    tasks: set[asyncio.Task[object]] = set()

    def hup() -> None:
        task: asyncio.Task[object] = asyncio.ensure_future(reloader.reload())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return hup


def stop_on_signals() -> asyncio.Event:
    """An event that SIGINT or SIGTERM sets: what `run` and `up` serve until."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def serve_with(controller: Controller, driver: PbxDriver, stop: asyncio.Event,
                     ready: Callable[[], str],
                     verify: Callable[[], Awaitable[None]] | None = None) -> int:
    """What `run` and `up` do with any PBX: attach its driver as the mode's mirror, start the
    controller and the driver, keep the mode agreed, serve the public pages and the status
    listener if configured, print ``ready()`` (once ``verify()``, if given, passed) and run
    until ``stop``; the listeners and the driver are stopped on the way out (the caller closes
    the controller and whatever it started itself).

    Every public listener (pages, status, email intake, provisioning) shares one budget that
    keeps ``connections.pbx.reserved_descriptors`` for the PBX (backline.features.listeners)."""
    runners: list[tuple[web.AppRunner, asyncio.Server]] = []
    soft, hard = raise_descriptor_limit()
    pbx = controller.directory.connections.pbx
    budget = DescriptorBudget(pbx.reserved_descriptors if pbx is not None
                              else DEFAULT_RESERVED_DESCRIPTORS)
    guards: list[PublicListener] = []
    if controller.email_intake is not None:
        controller.email_intake.listener = PublicListener(
            "email intake", controller.email_intake.config.limits, budget, http=False,
            idle=False)
        guards.append(controller.email_intake.listener)
    provisioning = controller.feature(Provisioning)
    if provisioning is not None:
        provisioning.listener = PublicListener(
            "provisioning listener", provisioning.listener.limits, budget, http=True)
        guards.append(provisioning.listener)
    controller.metrics.listeners(lambda: [(g.name, g.open, g.refused) for g in guards])

    async def listen(app: web.Application, at: HostPort, name: str,
                     limits: ListenerLimits, own_slice: bool = False) -> None:
        guard = PublicListener(name, limits, budget, http=True, own_slice=own_slice)
        guards.append(guard)
        app.middlewares.insert(0, guard.middleware)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        assert runner.server is not None
        server = await asyncio.get_running_loop().create_server(
            guard.protocol_factory(runner.server), at.host, at.port)
        runners.append((runner, server))

    try:
        controller.attach(driver)
        await controller.start()
        await driver.start()
        if verify is not None:
            await verify()
        watcher = asyncio.create_task(controller.keep_mode(stop))
        pages = controller.directory.connections.pages
        if pages is not None:
            await listen(controller.web_app(), pages.listen, "pages listener", pages.limits)
            log.info("public pages (SMS webhook, alert links) on http://%s", pages.listen)
        status = controller.directory.connections.status
        if status is not None:
            # Its own slice: ops read it while the public listeners are flooded.
            await listen(controller.status_app(), status.listen, "status listener",
                         status.limits, own_slice=True)
            log.info("status page on http://%s/status, metrics on /metrics%s", status.listen,
                     " (bearer token required)" if status.token.env or status.token.file
                     else "")
        log.info("descriptors: limit %d (hard %d), %d kept for the PBX, %d for public "
                 "connections, %d more for the status listener", soft, hard, budget.reserve,
                 budget.allowance, budget.aside)
        print(ready(), flush=True)
        notify_ready()
        await stop.wait()
        await watcher
        return 0
    finally:
        for runner, server in runners:
            server.close()
            await runner.cleanup()
        await driver.stop()


async def _serve(directory: Directory, *, start_pbx: bool,
                 hangups: HeldHangups | None = None) -> int:
    from backline.app.secrets import read_secret
    from backline.localpbx.asterisk import (
        asterisk_pbx,
        check_bound,
        hold_instance,
        local_instance,
        prepare,
    )

    hangups = hangups or HeldHangups()
    hangups.on_loop()
    if directory.connections.pbx is not None and directory.connections.pbx.kind == "freeswitch":
        return await serve_freeswitch(directory, start_pbx=start_pbx, hangups=hangups)
    journal = await asyncio.to_thread(open_journal, directory.connections.storage.url)
    stop = stop_on_signals()
    controller = Controller(directory, journal)
    pbx = asterisk_pbx(directory)
    local = None
    lock: int | None = None
    # An Asterisk found running (its `up` was killed) is ours once `ready` is said: until
    # then a failure leaves it running as it was found, answering callers.
    adopted = False
    said_ready = False
    config = config_path(directory)
    try:
        if start_pbx:
            from backline.localpbx.pbxroot import ensure_root

            root = await asyncio.to_thread(ensure_root)
            name = instance_name(directory)
            lock = await asyncio.to_thread(
                hold_instance, local_instance(directory, name, root=root), config)
            claim_addresses(directory)  # a `run` on this config, before Asterisk is touched
            local = await asyncio.to_thread(prepare, directory, name, root=root)
            controller.pbx_record.pbx_root = root
            controller.cdr_path = local.instance.host_path(
                local.instance.dir("log") / "cdr-csv" / "Master.csv")
            controller.faxes.spool = local.instance.host_path(local.instance.dir("spool"))
            running = await asyncio.to_thread(local.instance.find_running)
            if running is not None:
                local.instance.adopt(running)
                adopted = True
                # The files were just rewritten (a new AMI secret, a changed practice).
                await asyncio.to_thread(local.instance.cli, "core reload")
                log.warning("Asterisk for this config was still running (pid %s; the `backline "
                            "up` that started it did not stop it): adopted, configuration "
                            "reloaded", running)
            else:
                await asyncio.to_thread(local.instance.start)
                log.info("Asterisk started (pid %s), SIP on %s", local.instance.pid, pbx.sip)
        driver = asterisk_driver(controller, pbx,
                                 read_secret(pbx.ami_secret, "connections.pbx.ami"),
                                 faxes=controller.faxes)
        controller.pbx_record.pbx_settings = driver.pbx_settings
        reload = reload_action(asterisk_reloader(controller, driver,
                                                 local.instance if local is not None else None))

        async def verify() -> None:
            if local is not None:
                await asyncio.to_thread(check_bound, local.instance, pbx)

        def ready() -> str:
            nonlocal said_ready
            said_ready = True
            hangups.ready(reload)  # its reload starts after the ready line is printed
            console = f"; Asterisk console: backline console --config {config}" \
                if local is not None else ""
            return (f"ready: {directory.practice.name}: mode {controller.mode().value}; SIP on "
                    f"{pbx.sip}, FastAGI on {pbx.agi}{console}; Ctrl-C stops")

        return await serve_with(controller, driver, stop, ready, verify)
    finally:
        await controller.close()
        if local is not None and (said_ready or not adopted):
            await asyncio.to_thread(local.instance.stop)
        if lock is not None:
            os.close(lock)
        journal.close()


async def serve_freeswitch(directory: Directory, *, start_pbx: bool,
                           stop: asyncio.Event | None = None,
                           hangups: HeldHangups | None = None) -> int:
    from backline.app.secrets import read_secret
    from backline.localpbx.asterisk import NeedsAsterisk
    from backline.pbx.freeswitch.driver import FreeswitchDriver

    pbx = directory.connections.pbx
    assert isinstance(pbx, FreeswitchPbx)
    if start_pbx:
        raise NeedsAsterisk("connections.pbx: `backline up` starts Asterisk only; start "
                            "FreeSWITCH yourself and use `backline run`")
    password = read_secret(pbx.esl_password, "connections.pbx.esl")
    hangups = hangups or HeldHangups()
    hangups.on_loop()  # SIGHUP's default would end the controller
    journal = await asyncio.to_thread(open_journal, directory.connections.storage.url)
    controller = Controller(directory, journal)
    try:
        driver = FreeswitchDriver(pbx, password, controller.book, controller.conversations,
                                  controller.mode, controller.record_attempt,
                                  record_later=controller.record_later,
                                  feature=controller.desk_phone_switch, faxes=controller.faxes,
                                  voicemail=controller.voicemail,
                                  import_record=controller.import_pbx_record,
                                  clock=lambda: controller.clock(),
                                  hours_override=lambda: controller.hours_override,
                                  hours_feature=controller.desk_phone_hours)
        if pbx.bans is not None:
            driver.on_security = ScannerBans(pbx, counted=controller.metrics.sip_auth,
                                             registered=driver.registered_from).failed

        def ready() -> str:
            hangups.ready(lambda: log.error(
                "SIGHUP: a live reload is built for Asterisk only: restart the controller "
                "to apply the config on FreeSWITCH"))
            return (f"ready: {directory.practice.name}: mode {controller.mode().value}; "
                    f"FreeSWITCH ESL {pbx.esl} ({'up' if driver.up else 'connecting'}), call "
                    f"socket on {pbx.socket.host}:{driver.socket_port}; Ctrl-C stops")

        return await serve_with(controller, driver, stop or stop_on_signals(), ready)
    finally:
        await controller.close()
        journal.close()


def run_controller(directory: Directory, *, start_pbx: bool,
                   hangups: HeldHangups | None = None) -> int:
    """`run` or `up` in the foreground; ``hangups`` holds SIGHUPs since the command began."""
    hangups = hangups or HeldHangups()
    if not start_pbx:
        # `up` claims them once it holds its Asterisk instance: a second `up` on the config
        # is told so by that lock, in its own words.
        claim_addresses(directory)
    # Not from the event loop: each decision's line would cost the loop a write (see
    # log_output); logging.shutdown writes what is queued at exit.
    logging.basicConfig(level=logging.INFO, handlers=[BatchedStream(sys.stderr)],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with controller_runner() as runner:
        return runner.run(_serve(directory, start_pbx=start_pbx, hangups=hangups))


def controller_runner() -> asyncio.Runner:
    """The controller's event loop: uvloop's, whose sockets cost about half the CPU of
    asyncio's own on the per-call FastAGI path (bench/calls.py runs the controller on it too).
    """
    import uvloop

    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def asterisk_driver(controller: Controller, pbx: AsteriskPbx, ami_secret: str, *,
                    faxes: FaxDesk | None = None) -> AsteriskDriver:
    """The Asterisk driver joined to ``controller``: its decisions, the emergency notice
    phone, transfers, parking and scanner bans. The tests' PBX is wired by this too, so what
    they exercise is what ``run`` and ``up`` run."""
    from backline.pbx.asterisk.driver import AsteriskDriver  # not loaded for FreeSWITCH
    from backline.pbx.asterisk.events import told_unsealed
    from backline.pbx.asterisk.srtp_refusals import RefusalWatch

    directory = controller.directory
    driver = AsteriskDriver(pbx, ami_secret, controller.book, controller.conversations,
                            controller.mode, controller.record_attempt,
                            controller.desk_phone_switch, controller.import_pbx_record,
                            faxes=faxes, voicemail=controller.voicemail,
                            record_later=controller.record_later,
                            emergency=controller.emergency_call,
                            clock=lambda: controller.clock(),
                            hours_override=lambda: controller.hours_override,
                            hours_feature=controller.desk_phone_hours,
                            registrar_url=directory.connections.storage.url)
    controller.emergency.phone = driver
    driver.on_transfer = controller.conversation_members.transferred
    if directory.park is not None:
        driver.on_park = ParkRecords(controller.journal, controller.book,
                                     directory.park.timeout, controller.clock).on_park
    driver.latency_hook = controller.metrics.agi_latency

    def unsealed(event: Mapping[str, str]) -> None:
        """A desk phone's call refused for want of TLS or SRTP: logged there, counted."""
        if told_unsealed(event, driver.book):
            controller.metrics.unsealed_refused()
    driver.ami.on_event("UserEvent", unsealed)
    RefusalWatch(driver.ami, lambda: driver.book, controller.refusing_encryption,
                 controller.metrics.srtp_refused)
    if pbx.bans is not None:
        driver.on_security = ScannerBans(
            pbx, counted=controller.metrics.sip_auth,
            registered=lambda: driver.registrations.contact_hosts()).failed
    return driver
