"""Make a real ledger node refuse one of everything the Chain-health "Refused links and
transactions" panel (and "Dropped messages") shows, so the live panel test sees data in each of
its queries: a plaintext dialer on the TLS peers' port (handshake failure), connections past the
per-address cap (refused connection), a frame over the client limit (frame over limit), a
malformed frame (dropped message), a replayed signed Status (dropped replay) and a transaction
from an unregistered key (mempool refusal)."""

from __future__ import annotations

import socket
import struct
import time

from ledger import Transaction
from infra.ledger_cluster import LocalCluster
from ledger.messages import ClientRequests, Status, encode_message
from ledger.tls import client_context
from ledger.transport import Limits, hello
from trust.identity import KeyPair

__all__ = ["provoke_refusals"]


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def provoke_refusals(cluster: LocalCluster, name: str = "node0") -> None:
    layout = cluster.layout
    a = layout.address(name)
    chain = layout.genesis().chain_id
    assert layout.tls and a.client_port is not None
    # plaintext on the peers' port: refused in the handshake (not_tls / closed)
    with socket.create_connection((a.host, a.p2p_port), timeout=5) as s:
        s.sendall(_frame(hello(chain, "plaintext")))
    # a malformed frame on the clients' port (dropped), then a frame over the client limit
    with client_context().wrap_socket(socket.create_connection((a.host, a.client_port), timeout=5)) as s:
        s.sendall(_frame(hello(chain, "refusals")) + _frame(b"\xffnot cbor"))
        s.sendall(struct.pack(">I", Limits().client_max_frame + 1))
        time.sleep(0.5)
    # a transaction signed by a key the registry does not know: refused entry to the mempool
    stranger = KeyPair.generate()
    tx = Transaction.create(stranger, 1, "anchors.anchor", {"batch_id": "refused"})
    with client_context().wrap_socket(socket.create_connection((a.host, a.client_port), timeout=5)) as s:
        s.sendall(_frame(hello(chain, stranger.did)) + _frame(encode_message(ClientRequests(stranger.did, (tx,)))))
        s.settimeout(5)
        s.recv(4)  # the signed refusal comes back at once
    # a signed Status sent twice on a member's link: the second is a replay
    peer = next(n for n in layout.genesis().nodes if n.name != name)
    key = layout.node_key(peer.name)
    st = cluster.status(name) or {"height": 0, "view": 0, "stable_checkpoint": 0}
    status = Status(key.did, st["height"], st["view"], False, st["stable_checkpoint"]).sign(chain, key.sign)
    with layout.node_tls(peer.name).peer_client.wrap_socket(
            socket.create_connection((a.host, a.p2p_port), timeout=5)) as s:
        s.sendall(_frame(hello(chain, key.did)) + _frame(encode_message(status)) * 3)
        time.sleep(0.5)
    # connections past the per-address cap (loopback: every dialer shares 127.0.0.1)
    socks = []
    try:
        for _ in range(Limits().max_connections_per_address + 8):
            socks.append(socket.create_connection((a.host, a.p2p_port), timeout=5))
        time.sleep(0.5)
    finally:
        for s in socks:
            s.close()
