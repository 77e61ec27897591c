"""Reputation under real replicas in the seeded simulator (contracts app, 4 sealers + 3 backups).

The test plays the node processes' part (`reputation.Reporter`): backups send
heartbeats, replicas that caught an equivocation submit the evidence. Checks:
an offline sealer loses reputation, is replaced at the next epoch end and
regains its place once back; an equivocating primary is excluded once its
evidence commits; every node has the same reputation table at every height.
"""

from __future__ import annotations

import hashlib

import pytest

from ledger import Genesis, Params, Transaction
from ledger.contracts import ContractApp, ContractsGenesis
from ledger.contracts import reputation as rep
from ledger.sim import SimConfig, Simulation
from trust import canonical
from trust.identity import KeyPair

PARAMS = Params(max_block_txs=8, block_time_ms=30, checkpoint_interval=5, view_change_timeout_ms=300,
                max_view_change_timeout_ms=3000, status_interval_ms=250, fetch_timeout_ms=300, fetch_batch=8,
                epoch_length=10, sealer_count=4, rep_initial=5000, rep_max=10_000, rep_floor=2000,
                rep_sign_reward=200, rep_offline_after=2, rep_offline_penalty=2500,
                rep_equivocation_penalty=10_000, rep_heartbeat_reward=300, rep_heartbeat_interval=3)
ADMIN = KeyPair.from_seed(hashlib.sha256(b"rep-sim-admin").digest())


def _sim(seed: int, equivocate: bool = False) -> Simulation:
    cfg = SimConfig(seed=seed, n_sealers=4, n_backups=3, params=PARAMS, equivocate=equivocate, max_delay=15)
    # the simulator's genesis, built the same way, so the contracts genesis can name its nodes
    ids = [KeyPair.from_seed(hashlib.sha256(f"sim-node-{i}".encode()).digest()).did for i in range(7)]
    cg = ContractsGenesis.for_ledger(Genesis.create(f"sim-{seed}", ids, 4, PARAMS), ADMIN.did)
    cfg.executor = lambda: ContractApp(cg)
    return Simulation(cfg)


def _drive(sim: Simulation, until: int) -> None:
    """Client load (a tx every 40 ms, refused UNKNOWN_KIND but committed) and the
    nodes' reporters every 50 ms, up to `until`. The load is the consortium admin's (mempool
    admission, issue 16, orders only registered submitters' txs)."""
    client = ADMIN
    reporters = {i.name: rep.Reporter(i.key, nonce=1000 * n) for n, i in enumerate(sim.instances)}
    honest = sorted({i.node_id for i in sim.instances if i.honest})
    for t in range(0, until, 40):
        tx = Transaction.create(client, t + 1, "load.ping", {"t": t})
        sim.at(t, lambda tx=tx: sim.submit(tx, honest))

    def report() -> None:
        for inst in sim.honest_live():
            for tx in reporters[inst.name].due(inst.replica):
                sim.submit(tx, honest)

    for t in range(0, until, 50):
        sim.at(t, report)
    sim.run_until(until)


def _sets(inst) -> list[tuple[int, tuple[str, ...]]]:
    """(epoch-end height, next set) from the committed headers."""
    out = []
    for h in range(1, inst.replica.height + 1):
        hdr = inst.replica.block_at(h)[0].header
        if hdr.next_sealers is not None:
            out.append((h, hdr.next_sealers.members))
    return out


def _tables_agree(sim: Simulation) -> int:
    """Every live honest node: same reputation records and state root at every common height."""
    live = sim.honest_live()
    top = min(i.replica.height for i in live)
    for h in range(1, top + 1):
        recs = {canonical.encode(i.replica.executor.rep_history.at(h)) for i in live}
        roots = {i.replica.block_at(h)[0].header.state_root for i in live}
        assert len(recs) == 1, f"reputation differs at height {h}"
        assert len(roots) == 1
    # and the history equals the committed state's records
    for i in live:
        if i.replica.height == top:
            st = i.replica.executor.state
            assert {k[len(rep.NODE_PREFIX):]: v for k, v in st.items(rep.NODE_PREFIX)} == \
                i.replica.executor.rep_history.at(top)
    return top


