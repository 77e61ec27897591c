"""A node's HTTP API (aiohttp): status, blocks, headers, transactions with proofs, metrics.

Read-only and served from the node's own event loop and block store.

| route | answer |
|---|---|
| ``GET /status`` | height, view, primary, sealer set, epoch, peers, drops (`Node.status`) |
| ``GET /blocks/{h}`` | block, results and commit certificate (`views.block_view`) |
| ``GET /headers?from=&to=`` | at most `MAX_HEADERS` headers with certificates (`views.header_view`) |
| ``GET /tx/{id}`` | the tx, its height, index, result and RFC 9162 inclusion proof |
| ``GET /metrics`` | Prometheus text format (`ledger.metrics`) |

A TLS layout serves this over HTTPS with the node's own certificate (`ledger.node`; callers pin
the node's genesis key, `ledger.https`). Prometheus, which cannot pin an Ed25519 key, scrapes
`make_metrics_app` instead: ``/metrics`` alone, over plain HTTP, on the node's metrics port.

Contracts (nodes running `ContractApp`; a KV ledger answers 404 ``no-contracts``),
answered from the node's committed state, whose height is ``state_height``:

``GET /registry/{id}?height=&index=``
    ``{state_height, resolution, entity}``: `registry.resolve` as of `height` (default: the node's
    height; with `index`, as that tx of the block saw it) and the full record
    (`registry.entity_json`)
``GET /registry/key/{did}?height=&index=``
    ``{state_height, resolution}``: `registry.resolve_key` (``valid``, or ``not_current``,
    ``revoked``)
``GET /anchors/{batch_id}``
    ``{state_height, ...anchors.batch_json}``: root, tree size, gateway, window, and the
    height/index/tx_id of its commit
``GET /anchors/root/{hex}``
    ``{state_height, root, batches: [batch_json, ...]}`` in commit order (404 if none)
``GET /tokens/accounts/{id}?since_height=&after=&limit=``
    ``{state_height, ...tokens.tokens_json}``: balance, charges, spent and a page of its consumption
    history (``next``: the `after` of the next page); 404 if no such account or entity
``GET /tokens/accounts``
    ``{state_height, accounts: [tokens.account_json, ...]}``
``GET /tokens/fees``
    ``{state_height, fees, supply}`` (`tokens.fees_json`)
``GET /audit/rules?org=&active=1``
    ``{state_height, rules: [audit.rule_json, ...]}`` (current versions, by id)
``GET /audit/rules/{id}``
    ``{state_height, rule, versions: [...]}``; 404 if unknown
``GET /events?from_height=&after=&follow=1``
    audit events as NDJSON, streamed (see `events` below)
``GET /state/proof?key=``
    ``{key, height, header_hash, state_root, value, decoded, proof, canonical}``: a
    `ContractState.prove` proof for `verify_state_proof` against the state root of the header at
    `height` (the node's height; ``header_hash`` null at 0)
``GET /state/proofs?key=&key=&did=``
    ``{height, header_hash, state_root, proofs: [{key, canonical}]}``: every key proven at **one**
    height; ``did=`` adds the registry records that resolve it (`registry.registry_closure`: key
    index, entity, org); at most `MAX_PROOF_KEYS` keys

A batch id goes percent-encoded into the path (``quote(id, safe="")``, as
`ledger.client` does; it may hold ``/``), which keeps ``/anchors/root%2F...``
apart from ``/anchors/root/{hex}``; unencoded, ``root/<x>`` is still read as a
batch id when x is not 64 hex digits. A `height` above the node's is ``503 behind`` (ask another node).

Errors are JSON ``{"error": code, "message": sentence}`` with 400, 404 or 503. Every integer
parameter is range-checked (0 ..  2^63-1, `MAX_INT`; ``limit`` at most `MAX_LIMIT`): out of range
is 400 ``bad-request`` with the reason, never a 500.

``GET /events`` streams (chunked ``application/x-ndjson``, one JSON object a
line) the audit events of the committed state, oldest first, from the first
event at ``from_height`` or later (default 0) or, with ``after=SEQ``, after
event SEQ: ``{"type": "event", ...audit.event_json}``. Without ``follow``
it ends with ``{"type": "end", "height", "next"}`` (``next``: the seq to ask
for next); with ``follow=1`` it stays open, sends new events as blocks
commit and ``{"type": "tip", "height", "next"}`` at most once a second when
the height moved (so a follower knows how far it has seen), and at least every
`EVENTS_KEEPALIVE_S` even when it did not (so a follower can time out a node that
hangs without closing), and ends when the node stops. Each event names its state ``key`` for ``/state/proof``.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from trust import canonical

from .light_client import tx_proof
from .views import block_view, header_view, jsonable, tx_view

if TYPE_CHECKING:
    from .node import Node

__all__ = ["make_app", "make_metrics_app", "MAX_HEADERS"]

#: Largest page of `/headers`.
MAX_HEADERS = 256
MAX_PROOF_KEYS = 1024
#: How often a following `/events` stream looks for new blocks (seconds), and sends a tip line at most.
EVENTS_POLL_S = 0.05
EVENTS_TIP_S = 1.0
#: a following stream sends a tip line at least this often (the follower's read timeout is a few of these)
EVENTS_KEEPALIVE_S = 10.0
#: the largest integer a parameter may hold (SQLite's and the canonical heights' signed 64 bits)
MAX_INT = 2**63 - 1
#: the largest page a `limit` may ask for
MAX_LIMIT = 1000


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def _int_arg(value: Any, name: str, default: int, maximum: int = MAX_INT) -> int:
    if value is None or value == "":
        return default
    text = str(value)
    # at most 19 digits (MAX_INT has 19): int() of a huge string is itself work an attacker chooses
    if len(text.strip()) > 20:
        raise web.HTTPBadRequest(text=f'{{"error": "bad-request", "message": "{name} must be <= {maximum}"}}',
                                 content_type="application/json")
    try:
        n = int(text)
    except ValueError:
        raise web.HTTPBadRequest(text=f'{{"error": "bad-request", "message": "{name} must be an integer"}}',
                                 content_type="application/json") from None
    if n < 0:
        raise web.HTTPBadRequest(text=f'{{"error": "bad-request", "message": "{name} must be >= 0"}}',
                                 content_type="application/json")
    if n > maximum:
        raise web.HTTPBadRequest(text=f'{{"error": "bad-request", "message": "{name} must be <= {maximum}"}}',
                                 content_type="application/json")
    return n


def _metrics_handler(node: "Node") -> Any:
    async def metrics(_req: web.Request) -> web.Response:
        body = generate_latest(node.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return metrics


def make_metrics_app(node: "Node") -> web.Application:
    """The plain-HTTP listener for Prometheus: ``GET /metrics`` and nothing else (404)."""
    app = web.Application()
    app.router.add_get("/metrics", _metrics_handler(node))
    return app


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
        # the replica's in-memory index of every committed tx (rebuilt by replay at start);
        # the store derives its own only when asked (`BlockStore.find_tx`)
        where = node.replica.tx_index.get(tx_id)
        if where is None:
            return _error(404, "not-found", f"transaction {text} is not committed on this node")
        h, i = where
        got = store.get(h)
        assert got is not None
        blk = got[0]
        results = store.results(h)
        return web.json_response(tx_view(blk.txs[i], h, i, results[i] if i < len(results) else None,
                                         tx_proof(blk, tx_id), blk.header))

    # ------------------------------------------------------------ contracts
    # Each handler reads the committed state without awaiting, so one answer
    # comes from one state (the event loop applies blocks between requests).

    def contracts() -> Any:
        from .contracts import ContractApp

        ex = getattr(node, "executor", None)
        if not isinstance(ex, ContractApp):
            raise web.HTTPNotFound(text='{"error": "no-contracts", "message": "this ledger runs the kv app, '
                                   'not contracts"}', content_type="application/json")
        return ex

    def at(req: web.Request, app: Any) -> tuple[int, int | None]:
        height = _int_arg(req.query.get("height"), "height", app.height)
        if height > app.height:
            raise web.HTTPServiceUnavailable(
                text=f'{{"error": "behind", "message": "this node is at height {app.height}, '
                     f'below {height}; ask another node"}}', content_type="application/json")
        raw = req.query.get("index")
        return height, None if raw is None or raw == "" else _int_arg(raw, "index", 0)

    async def registry_entity(req: web.Request) -> web.Response:
        from .contracts import registry

        app = contracts()
        entity_id = req.match_info["entity_id"]
        height, index = at(req, app)
        st = app.state
        rec = registry.get_entity(st, entity_id)
        if rec is None:
            return _error(404, "not-found", f"no registry entity {entity_id[:140]!r}")
        return web.json_response({"state_height": app.height,
                                  "resolution": registry.resolve(st, entity_id, height, index).to_json(),
                                  "entity": registry.entity_json(entity_id, rec)})

    async def registry_key(req: web.Request) -> web.Response:
        from .contracts import registry

        app = contracts()
        did = req.match_info["did"]
        height, index = at(req, app)
        r = registry.resolve_key(app.state, did, height, index)
        if r is None:
            return _error(404, "not-found", f"key {did[:140]!r} was never bound to an org or entity")
        return web.json_response({"state_height": app.height, "resolution": r.to_json()})

    async def anchor_by_id(req: web.Request, batch_id: str | None = None) -> web.Response:
        from .contracts import anchors

        app = contracts()
        batch_id = req.match_info["batch_id"] if batch_id is None else batch_id
        rec = anchors.get_batch(app.state, batch_id)
        if rec is None:
            return _error(404, "not-found", f"no anchored batch {batch_id[:140]!r}")
        return web.json_response({"state_height": app.height, **anchors.batch_json(batch_id, rec)})

    async def anchors_by_root(req: web.Request) -> web.Response:
        from .contracts import anchors

        app = contracts()
        text = req.match_info["root"]
        try:
            root = bytes.fromhex(text)
        except ValueError:
            root = b""
        if len(root) != 32 or len(text) != 64:
            # not a root: an id that starts with "root/" (see the module doc)
            return await anchor_by_id(req, "root/" + text)
        found = anchors.batches_by_root(app.state, root)
        if not found:
            return _error(404, "not-found", f"no batch anchored with root {root.hex()}")
        return web.json_response({"state_height": app.height, "root": root.hex(),
                                  "batches": [anchors.batch_json(b, rec) for b, rec in found]})

    async def token_account(req: web.Request) -> web.Response:
        from .contracts import registry, tokens

        app = contracts()
        account_id = req.match_info["account_id"]
        since = req.query.get("since_height")
        after = req.query.get("after")
        limit = _int_arg(req.query.get("limit"), "limit", 100, MAX_LIMIT)
        st = app.state
        if tokens.account(st, account_id) is None and registry.get_entity(st, account_id) is None:
            return _error(404, "not-found", f"no account or entity {account_id[:140]!r}")
        body = tokens.tokens_json(st, account_id, None if not since else _int_arg(since, "since_height", 0),
                                  limit, None if not after else _int_arg(after, "after", 0))
        return web.json_response({"state_height": app.height, **body})

    async def token_accounts(_req: web.Request) -> web.Response:
        from .contracts import tokens

        app = contracts()
        return web.json_response({"state_height": app.height,
                                  "accounts": [tokens.account_json(i, rec) for i, rec in tokens.accounts(app.state)]})

    async def token_fees(_req: web.Request) -> web.Response:
        from .contracts import tokens

        app = contracts()
        return web.json_response({"state_height": app.height, **tokens.fees_json(app.state)})

    # ------------------------------------------------------------ audit rules and events

    async def audit_rules(req: web.Request) -> web.Response:
        from .contracts import audit

        app = contracts()
        org = req.query.get("org") or None
        active = req.query.get("active", "") in ("1", "true", "yes")
        return web.json_response({"state_height": app.height, "rules": [
            audit.rule_json(r) for r in audit.rules(app.state, org, active_only=active)]})

    async def audit_rule(req: web.Request) -> web.Response:
        from .contracts import audit

        app = contracts()
        rule_id = req.match_info["rule_id"]
        st = app.state
        cur = audit.get_rule(st, rule_id)
        if cur is None:
            return _error(404, "not-found", f"no audit rule {rule_id[:140]!r}")
        return web.json_response({"state_height": app.height, "rule": audit.rule_json(cur),
                                  "versions": [audit.rule_json(v) for v in audit.rule_versions(st, rule_id)]})

    async def events(req: web.Request) -> web.StreamResponse:
        from .contracts import audit

        app = contracts()
        from_height = _int_arg(req.query.get("from_height"), "from_height", 0)
        raw_after = req.query.get("after")
        follow = req.query.get("follow", "") in ("1", "true", "yes")
        nxt = (_int_arg(raw_after, "after", 0) + 1 if raw_after not in (None, "")
               else audit.first_seq(app.state, from_height))
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-store"})
        resp.enable_chunked_encoding()
        await resp.prepare(req)
        loop = asyncio.get_running_loop()
        tip_at, tip_height = 0.0, -1
        try:
            while True:
                # read synchronously: one state between awaits (events never change once written)
                st, height = app.state, app.height
                n = audit.event_count(st)
                if nxt < n:
                    batch = [cast(dict, audit.get_event(st, s)) for s in range(nxt, min(n, nxt + 256))]  # seq < n
                    nxt += len(batch)
                    await resp.write(b"".join(
                        json.dumps({"type": "event", **audit.event_json(e)}).encode() + b"\n" for e in batch))
                    continue
                if not follow:
                    await resp.write(json.dumps({"type": "end", "height": height, "next": nxt}).encode() + b"\n")
                    break
                if ((height != tip_height and loop.time() - tip_at >= EVENTS_TIP_S)
                        or loop.time() - tip_at >= EVENTS_KEEPALIVE_S):
                    tip_at, tip_height = loop.time(), height
                    await resp.write(json.dumps({"type": "tip", "height": height, "next": nxt}).encode() + b"\n")
                try:
                    await asyncio.wait_for(stopping.wait(), EVENTS_POLL_S)
                    break
                except asyncio.TimeoutError:
                    pass
            await resp.write_eof()
        except ConnectionResetError:  # the follower went away
            pass
        return resp

    async def state_proof(req: web.Request) -> web.Response:
        app = contracts()
        key = req.query.get("key")
        if not key:
            return _error(400, "bad-request", "give the state key to prove, e.g. ?key=reg/ent/node0")
        height = app.height
        st = app.state
        proof = st.prove(key)
        root = st.root
        header = store.header(height) if height >= 1 else None
        if height >= 1 and (header is None or header.state_root != root):
            # the store and the app move together; if not, say so rather than serve an unverifiable proof
            return _error(503, "behind", f"no stored header with this state root at height {height}; retry")
        value = proof["value"]
        return web.json_response({
            "key": key, "height": height,
            "header_hash": None if header is None else header.header_hash().hex(),
            "state_root": bytes(root).hex(),
            "value": None if value is None else value.hex(),
            "decoded": None if value is None else jsonable(canonical.decode(value)),
            "proof": jsonable(proof),
            "canonical": {"proof": canonical.encode(proof).hex()},
        })

    async def state_proofs(req: web.Request) -> web.Response:
        """Several keys proven at one height (one certified state): a verifier that resolves
        a key as of an anchor needs the key index, the entity and its org from the same state."""
        from .contracts.registry import registry_closure

        app = contracts()
        keys = list(dict.fromkeys(req.query.getall("key", [])))
        dids = list(dict.fromkeys(req.query.getall("did", [])))
        if not keys and not dids:
            return _error(400, "bad-request", "give state keys (?key=K&key=K2) and/or dids whose registry "
                          "records to prove (?did=did:key:...)")
        if len(keys) + 3 * len(dids) > MAX_PROOF_KEYS:
            return _error(400, "too-many-keys", f"at most {MAX_PROOF_KEYS} keys per request (a did counts 3)")
        height = app.height
        st = app.state
        for did in dids:  # no await from here on: every proof is of the same state
            keys.extend(k for k in registry_closure(st, did) if k not in keys)
        root = st.root
        header = store.header(height) if height >= 1 else None
        if height >= 1 and (header is None or header.state_root != root):
            return _error(503, "behind", f"no stored header with this state root at height {height}; retry")
        return web.json_response({
            "height": height, "header_hash": None if header is None else header.header_hash().hex(),
            "state_root": bytes(root).hex(),
            "proofs": [{"key": k, "canonical": canonical.encode(st.prove(k)).hex()} for k in keys],
        })

    async def reputation(req: web.Request) -> web.Response:
        from .contracts import ContractApp
        from .contracts.registry import resolve_key
        from .contracts.reputation import report

        r = node.replica
        height = _int_arg(req.query.get("height"), "height", r.height)
        if height > r.height:
            return _error(503, "behind", f"this node is at height {r.height}, below {height}; ask another node")
        ex: Any = node.executor  # ContractApp or KVExecutor: both keep rep_history
        ids = None
        if isinstance(ex, ContractApp):
            ids = {}
            for n in node.genesis.nodes:
                res = resolve_key(ex.state, n.did, height)
                if res is not None:
                    ids[n.did] = res.id
        got = report(ex.rep_history, node.genesis, height, r.sealers_at(height + 1), ids)
        if got is None:
            return _error(410, "pruned", f"height {height} is older than the reputation history this node keeps")
        return web.json_response({"node": node.name, "state_height": r.height, **got})

    stopping = asyncio.Event()  # set when the node shuts down: following /events streams end

    async def on_shutdown(_app: web.Application) -> None:
        stopping.set()

    app = web.Application()
    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/status", status)
    app.router.add_get("/blocks/{h}", block)
    app.router.add_get("/headers", headers)
    app.router.add_get("/tx/{tx_id}", tx)
    app.router.add_get("/metrics", _metrics_handler(node))
    app.router.add_get("/registry/key/{did}", registry_key)
    app.router.add_get("/registry/{entity_id}", registry_entity)
    app.router.add_get("/anchors/root/{root}", anchors_by_root)
    app.router.add_get("/anchors/{batch_id:.+}", anchor_by_id)
    app.router.add_get("/tokens/accounts", token_accounts)
    app.router.add_get("/tokens/accounts/{account_id}", token_account)
    app.router.add_get("/tokens/fees", token_fees)
    app.router.add_get("/state/proof", state_proof)
    app.router.add_get("/state/proofs", state_proofs)
    app.router.add_get("/audit/rules", audit_rules)
    app.router.add_get("/audit/rules/{rule_id}", audit_rule)
    app.router.add_get("/events", events)
    app.router.add_get("/reputation", reputation)
    return app
