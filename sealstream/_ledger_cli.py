"""``sealstream ledger ...``: a local cluster of ledger nodes (init, up, down, status, submit,
registry, anchor, reputation, events, audit, tokens).

State lives in ``$SEALSTREAM_HOME/ledger`` (see `ledger.layout`); the processes
are run by `infra.ledger_cluster.LocalCluster`, the same code the tests and the
benchmark use. Exit codes: 0 ok, 1 error (one sentence naming the fix),
3 when `status` finds a node that is not running.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click
from rich.table import Table

from ._output import emit_json as _emit
from ._output import settings_of as _settings
from ._output import err as _err
from ._output import fail
from ._output import out as _out
from .settings import Settings

__all__ = ["ledger"]

JOB = "sealstream-ledger"



def _cluster(s: Settings, n_nodes: int | None = None, n_sealers: int | None = None, app: str = "contracts",
             tls: bool | None = None) -> Any:
    from ledger import Params
    from infra.ledger_cluster import LocalCluster

    params = Params(max_block_txs=s.ledger_max_block_txs, block_time_ms=s.ledger_block_time_ms,
                    checkpoint_interval=s.ledger_checkpoint_interval,
                    view_change_timeout_ms=s.ledger_view_change_timeout_ms)
    return LocalCluster(s.ledger_home, n_nodes=n_nodes or s.ledger_nodes,
                        n_sealers=n_sealers or s.ledger_sealers, params=params, host=s.host,
                        base_port=s.ledger_base_port, app=app, tls=s.ledger_tls if tls is None else tls,
                        metrics_host=s.ledger_metrics_host)


def _from_json(value: Any) -> Any:
    """JSON -> tx payload: ``{"$hex": "00ff..."}`` (a map with that one key) becomes bytes."""
    if isinstance(value, dict):
        if set(value) == {"$hex"}:
            text = value["$hex"]
            if not isinstance(text, str):
                raise ValueError('"$hex" needs a string of hex digits')
            try:
                return bytes.fromhex(text)
            except ValueError:
                raise ValueError(f'"$hex" value {text[:40]!r} is not hex digits') from None
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def _signer(layout: Any, who: str) -> Any:
    """The key `submit --as` names: the layout's admin or client key, or a key file."""
    from pathlib import Path

    from trust.identity import load_keypair

    if who == "admin":
        return layout.admin_key()
    if who == "client":
        return layout.client_key()
    path = Path(who).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"--as {who}: not 'admin', 'client' or an existing key file")
    return load_keypair(path)


def _fail(exc: Exception, as_json: bool) -> None:
    fail({"error": type(exc).__name__, "message": str(exc)}, as_json)


def _say(enabled: bool) -> Any:
    return (lambda msg: _err.print(f"- {msg}", highlight=False)) if enabled else None


def _boundary_errors() -> tuple[type[Exception], ...]:
    from ledger import LedgerError
    from trust.errors import TrustError

    return (LedgerError, TrustError)


def _rows(cluster: Any) -> list[dict[str, Any]]:
    rows = []
    for a in cluster.addresses():
        pid = cluster.pid(a.name)
        st = cluster.status(a.name) if pid is not None else None
        row: dict[str, Any] = {"node": a.name, "state": "stopped" if pid is None else
                               ("running" if st is not None else "unhealthy"), "pid": pid,
                               "p2p": f"{a.host}:{a.p2p_port}", "http": a.http_url,
                               "client": f"{a.host}:{a.client_port}" if a.client_port else None,
                               "metrics": a.metrics_url,
                               "tls": cluster.layout.tls}
        if st is not None:
            row.update({k: st[k] for k in ("height", "view", "role", "primary", "epoch", "tip", "mempool")})
            row["peers"] = f"{len(st['peers_connected'])}/{st['peers_total']}"
            row["drops"] = sum(st["drops"].values())
            row["drops_by_reason"] = st["drops"]
        rows.append(row)
    return rows


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table("node", "state", "role", "height", "view", "peers", "drops", "http", "pid")
    colours = {"running": "green", "unhealthy": "yellow", "stopped": "red"}
    for r in rows:
        table.add_row(r["node"], f"[{colours[r['state']]}]{r['state']}[/]", r.get("role", "-"),
                      str(r.get("height", "-")), str(r.get("view", "-")), r.get("peers", "-"),
                      str(r.get("drops", "-")), r["http"], str(r["pid"] or "-"))
    return table


