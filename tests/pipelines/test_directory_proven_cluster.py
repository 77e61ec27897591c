"""`ProvenDirectory` against a real 4-node contracts ledger with one node behind a lying stand-in.

A device is registered, the answers of node 0 are captured (``/state/proofs?did=`` and
``/registry/key/{did}``), then the device is revoked. A stand-in HTTP server in front of node 0
(the first node the directories ask) answers those two paths with the answers captured BEFORE the
revocation and proxies everything else (``/status``, ``/headers``) to node 0 unchanged. It serves
HTTPS with node 0's own key, as node 0 itself lying would (the clients pin node 0's genesis key):

- one node's unproven ``/registry/key`` answer (what the pipeline used to take) says active: the attack is real;
- `ProvenDirectory` refuses the stand-in's proof as stale (below the floor that node 0's own
  certified headers establish) and reports the device revoked from another node's proof;
- a stand-in that serves a fresh proof with the entity record's value altered to the one before the
  revocation is refused (``bad-proof``), and the device still resolves as revoked.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
import urllib.parse
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from anchor_helpers import admin_client, ledger_cluster
from ledger import https
from ledger.client import LedgerClient
from ledger.layout import NodeAddress
from ledger.contracts.registry import ent_key
from pipelines._anchor_ledger import ensure_devices
from pipelines.directory import ProvenDirectory, device_key_from_resolution
from trust import canonical
from trust.identity import KeyPair

pytestmark = [pytest.mark.timeout(180), pytest.mark.services]  # a ledger of node processes


def _get(addr: NodeAddress, path: str) -> tuple[int, bytes]:
    code, body = https.get(addr, path, timeout=10)
    if code != 200:
        raise OSError(f"{addr.name} {path}: HTTP {code} {body[:200]!r}")
    return code, body


class StandIn:
    """An aiohttp server on its own thread in front of `upstream`: `answers` (path -> (status, body)) are
    served as captured, `rewrite(path_qs, body) -> body` may alter a proxied answer, the rest is proxied.
    It serves TLS with `ssl_context` (node 0's own identity) and reaches `upstream` pinned to its key."""

    def __init__(self, upstream: NodeAddress, ssl_context: ssl.SSLContext) -> None:
        self.upstream = upstream
        self.ssl_context = ssl_context
        self.pins = https.Pins()
        self.answers: dict[str, tuple[int, bytes]] = {}  # keyed by the unquoted path with its query
        self.rewrite = None
        self.hits: dict[str, int] = {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner, self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self):
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return runner, runner.addresses[0][1]

    async def _handle(self, req: web.Request) -> web.Response:
        self.hits[req.path] = self.hits.get(req.path, 0) + 1
        asked = urllib.parse.unquote(req.raw_path)  # clients differ in what they percent-encode
        if asked in self.answers:
            status, body = self.answers[asked]
            return web.Response(status=status, body=body, content_type="application/json")
        async with self.session.get(self.upstream.http_url + req.raw_path,
                                    ssl=self.pins.aiohttp_ssl(self.upstream)) as resp:
            body = await resp.read()
            if self.rewrite is not None and resp.status == 200:
                body = self.rewrite(req.raw_path, body)
            return web.Response(status=resp.status, body=body, content_type="application/json")

    def close(self) -> None:
        async def stop():
            await self.session.close()
            await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _wait_heights(addrs, height: int, seconds: float = 30) -> None:
    """Every node at `height` or above (bounded)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = []
        for a in addrs:
            try:
                got.append(json.loads(_get(a, "/status")[1])["height"])
            except OSError:
                got.append(-1)
        if min(got) >= height:
            return
        time.sleep(0.2)
    raise AssertionError(f"nodes did not all reach height {height}: {got}")


def _proofs_path(did: str) -> str:
    return "/state/proofs?" + urllib.parse.urlencode({"did": did})


def _key_path(did: str) -> str:
    return "/registry/key/" + urllib.parse.quote(did, safe="")


def test_a_stand_in_with_answers_from_before_the_revocation_cannot_unrevoke(tmp_path: Path) -> None:
    cluster = ledger_cluster(tmp_path / "ledger")
    stand_in = clients = None
    try:
        dev = KeyPair.generate()
        addrs = cluster.layout.addresses()
        node0 = addrs[0]
        with admin_client(cluster) as admin:
            ensure_devices(admin, [("dev-standin", dev.did)])
            _wait_heights(addrs, admin.get_status(addrs[0].name)["height"])
            before_proofs = _get(node0, _proofs_path(dev.did))
            before_key = _get(node0, _key_path(dev.did))
            assert json.loads(before_key[1])["resolution"]["valid"] is True
            old_entity = {p["key"]: canonical.decode(bytes.fromhex(p["canonical"]))["value"]
                          for p in json.loads(before_proofs[1])["proofs"]}[ent_key("dev-standin")]
            receipt = admin.submit("registry.revoke", {"id": "dev-standin", "reason": "test"})
            assert receipt.refusal is None
            _wait_heights(addrs, receipt.height)
        assert json.loads(before_proofs[1])["height"] < receipt.height

        stand_in = StandIn(node0, cluster.layout.node_tls("node0").client_server)
        stand_in.answers[urllib.parse.unquote(_proofs_path(dev.did))] = before_proofs
        stand_in.answers[urllib.parse.unquote(_key_path(dev.did))] = before_key
        nodes = [replace(addrs[0], host="127.0.0.1", http_port=stand_in.port)] + addrs[1:]
        layout = cluster.layout
        clients = [LedgerClient(layout.genesis(), nodes, layout.client_key()) for _ in range(3)]

        # The attack is real: one node's unproven word un-revokes the device.
        assert device_key_from_resolution(dev.did, clients[0].resolve_key(dev.did)).revoked is False

        d = ProvenDirectory(clients[1], ttl=30)
        k = d.resolve(dev.did)
        assert k is not None and k.revoked and k.public_key == dev.did and k.entity == "dev-standin"
        assert d.refused["stale"] == 1, d.refused  # the stand-in (asked first) was refused ...
        assert stand_in.hits.get("/state/proofs") == 1  # ... after answering
        assert d.floor >= receipt.height

        # A fresh proof whose value was altered to the record before the revocation.
        stand_in.answers.clear()

        def alter(path_qs: str, body: bytes) -> bytes:
            if not path_qs.startswith("/state/proofs"):
                return body
            doc = json.loads(body)
            for p in doc["proofs"]:
                if p["key"] == ent_key("dev-standin"):
                    proof = canonical.decode(bytes.fromhex(p["canonical"]))
                    proof["value"] = old_entity
                    p["canonical"] = canonical.encode(proof).hex()
            return json.dumps(doc).encode()

        stand_in.rewrite = alter
        d2 = ProvenDirectory(clients[2], ttl=30)
        k2 = d2.resolve(dev.did)
        assert k2 is not None and k2.revoked
        assert d2.refused["bad-proof"] == 1 and d2.refused["stale"] == 0, d2.refused
        assert stand_in.hits.get("/state/proofs") == 2
    finally:
        for c in clients or ():
            c.close()
        if stand_in is not None:
            stand_in.close()
        cluster.stop(timeout=5)
