"""The node HTTP API over HTTPS, pinned to the genesis keys (issue 16): real node processes on loopback.

Each node serves its API over TLS 1.3 with its own certificate (the self-signed certificate of its
Ed25519 node key); every caller (`ledger.https`: the client library's reads, `LocalCluster`, the
CLI) accepts the connection only if the certificate carries exactly the key the genesis names for
that node, checked inside the handshake, so nothing is written to a man in the middle. Plain HTTP
to the API port gets no answer; Prometheus scrapes a separate plain-HTTP listener that serves
``/metrics`` and nothing else.
"""

from __future__ import annotations

import socket
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace

import pytest

from ledger import https
from ledger.client import LedgerClient, NodeUnavailable
from infra.ledger_cluster import QUICK_PARAMS, LocalCluster
from ledger.tls import NodeTLS, client_context, peer_did
from trust.identity import KeyPair

pytestmark = [pytest.mark.timeout(180), pytest.mark.services]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("https"), n_nodes=4, n_sealers=4, params=QUICK_PARAMS, app="kv")
    c.init()
    assert c.layout.tls and all(a.https and a.metrics_port for a in c.addresses())
    c.start(timeout=60)
    try:
        yield c
    finally:
        c.stop(timeout=5)


class _Impostor:
    """A TLS server on loopback with a certificate of its own key (a man in the middle). It would
    relay to `upstream` (pinned) whatever a client sends; it records the bytes it received."""

    def __init__(self, upstream: https.PinnedContext | None = None) -> None:
        self.tls = NodeTLS(KeyPair.generate(), {})
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.accepted = 0
        self.received = bytearray()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.srv.settimeout(20)
        while True:
            try:
                raw, _ = self.srv.accept()
            except OSError:  # closed, or the timeout
                return
            self.accepted += 1
            try:
                # (an asyncio client refuses the certificate before even sending its Finished, so
                # this handshake may fail on the impostor's side)
                with self.tls.client_server.wrap_socket(raw, server_side=True) as s:
                    s.settimeout(5)
                    while data := s.recv(65536):
                        self.received.extend(data)
            except (ssl.SSLError, OSError):
                pass

    def close(self) -> None:
        self.srv.close()
        self.thread.join(25)


def test_https_answers_with_the_node_genesis_key(cluster: LocalCluster) -> None:
    g = cluster.layout.genesis()
    for a in cluster.addresses():
        assert a.http_url.startswith("https://")
        with socket.create_connection((a.host, a.http_port), timeout=10) as raw, \
                client_context().wrap_socket(raw) as s:
            assert s.version() == "TLSv1.3"
            assert peer_did(s) == next(n.did for n in g.nodes if n.name == a.name)
        code, body = cluster.http_get(a.name, "/status")
        assert code == 200 and b'"tls": true' in body
    with cluster.client() as client:  # the client library's reads, aiohttp over pinned HTTPS
        assert {client.get_status(a.name)["node"] for a in cluster.addresses()} == set(cluster.names)
        receipt = client.submit("kv.put", {"key": "https", "value": 1})
        rec = client.get_tx(receipt.tx_id)
        assert rec is not None and rec.height == receipt.height


def test_a_client_pinning_another_key_is_refused_naming_the_node(cluster: LocalCluster) -> None:
    a0, a1 = cluster.addresses()[:2]
    # node1 on node0's address: a genuine node certificate, but not node0's genesis key
    swapped = replace(a0, http_port=a1.http_port)
    with pytest.raises(https.PinError) as err:
        https.get(swapped, "/status", pins=cluster.pins())
    assert "ledger node node0" in str(err.value) and a0.did in str(err.value) and a1.did in str(err.value)
    # a context pinned to a key node0 does not hold
    ctx = https.pinned_context(KeyPair.generate().did, "node0")
    with pytest.raises(urllib.error.URLError) as uerr:
        urllib.request.urlopen(a0.http_url + "/status", timeout=10, context=ctx)
    assert isinstance(uerr.value.reason, https.PinError)
    # the client library names the node and the reason, and a read without a node goes on to the next
    nodes = [swapped] + cluster.addresses()[1:]
    with LedgerClient(cluster.layout.genesis(), nodes, cluster.layout.client_key()) as client:
        with pytest.raises(NodeUnavailable) as nerr:
            client.get_status("node0")
        assert "node0: PinError ledger node node0" in str(nerr.value)
        assert client.get_status()["node"] == "node1"


def test_plain_http_to_the_api_port_is_refused(cluster: LocalCluster) -> None:
    a = cluster.addresses()[0]
    with socket.create_connection((a.host, a.http_port), timeout=10) as s:
        s.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        s.settimeout(10)
        answer = bytearray()
        try:
            while data := s.recv(65536):
                answer.extend(data)
        except (ConnectionError, TimeoutError):
            pass
    assert not answer.startswith(b"HTTP/") and b'"height"' not in answer
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://{a.host}:{a.http_port}/status", timeout=10)
    assert cluster.status(a.name) is not None  # and the node still answers HTTPS


def test_the_metrics_port_serves_metrics_only_over_plain_http(cluster: LocalCluster) -> None:
    a = cluster.addresses()[0]
    assert a.metrics_url == f"http://127.0.0.1:{a.metrics_port}/metrics"
    code, body = cluster.metrics_get(a.name)
    assert code == 200 and 'sealstream_ledger_height{node="node0"}' in body.decode()
    for path in ("/status", "/blocks/1", "/headers", "/"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://{a.metrics_target}{path}", timeout=10)
        assert err.value.code == 404
        err.value.close()
    # the API's own /metrics answers the same series to a pinned caller
    code, api = cluster.http_get(a.name, "/metrics")
    assert code == 200 and b"sealstream_ledger_height" in api


def test_a_man_in_the_middle_with_another_certificate_is_refused(cluster: LocalCluster) -> None:
    mitm = _Impostor()
    try:
        addrs = cluster.addresses()
        nodes = [replace(addrs[0], http_port=mitm.port)] + addrs[1:]
        with pytest.raises(https.PinError) as err:
            https.get(nodes[0], "/status", genesis=cluster.layout.genesis())
        assert "ledger node node0" in str(err.value) and mitm.tls.did in str(err.value)
        with LedgerClient(cluster.layout.genesis(), nodes, cluster.layout.client_key()) as client:
            with pytest.raises(NodeUnavailable) as nerr:
                client.get_status("node0")
            assert "PinError" in str(nerr.value) and mitm.tls.did in str(nerr.value)
            assert client.get_status()["node"] == "node1"  # the next node, genuinely pinned
    finally:
        mitm.close()
    assert mitm.accepted >= 2  # the handshakes were tried ...
    assert not mitm.received  # ... and not one byte of a request reached the impostor


def test_a_plaintext_layout_keeps_plain_http(tmp_path) -> None:
    """``init --plaintext`` (the bench's comparison): plain HTTP on the API port, the metrics port as well."""
    c = LocalCluster(tmp_path / "plain", n_nodes=1, n_sealers=1, params=QUICK_PARAMS, app="kv", tls=False)
    c.init()
    a = c.addresses()[0]
    assert not c.layout.tls and not a.https and a.http_url.startswith("http://") and a.metrics_port
    c.start(timeout=60)
    try:
        with urllib.request.urlopen(a.http_url + "/status", timeout=10) as resp:  # no TLS, no pin
            assert resp.status == 200 and b'"tls": false' in resp.read()
        code, body = c.metrics_get(a.name)
        assert code == 200 and b"sealstream_ledger_height" in body
    finally:
        c.stop(timeout=5)