@click.group()
def ledger() -> None:
    """The consortium ledger: a local cluster of PBFT nodes on loopback.

    \b
    sealstream ledger init --nodes 4 --sealers 4   keys (0600), genesis, contracts genesis, addresses
    sealstream ledger up                           start the nodes, wait, register with Prometheus
    sealstream ledger status                       height, view, role, peers, drops per node
    sealstream ledger submit --as admin registry.register_org \\
        '{"id": "acme", "name": "ACME", "admin": "did:key:z6Mk..."}'
    sealstream ledger registry acme --height 5     key and status as of a height
    sealstream ledger anchor BATCH_ID              an anchored batch root
    sealstream ledger events --follow              audit events as they commit (--verify: proven)
    sealstream ledger audit rules                  audit rules; `ledger tokens ...`: balances, history
    sealstream ledger down                         stop the nodes; blocks are kept

    The nodes run the contracts (registry, anchors, tokens, audit; docs/contracts.md) with the
    consortium admin key in admin/admin.key; `init --app kv` makes a key/value
    ledger (kv.put) instead. Node-to-node links are TLS 1.3 bound to the genesis keys and
    clients use a TLS port of their own; the HTTP API is HTTPS with each node's own certificate,
    pinned by every caller to the node's genesis key (`init --plaintext`: the plaintext transport
    and plain HTTP of before).

    State: $SEALSTREAM_HOME/ledger (each node's key in nodes/<name>/node.key only). Ports:
    SEALSTREAM_LEDGER_BASE_PORT (node i of n uses base+2i for p2p, base+2i+1 for HTTP(S),
    base+2n+i for clients and base+3n+i for Prometheus's plain-HTTP /metrics on
    SEALSTREAM_LEDGER_METRICS_HOST, fixed at `init`).
    """


@ledger.command("init")
@click.option("--nodes", "n_nodes", type=int, default=None, help="number of nodes [SEALSTREAM_LEDGER_NODES]")
@click.option("--sealers", "n_sealers", type=int, default=None,
              help="how many of them seal (the first K) [SEALSTREAM_LEDGER_SEALERS]")
@click.option("--app", type=click.Choice(["contracts", "kv"]), default="contracts", show_default=True,
              help="what the nodes run: the contracts (registry, anchors) or a key/value map (kv.put)")
@click.option("--force", is_flag=True, help="replace an existing ledger (stops its nodes, deletes its blocks)")
@click.option("--reputation", is_flag=True,
              help="choose the sealers by reputation: at every epoch end the top K (--sealers) nodes seal")
@click.option("--epoch-length", type=click.IntRange(min=1), default=None,
              help="blocks per epoch (default 1000, or 100 with --reputation)")
@click.option("--plaintext", is_flag=True,
              help="plaintext links, clients on the peers' port (the comparison of bench/ledger.py) "
                   "[SEALSTREAM_LEDGER_TLS=0]")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.pass_context
