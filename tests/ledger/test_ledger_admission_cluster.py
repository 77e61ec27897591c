"""Mempool admission on a real contracts cluster (issue 16): a flood from 50 unregistered keys is
refused at once and never ordered, while a registered, funded submitter's transaction commits
within a few blocks. Real node processes over loopback, clients over TLS on their own port."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster_checks import metric
from ledger import Transaction
from infra.ledger_cluster import QUICK_PARAMS, LocalCluster
from ledger.messages import ClientRequests, encode_message
from ledger.tls import client_context, pinned
from ledger.transport import hello
from trust.identity import KeyPair

pytestmark = [pytest.mark.timeout(240), pytest.mark.services]

FLOODERS = 50
PER_KEY = 400


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root: Path = tmp_path_factory.mktemp("admission")
    c = LocalCluster(root, n_nodes=4, n_sealers=4, params=QUICK_PARAMS)  # the contracts app
    c.init()
    c.start(timeout=30)
    try:
        yield c
    finally:
        c.stop(timeout=5)


def test_a_flood_from_50_unregistered_keys_is_refused_while_a_registered_tx_commits(cluster: LocalCluster) -> None:
    chain = cluster.layout.genesis().chain_id
    keys = [KeyPair.generate() for _ in range(FLOODERS)]
    frames = []
    for k in keys:  # validly signed: only admission can tell them from a member's
        txs = tuple(Transaction.create(k, i + 1, "anchors.anchor",
                                       {"batch_id": f"{k.did[-8:]}-{i}", "root": bytes(32), "tree_size": 1,
                                        "gateway": "nobody", "window": [0, 1]}) for i in range(PER_KEY))
        frames.append(_frame(hello(chain, k.did)) + _frame(encode_message(ClientRequests(k.did, txs))))
    before = {a.name: metric(cluster, a.name, "sealstream_ledger_mempool_refusals_total", node=a.name,
                             reason="not_registered") for a in cluster.addresses()}
    h0 = cluster.status("node0")["height"]  # type: ignore[index]
    socks = []
    for a in cluster.addresses():  # every node gets the whole flood on its clients' port
        assert a.client_port is not None
        for f in frames:
            s = client_context().wrap_socket(socket.create_connection((a.host, a.client_port), timeout=10))
            assert pinned(s, a.did)
            s.sendall(f)
            socks.append(s)
    t0 = time.monotonic()
    with cluster.client(key=cluster.layout.admin_key()) as admin:
        receipt = admin.submit("tokens.mint", {"account": "consortium", "amount": 1})
    took = time.monotonic() - t0
    assert receipt.result.get("ok") is True, receipt.result
    assert receipt.height - h0 <= 3, (receipt.height, h0)  # within a few blocks of the flood
    # every flood tx was answered at once with its code, and none was ordered
    want = FLOODERS * PER_KEY
    deadline = time.monotonic() + 30
    got: dict[str, float] = {}
    while time.monotonic() < deadline:
        got = {a.name: metric(cluster, a.name, "sealstream_ledger_mempool_refusals_total", node=a.name,
                              reason="not_registered") - before[a.name] for a in cluster.addresses()}
        if all(v >= want for v in got.values()):
            break
        time.sleep(0.2)
    assert all(v >= want for v in got.values()), got
    for s in socks[:FLOODERS]:  # node0's answers: a signed TxReplies frame came back on each link
        s.settimeout(10)
        assert len(s.recv(4)) == 4
    for s in socks:
        s.close()
    for a in cluster.addresses():
        st = cluster.status(a.name)
        assert st is not None and st["mempool"] == 0
        assert st["committed_tx"] < 50, st["committed_tx"]  # the admin's tx and the nodes' own, no flood
    assert took < 20
