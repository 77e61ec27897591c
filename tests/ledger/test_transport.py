"""The ledger's TCP transport on loopback: delivery, reconnects, and dropped bad frames."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from ledger.transport import Connection, Peer, Transport, hello

CHAIN = "test-chain"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    def __init__(self) -> None:
        self.frames: list[tuple[str, bytes]] = []
        self.event = asyncio.Event()

    def __call__(self, conn: Connection, frame: bytes) -> None:
        self.frames.append((conn.remote, frame))
        self.event.set()

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        async def until() -> None:
            while len(self.frames) < count:
                self.event.clear()
                await self.event.wait()

        await asyncio.wait_for(until(), timeout)


def _pair(port_a: int, port_b: int, inbox_a: Inbox, inbox_b: Inbox) -> tuple[Transport, Transport]:
    peers = [Peer("node-a", "127.0.0.1", port_a), Peer("node-b", "127.0.0.1", port_b)]
    a = Transport(chain_id=CHAIN, node_id="node-a", host="127.0.0.1", port=port_a, peers=peers, on_frame=inbox_a)
    b = Transport(chain_id=CHAIN, node_id="node-b", host="127.0.0.1", port=port_b, peers=peers, on_frame=inbox_b)
    return a, b


def test_frames_arrive_in_order_both_ways() -> None:
    async def run() -> None:
        inbox_a, inbox_b = Inbox(), Inbox()
        a, b = _pair(_free_port(), _free_port(), inbox_a, inbox_b)
        await a.start()
        await b.start()
        try:
            for i in range(200):
                a.send("node-b", f"a{i}".encode())
            b.broadcast(b"x" * 100_000)
            await inbox_b.wait_for(200)
            await inbox_a.wait_for(1)
            assert inbox_b.frames == [("node-a", f"a{i}".encode()) for i in range(200)]
            assert inbox_a.frames == [("node-b", b"x" * 100_000)]
        finally:
            await a.close()
            await b.close()

    asyncio.run(run())


def test_queued_frames_are_delivered_once_the_peer_comes_up() -> None:
    async def run() -> None:
        inbox_a, inbox_b = Inbox(), Inbox()
        port_b = _free_port()
        a, b = _pair(_free_port(), port_b, inbox_a, inbox_b)
        await a.start()
        try:
            a.send("node-b", b"sent while b was down")
            await asyncio.sleep(0.5)  # a retries with backoff meanwhile
            assert "node-b" not in a.connected
            await b.start()
            await inbox_b.wait_for(1)
            assert inbox_b.frames == [("node-a", b"sent while b was down")]
            # restart b: a reconnects and keeps delivering
            await b.close()
            b2 = Transport(chain_id=CHAIN, node_id="node-b", host="127.0.0.1", port=port_b,
                           peers=list(a.peers.values()) + [Peer("node-a", "127.0.0.1", a.port)], on_frame=inbox_b)
            await b2.start()
            a.send("node-b", b"after restart")
            await inbox_b.wait_for(2)
            assert inbox_b.frames[-1] == ("node-a", b"after restart")
            await b2.close()
        finally:
            await a.close()

    asyncio.run(run())


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([struct.pack(">I", 17 * 1024 * 1024)], "oversized"),
        ([struct.pack(">I", 100) + b"short"], "truncated"),
        ([struct.pack(">I", 5) + b"hello"], "bad-hello"),
        ([struct.pack(">I", len(h := hello("other-chain", "x"))) + h], "bad-hello"),
    ],
)
def test_bad_frames_are_dropped_and_counted(frames: list[bytes], reason: str) -> None:
    async def run() -> None:
        inbox = Inbox()
        t = Transport(chain_id=CHAIN, node_id="node-a", host="127.0.0.1", port=0, peers=[], on_frame=inbox)
        await t.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", t.port)
            for f in frames:
                writer.write(f)
            await writer.drain()
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 5) == b""  # the node hangs up
            writer.close()
            for _ in range(50):
                if t.drops[reason]:
                    break
                await asyncio.sleep(0.05)
            assert dict(t.drops) == {reason: 1}
            assert inbox.frames == []
        finally:
            await t.close()

    asyncio.run(run())


def test_an_accepted_connection_can_be_answered() -> None:
    async def run() -> None:
        def echo(conn: Connection, frame: bytes) -> None:
            conn.send(b"re:" + frame)

        t = Transport(chain_id=CHAIN, node_id="node-a", host="127.0.0.1", port=0, peers=[], on_frame=echo)
        await t.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", t.port)
            h = hello(CHAIN, "client-1")
            writer.write(struct.pack(">I", len(h)) + h + struct.pack(">I", 4) + b"ping")
            await writer.drain()
            (length,) = struct.unpack(">I", await reader.readexactly(4))
            assert await reader.readexactly(length) == b"re:ping"
            writer.close()
        finally:
            await t.close()

    asyncio.run(run())