def ledger_init(ctx: click.Context, n_nodes: int | None, n_sealers: int | None, app: str, force: bool,
                reputation: bool, epoch_length: int | None, plaintext: bool, as_json: bool) -> None:
    """Write node keys, the genesis and the node addresses into the state directory.

    With the contracts app (the default) also admin/admin.key, the consortium
    admin, and contracts.json (org "operator", administered by that key,
    holding the nodes), whose hash the genesis records. With --reputation the
    first K nodes seal epoch 0 and each epoch end picks the next K by
    reputation (docs/contracts.md, "Reputation"):

    \b
      sealstream ledger init --nodes 7 --sealers 4 --reputation --epoch-length 50
    """
    s = _settings(ctx)
    cluster = _cluster(s, n_nodes, n_sealers, app, tls=False if plaintext else None)
    if reputation or epoch_length:
        from dataclasses import replace

        cluster.params = replace(cluster.params, sealer_count=cluster.n_sealers if reputation else 0,
                                 epoch_length=epoch_length or (100 if reputation else cluster.params.epoch_length))
    try:
        layout = cluster.init(force=force)
        addrs = cluster.addresses()
        g = layout.genesis()
    except _boundary_errors() as exc:
        _fail(exc, as_json)
        return
    admin = layout.admin_key().did if app == "contracts" else None
    if as_json:
        _emit({"home": str(layout.root), "chain_id": g.chain_id, "genesis_hash": g.genesis_hash().hex(),
               "app": layout.app(), "tls": layout.tls, "app_hash": g.app.partition(":")[2] or None, "admin": admin,
               "sealers": len(g.sealers.members), "reputation": g.params.sealer_count > 0,
               "epoch_length": g.params.epoch_length, "nodes": [a.__dict__ for a in addrs]})
        return
    _out.print(f"ledger {g.chain_id}: {len(addrs)} nodes, {len(g.sealers.members)} sealers, app {layout.app()} "
               f"in {layout.root}")
    if g.params.sealer_count:
        _out.print(f"sealers chosen by reputation every {g.params.epoch_length} blocks "
                   "(sealstream ledger reputation shows the table)")
    if admin:
        _out.print(f"consortium admin {admin} (admin/admin.key)")
    _out.print(f"genesis hash {g.genesis_hash().hex()}; next: sealstream ledger up")


@ledger.command("up")
@click.option("--timeout", default=60.0, show_default=True, help="seconds to wait for the nodes to be ready")
@click.option("--json", "as_json", is_flag=True, help="print the final status as JSON")
@click.pass_context
def ledger_up(ctx: click.Context, timeout: float, as_json: bool) -> None:
    """Start every node (initialising the ledger first if needed) and wait until all are ready."""
    from sealstream.metrics_targets import register_targets

    s = _settings(ctx)
    cluster = _cluster(s)
    began = time.monotonic()
    say = _say(not as_json)
    try:
        if not cluster.layout.exists():
            if say:
                say(f"no ledger in {cluster.root}: initialising {s.ledger_nodes} nodes, {s.ledger_sealers} sealers")
            cluster.init()
        cluster.start(timeout=timeout, progress=say)
        addrs = cluster.addresses()
        # Prometheus scrapes each node's plain-HTTP metrics port (the API is HTTPS pinned to genesis keys)
        targets_file = register_targets(s.home, JOB, [t for a in addrs if (t := a.metrics_target) is not None])
    except _boundary_errors() as exc:
        _fail(exc, as_json)
        return
    rows = _rows(cluster)
    took = time.monotonic() - began
    if as_json:
        _emit({"seconds": round(took, 2), "home": str(cluster.root), "prometheus_targets": str(targets_file),
               "nodes": rows})
        return
    _out.print(_table(rows))
    _out.print(f"ledger up in {took:.1f} s; state in {cluster.root}; Prometheus job {JOB}")


@ledger.command("down")
@click.option("--json", "as_json", is_flag=True, help="print what was stopped as JSON")
@click.pass_context
def ledger_down(ctx: click.Context, as_json: bool) -> None:
    """Stop the nodes `up` started (by pid file); their blocks stay for the next `up`."""
    cluster = _cluster(_settings(ctx))
    if not cluster.layout.exists():
        stopped: list[str] = []
    else:
        try:
            stopped = cluster.stop()
        except _boundary_errors() as exc:
            _fail(exc, as_json)
            return
    if as_json:
        _emit({"stopped": stopped})
    else:
        _out.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@ledger.command("status")
