"""Event Socket events per second: parsed in the gevent hub thread and dispatched into asyncio.

The ESL test server runs in a thread of its own (its own asyncio loop, so it does not share
the measured loop) and writes ``text/event-plain`` frames as fast as the socket takes them:
serialized once, written in large chunks. The measured path is the driver's: greenswitch's
hub thread reads the socket, our codec parses each frame, batches go to the asyncio loop with
``call_soon_threadsafe`` and land in the hub's queue, where a consumer takes them and reads
what the driver reads of them (a registration's user and contact, a channel's numbers).
Printed: events/s and MB/s end to end, against the codec alone on the same bytes (each event
read the same way), with the load average; goal GOAL_EVENTS_PER_S small events end to end.
The ESL server is a thread of this process, so it shares the interpreter lock with the hub
thread and the loop: the figure is a floor for a FreeSWITCH in a process of its own.

Run: .venv/bin/python -m bench.esl [EVENTS]
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from dataclasses import dataclass

from backline.pbx.freeswitch import wire
from backline.pbx.freeswitch.hub import EslHub
from tests.harness.eslserver import Channel, EslServer, event_frame, serialize_event

PASSWORD = "bench"
GOAL_EVENTS_PER_S = 50_000  # sofia::register, end to end


@dataclass(frozen=True)
class EslFigures:
    kind: str
    bytes_per_event: float
    bridge_per_s: float
    bridge_mb_per_s: float
    bridge_per_cpu_s: float  # events per CPU-second of this whole process (every thread)
    codec_per_s: float


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


class ServerThread:
    """The ESL server on its own loop; ``blast`` writes the prepared bytes to connection 1."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = EslServer(PASSWORD)
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.start())
        self.ready.set()
        self.loop.run_forever()

    def blast(self, data: bytes) -> None:
        async def write() -> None:
            conn = self.server.connections[-1]
            view = memoryview(data)
            for start in range(0, len(data), 1 << 20):
                conn.send_raw(bytes(view[start:start + (1 << 20)]))
                await conn._writer.drain()

        asyncio.run_coroutine_threadsafe(write(), self.loop).result()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()


async def through_the_bridge(server: ServerThread, data: bytes, count: int) -> float:
    """Wall-clock seconds for ``count`` events (bench/table.py calls this)."""
    return (await bridge_timed(server, data, count))[0]


async def bridge_timed(server: ServerThread, data: bytes, count: int) -> tuple[float, float]:
    """Wall-clock and CPU seconds (all threads: server, hub, loop) for ``count`` events."""
    hub = EslHub("127.0.0.1", server.server.port, PASSWORD, events=("ALL",))
    await hub.start()
    await hub.wait_up(10.0)
    # The subscription reply has come back before wait_up returns; drain anything queued.
    while not hub.events.empty():
        hub.events.get_nowait()
    started, cpu = time.perf_counter(), time.process_time()
    writer = asyncio.get_running_loop().run_in_executor(None, server.blast, data)
    for _ in range(count):
        read_as_the_driver(await hub.events.get())
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await writer
    await hub.stop()
    return elapsed, cpu


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


def measure(count: int = 50_000) -> list[EslFigures]:
    """Both kinds of event; ``python -m bench`` calls this."""
    server = ServerThread()
    figures = []
    try:
        for kind in ("sofia::register", "CHANNEL_STATE"):
            data = frames(kind, count)
            bridged, cpu = asyncio.run(bridge_timed(server, data, count))
            alone = codec_alone(data, count)
            figures.append(EslFigures(kind, len(data) / count, count / bridged,
                                      len(data) / bridged / 1e6, count / cpu, count / alone))
    finally:
        server.stop()
    return figures


def report(figures: list[EslFigures], count: int) -> list[str]:
    lines = [f"{count} events each; ESL server in its own thread, hub thread parses, asyncio "
             f"consumes (load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs)"]
    lines += [f"{f.kind:16} {f.bytes_per_event:6.0f} B/event  bridge: {f.bridge_per_s:9,.0f} "
              f"events/s ({f.bridge_mb_per_s:5.1f} MB/s, {f.bridge_per_cpu_s:9,.0f} per "
              f"CPU-second)   codec alone: {f.codec_per_s:9,.0f} per CPU-second" for f in figures]
    small = figures[0].bridge_per_s
    verdict = "meets" if small >= GOAL_EVENTS_PER_S else "MISSES"
    lines.append(f"small events end to end {small:,.0f}/s: {verdict} the "
                 f"{GOAL_EVENTS_PER_S:,} events/s goal")
    return lines


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    print("\n".join(report(measure(count), count)))


if __name__ == "__main__":
    main()
