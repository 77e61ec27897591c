"""Limits that hold under abuse (issue 16): real node processes over loopback.

One 4-sealer cluster for the module, with short read/idle timeouts and a small
per-address cap (all of it comes from 127.0.0.1, like its own peers). Each test
abuses node0 as an outsider or as a member's key would, then checks that the
cluster still commits.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ledger import BlockHash, Transaction
from trust.identity import KeyPair
from infra.ledger_cluster import QUICK_PARAMS, LocalCluster
from ledger.messages import ClientRequests, FetchBlocks, Prepare, Request, Status, encode_message
from ledger.tls import client_context, pinned
from ledger.transport import HELLO_ACK, hello

# node processes: `services` (tests/conftest.py also infers it from the `cluster` fixture)
pytestmark = [pytest.mark.timeout(180), pytest.mark.services]

IDLE_S = 2.0
READ_S = 1.5
PER_ADDRESS = 48


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    env = {"SEALSTREAM_LEDGER_IDLE_TIMEOUT_S": str(IDLE_S), "SEALSTREAM_LEDGER_READ_TIMEOUT_S": str(READ_S),
           "SEALSTREAM_LEDGER_MAX_CONNECTIONS_PER_ADDRESS": str(PER_ADDRESS)}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        root: Path = tmp_path_factory.mktemp("abuse")
        c = LocalCluster(root, n_nodes=4, n_sealers=4, params=QUICK_PARAMS)
        c.init()
        c.start(timeout=30)
    try:
        yield c
    finally:
        c.stop(timeout=5)


def _status(c: LocalCluster, name: str = "node0") -> dict:
    st = c.status(name, timeout=5)
    assert st is not None, f"{name} does not answer /status"
    return st


def _drops(c: LocalCluster, name: str = "node0") -> dict[str, int]:
    return dict(_status(c, name)["drops"])


def _commits(c: LocalCluster, key: str) -> None:
    """The cluster still orders and commits a registered client's transaction (the contracts
    app: admission orders only registered, funded submitters, so the admin's)."""
    before = _status(c)["height"]
    with c.client(key=c.layout.admin_key()) as cl:
        receipt = cl.submit("kv.put", {"key": key, "value": 1})
    assert receipt.height > before


def _did(c: LocalCluster, name: str) -> str:
    return c.layout.node_key(name).did


def _connect(c: LocalCluster, name: str = "node0", as_node: str | None = None) -> socket.socket:
    """A connection to `name`: as a genesis node (its key: TLS on the peers' port), as a client
    (any other did: TLS on the clients' port), or a bare TCP connection (no `as_node`)."""
    addr = c.layout.address(name)
    nodes = {n.did: n.name for n in c.layout.genesis().nodes}
    if as_node is None:
        return socket.create_connection((addr.host, addr.p2p_port), timeout=10)
    if as_node in nodes:
        ctx = c.layout.node_tls(nodes[as_node]).peer_client
        port = addr.p2p_port
    else:
        ctx, port = client_context(), addr.client_port
    assert port is not None
    s = ctx.wrap_socket(socket.create_connection((addr.host, port), timeout=10), server_hostname=addr.host)
    assert pinned(s, addr.did)
    s.sendall(_frame(hello(c.layout.genesis().chain_id, as_node)))
    if as_node in nodes:  # a peer's link is acknowledged (read, so closing does not reset it early)
        want = len(_frame(HELLO_ACK))
        got = b""
        while len(got) < want:
            got += s.recv(want - len(got))
        assert got == _frame(HELLO_ACK)
    return s