@click.option("--json", "as_json", is_flag=True, help="print as JSON")
@click.pass_context
def ledger_status(ctx: click.Context, as_json: bool) -> None:
    """Each node: state, role, height, view, peers and dropped messages.

    Exit code 0 when every node runs and answers, 3 otherwise.
    """
    cluster = _cluster(_settings(ctx))
    try:
        rows = _rows(cluster)
    except _boundary_errors() as exc:
        _fail(exc, as_json)
        return
    if as_json:
        _emit({"home": str(cluster.root), "nodes": rows})
    else:
        _out.print(_table(rows))
    if any(r["state"] != "running" for r in rows):
        sys.exit(3)


_PAYLOAD_HELP = """\b
PAYLOAD is JSON. Byte fields (an anchor's root) are written {"$hex": "<hex digits>"}:
a map whose only key is "$hex" becomes those bytes.
"""


@ledger.command("submit", epilog=_PAYLOAD_HELP)
@click.argument("kind")
@click.argument("payload")
@click.option("--as", "signer", default="client", show_default=True, metavar="admin|client|KEYFILE",
              help="who signs: the consortium admin (admin/admin.key), the ledger's client key, or a key file "
                   "(trust.identity format, mode 0600)")
@click.option("--timeout", default=15.0, show_default=True, help="seconds to wait for f+1 matching replies")
@click.option("--json", "as_json", is_flag=True, help="print the receipt as JSON")
@click.pass_context
def ledger_submit(ctx: click.Context, kind: str, payload: str, signer: str, timeout: float, as_json: bool) -> None:
    """Submit one transaction KIND with JSON PAYLOAD; print its receipt once f+1 sealers agree.

    \b
    Examples:
      sealstream ledger submit --as admin registry.register_org \\
          '{"id": "acme", "name": "ACME", "admin": "did:key:z6Mk..."}'
      sealstream ledger submit --as gw1.key anchors.anchor '{"batch_id": "b-1",
          "root": {"$hex": "<64 hex digits>"}, "tree_size": 3, "gateway": "gw1", "window": [0, 1000]}'
      sealstream ledger submit kv.put '{"key": "a", "value": 1}'      (a kv ledger)

    A contract refusal (FORBIDDEN, DUPLICATE_BATCH, ...) is committed like any
    tx but exits 1 with its code.
    """
    from ledger.client import LedgerClient
    from ledger.views import jsonable

    try:
        value = _from_json(json.loads(payload))
    except ValueError as exc:
        msg = exc.args[0] if exc.args else str(exc)
        _fail(ValueError(f"PAYLOAD is not JSON ({msg}); quote it, e.g. '{{\"key\": \"a\"}}'"), as_json)
        return
    from ledger.client import TxRefused

    cluster = _cluster(_settings(ctx))
    try:
        key = _signer(cluster.layout, signer)
        with LedgerClient.from_layout(cluster.root, key=key, timeout=timeout) as client:
            r = client.submit(kind, value)
    except TxRefused as exc:
        # refused at admission (never ordered): say why the ledger's client key is, and what to use
        hint = ("; it was signed by the ledger's client key, which the registry does not know: "
                "sign with --as admin or --as KEYFILE" if signer == "client"
                and exc.code in ("NOT_REGISTERED", "INSUFFICIENT_QUOTA") else "")
        fail({"error": exc.code, "message": f"{exc}{hint}"}, as_json)
        return
    except _boundary_errors() + (OSError,) as exc:
        _fail(exc, as_json)
        return
    data = {"tx_id": r.tx_id.hex(), "height": r.height, "index": r.index, "block": r.block_hash.hex(),
            "submitter": key.did, "result": jsonable(r.result), "confirmed_by": len(r.nodes)}
    if r.refusal is not None:
        code, message = r.refusal
        hint = ("; it was signed by the ledger's client key, which the registry does not know: "
                "sign with --as admin or --as KEYFILE" if signer == "client"
                and code in ("FORBIDDEN", "INSUFFICIENT_QUOTA") else "")
        fail({"error": code, "message": f"refused with {code}: {message} (tx {data['tx_id'][:16]} committed at "
                                        f"height {r.height}, index {r.index}){hint}", "receipt": data}, as_json)
    if as_json:
        _emit(data)
    else:
        _out.print(f"committed tx {data['tx_id']} at height {r.height} (index {r.index}), result {data['result']}, "
                   f"confirmed by {len(r.nodes)} sealers")


