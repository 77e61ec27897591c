"""A real 4-node cluster (4 sealers) over TCP: load, f+1 replies, replay, proofs,
garbage peers, and a SIGKILLed primary."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable

import pytest

from cluster_checks import assert_same_chain, metric, wait_converged
from cluster_load import Load
from ledger import LightClient, LightClientError
from ledger.client import AsyncLedgerClient, TxRefused
from infra.ledger_cluster import LocalCluster
from ledger.light_client import TxProof
from ledger.messages import Status, encode_message
from ledger.tls import client_context
from ledger.transport import hello
from trust.identity import KeyPair

pytestmark = pytest.mark.timeout(180)


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def test_four_nodes_under_load_then_primary_killed(make_cluster: Callable[..., LocalCluster]) -> None:
    c = make_cluster(4, 4)
    names = c.names
    with Load(c, clients=12) as load:
        load.wait_for(300)
    assert not load.errors, load.errors
    # every receipt is backed by f+1 = 2 matching signed sealer replies
    assert all(len(r.nodes) >= 2 for r in load.receipts)
    assert len({r.tx_id for r in load.receipts}) == len(load.receipts)
    # concurrent submits share ClientRequests frames: fewer than one frame per tx and sealer
    assert 0 < load.frames_sent < 4 * len(load.receipts)
    h = wait_converged(c, names)
    assert_same_chain(c, names, h)
    for n in names:
        assert metric(c, n, "sealstream_ledger_height", node=n) == h
        assert metric(c, n, "sealstream_ledger_commit_latency_seconds_count", node=n) > 0

    # SIGKILL the primary: the others change view and keep committing
    before = c.status("node1")
    assert before is not None
    primary = before["primary"]
    c.kill(primary)
    alive = [n for n in names if n != primary]
    with Load(c, clients=6) as load:
        load.wait_for(100, timeout=60)
    assert not load.errors, load.errors
    after = c.status(alive[0])
    assert after is not None and after["view"] > before["view"] and after["primary"] != primary
    assert metric(c, alive[0], "sealstream_ledger_view_changes_total", node=alive[0]) >= 1

    # the old primary restarts, catches up by state transfer, same chain everywhere
    c.restart(primary)
    with c.client() as cl:
        cl.submit("kv.put", {"key": "after-restart", "value": 1})
    h = wait_converged(c, names, timeout=45)
    assert_same_chain(c, names, h)


def test_replies_replay_proofs_and_garbage(make_cluster: Callable[..., LocalCluster]) -> None:
    c = make_cluster(4, 4)

    async def client_side() -> None:
        async with AsyncLedgerClient.from_layout(c.root) as cl:
            tx = cl.make_tx("kv.put", {"key": "k", "value": "v"})
            r1 = await cl.submit_tx(tx)
            assert len(r1.nodes) >= 2 and r1.result == {"ok": True}
            # the same transaction again: deduplicated by tx id, the same receipt
            r2 = await cl.submit_tx(tx)
            assert (r2.height, r2.index, r2.block_hash) == (r1.height, r1.index, r1.block_hash)
            # a new transaction reusing the nonce is a replay, refused by f+1 sealers
            replay = cl.make_tx("kv.put", {"key": "k", "value": "other"}, nonce=tx.nonce)
            with pytest.raises(TxRefused) as exc:
                await cl.submit_tx(replay)
            assert exc.value.code == "replay"

            # /tx/{id} over HTTP: the inclusion proof verifies against headers from genesis
            rec, header = await cl.verified_tx(tx.tx_id, node="node2")
            assert rec.height == r1.height and header.header_hash() == r1.block_hash
            assert rec.result == {"ok": True}
            lc = LightClient.from_genesis(cl.genesis)
            lc.add_chain(await cl.get_headers(1, rec.height, node="node3"))
            lc.verify_tx(rec.tx, rec.proof)
            bad = TxProof(rec.proof.height, rec.proof.index ^ 1, rec.proof.size + 1, rec.proof.path)
            with pytest.raises(LightClientError):
                lc.verify_tx(rec.tx, bad)
            assert await cl.get_tx(b"\0" * 32) is None

    asyncio.run(client_side())

    # a member's link (node3's own key over TLS) that sends garbage and forged messages is ignored
    # and counted; an outsider's consensus message on the clients' port is not a peer's; plaintext
    # on the peers' port is refused before any frame
    target = c.layout.address("node1")
    victim = c.layout.address("node3").did
    g = c.layout.genesis()
    forged = Status(victim, 10**6, 10**6, False, 0).sign(g.chain_id, KeyPair.generate().sign)
    stranger = KeyPair.generate()
    unknown = Status(stranger.did, 5, 0, False, 0).sign(g.chain_id, stranger.sign)
    reasons = ("malformed", "bad_signature", "unknown_sender", "not_peer")
    before = {r: metric(c, "node1", "sealstream_ledger_dropped_messages_total", node="node1", reason=r)
              for r in reasons}
    fails0 = metric(c, "node1", "sealstream_ledger_handshake_failures_total", node="node1", reason="not_tls")
    peer_ctx = c.layout.node_tls("node3").peer_client
    with peer_ctx.wrap_socket(socket.create_connection((target.host, target.p2p_port))) as s:
        s.sendall(_frame(hello(g.chain_id, victim)) + _frame(b"\xffgarbage") + _frame(b"")
                  + _frame(encode_message(forged)) + _frame(encode_message(unknown)))
        time.sleep(0.5)
    assert target.client_port is not None
    with client_context().wrap_socket(socket.create_connection((target.host, target.client_port))) as s:
        s.sendall(_frame(hello(g.chain_id, "a-stranger")) + _frame(encode_message(unknown)))
        time.sleep(0.5)
    with socket.create_connection((target.host, target.p2p_port)) as s:
        s.sendall(_frame(hello(g.chain_id, victim)) + _frame(encode_message(unknown)))

    for _ in range(50):
        after = {r: metric(c, "node1", "sealstream_ledger_dropped_messages_total", node="node1", reason=r)
                 for r in before}
        if all(after[r] >= before[r] + n for r, n in (("malformed", 2), ("bad_signature", 1), ("unknown_sender", 1),
                                                      ("not_peer", 1))):
            break
        time.sleep(0.1)
    assert after["malformed"] >= before["malformed"] + 2
    assert after["bad_signature"] >= before["bad_signature"] + 1
    assert after["unknown_sender"] >= before["unknown_sender"] + 1
    assert after["not_peer"] >= before["not_peer"] + 1
    assert metric(c, "node1", "sealstream_ledger_handshake_failures_total", node="node1",
                  reason="not_tls") >= fails0 + 1
    st = c.status("node1")
    assert st is not None and st["drops"]["malformed"] >= 2
    # ... and the forged height did not make node1 chase a phantom chain
    with c.client() as cl:
        cl.submit("kv.put", {"key": "still", "value": "alive"})
    h = wait_converged(c, c.names)
    assert_same_chain(c, c.names, h)
