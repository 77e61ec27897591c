"""audit under the real PBFT replicas in the seeded simulator (lossy links,
partitions, crashes, twins, an equivocating primary): rule deployment,
versions, retirement and the events they raise are byte-identical on every
honest node, and each event's id is the (height, index) its tx was committed at."""

from __future__ import annotations

import pytest

import test_contracts_sim
from ledger import Transaction
from ledger.contracts import ContractApp, audit, recompute_root

from test_contracts_helpers import ACME, ADMIN, BETA, code, key


def _workload(seed: int) -> list[tuple[int, Transaction]]:
    """(time ms, tx): gateways, rules of every kind (org and consortium-wide), a
    forbidden retirement, operations, a new rule version and a retirement."""
    nonces: dict[str, int] = {}

    def tx(signer, kind, payload) -> Transaction:
        nonces[signer.did] = nonces.get(signer.did, 0) + 1
        return Transaction.create(signer, nonces[signer.did], kind, payload)

    gw_a, gw_b = key(f"aud-sim-gw-a-{seed}"), key(f"aud-sim-gw-b-{seed}")

    def op(gw, org: str, i: int, op_type: str, **kw) -> Transaction:
        return tx(gw, "audit.record", {"org": org, "operator": f"op{i % 3}", "system": f"s{i % 2}", "op": op_type,
                                       **kw})

    out = [
        (0, tx(ACME, "registry.register_gateway", {"id": "gw-a", "org": "acme", "key": gw_a.did})),
        (0, tx(BETA, "registry.register_gateway", {"id": "gw-b", "org": "beta", "key": gw_b.did})),
        # the simulator's clock starts at 1970-01-01 00:00 UTC: every command is outside 06:00-22:00
        (0, tx(ACME, "audit.deploy_rule", {"id": "day", "org": "acme", "kind": "window", "start": "06:00",
                                           "end": "22:00", "match": {"op": "command"}})),
        (0, tx(BETA, "audit.deploy_rule", {"id": "cfg", "org": "beta", "kind": "rate", "max": 1, "per": "system",
                                           "period_s": 60, "match": {"op": "config"}})),
        (0, tx(ADMIN, "audit.deploy_rule", {"id": "sp", "org": "*", "kind": "range", "param": "setpoint",
                                            "min": 0, "max": "50.5", "severity": "critical"})),
        (10, tx(BETA, "audit.retire_rule", {"id": "day"})),                                   # FORBIDDEN
    ]
    for i in range(8):
        t = 400 + 120 * i
        out.append((t, op(gw_a, "acme", i, "command", action="start")))
        out.append((t, op(gw_b, "beta", i, "config", params={"setpoint": 10 * i})))
    out.append((800, tx(ACME, "audit.deploy_rule", {"id": "day", "org": "acme", "kind": "window", "start": "00:00",
                                                    "end": "23:59", "match": {"op": "command"}})))
    out.append((1300, tx(BETA, "audit.retire_rule", {"id": "cfg", "reason": "replaced"})))
    out.append((1500, op(gw_b, "beta", 9, "config", params={"setpoint": "99.5"})))
    return out


@pytest.mark.parametrize("seed", test_contracts_sim.SEEDS)
def test_honest_nodes_agree_on_rules_and_events(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(test_contracts_sim, "_workload", _workload)   # the same runner, the audit workload
    sim = test_contracts_sim._run(seed)
    live = sim.honest_live()
    assert len(live) >= 3
    apps = [i.replica.executor for i in live]
    ref = apps[0]
    assert all(isinstance(a, ContractApp) for a in apps)
    snap = ref.snapshot()
    assert ref.state_root() == recompute_root(snap)
    # committed on all of them, or refused at admission (issue 16: e.g. a gateway's op that reached
    # the sealers before its registration committed) and committed by none
    txs = [t for t in sim.submitted if t in live[0].replica.tx_index]
    assert all(t in sim.refused for t in sim.submitted if t not in txs)
    results = [live[0].replica._results[t] for t in txs]
    for inst, app in zip(live, apps):
        assert app.snapshot() == snap and app.state_root() == ref.state_root()
        assert [inst.replica._results[t] for t in txs] == results
    st = ref.state
    n = audit.event_count(st)
    evs = audit.events(st, limit=1000)
    assert n >= 1 and [e["seq"] for e in evs] == list(range(n))
    for _inst, app in zip(live, apps):
        assert audit.events(app.state, limit=1000) == evs
        assert audit.rules(app.state) == audit.rules(st)
    # each event sits at the (height, index) its tx was indexed at, and is listed in that tx's result
    by_tx = {tid: r for tid, r in zip(txs, results)}
    for e in evs:
        h, i, k = e["id"]
        assert live[0].replica.tx_index[e["tx_id"]] == (h, i)
        assert by_tx[e["tx_id"]]["events"][k] == {"id": f"{h}-{i}-{k}", "seq": e["seq"], "rule": e["rule"],
                                                  "version": e["version"], "severity": e["severity"]}
    assert sum(len(r.get("events", [])) for r in results if r["ok"]) == n
    # beta's admin never touches acme's rule; the rules end as the workload left them (whatever the order)
    retire = next(t for t, tx in sim.submitted.items() if tx.kind == "audit.retire_rule" and tx.submitter == BETA.did
                  and tx.payload["id"] == "day")
    assert code(live[0].replica._results[retire]) == "FORBIDDEN"
    day = audit.get_rule(st, "day")
    assert day["org"] == "acme" and day["status"] == "active" and day["version"] in (1, 2)