def _lookup_client(ctx: click.Context) -> Any:
    from ledger.client import LedgerClient

    cluster = _cluster(_settings(ctx))
    return LedgerClient.from_layout(cluster.root)


def _look(ctx: click.Context, as_json: bool, ask: Any, missing: str | None = None) -> Any:
    """`ask(client)` with a lookup client; a boundary error, or None when `missing` is
    given, exits 1 with one sentence (`missing` names what was not found)."""
    try:
        with _lookup_client(ctx) as client:
            got = ask(client)
    except _boundary_errors() as exc:
        _fail(exc, as_json)
    if got is None and missing is not None:
        _fail(LookupError(missing), as_json)
    return got


def _pos(p: dict | None) -> str:
    return "-" if p is None else f"{p['height']}/{p['index']}"


@ledger.command("registry")
@click.argument("entity_id")
@click.option("--height", type=click.IntRange(min=0), default=None,
              help="resolve as of this height (default: the node's height)")
@click.option("--index", type=click.IntRange(min=0), default=None,
              help="with --height: as tx INDEX of that block saw it")
@click.option("--json", "as_json", is_flag=True, help="print resolution and record as JSON")
@click.pass_context
def ledger_registry(ctx: click.Context, entity_id: str, height: int | None, index: int | None,
                    as_json: bool) -> None:
    """An org, node, device or gateway: its key and status as of a height, and its key history.

    Status is active, revoked (from its or its org's revocation on),
    unregistered (before its registration) or unknown. Exit 1 if no node knows ENTITY_ID.
    """
    got = _look(ctx, as_json, lambda c: c.resolve(entity_id, height, index),
                f"no registry entity {entity_id!r} on any node; check the id "
                "(`sealstream ledger submit registry.register_...` adds one)")
    if as_json:
        _emit(got)
        return
    r, e = got["resolution"], got["entity"]
    at = f"height {r['height']}" + ("" if r["index"] is None else f" index {r['index']}")
    colour = "green" if r["valid"] else "red"
    _out.print(f"{e['type']} [bold]{e['id']}[/] (org {e['org'] or '-'}) as of {at}: "
               f"[{colour}]{r['status']}[/], key {r['key'] or '-'}")
    table = Table("key", "from (height/index)")
    for k in e["keys"]:
        table.add_row(k["key"], f"{k['height']}/{k['index']}")
    _out.print(table)
    _out.print(f"registered {_pos(e['registered'])}, revoked {_pos(e['revoked'])}"
               + (f" ({e['reason']})" if e["reason"] else "") + f"; node state at height {got['state_height']}")


@ledger.command("anchor")
@click.argument("batch_id")
@click.option("--json", "as_json", is_flag=True, help="print the anchor as JSON")
@click.pass_context
def ledger_anchor(ctx: click.Context, batch_id: str, as_json: bool) -> None:
    """An anchored batch: its root, size, gateway, window and the height/index of its commit.

    Exit 1 if no node has BATCH_ID.
    """
    got = _look(ctx, as_json, lambda c: c.get_anchor(batch_id), f"no anchored batch {batch_id!r} on any node")
    if as_json:
        _emit(got)
        return
    _out.print(f"batch [bold]{got['batch_id']}[/]: root {got['root']}, {got['tree_size']} leaves, "
               f"window {got['window'][0]}..{got['window'][1]} ms")
    _out.print(f"anchored by gateway {got['gateway']} (org {got['org']}) at height {got['height']}, "
               f"index {got['index']}, tx {got['tx_id']}")


@ledger.command("reputation")
@click.option("--height", type=click.IntRange(min=0), default=None,
              help="the table after this block (default: the node's height)")