def _score(inst, did: str, h: int) -> int:
    got = inst.replica.executor.rep_history.at(h).get(did)
    return PARAMS.rep_initial if got is None else got["score"]


@pytest.mark.parametrize("seed", [1, 2])
def test_offline_sealer_is_replaced_and_regains_its_place(seed: int) -> None:
    sim = _sim(seed)
    victim = sim.instances[1]
    crash_t, back_t = 3000, 6000
    marks: dict[str, int] = {}
    sim.at(crash_t, lambda: (marks.__setitem__("down", sim.instances[0].replica.height), sim.crash(victim)))
    sim.at(back_t, lambda: (marks.__setitem__("up", sim.instances[0].replica.height), sim.restart(victim)))
    _drive(sim, 16_000)
    top = _tables_agree(sim)
    watcher = sim.instances[0]
    sets = _sets(watcher)
    assert victim.node_id in sets[0][1]
    down, up = marks["down"], marks["up"]
    # it loses reputation while offline ...
    assert _score(watcher, victim.node_id, up) < _score(watcher, victim.node_id, down)
    # ... is out of the first set chosen after its misses count ...
    out = [(h, s) for h, s in sets if down < h <= up and victim.node_id not in s]
    assert out, f"victim never replaced: {sets}"
    assert len(out[0][1]) == 4 and sim.instances[4].node_id in out[0][1]  # the first backup took its place
    # ... and is back in once its heartbeats restored it
    back = [(h, s) for h, s in sets if h > up and victim.node_id in s]
    assert back, f"victim never regained its place: {sets} (score {_score(watcher, victim.node_id, top)})"
    assert top > back[0][0]
    # every committed block (h >= 2) carries the previous certificate, matching its header
    for h in range(2, top + 1):
        block = watcher.replica.block_at(h)[0]
        assert block.last_commit is not None and block.last_commit.height == h - 1 and block.last_commit_ok()


def test_equivocating_primary_is_excluded_once_evidence_commits() -> None:
    sim = _sim(7, equivocate=True)
    bad = sim.instances[0]
    _drive(sim, 6000)
    top = _tables_agree(sim)
    watcher = sim.instances[2]
    assert watcher.replica.executor.rep_history.at(top)[bad.node_id]["offences"] == 1
    # the first evidence tx commits; the same offence again is refused
    results = []
    for h in range(1, top + 1):
        block = watcher.replica.block_at(h)[0]
        for tx in block.txs:
            if tx.kind == "reputation.evidence":
                results.append((h, watcher.replica._results[tx.tx_id]))
    assert results and results[0][1]["ok"] is True
    assert all(r["code"] == "EVIDENCE_REPLAYED" for _, r in results[1:] if not r["ok"])
    h_ev = results[0][0]
    before, after = _score(watcher, bad.node_id, h_ev - 1), _score(watcher, bad.node_id, h_ev)
    assert after < PARAMS.rep_floor and after < before  # sharply: below the floor at once
    later = [(h, s) for h, s in _sets(watcher) if h >= h_ev]
    assert later and all(bad.node_id not in s for _, s in later)


def test_random_faults_with_reputation_rotating_sealers() -> None:
    """The seeded fault scenarios (loss, partitions, crashes, twins, an
    equivocating primary) with reputation on, epochs of 2 blocks and harsh
    offline rules, so sets rotate often: safety and liveness invariants hold."""
    from dataclasses import replace

    from ledger.sim import run_seed, scenario

    rotated = 0
    for seed in range(1000, 1030):
        cfg = scenario(seed)
        cfg.n_backups = max(cfg.n_backups, 1)
        cfg.n_txs = max(cfg.n_txs, 30)
        cfg.params = replace(cfg.params, epoch_length=2, sealer_count=cfg.n_sealers, rep_offline_after=1,
                             rep_offline_penalty=3000, rep_sign_reward=100)
        sim = run_seed(seed, cfg)  # raises InvariantViolation, naming the seed, on any failure
        r = sim.honest_live()[0].replica
        sets = {r.block_at(h)[0].header.next_sealers.members for h in range(2, r.height + 1, 2)}
        rotated += len(sets) > 1
    assert rotated >= 10  # the sets really moved in many of these runs
