"""Event Socket events per second: parsed in the gevent hub thread and dispatched into asyncio.

The ESL test server runs in a process of its own (``python -m bench.esl --serve``, driven
over its stdin) and writes ``text/event-plain`` frames as fast as the socket takes them:
serialized once, written in large chunks. It used to be a thread of the measured process,
where it took the interpreter lock from the bridge it was feeding: the figure was then partly
the server's. The measured path is the driver's: greenswitch's hub thread reads the socket,
our codec parses each frame, batches go to the asyncio loop with ``call_soon_threadsafe`` and
land in the hub's queue, where a consumer takes them and reads what the driver reads of them
(a registration's user and contact, a channel's numbers).

Printed: events/s and MB/s end to end and per CPU-second of the bridge's process, the CPU of
each side (hub thread, asyncio loop, the server's process) as a share of one core, against
the codec alone on the same bytes (each event read the same way), with the load average;
goal GOAL_EVENTS_PER_S small events end to end. The hub thread and the loop share one
interpreter lock, so together they cannot use more than one core for Python code: when their
shares add up to about 100% the bridge is at its ceiling, whatever the other core does.

Run: .venv/bin/python -m bench.esl [EVENTS]
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from backline.pbx.freeswitch import wire
from backline.pbx.freeswitch.hub import EslHub
from tests.harness.eslserver import Channel, EslServer, event_frame, serialize_event

PASSWORD = "bench"
GOAL_EVENTS_PER_S = 50_000  # sofia::register, end to end
KINDS = ("sofia::register", "CHANNEL_STATE")


@dataclass(frozen=True)
class BridgeRun:
    """One run through the bridge: wall-clock and CPU seconds, each side's CPU seconds."""

    count: int
    seconds: float
    cpu: float  # the bridge's process, every thread
    hub_cpu: float  # the esl-hub thread: socket reads and the codec
    loop_cpu: float  # the asyncio loop's thread: the queue and the consumer
    server_cpu: float  # the ESL server's process

    @property
    def per_s(self) -> float:
        return self.count / self.seconds

    @property
    def per_cpu_s(self) -> float:
        return self.count / self.cpu

    def core_share(self, cpu: float) -> float:
        """``cpu`` seconds as a share of one core over the run (1.0: a whole core)."""
        return cpu / self.seconds


@dataclass(frozen=True)
class EslFigures:
    kind: str
    bytes_per_event: float
    bridge: BridgeRun
    codec_per_s: float

    @property
    def bridge_per_s(self) -> float:
        return self.bridge.per_s

    @property
    def bridge_mb_per_s(self) -> float:
        return self.bytes_per_event * self.bridge.per_s / 1e6


def read_as_the_driver(event: wire.Event) -> object:
    """What backline.pbx.freeswitch.driver reads of an event of this kind."""
    if event.subclass == "sofia::register":
        return (event.get("username"), event.get("call-id"), event.get("contact"))
    return (event.get("Unique-ID"), event.get("Caller-Destination-Number"),
            event.get("Caller-Caller-ID-Number"))


def frames(kind: str, count: int) -> bytes:
    server = EslServer(PASSWORD)
    if kind == "CHANNEL_STATE":
        headers = server._core_headers("CHANNEL_STATE", ("switch_channel.c", "x", 1))
        headers += Channel(variables={f"sip_h_X-{i}": "v" * 20 for i in range(20)}
                           ).event_headers()
    else:
        headers = server._core_headers("CUSTOM", ("sofia_reg.c", "x", 1))
        headers += [("Event-Subclass", "sofia::register"), ("username", "ana-desk"),
                    ("call-id", "d2f0c1a4-5d5e-4a41-9a1b-3f3c4a6b0b1e"),
                    ("contact", '"ana-desk" <sip:ana-desk@127.0.0.1:5070>'), ("expires", "3600")]
    one = event_frame(serialize_event(headers))
    return one * count


# ----- the server's process


