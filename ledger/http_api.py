"""A node's HTTP API (aiohttp): status, blocks, headers, transactions with proofs, metrics.

Read-only and served from the node's own event loop and block store.

| route | answer |
|---|---|
| ``GET /status`` | height, view, primary, sealer set, epoch, peers, drops (`Node.status`) |
| ``GET /blocks/{h}`` | block, results and commit certificate (`views.block_view`) |
| ``GET /headers?from=&to=`` | at most `MAX_HEADERS` headers with certificates (`views.header_view`) |
| ``GET /tx/{id}`` | the tx, its height, index, result and RFC 9162 inclusion proof |
| ``GET /metrics`` | Prometheus text format (`ledger.metrics`) |

Errors are JSON ``{"error": code, "message": sentence}`` with 400 or 404.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .light_client import tx_proof
from .views import block_view, header_view, tx_view

if TYPE_CHECKING:
    from .node import Node

__all__ = ["make_app", "MAX_HEADERS"]

#: Largest page of `/headers`.
MAX_HEADERS = 256


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def _int_arg(value: Any, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except ValueError:
        raise web.HTTPBadRequest(text=f'{{"error": "bad-request", "message": "{name} must be an integer"}}',
                                 content_type="application/json") from None
    if n < 0:
        raise web.HTTPBadRequest(text=f'{{"error": "bad-request", "message": "{name} must be >= 0"}}',
                                 content_type="application/json")
    return n


def make_app(node: "Node") -> web.Application:
    store = node.store

    async def status(_req: web.Request) -> web.Response:
        return web.json_response(node.status())

    async def block(req: web.Request) -> web.Response:
        h = _int_arg(req.match_info["h"], "height", 0)
        got = store.get(h)
        if got is None:
            return _error(404, "not-found", f"no block at height {h} (height is {store.height})")
        return web.json_response(block_view(got[0], got[1], store.results(h)))

    async def headers(req: web.Request) -> web.Response:
        top = store.height
        start = max(1, _int_arg(req.query.get("from"), "from", 1))
        end = _int_arg(req.query.get("to"), "to", start + MAX_HEADERS - 1)
        end = min(end, top, start + MAX_HEADERS - 1)
        items = store.headers(start, end) if end >= start else []
        return web.json_response({"from": start, "to": end if items else start - 1, "height": top,
                                  "max_page": MAX_HEADERS,
                                  "headers": [header_view(hd, c) for hd, c in items]})

    async def tx(req: web.Request) -> web.Response:
        text = req.match_info["tx_id"]
        try:
            tx_id = bytes.fromhex(text)
        except ValueError:
            tx_id = b""
        if len(tx_id) != 32:
            return _error(400, "bad-request", "a transaction id is 64 hex digits")
        where = store.find_tx(tx_id)
        if where is None:
            return _error(404, "not-found", f"transaction {text} is not committed on this node")
        h, i = where
        got = store.get(h)
        assert got is not None
        blk = got[0]
        results = store.results(h)
        return web.json_response(tx_view(blk.txs[i], h, i, results[i] if i < len(results) else None,
                                         tx_proof(blk, tx_id), blk.header))

    async def metrics(_req: web.Request) -> web.Response:
        body = generate_latest(node.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/status", status)
    app.router.add_get("/blocks/{h}", block)
    app.router.add_get("/headers", headers)
    app.router.add_get("/tx/{tx_id}", tx)
    app.router.add_get("/metrics", metrics)
    return app
