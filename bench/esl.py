"""Event Socket events per second: parsed in the gevent hub thread and dispatched into asyncio.

The ESL test server runs in a thread of its own (its own asyncio loop, so it does not share
the measured loop) and writes ``text/event-plain`` frames as fast as the socket takes them:
serialized once, written in large chunks. The measured path is the driver's: greenswitch's
hub thread reads the socket, our codec parses each frame, batches go to the asyncio loop with
``call_soon_threadsafe`` and land in the hub's queue, where a consumer takes them. Printed:
events/s and MB/s end to end, against the codec alone on the same bytes.

Run: .venv/bin/python -m bench.esl [EVENTS]
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time

from backline.pbx.freeswitch import wire
from backline.pbx.freeswitch.hub import EslHub
from tests.harness.eslserver import Channel, EslServer, event_frame, serialize_event

PASSWORD = "bench"


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
    hub = EslHub("127.0.0.1", server.server.port, PASSWORD, events=("ALL",))
    await hub.start()
    await hub.wait_up(10.0)
    # The subscription reply has come back before wait_up returns; drain anything queued.
    while not hub.events.empty():
        hub.events.get_nowait()
    started = time.perf_counter()
    writer = asyncio.get_running_loop().run_in_executor(None, server.blast, data)
    for _ in range(count):
        await hub.events.get()
    elapsed = time.perf_counter() - started
    await writer
    await hub.stop()
    return elapsed


def codec_alone(data: bytes, count: int) -> float:
    decoder = wire.Decoder()
    started = time.perf_counter()
    parsed = 0
    for start in range(0, len(data), 65536):
        for frame in decoder.feed(data[start:start + 65536]):
            wire.classify(frame)
            parsed += 1
    assert parsed == count
    return time.perf_counter() - started


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    server = ServerThread()
    try:
        print(f"{count} events each; ESL server in its own thread, hub thread parses, "
              "asyncio consumes")
        for kind in ("sofia::register", "CHANNEL_STATE"):
            data = frames(kind, count)
            size = len(data) / count
            bridged = asyncio.run(through_the_bridge(server, data, count))
            alone = codec_alone(data, count)
            print(f"{kind:16} {size:6.0f} B/event  bridge: {count / bridged:9,.0f} events/s "
                  f"({len(data) / bridged / 1e6:5.1f} MB/s)   codec alone: "
                  f"{count / alone:9,.0f} events/s")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
