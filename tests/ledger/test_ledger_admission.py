"""Per-submitter mempool cap (`Params.max_pending_per_submitter`): one submitter cannot fill a sealer's mempool."""

from __future__ import annotations

from ledger import Params, Transaction
from ledger.consensus import Reply, RequestsSubmitted, RequestSubmitted, Tick
from ledger_helpers import Client, cluster

BUSY = {"error": "submitter-busy"}


def _replies(effects):
    return [e for e in effects if isinstance(e, Reply)]


def test_a_sealer_refuses_a_submitters_txs_beyond_its_cap_and_admits_others():
    sim = cluster(max_pending_per_submitter=3)
    r = sim.instances[1].replica  # a sealer, not the primary: it only holds requests
    flood, other = Client("flood"), Client("other")
    txs = tuple(flood.tx(i) for i in range(5))
    r.handle(Tick(sim.now))
    out = r.handle(RequestsSubmitted(txs, "conn-flood", relay=False))
    assert [(e.tx_id, e.result) for e in _replies(out)] == [(t.tx_id, BUSY) for t in txs[3:]]
    assert set(r.mempool) == {t.tx_id for t in txs[:3]} and r.pending == {flood.key.did: 3}
    assert r.drops["request_submitter-busy"] == 2
    # another submitter is not affected
    tx = other.tx(0)
    assert not _replies(r.handle(RequestSubmitted(tx, "conn-other", relay=False)))
    assert tx.tx_id in r.mempool and r.pending[other.key.did] == 1
    # the refusal is checked before the signature: a forged tx in the busy submitter's name is refused
    # as busy, and it never counts (only admitted txs do)
    forged = Transaction(flood.key.did, 99, "kv.put", {"key": "k", "value": 1}, b"\x00" * 64)
    assert [e.result for e in _replies(r.handle(RequestSubmitted(forged, "conn-x", relay=False)))] == [BUSY]
    assert r.pending[flood.key.did] == 3 and r.drops["request_bad-signature"] == 0


def test_committed_txs_free_the_submitters_slots():
    sim = cluster(max_pending_per_submitter=3, max_block_txs=2)
    flood, other = Client("flood"), Client("other")
    first = [flood.tx(i) for i in range(5)]
    sim.submit_many(first, sim.ids)
    sim.submit_many([other.tx(0)], sim.ids)
    sim.run_until(sim.now + 3000)
    for inst in sim.instances:
        r = inst.replica
        committed = {t for t in r.tx_index}
        assert {t.tx_id for t in first[:3]} <= committed and not {t.tx_id for t in first[3:]} & committed
        assert r.pending == {} and not r.mempool
    # with its txs committed, the submitter may fill its slots again; everything commits
    again = [flood.tx(i) for i in range(3)]
    sim.submit_many(again, sim.ids)
    sim.run_until(sim.now + 3000)
    assert all({t.tx_id for t in again} <= set(i.replica.tx_index) for i in sim.instances)
    sim.check()


def test_backups_do_not_count_what_they_relay():
    sim = cluster(n_backups=1, max_pending_per_submitter=1)
    backup = sim.instances[4].replica
    c = Client("relayed")
    backup.handle(Tick(sim.now))
    out = backup.handle(RequestsSubmitted(tuple(c.tx(i) for i in range(3)), "conn", relay=True))
    assert not _replies(out) and backup.pending == {} and not backup.mempool


def test_the_cap_is_in_the_genesis_only_when_not_the_default():
    assert "max_pending_per_submitter" not in Params().to_wire()
    p = Params(max_pending_per_submitter=8)
    assert p.to_wire()["max_pending_per_submitter"] == 8 and Params.from_wire(p.to_wire()) == p


def test_a_real_cluster_refuses_a_busy_submitter_and_serves_the_others(make_cluster):
    """4 node processes, cap 8: 40 concurrent txs of one key get some `submitter-busy` refusals
    (f+1 signed answers, `TxRefused.code`), the rest commit; another key's txs all commit meanwhile."""
    import asyncio
    from dataclasses import replace

    from ledger.client import TxRefused
    from infra.ledger_cluster import QUICK_PARAMS
    from ledger_helpers import key

    cluster_ = make_cluster(4, 4, params=replace(QUICK_PARAMS, max_pending_per_submitter=8))

    async def run():
        flood, other = cluster_.aclient(timeout=20), cluster_.aclient(key=key("admission-other"), timeout=20)
        try:
            got = await asyncio.gather(*(flood.submit("kv.put", {"key": f"f{i}", "value": i}) for i in range(40)),
                                       *(other.submit("kv.put", {"key": f"o{i}", "value": i}) for i in range(6)),
                                       return_exceptions=True)
            again = await flood.submit("kv.put", {"key": "after", "value": 1})
        finally:
            await flood.close()
            await other.close()
        return got[:40], got[40:], again

    flooded, others, again = asyncio.run(run())
    refused = [g for g in flooded if isinstance(g, TxRefused)]
    assert refused and all(g.code == "submitter-busy" for g in refused)
    assert all(not isinstance(g, BaseException) for g in flooded if not isinstance(g, TxRefused))
    assert len(flooded) - len(refused) >= 8
    assert all(not isinstance(g, BaseException) and g.height > 0 for g in others)
    assert again.height > 0
    drops = cluster_.status("node1")["drops"]
    assert drops.get("request_submitter_busy", 0) > 0


# ---------------------------------------------------------------- admission (issue 16)

import hashlib  # noqa: E402