def _wait(pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def _closed_by_node(s: socket.socket, timeout: float) -> bool:
    s.settimeout(timeout)
    try:
        while True:
            got = s.recv(65536)
            if not got:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_an_8_mib_frame_of_empty_arrays_is_refused_while_status_keeps_answering(cluster: LocalCluster) -> None:
    # 1,000 arrays of 8,000 empty arrays: 8 MiB, 8 million items (the 5.8 s stall, ~600 MiB)
    inner = b"\x99" + (8000).to_bytes(2, "big") + b"\x80" * 8000
    bomb = b"\x99" + (1000).to_bytes(2, "big") + inner * 1000
    latencies: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            code, _ = cluster.http_get("node0", "/status", timeout=10)
            latencies.append(time.monotonic() - t0)
            assert code == 200

    before = _drops(cluster)
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        # as a peer (node1's key over TLS: the 16 MiB limit), twice; then as a client (1 MiB: refused unread)
        for _ in range(2):
            s = _connect(cluster, as_node=_did(cluster, "node1"))
            s.sendall(_frame(bomb))
            s.close()
        s = _connect(cluster, as_node="did:key:z6MkOutsider")
        s.sendall(_frame(bomb)[:1 << 16])
        assert _closed_by_node(s, 5)
        s.close()
        assert _wait(lambda: _drops(cluster).get("too_many_items", 0) >= before.get("too_many_items", 0) + 2)
    finally:
        stop.set()
        poller.join(10)
    st = _status(cluster)
    assert st["over_limit"].get("client", 0) >= 1
    assert len(latencies) >= 3 and max(latencies) < 2.0, latencies
    code, body = cluster.http_get("node0", "/metrics")
    assert code == 200 and b'sealstream_ledger_frames_over_limit_total{link="client"' in body
    _commits(cluster, "after-bomb")


def test_silent_connections_are_closed_and_capped(cluster: LocalCluster) -> None:
    before = _status(cluster)
    silent = [_connect(cluster) for _ in range(10)]  # not even a HELLO
    idle = [_connect(cluster, as_node="did:key:z6MkIdle") for _ in range(10)]  # a HELLO, then nothing
    flood = []
    for _ in range(PER_ADDRESS + 10):  # past the per-address cap: the rest are refused at once
        try:
            flood.append(_connect(cluster))
        except OSError:
            break
    assert _wait(lambda: _status(cluster)["refused"].get("address_cap", 0)
                 > before["refused"].get("address_cap", 0), 5)
    t0 = time.monotonic()
    assert all(_closed_by_node(s, READ_S + 3) for s in silent)
    assert all(_closed_by_node(s, IDLE_S + 3) for s in idle)
    assert all(_closed_by_node(s, IDLE_S + 3) for s in flood)
    assert time.monotonic() - t0 < IDLE_S + 6
    for s in silent + idle + flood:
        s.close()
    drops = _drops(cluster)
    assert drops.get("hello_timeout", 0) >= before["drops"].get("hello_timeout", 0) + 10
    assert drops.get("idle_timeout", 0) >= before["drops"].get("idle_timeout", 0) + 10
    code, body = cluster.http_get("node0", "/metrics")
    assert b'sealstream_ledger_refused_connections_total{node="node0",reason="address_cap"}' in body
    # peers keep their links (they send a Status every 300 ms, far inside the idle timeout)
    assert len(_status(cluster)["peers_connected"]) == 3
    _commits(cluster, "after-silence")


def test_resident_memory_stays_bounded_after_100_dropped_large_requests(cluster: LocalCluster) -> None:
    pid = cluster.pid("node0")
    assert pid is not None
    client = KeyPair.generate()  # a throwaway key (the cluster's client key has nonces from the clock)
    node1 = _did(cluster, "node1")

    def unsigned(i: int, size: int) -> Transaction:
        return Transaction(client.did, 10**15 + i, "kv.put", {"key": f"big{i}", "value": os.urandom(size)},
                           b"\x01" * 64)

    def dropped() -> int:  # a client's unregistered key is refused at admission, before any signature check
        d = _drops(cluster)
        return d.get("bad_signature", 0) + d.get("request_bad_signature", 0) + d.get("request_NOT_REGISTERED", 0)

    def send_all(n: int) -> None:
        # half as a client (ClientRequests of ~900 KiB: under the client limit), half as a member's
        # key would (node1's TLS link: Requests of 2 MiB, with a bad signature); every one is dropped
        start, all0 = dropped(), _drops(cluster)
        c = _connect(cluster, as_node=client.did)
        p = _connect(cluster, as_node=node1)
        for i in range(n):
            if i % 2:
                c.sendall(_frame(encode_message(ClientRequests(client.did, (unsigned(i, 900_000),)))))
            else:
                p.sendall(_frame(encode_message(Request(node1, unsigned(i, 2_000_000), b"\x02" * 64))))
        # closing with the node's refusals unread would reset the link before it read everything
        assert _wait(lambda: dropped() >= start + n, 60), (
            dropped() - start, n, {k: v - all0.get(k, 0) for k, v in _drops(cluster).items() if v != all0.get(k, 0)})
        c.close()
        p.close()

    send_all(4)  # warm up the allocator and the worker thread
    base = _rss_kib(pid)
    send_all(100)
    grown_mib = (_rss_kib(pid) - base) / 1024
    # before issue 16 the tx memo and the signature memo kept every one (~145 MiB here)
    assert grown_mib < 60, f"node0 grew {grown_mib:.0f} MiB over {base / 1024:.0f} MiB"
    _commits(cluster, "after-large")


def test_an_unsigned_prepare_with_a_huge_height_starts_no_fetch(cluster: LocalCluster) -> None:
    node1 = _did(cluster, "node1")

    def fetches() -> int:  # every peer answers a fetch it cannot serve with this drop
        return sum(_drops(cluster, n).get("fetch_unavailable", 0) + _drops(cluster, n).get("replay_fetch", 0)
                   for n in ("node1", "node2", "node3"))

    before, drops0 = fetches(), _drops(cluster)
    s = _connect(cluster, as_node=node1)
    for h in (10**12, 2**62):
        s.sendall(_frame(encode_message(Prepare(node1, 0, h, BlockHash(b"\x07" * 32), b"", b"\x00" * 64))))
    time.sleep(3 * QUICK_PARAMS.fetch_timeout_ms / 1000)  # a fetch loop would have asked again meanwhile
    s.close()
    after = _drops(cluster)
    assert after.get("out_of_watermark", 0) >= drops0.get("out_of_watermark", 0) + 2  # it was read
    assert fetches() == before
    _commits(cluster, "after-prepare")


def test_replayed_signed_status_and_fetch_are_dropped_and_counted(cluster: LocalCluster) -> None:
    chain = cluster.layout.genesis().chain_id
    key = cluster.layout.node_key("node1")
    tip = _status(cluster, "node1")
    status = Status(key.did, tip["height"], tip["view"], tip["changing_view"],
                    tip["stable_checkpoint"]).sign(chain, key.sign)
    fetch = FetchBlocks(key.did, 1, 64).sign(chain, key.sign)
    before = _drops(cluster)
    s = _connect(cluster, as_node=key.did)
    s.sendall(b"".join(_frame(encode_message(m)) for m in [status] * 20 + [fetch] * 20))
    assert _wait(lambda: _drops(cluster).get("replay_fetch", 0) >= before.get("replay_fetch", 0) + 19)
    s.close()
    after = _drops(cluster)
    assert after.get("replay_status", 0) >= before.get("replay_status", 0) + 19
    code, body = cluster.http_get("node0", "/metrics")
    assert b'sealstream_ledger_dropped_replays_total{kind="fetch",node="node0"}' in body \
        or b'sealstream_ledger_dropped_replays_total{node="node0",kind="fetch"}' in body
    _commits(cluster, "after-replay")


@pytest.mark.parametrize("path", ["/blocks/9223372036854775808", "/blocks/" + "9" * 400,
                                  "/headers?from=9223372036854775808", "/headers?to=99999999999999999999"])
def test_a_huge_integer_on_http_answers_400_with_a_reason(cluster: LocalCluster, path: str) -> None:
    code, body = cluster.http_get("node0", path)
    assert code == 400, (code, body[:200])
    err = json.loads(body)
    assert err["error"] == "bad-request" and "must be" in err["message"]
    code, _ = cluster.http_get("node0", "/blocks/9223372036854775807")
    assert code == 404