@click.option("--node", default=None, help="ask this node only (default: the first that answers)")
@click.option("--json", "as_json", is_flag=True, help="print the table as JSON (with its canonical bytes)")
@click.pass_context
def ledger_reputation(ctx: click.Context, height: int | None, node: str | None, as_json: bool) -> None:
    """The reputation table: every node's score, miss streak, offences, and who seals next.

    Scores change only from on-chain evidence (certificates, heartbeats,
    equivocation evidence), so every node answers the same table for a
    height (compare `canonical`). Examples:

    \b
      sealstream ledger reputation
      sealstream ledger reputation --height 120 --json
    """
    cluster = _cluster(_settings(ctx))
    path = "/reputation" + ("" if height is None else f"?height={height}")
    got, why = None, "no node answered"
    for name in [node] if node else cluster.names:
        try:
            code, body = cluster.http_get(name, path)
        except OSError as exc:
            why = f"{name}: {exc}"
            continue
        if code == 200:
            got = json.loads(body)
            break
        why = f"{name}: HTTP {code} {body[:200].decode(errors='replace')}"
    if got is None:
        _fail(LookupError(f"no reputation table ({why}); is the ledger up? (`sealstream ledger up`)"), as_json)
        return
    if as_json:
        _emit(got)
        return
    state = "on" if got["enabled"] else "off (sealer_count 0: the genesis set never changes)"
    _out.print(f"reputation after block {got['height']} (node {got['node']}): {state}; "
               f"floor {got['floor']}, max {got['max']}; sealers next: {', '.join(got['sealers'])}")
    table = Table("node", "score", "missed", "offences", "last heartbeat", "sealer", "id")
    for r in got["rows"]:
        score = f"[red]{r['score']}[/]" if not r["above_floor"] else str(r["score"])
        table.add_row(r["node"], score, str(r["missed"]), str(r["offences"]), str(r["heartbeat"] or "-"),
                      "[green]yes[/]" if r["sealer"] else "-", r["id"] or "-")
    _out.print(table)


# ---------------------------------------------------------------- audit events and rules


def _event_line(ev: Any) -> str:
    o = ev.operation
    colour = {"critical": "red", "warning": "yellow"}.get(ev.severity, "cyan")
    proof = "" if ev.verified_at is None else f" [green]proven at {ev.verified_at}[/]"
    return (f"{ev.id} seq {ev.seq} [{colour}]{ev.severity}[/] rule {ev.rule} v{ev.version}: {ev.message} "
            f"({o['op']} on {o['system']} by {o['operator']}, org {o['org']}){proof}")


@ledger.command("events")
@click.option("--from", "from_height", type=click.IntRange(min=0), default=0, show_default=True,
              help="start at the first event at this height or later")
@click.option("--after", type=click.IntRange(min=0), default=None, help="start after this event seq instead")
@click.option("--follow", is_flag=True, help="keep printing new events as blocks commit (Ctrl-C to stop)")
@click.option("--verify", is_flag=True,
              help="prove each event against headers verified from genesis (and the stream complete at each tip)")
@click.option("--node", default=None, help="read from this node only (name or did)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line (NDJSON)")
@click.pass_context
def ledger_events(ctx: click.Context, from_height: int, after: int | None, follow: bool, verify: bool,
                  node: str | None, as_json: bool) -> None:
    """Audit events raised by the audit rules (GET /events), oldest first.

    \b
    Examples:
      sealstream ledger events                      every event so far
      sealstream ledger events --from 120 --follow  from height 120 on, then new ones as they commit
      sealstream ledger events --verify --json      each proven against certified headers, as NDJSON

    An event id is HEIGHT-INDEX-N: the N-th event of tx INDEX of block HEIGHT.
    Without --follow the command ends at the last committed event. Deploy rules
    and record operations with `sealstream ledger submit audit.deploy_rule|audit.record ...`.
    """
    n = 0
    try:
        with _lookup_client(ctx) as client:
            for ev in client.events(from_height, after, follow=follow, verify=verify, node=node):
                n += 1
                if as_json:
                    click.echo(json.dumps(ev.to_json()))
                else:
                    _out.print(_event_line(ev), highlight=False)
    except KeyboardInterrupt:
        pass
    except _boundary_errors() as exc:
        _fail(exc, as_json)
        return
    if not as_json:
        _err.print(f"{n} events", highlight=False)