from ledger.contracts import ContractApp, ContractsGenesis  # noqa: E402
from ledger.sim import SimConfig, Simulation  # noqa: E402
from ledger.values import Genesis  # noqa: E402
from trust.identity import KeyPair  # noqa: E402

_ADMIN = KeyPair.from_seed(hashlib.sha256(b"admission-admin").digest())


def _contracts(n_sealers: int = 4, fees: dict | None = None, balances: dict | None = None, **params: int):
    base = SimConfig(seed=0).params
    from dataclasses import replace

    cfg = SimConfig(seed=0, n_sealers=n_sealers, n_backups=0, max_delay=5, drop=0.0, dup=0.0,
                    params=replace(base, **params))
    ids = [KeyPair.from_seed(hashlib.sha256(f"sim-node-{i}".encode()).digest()).did for i in range(n_sealers)]
    cg = ContractsGenesis.for_ledger(Genesis.create("sim-0", ids, n_sealers, cfg.params), _ADMIN.did)
    if fees is not None or balances is not None:
        cg = ContractsGenesis(cg.admin, cg.orgs, cg.entities,
                              cg.balances if balances is None else tuple(sorted(balances.items())),
                              cg.fees if fees is None else tuple(sorted(fees.items())))
    cfg.executor = lambda: ContractApp(cg)
    return Simulation(cfg)


def _codes(effects):
    return [e.result.get("error") for e in _replies(effects) if isinstance(e.result, dict)]


def test_an_unregistered_submitter_is_refused_at_once_and_never_ordered():
    sim = _contracts(fees={"*": 0})
    r = sim.instances[1].replica
    stranger = KeyPair.generate()
    txs = tuple(Transaction.create(stranger, i + 1, "anchors.anchor", {"batch_id": f"b{i}"}) for i in range(20))
    r.handle(Tick(sim.now))
    out = r.handle(RequestsSubmitted(txs, "conn", relay=False))
    assert _codes(out) == ["NOT_REGISTERED"] * 20
    assert not r.mempool and r.drops["request_NOT_REGISTERED"] == 20
    # refused before the signature check: forged signatures cost no verification either
    forged = Transaction(stranger.did, 99, "kv.put", {}, b"\x00" * 64)
    assert _codes(r.handle(RequestSubmitted(forged, "c", relay=False))) == ["NOT_REGISTERED"]
    assert r.drops["request_bad-signature"] == 0
    # the consortium admin is registered: its tx enters
    ok = Transaction.create(_ADMIN, 1, "tokens.mint", {"to": "consortium", "amount": 1})
    assert _codes(r.handle(RequestSubmitted(ok, "c", relay=False))) == [] and ok.tx_id in r.mempool


def test_a_submitter_without_the_fee_is_refused_and_a_nodes_own_reputation_txs_are_admitted():
    sim = _contracts(fees={"*": 5, "tokens.*": 0}, balances={})
    r = sim.instances[1].replica
    r.handle(Tick(sim.now))
    # the admin's account holds nothing: a fee-paying kind is refused, a free one enters
    poor = Transaction.create(_ADMIN, 1, "registry.register_org", {"id": "x", "name": "X", "admin": _ADMIN.did})
    assert _codes(r.handle(RequestSubmitted(poor, "c", relay=False))) == ["INSUFFICIENT_QUOTA"]
    free = Transaction.create(_ADMIN, 2, "tokens.mint", {"to": "consortium", "amount": 1})
    assert _codes(r.handle(RequestSubmitted(free, "c", relay=False))) == []
    # a node's heartbeat: admitted by its own rule (no account, no fee), outside the caps
    node = sim.instances[2]
    hb = Transaction.create(node.key, 1, "reputation.heartbeat", {"height": 0})
    assert _codes(r.handle(RequestSubmitted(hb, None, relay=False))) == [] and hb.tx_id in r.mempool
    assert hb.tx_id not in r.pool.org_of
    # ... but not another kind from a node key that is no registered entity's current key
    other = Transaction.create(node.key, 2, "anchors.anchor", {"batch_id": "n"})
    assert _codes(r.handle(RequestSubmitted(other, "c", relay=False))) == ["INSUFFICIENT_QUOTA"]  # no balance


def test_the_global_cap_and_an_organisations_share_bound_the_mempool():
    sim = _contracts(fees={"*": 0}, max_mempool=10, org_mempool_share_pct=60)
    r = sim.instances[1].replica
    r.handle(Tick(sim.now))
    # the admin's organisation (the consortium) may hold 6 of the 10 slots
    txs = tuple(Transaction.create(_ADMIN, i + 1, "tokens.mint", {"to": "consortium", "amount": 1})
                for i in range(8))
    out = r.handle(RequestsSubmitted(txs, "c", relay=False))
    assert _codes(out) == ["org-busy"] * 2 and len(r.mempool) == 6
    assert r.pool.org_pending == {"consortium": 6}
    # nodes' own txs never count; a full mempool refuses with mempool-full
    for inst in sim.instances[:4]:
        hb = Transaction.create(inst.key, 7, "reputation.heartbeat", {"height": 0})
        assert _codes(r.handle(RequestSubmitted(hb, None, relay=False))) == []
    assert len(r.mempool) == 10 and len(r.pool.org_of) == 6
    r.params = type(r.params)(**{**r.params.__dict__, "max_mempool": 6})
    more = Transaction.create(_ADMIN, 100, "tokens.mint", {"to": "consortium", "amount": 1})
    assert _codes(r.handle(RequestSubmitted(more, "c", relay=False))) == ["mempool-full"]
