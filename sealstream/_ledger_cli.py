"""``sealstream ledger ...``: a local cluster of ledger nodes (init, up, down, status, submit).

State lives in ``$SEALSTREAM_HOME/ledger`` (see `ledger.layout`); the processes
are run by `ledger.cluster.LocalCluster`, the same code the tests and the
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
from ._output import err as _err
from ._output import fail
from ._output import out as _out
from .settings import Settings, load_settings

__all__ = ["ledger"]

JOB = "sealstream-ledger"


def _settings(ctx: click.Context) -> Settings:
    obj = ctx.obj
    return obj.settings if obj is not None and hasattr(obj, "settings") else load_settings()


def _cluster(s: Settings, n_nodes: int | None = None, n_sealers: int | None = None) -> Any:
    from ledger import Params
    from ledger.cluster import LocalCluster

    params = Params(max_block_txs=s.ledger_max_block_txs, block_time_ms=s.ledger_block_time_ms,
                    checkpoint_interval=s.ledger_checkpoint_interval,
                    view_change_timeout_ms=s.ledger_view_change_timeout_ms)
    return LocalCluster(s.ledger_home, n_nodes=n_nodes or s.ledger_nodes,
                        n_sealers=n_sealers or s.ledger_sealers, params=params, host=s.host,
                        base_port=s.ledger_base_port)


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
                               "p2p": f"{a.host}:{a.p2p_port}", "http": a.http_url}
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
    sealstream ledger init --nodes 4 --sealers 4   keys (0600), genesis, addresses
    sealstream ledger up                           start the nodes, wait, register with Prometheus
    sealstream ledger status                       height, view, role, peers, drops per node
    sealstream ledger submit kv.put '{"key": "a", "value": 1}'
    sealstream ledger down                         stop the nodes; blocks are kept

    State: $SEALSTREAM_HOME/ledger. Ports: SEALSTREAM_LEDGER_BASE_PORT (node i uses
    base+2i for p2p and base+2i+1 for HTTP, fixed at `init`).
    """


@ledger.command("init")
@click.option("--nodes", "n_nodes", type=int, default=None, help="number of nodes [SEALSTREAM_LEDGER_NODES]")
@click.option("--sealers", "n_sealers", type=int, default=None,
              help="how many of them seal (the first K) [SEALSTREAM_LEDGER_SEALERS]")
@click.option("--force", is_flag=True, help="replace an existing ledger (stops its nodes, deletes its blocks)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.pass_context
def ledger_init(ctx: click.Context, n_nodes: int | None, n_sealers: int | None, force: bool, as_json: bool) -> None:
    """Write node keys, the genesis and the node addresses into the state directory."""
    s = _settings(ctx)
    cluster = _cluster(s, n_nodes, n_sealers)
    try:
        layout = cluster.init(force=force)
        addrs = cluster.addresses()
        g = layout.genesis()
    except _boundary_errors() as exc:
        _fail(exc, as_json)
        return
    if as_json:
        _emit({"home": str(layout.root), "chain_id": g.chain_id, "genesis_hash": g.genesis_hash().hex(),
               "sealers": len(g.sealers.members), "nodes": [a.__dict__ for a in addrs]})
        return
    _out.print(f"ledger {g.chain_id}: {len(addrs)} nodes, {len(g.sealers.members)} sealers in {layout.root}")
    _out.print(f"genesis hash {g.genesis_hash().hex()}; next: sealstream ledger up")


@ledger.command("up")
@click.option("--timeout", default=60.0, show_default=True, help="seconds to wait for the nodes to be ready")
@click.option("--json", "as_json", is_flag=True, help="print the final status as JSON")
@click.pass_context
def ledger_up(ctx: click.Context, timeout: float, as_json: bool) -> None:
    """Start every node (initialising the ledger first if needed) and wait until all are ready."""
    from infra.prometheus import register_targets

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
        targets_file = register_targets(s.home, JOB, [f"{a.host}:{a.http_port}" for a in addrs])
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


@ledger.command("submit")
@click.argument("kind")
@click.argument("payload")
@click.option("--timeout", default=15.0, show_default=True, help="seconds to wait for f+1 matching replies")
@click.option("--json", "as_json", is_flag=True, help="print the receipt as JSON")
@click.pass_context
def ledger_submit(ctx: click.Context, kind: str, payload: str, timeout: float, as_json: bool) -> None:
    """Submit one transaction KIND with JSON PAYLOAD, signed by the ledger's client key.

    Example: sealstream ledger submit kv.put '{"key": "a", "value": 1}'
    """
    from ledger.client import LedgerClient

    try:
        value = json.loads(payload)
    except ValueError as exc:
        _fail(ValueError(f"PAYLOAD is not JSON ({exc.args[0]}); quote it, e.g. '{{\"key\": \"a\"}}'"), as_json)
        return
    cluster = _cluster(_settings(ctx))
    try:
        with LedgerClient.from_layout(cluster.root, timeout=timeout) as client:
            r = client.submit(kind, value)
    except _boundary_errors() as exc:
        _fail(exc, as_json)
        return
    data = {"tx_id": r.tx_id.hex(), "height": r.height, "index": r.index, "block": r.block_hash.hex(),
            "result": r.result, "confirmed_by": len(r.nodes)}
    if as_json:
        _emit(data)
    else:
        _out.print(f"committed tx {data['tx_id']} at height {r.height} (index {r.index}), result {r.result}, "
                   f"confirmed by {len(r.nodes)} sealers")
