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
    from ledger.cluster import QUICK_PARAMS
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