@ledger.group("audit")
def ledger_audit() -> None:
    """The audit contract's rules (deploy and retire them with `ledger submit`).

    \b
    sealstream ledger audit rules --org acme --active   current versions
    sealstream ledger audit rule night-commands         one rule with every version
    sealstream ledger submit --as acme.key audit.deploy_rule '{"id": "night-commands", "org": "acme",
        "kind": "window", "start": "06:00", "end": "22:00", "match": {"op": "command"}}'
    """


@ledger_audit.command("rules")
@click.option("--org", default=None, help="only this org's rules ('*': the consortium-wide ones)")
@click.option("--active", is_flag=True, help="only active rules")
@click.option("--json", "as_json", is_flag=True, help="print as JSON")
@click.pass_context
def ledger_audit_rules(ctx: click.Context, org: str | None, active: bool, as_json: bool) -> None:
    """Audit rules (their current versions), by id."""
    got = _look(ctx, as_json, lambda c: c.audit_rules(org, active))
    if as_json:
        _emit({"rules": got})
        return
    table = Table("id", "org", "kind", "version", "status", "severity", "match", "deployed")
    for r in got:
        table.add_row(r["id"], r["org"], r["kind"], str(r["version"]), r["status"], r["severity"],
                      json.dumps(r["match"]), _pos(r["deployed"]))
    _out.print(table)


@ledger_audit.command("rule")
@click.argument("rule_id")
@click.option("--json", "as_json", is_flag=True, help="print as JSON")
@click.pass_context
def ledger_audit_rule(ctx: click.Context, rule_id: str, as_json: bool) -> None:
    """One audit rule with every version it had. Exit 1 if no node knows RULE_ID."""
    got = _look(ctx, as_json, lambda c: c.audit_rule(rule_id), f"no audit rule {rule_id!r} on any node")
    if as_json:
        _emit(got)
        return
    r = got["rule"]
    _out.print(f"rule [bold]{r['id']}[/] of {r['org']}: {r['kind']}, version {r['version']}, {r['status']}")
    keep = ("id", "org", "kind", "version", "status", "deployed", "retired", "by", "reason")
    for v in got["versions"]:
        spec = {k: x for k, x in v.items() if k not in keep}
        _out.print(f"  v{v['version']} deployed {_pos(v['deployed'])}, retired {_pos(v['retired'])}: "
                   f"{json.dumps(spec, sort_keys=True)}", highlight=False)


# ---------------------------------------------------------------- tokens


@ledger.group("tokens")
def ledger_tokens() -> None:
    """Token accounts: balances, consumption history, mint and allocate.

    \b
    sealstream ledger tokens balance acme
    sealstream ledger tokens history gw1 --since-height 100
    sealstream ledger tokens mint acme 1000                 (the consortium admin)
    sealstream ledger tokens allocate acme gw1 50 --as acme.key
    sealstream ledger tokens fees
    """


@ledger_tokens.command("balance")
@click.argument("account")
@click.option("--json", "as_json", is_flag=True, help="print as JSON")
@click.pass_context
def ledger_tokens_balance(ctx: click.Context, account: str, as_json: bool) -> None:
    """An account's balance, how many charges it paid and the total spent. Exit 1 if unknown."""
    got = _look(ctx, as_json, lambda c: c.token_account(account, limit=1),
                f"no account or entity {account!r} on any node")
    data = {k: got[k] for k in ("account", "balance", "charges", "spent", "state_height")}
    if as_json:
        _emit(data)
        return
    _out.print(f"{account}: balance {got['balance']}, {got['charges']} charges, spent {got['spent']} "
               f"(height {got['state_height']})")


