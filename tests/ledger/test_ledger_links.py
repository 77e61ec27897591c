"""Links bound to genesis (issue 16): real node processes over loopback, TLS 1.3 on every link.

A peer is accepted only if it proves possession of the Ed25519 key the genesis names for it:
an outsider's key, a certificate that claims a node without its key, a replayed handshake and a
man in the middle are refused before any frame is read, and counted by reason
(``sealstream_ledger_handshake_failures_total``); clients pin each node's key from the genesis.
The cluster keeps committing through all of it.
"""

from __future__ import annotations

import datetime
import json
import os
import select
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from ledger.client import LedgerClient
from infra.process import free_ports
from infra.ledger_cluster import QUICK_PARAMS, LocalCluster
from ledger.layout import write_key
from ledger.messages import Status, encode_message
from ledger.tls import NodeTLS, client_context, node_certificate, pinned
from ledger.transport import hello
from trust.identity import KeyPair

pytestmark = [pytest.mark.timeout(240), pytest.mark.services]


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("links"), n_nodes=4, n_sealers=4, params=QUICK_PARAMS, app="kv")
    c.init()
    assert c.layout.tls
    c.start(timeout=30)
    try:
        yield c
    finally:
        c.stop(timeout=5)


def _status(c: LocalCluster, name: str = "node0") -> dict:
    st = c.status(name, timeout=5)
    assert st is not None, f"{name} does not answer /status"
    return st


def _failures(c: LocalCluster, name: str = "node0") -> dict[str, int]:
    return dict(_status(c, name)["handshake_failures"])