class ServerProcess:
    """The ESL server in a child process (``--serve``), driven by lines on its stdin:
    ``prepare KIND COUNT`` builds the frames, ``blast`` writes them to the newest connection
    and answers with the CPU seconds the child spent doing it."""

    def __init__(self) -> None:
        self.child = subprocess.Popen(
            [sys.executable, "-m", "bench.esl", "--serve"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
        self.port = int(self._answer("port"))

    def _answer(self, word: str) -> str:
        assert self.child.stdout is not None
        line = self.child.stdout.readline()
        if not line.startswith(word + " "):
            raise RuntimeError(f"the ESL server process said {line!r}, not {word!r}")
        return line.split(" ", 1)[1].strip()

    def _say(self, line: str) -> None:
        assert self.child.stdin is not None
        self.child.stdin.write(line + "\n")
        self.child.stdin.flush()

    def prepare(self, kind: str, count: int) -> None:
        self._say(f"prepare {kind} {count}")
        self._answer("ready")

    def blast(self) -> None:
        """Start writing the prepared frames (returns at once: :meth:`blasted` waits)."""
        self._say("blast")

    def blasted(self) -> float:
        """CPU seconds the server's process spent on the last blast."""
        return float(self._answer("sent"))

    def stop(self) -> None:
        """Close its stdin (it then closes the server and ends); killed if it does not."""
        if self.child.stdin is not None:
            self.child.stdin.close()
        try:
            self.child.wait(10)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait()


async def _serve() -> None:
    server = EslServer(PASSWORD)
    await server.start()
    print(f"port {server.port}", flush=True)
    prepared = b""
    while line := await asyncio.to_thread(sys.stdin.readline):
        word, *args = line.split()
        if word == "prepare":
            prepared = frames(args[0], int(args[1]))
            print("ready -", flush=True)
        elif word == "blast":
            cpu = time.process_time()
            conn = server.connections[-1]
            view = memoryview(prepared)
            for start in range(0, len(prepared), 1 << 20):
                conn.send_raw(bytes(view[start:start + (1 << 20)]))
                await conn._writer.drain()
            print(f"sent {time.process_time() - cpu:.6f}", flush=True)
    await server.close()


# ----- the bridge's process


def _thread_cpu(ident: int | None) -> float:
    """CPU seconds of another thread of this process (Linux: its CPU clock)."""
    if ident is None:
        return 0.0
    return time.clock_gettime(time.pthread_getcpuclockid(ident))


async def bridge_timed(server: ServerProcess, count: int) -> BridgeRun:
    """``count`` prepared events through the bridge, timed (bench/table.py calls this)."""
    hub = EslHub("127.0.0.1", server.port, PASSWORD, events=("ALL",))
    await hub.start()
    try:
        await hub.wait_up(10.0)
        # The subscription reply has come back before wait_up returns; drain anything queued.
        while not hub.events.empty():
            hub.events.get_nowait()
        ident = hub._thread.ident if hub._thread is not None else None
        started, cpu = time.perf_counter(), time.process_time()
        hub_cpu, loop_cpu = _thread_cpu(ident), time.thread_time()
        server.blast()
        async with asyncio.timeout(60 + count / 1000):  # an event lost must not hang it
            for _ in range(count):
                read_as_the_driver(await hub.events.get())
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        hub_cpu, loop_cpu = _thread_cpu(ident) - hub_cpu, time.thread_time() - loop_cpu
        server_cpu = await asyncio.to_thread(server.blasted)
    finally:
        await hub.stop()
    return BridgeRun(count, elapsed, cpu, hub_cpu, loop_cpu, server_cpu)


def codec_alone(data: bytes, count: int) -> float:
    """CPU seconds of this thread (the codec runs in one) to parse and read every event."""
    decoder = wire.Decoder()
    started = time.thread_time()
    parsed = 0
    for start in range(0, len(data), 65536):
        for frame in decoder.feed(data[start:start + 65536]):
            event = wire.classify(frame)
            assert isinstance(event, wire.Event)
            read_as_the_driver(event)
            parsed += 1
    assert parsed == count
    return time.thread_time() - started


def measure_kind(server: ServerProcess, kind: str, count: int) -> EslFigures:
    """One kind of event through the bridge, and through the codec alone."""
    server.prepare(kind, count)
    bridged = asyncio.run(bridge_timed(server, count))
    data = frames(kind, count)
    return EslFigures(kind, len(data) / count, bridged, count / codec_alone(data, count))


def measure(count: int = 50_000, kinds: tuple[str, ...] = KINDS) -> list[EslFigures]:
    """Each kind in turn; ``python -m bench`` calls this."""
    server = ServerProcess()
    try:
        return [measure_kind(server, kind, count) for kind in kinds]
    finally:
        server.stop()


def cpu_split(run: BridgeRun) -> str:
    """Each side's CPU as a share of one core, and who ran out."""
    hub, loop = run.core_share(run.hub_cpu), run.core_share(run.loop_cpu)
    other = run.core_share(max(0.0, run.cpu - run.hub_cpu - run.loop_cpu))
    server = run.core_share(run.server_cpu)
    # The hub thread and the loop run Python under one interpreter lock: together they can
    # use about one core, and at that they are the ceiling. Under it, they waited: for the
    # server's bytes, or for a core that other work on the machine held.
    limit = ("hub thread and loop together at one core, all that one interpreter lock lets "
             "them use: the bridge's own ceiling" if hub + loop + other >= 0.9 else
             "hub thread and loop under one core together: they waited, for the server or "
             "for a core held by other work")
    return (f"hub thread {hub:.0%}, loop {loop:.0%}, other threads {other:.0%}, "
            f"server process {server:.0%} of a core ({limit})")


def report(figures: list[EslFigures], count: int, load_start: float) -> list[str]:
    lines = [f"{count} events each; ESL server in its own process, hub thread parses, asyncio "
             f"consumes (load average {load_start:.2f} at the start, "
             f"{os.getloadavg()[0]:.2f} at the end, {os.cpu_count()} CPUs)"]
    for f in figures:
        lines += [f"{f.kind:16} {f.bytes_per_event:6.0f} B/event  bridge: "
                  f"{f.bridge_per_s:9,.0f} events/s ({f.bridge_mb_per_s:5.1f} MB/s, "
                  f"{f.bridge.per_cpu_s:9,.0f} per CPU-second)   codec alone: "
                  f"{f.codec_per_s:9,.0f} per CPU-second",
                  f"{'':16} CPU: {cpu_split(f.bridge)}"]
    small = figures[0].bridge_per_s
    verdict = "meets" if small >= GOAL_EVENTS_PER_S else "MISSES"
    lines.append(f"small events end to end {small:,.0f}/s: {verdict} the "
                 f"{GOAL_EVENTS_PER_S:,} events/s goal")
    return lines


def main() -> None:
    if sys.argv[1:] == ["--serve"]:
        asyncio.run(_serve())
        return
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    load = os.getloadavg()[0]
    print("\n".join(report(measure(count), count, load)))


if __name__ == "__main__":
    main()