@ledger_tokens.command("history")
@click.argument("account")
@click.option("--since-height", type=click.IntRange(min=0), default=None, help="charges at this height or later")
@click.option("--after", type=click.IntRange(min=0), default=None, help="continue after this charge seq")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print as JSON")
@click.pass_context
def ledger_tokens_history(ctx: click.Context, account: str, since_height: int | None, after: int | None,
                          limit: int, as_json: bool) -> None:
    """Every charge of an account, oldest first: who, what, when, which tx (one page)."""
    got = _look(ctx, as_json, lambda c: c.token_account(account, since_height, after, limit),
                f"no account or entity {account!r} on any node")
    if as_json:
        _emit(got)
        return
    table = Table("seq", "kind", "fee", "height/index", "tx", "submitter")
    for e in got["consumption"]:
        table.add_row(str(e["seq"]), e["kind"], str(e["fee"]), f"{e['height']}/{e['index']}", e["tx_id"][:16],
                      str(e.get("submitter") or "-"))
    _out.print(table)
    more = "" if got["next"] is None else f"; more with --after {got['next']}"
    _out.print(f"balance {got['balance']}, {got['charges']} charges, spent {got['spent']}{more}")


_AS_HELP = "who signs: admin (admin/admin.key), client, or a key file (mode 0600)"


@ledger_tokens.command("mint")
@click.argument("account")
@click.argument("amount", type=click.IntRange(min=1))
@click.option("--as", "signer", default="admin", show_default=True, metavar="admin|client|KEYFILE", help=_AS_HELP)
@click.option("--timeout", default=15.0, show_default=True, help="seconds to wait for f+1 matching replies")
@click.option("--json", "as_json", is_flag=True, help="print the receipt as JSON")
@click.pass_context
def ledger_tokens_mint(ctx: click.Context, account: str, amount: int, signer: str, timeout: float,
                       as_json: bool) -> None:
    """Mint AMOUNT tokens to ACCOUNT (the consortium admin only): a tokens.mint transaction."""
    ctx.invoke(ledger_submit, kind="tokens.mint", payload=json.dumps({"account": account, "amount": amount}),
               signer=signer, timeout=timeout, as_json=as_json)


@ledger_tokens.command("allocate")
@click.argument("source", metavar="FROM")
@click.argument("to")
@click.argument("amount", type=click.IntRange(min=1))
@click.option("--as", "signer", default="admin", show_default=True, metavar="admin|client|KEYFILE", help=_AS_HELP)
@click.option("--timeout", default=15.0, show_default=True, help="seconds to wait for f+1 matching replies")
@click.option("--json", "as_json", is_flag=True, help="print the receipt as JSON")
@click.pass_context
def ledger_tokens_allocate(ctx: click.Context, source: str, to: str, amount: int, signer: str, timeout: float,
                           as_json: bool) -> None:
    """Move AMOUNT tokens from FROM to TO: a tokens.allocate transaction (the consortium admin,
    or an org's admin from its org to its own nodes/devices/gateways)."""
    ctx.invoke(ledger_submit, kind="tokens.allocate",
               payload=json.dumps({"from": source, "to": to, "amount": amount}),
               signer=signer, timeout=timeout, as_json=as_json)


@ledger_tokens.command("fees")
@click.option("--json", "as_json", is_flag=True, help="print as JSON")
@click.pass_context
def ledger_tokens_fees(ctx: click.Context, as_json: bool) -> None:
    """The fee schedule (by kind pattern) and the supply (minted, consumed)."""
    got = _look(ctx, as_json, lambda c: c.token_fees())
    if as_json:
        _emit(got)
        return
    table = Table("kind", "fee")
    for k, v in sorted(got["fees"].items()):
        table.add_row(k, str(v))
    _out.print(table)
    _out.print(f"supply: minted {got['supply']['minted']}, consumed {got['supply']['consumed']}")