def _wait(pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def _commits(c: LocalCluster, key: str) -> None:
    before = _status(c)["height"]
    with c.client() as cl:
        receipt = cl.submit("kv.put", {"key": key, "value": 1})
    assert receipt.height > before


def _frames_read(c: LocalCluster, name: str = "node0") -> dict[str, int]:
    """What node0 counted of frames it read (any of these moving means a frame got through)."""
    st = _status(c, name)
    keys = ("bad_hello", "malformed", "unknown_sender", "bad_signature", "replay_status", "not_peer", "duplicate")
    return {k: st["drops"].get(k, 0) for k in keys}


def _signed_status(c: LocalCluster, key: KeyPair) -> bytes:
    tip = _status(c)
    return encode_message(Status(key.did, tip["height"], tip["view"], False, tip["stable_checkpoint"])
                          .sign(c.layout.genesis().chain_id, key.sign))


def _try_as_peer(c: LocalCluster, ctx: ssl.SSLContext, claim: str, key: KeyPair) -> None:
    """Dial node0's peers' port with `ctx`, then send a HELLO claiming `claim` and a signed Status."""
    addr = c.layout.address("node0")
    chain = c.layout.genesis().chain_id
    try:
        with ctx.wrap_socket(socket.create_connection((addr.host, addr.p2p_port), timeout=10)) as s:
            s.sendall(_frame(hello(chain, claim)) + _frame(_signed_status(c, key)))
            s.settimeout(5)
            assert s.recv(1) == b""  # the node hangs up
    except (ssl.SSLError, ConnectionError):
        pass  # refused during the handshake, as it should be


def _forged_certificate_context(claim: KeyPair, own: KeyPair, tmp: Path) -> ssl.SSLContext:
    """A client context presenting a certificate with `claim`'s subject (its did, the same serial)
    but `own`'s key: what a man in the middle without the key can make."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    genuine = x509.load_pem_x509_certificate(node_certificate(claim))
    sk = Ed25519PrivateKey.from_private_bytes(own.seed)
    cert = (x509.CertificateBuilder().subject_name(genuine.subject).issuer_name(genuine.issuer)
            .public_key(sk.public_key()).serial_number(genuine.serial_number)
            .not_valid_before(datetime.datetime(2020, 1, 1)).not_valid_after(datetime.datetime(9999, 1, 1))
            .sign(sk, None))
    path = tmp / "forged.pem"
    path.write_bytes(sk.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()) + cert.public_bytes(serialization.Encoding.PEM))
    ctx = client_context()
    ctx.load_cert_chain(path)
    return ctx


def test_a_key_outside_the_genesis_is_refused_before_any_frame(cluster: LocalCluster) -> None:
    outsider = KeyPair.generate()
    certs = {n.did: (cluster.layout.certs_dir / f"{n.name}.pem").read_bytes() for n in cluster.layout.genesis().nodes}
    ctx = NodeTLS(outsider, certs).peer_client
    before, read0 = _failures(cluster), _frames_read(cluster)
    for claim in (outsider.did, cluster.layout.node_key("node1").did):  # as itself, and claiming node1
        _try_as_peer(cluster, ctx, claim, outsider)
    assert _wait(lambda: _failures(cluster).get("unknown_certificate", 0)
                 >= before.get("unknown_certificate", 0) + 2)
    assert _frames_read(cluster) == read0
    code, body = cluster.http_get("node0", "/metrics")
    assert code == 200 and b'sealstream_ledger_handshake_failures_total{node="node0",reason="unknown_certificate"}' \
        in body
    _commits(cluster, "after-outsider")


def test_a_certificate_claiming_a_node_without_its_key_is_refused(cluster: LocalCluster, tmp_path: Path) -> None:
    node1 = cluster.layout.node_key("node1")
    ctx = _forged_certificate_context(node1, KeyPair.generate(), tmp_path)
    before, read0 = _failures(cluster), _frames_read(cluster)
    _try_as_peer(cluster, ctx, node1.did, node1)  # even the Status is genuinely node1's
    assert _wait(lambda: sum(_failures(cluster).values()) >= sum(before.values()) + 1)
    assert _frames_read(cluster) == read0
    # a member's genuine key claiming another member in its HELLO is refused as well
    node2_ctx = cluster.layout.node_tls("node2").peer_client
    _try_as_peer(cluster, node2_ctx, node1.did, node1)
    assert _wait(lambda: _failures(cluster).get("identity_mismatch", 0) >= before.get("identity_mismatch", 0) + 1)
    assert _frames_read(cluster) == read0
    _commits(cluster, "after-forged")


class _Recorder:
    """A TCP relay to node0 that records what the dialer sent (to replay it later)."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sent = bytearray()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        down, _ = self.sock.accept()
        up = socket.create_connection(self.upstream)
        try:
            while True:
                ready, _, _ = select.select([down, up], [], [], 10)
                if not ready:
                    return
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    if s is down:
                        self.sent += data
                        up.sendall(data)
                    else:
                        down.sendall(data)
        except OSError:
            return  # one side hung up mid-relay: what was recorded is what was sent
        finally:
            down.close()
            up.close()
            self.sock.close()


def test_a_replayed_handshake_is_refused(cluster: LocalCluster) -> None:
    node1 = cluster.layout.node_key("node1")
    addr = cluster.layout.address("node0")
    chain = cluster.layout.genesis().chain_id
    rec = _Recorder(addr.host, addr.p2p_port)
    ctx = cluster.layout.node_tls("node1").peer_client
    read0 = _frames_read(cluster)
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", rec.port), timeout=10)) as s:
        assert pinned(s, addr.did)
        s.sendall(_frame(hello(chain, node1.did)) + _frame(_signed_status(cluster, node1)))
        time.sleep(1.0)  # node0 reads both: the genuine link works through the relay
    rec.thread.join(10)
    assert len(rec.sent) > 0
    before, read1 = _failures(cluster), _frames_read(cluster)
    assert read1 != read0 or True  # the Status may or may not have been fresh; only what follows counts
    for _ in range(3):  # the same bytes again: the server's fresh random makes the old transcript useless
        with socket.create_connection((addr.host, addr.p2p_port), timeout=10) as raw:
            raw.sendall(bytes(rec.sent))
            raw.settimeout(5)
            try:
                while raw.recv(65536):
                    pass
            except (ConnectionError, TimeoutError):
                pass
    assert _wait(lambda: sum(_failures(cluster).values()) >= sum(before.values()) + 3)
    assert _frames_read(cluster) == read1
    _commits(cluster, "after-replay")


def test_a_client_refuses_a_node_whose_certificate_is_not_its_genesis_key(cluster: LocalCluster) -> None:
    """A man in the middle in front of node0's clients' port: the client pins node0's genesis key,
    writes nothing to the impostor, and commits through the others."""
    impostor = NodeTLS(KeyPair.generate(), {})
    srv = socket.create_server(("127.0.0.1", 0))
    got = bytearray()
    handshakes = []

    def serve() -> None:
        srv.settimeout(20)
        while True:
            try:
                raw, _ = srv.accept()
            except (TimeoutError, OSError):
                return
            try:
                with impostor.client_server.wrap_socket(raw, server_side=True) as s:
                    handshakes.append(1)
                    s.settimeout(5)
                    while data := s.recv(65536):
                        got.extend(data)
            except (ssl.SSLError, OSError):
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    addrs = cluster.layout.addresses()
    addrs[0] = replace(addrs[0], client_port=srv.getsockname()[1])
    client = LedgerClient(cluster.layout.genesis(), addrs, cluster.layout.client_key(), retry_after=0.5)
    try:
        receipt = client.submit("kv.put", {"key": "mitm", "value": 1})
        assert receipt.height >= 1 and addrs[0].did not in receipt.nodes
        assert client._async.handshake_errors >= 1
    finally:
        client.close()
        srv.close()
        t.join(25)
    assert handshakes and not got  # the TLS handshake ran, and not one frame was written to the impostor


def test_a_node_started_with_a_key_not_in_genesis_cannot_join(cluster: LocalCluster, tmp_path: Path) -> None:
    """A real node process: node3's layout but another key (and its own ports)."""
    root = tmp_path / "impostor"
    root.mkdir()
    src = cluster.layout.root
    for f in ("genesis.json",):
        shutil.copy(src / f, root / f)
    shutil.copytree(src / "certs", root / "certs")
    addrs = json.loads((src / "addresses.json").read_text())
    p2p, http, client, metrics = free_ports(4)
    for a in addrs:
        if a["name"] == "node3":  # every port its own: on node3's metrics port the impostor could not start at all
            a.update(p2p_port=p2p, http_port=http, client_port=client, metrics_port=metrics)
    (root / "addresses.json").write_text(json.dumps(addrs))
    write_key(root / "nodes" / "node3" / "node.key", KeyPair.generate())
    before = {n: _failures(cluster, n) for n in ("node0", "node1", "node2")}
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen([sys.executable, "-m", "ledger.node", "--root", str(root), "--node", "node3"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        def refused_everywhere() -> bool:
            return all(_failures(cluster, n).get("unknown_certificate", 0)
                       > before[n].get("unknown_certificate", 0) for n in before)

        assert _wait(refused_everywhere, 60)  # a node process starting on a loaded machine: allow for it
        st = LocalCluster(root).status("node3")
        if st is not None:  # it may refuse to run at all; if it runs, it has no peer
            assert st["peers_connected"] == []
        _commits(cluster, "with-impostor")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()
    # the genuine node3 never lost its links
    assert len(_status(cluster, "node3")["peers_connected"]) == 3
