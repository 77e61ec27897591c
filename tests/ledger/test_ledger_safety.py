"""Crash persistence of what a replica signed (`SafetyState`, `Persist`) and per-sender flood limits."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ledger import (
    Block,
    Broadcast,
    MessageReceived,
    Persist,
    Replica,
    RequestSubmitted,
    SafetyState,
    Tick,
)
from ledger.messages import Commit, PrePrepare, Prepare, ViewChange
from ledger.sim import InvariantViolation, run_seed, scenario
from ledger.store import BlockStore
from ledger_helpers import Client, cluster


def _sent(out, kind):
    return [e.msg for e in out if isinstance(e, Broadcast) and isinstance(e.msg, kind)]


def _persisted_before(out, kind) -> SafetyState:
    """The `Persist` effect that precedes the broadcast of `kind` (there must be one)."""
    sent = next(i for i, e in enumerate(out) if isinstance(e, Broadcast) and isinstance(e.msg, kind))
    before = [e.state for e in out[:sent] if isinstance(e, Persist)]
    assert before, f"{kind.__name__} sent before any Persist"
    return before[-1]


class Setup:
    """Four standalone replicas of one genesis; n0 is primary of view 0."""

    def __init__(self) -> None:
        self.sim = cluster(max_block_txs=1)
        self.g = self.sim.genesis
        self.keys = [i.key for i in self.sim.instances]
        self.ids = [k.did for k in self.keys]
        self.client = Client()

    def replica(self, i: int, **kw) -> Replica:
        r = Replica(self.g, self.ids[i], self.keys[i].sign, **kw)
        r.handle(Tick(1_000))
        return r

    def proposal(self) -> PrePrepare:
        r0 = self.replica(0)
        out = r0.handle(RequestSubmitted(self.client.tx(1)))
        (pp,) = _sent(out, PrePrepare)
        # the primary persists its proposal before it leaves
        assert _persisted_before(out, PrePrepare).preprepare == (0, 1, pp.digest)
        return pp

    def conflicting(self, pp: PrePrepare) -> PrePrepare:
        hdr = pp.block.header
        alt = Block(replace(hdr, time=hdr.time + 1), pp.block.txs)
        return PrePrepare(pp.sender, pp.view, pp.height, alt).sign(self.g.chain_id, self.keys[0].sign)

    def prepare(self, i: int, pp: PrePrepare) -> Prepare:
        return Prepare(self.ids[i], pp.view, pp.height, pp.digest, pp.sig).sign(self.g.chain_id, self.keys[i].sign)

    def msg(self, r: Replica, m) -> list:
        return r.handle(MessageReceived(m.sender, m))


def _last_persist(out) -> SafetyState:
    states = [e.state for e in out if isinstance(e, Persist)]
    assert states
    return states[-1]


def _round_trip(st: SafetyState, tmp_path, genesis) -> SafetyState:
    """Through the node's SQLite state table, as `ledger.node` writes and reads it."""
    with BlockStore.open(tmp_path / "s.db", genesis) as store:
        store.put_state("safety", st.to_wire())
    with BlockStore.open(tmp_path / "s.db", genesis) as store:
        return SafetyState.from_wire(store.get_state("safety"))


def test_prepare_is_persisted_before_it_is_sent_and_a_restart_never_prepares_another_block(tmp_path):
    s = Setup()
    pp = s.proposal()
    r1 = s.replica(1)
    out = s.msg(r1, pp)
    st = _persisted_before(out, Prepare)
    assert (st.view, st.prepare, st.commit, st.prepared) == (0, (0, 1, pp.digest), None, None)
    # crash; restart from the persisted state: it rejoins view 0 at once
    again = s.replica(1, safety=_round_trip(st, tmp_path, s.g))
    assert (again.view, again.silent_below, again.no_propose_view, again.changing) == (0, 0, 0, False)
    # the primary equivocates: the restarted replica refuses to prepare the other block
    out = s.msg(again, s.conflicting(pp))
    assert not _sent(out, Prepare) and again.drops["conflicting_vote"] == 1
    # the block it prepared before: the very same PREPARE again (Ed25519 is deterministic)
    fresh = s.replica(1, safety=st)
    (prep,) = _sent(s.msg(fresh, pp), Prepare)
    assert prep.digest == pp.digest and prep.sig == _sent(out := s.msg(s.replica(1), pp), Prepare)[0].sig
    # without persistence (the legacy store: only the view) it sat the view out
    legacy = s.replica(1, min_view=0, committed=())
    assert legacy.silent_below == 0  # a fresh node, nothing to sit out


def test_commit_and_prepared_certificate_survive_a_restart_and_go_into_the_view_change(tmp_path):
    s = Setup()
    pp = s.proposal()
    r1 = s.replica(1)
    s.msg(r1, pp)
    out = s.msg(r1, s.prepare(2, pp))  # its own and n2's: quorum - 1 prepares
    (com,) = _sent(out, Commit)
    st = _persisted_before(out, Commit)
    assert st.commit == (0, 1, pp.digest) and st.prepared is not None
    assert st.prepared.block.block_hash() == pp.digest
    st = _round_trip(st, tmp_path, s.g)
    again = s.replica(1, safety=st)
    assert again.prepared == st.prepared
    # the primary is gone: two others ask for view 1, so it joins, persisting the view first
    for i in (2, 3):
        vc = ViewChange(s.ids[i], 1, None, None).sign(s.g.chain_id, s.keys[i].sign)
        out = s.msg(again, vc)
    (mine,) = _sent(out, ViewChange)
    assert mine.prepared == st.prepared  # what it prepared before the crash is reported
    vst = _persisted_before(out, ViewChange)
    assert vst.view == 1 and vst.changing
    # n1 is primary of view 1: with three VIEW-CHANGEs it installed it (NEW-VIEW
    # signed after persisting that view's state)
    assert again.view == 1 and not again.changing and not _last_persist(out).changing
    # crashed right after sending its VIEW-CHANGE: it restarts changing and says so again
    back = s.replica(1, safety=vst)
    assert back.changing and back.view == 1
    (vc_again,) = _sent(back.start(), ViewChange)
    assert vc_again.new_view == 1 and vc_again.prepared == st.prepared


def test_a_restarted_primary_never_proposes_again_in_that_view():
    s = Setup()
    r0 = s.replica(0)
    out = r0.handle(RequestSubmitted(s.client.tx(1)))
    st = _last_persist(out)
    again = s.replica(0, safety=st)
    assert again.primary == again.me and again.no_propose_view == 0
    out = again.handle(RequestSubmitted(s.client.tx(2)))
    assert not _sent(out, PrePrepare)
    assert again.mempool  # it keeps the request for the next view


def test_the_simulator_catches_a_conflicting_vote_and_a_vote_sent_before_it_was_persisted():
    s = Setup()
    sim = s.sim
    inst = sim.instances[1]
    pp = s.proposal()
    a = s.prepare(1, pp)
    b = s.prepare(1, s.conflicting(pp))
    inst.safety = SafetyState(prepare=(0, 1, a.digest))
    sim._signed_check(inst, a)
    with pytest.raises(InvariantViolation, match="signed two prepares"):
        sim._signed_check(inst, b)
    c = Commit(inst.node_id, 0, 1, a.digest).sign(s.g.chain_id, inst.key.sign)
    with pytest.raises(InvariantViolation, match="persisted state does not record"):
        sim._signed_check(inst, c)


def test_crashes_between_persist_and_send_and_restarts_that_rejoin():
    """Crash seeds of the default run, with crashes inside one event's effects."""
    crash_seeds = [sd for sd in range(400) if scenario(sd).crash][:40]
    mid = rejoined = 0
    for sd in crash_seeds:
        sim = run_seed(sd)
        mid += sim.mid_effect_crashes
        rejoined += sim.rejoined
    assert mid >= 5 and rejoined >= 10


# ---------------------------------------------------------------- flood limits


def test_a_sender_flooding_prepares_is_capped_per_view_and_others_are_not():
    s = Setup()
    pp = s.proposal()
    r1 = s.replica(1)
    r1.max_held_msgs = 10
    for n in range(30):  # thirty different digests at height 1, view 0
        bogus = Prepare(s.ids[2], 0, 1, bytes([n]) * 32, b"").sign(s.g.chain_id, s.keys[2].sign)
        s.msg(r1, bogus)
    assert r1.drops["sender_quota"] == 20
    assert sum(1 for sigs in r1.prepares.values() if s.ids[2] in sigs) == 10
    # another view is another account; another sender is unaffected
    s.msg(r1, Prepare(s.ids[2], 1, 1, b"\x01" * 32, b"").sign(s.g.chain_id, s.keys[2].sign))
    assert r1.drops["sender_quota"] == 20
    s.msg(r1, pp)
    s.msg(r1, s.prepare(3, pp))
    assert r1.drops["sender_quota"] == 20
    s.msg(r1, s.prepare(2, pp))  # n2's real prepare is refused too...
    assert r1.drops["sender_quota"] == 21
    # ...until the log shrinks: a commit certificate at height 1 truncates it
    for i in (0, 3):
        s.msg(r1, Commit(s.ids[i], 0, 1, pp.digest).sign(s.g.chain_id, s.keys[i].sign))
    assert r1.height == 1
    s.msg(r1, Prepare(s.ids[2], 0, 2, b"\x02" * 32, b"").sign(s.g.chain_id, s.keys[2].sign))
    assert r1.drops["sender_quota"] == 21


def test_byte_limit_counts_proposal_blocks():
    s = Setup()
    pp = s.proposal()
    r1 = s.replica(1)
    r1.max_held_bytes = 100  # less than any block
    s.msg(r1, pp)
    assert r1.drops["sender_quota"] == 1 and not r1.proposals


# ---------------------------------------------------------------- the node process side


def test_node_writes_persist_to_its_state_table_and_restarts_from_it(tmp_path):
    from infra.ledger_cluster import LocalCluster
    from ledger.node import Node

    layout = LocalCluster(tmp_path / "ledger", n_nodes=4, n_sealers=4).init()
    name = layout.addresses()[1].name
    node = Node(layout, name)
    assert not node.replica.restored  # a fresh store: nothing signed yet
    st = SafetyState(view=3, changing=False, nv_floor=0, prepare=(3, 1, b"\x07" * 32))
    node._execute([Persist(st)])
    assert node.persists == 1
    node.store.close()
    again = Node(layout, name)
    r = again.replica
    assert r.restored and r.view == 3 and r.vote_prepare == (3, 1, b"\x07" * 32) and r.no_propose_view == 3
    again.store.close()
    # a store from before SafetyState (only the view): the node sits that view out
    with BlockStore.open(layout.store_path(name), layout.genesis()) as store:
        store._db.execute("DELETE FROM meta WHERE key='state.safety'")
        store.put_state("view", 5)
    legacy = Node(layout, name)
    assert not legacy.replica.restored and legacy.replica.view == 5 and legacy.replica.silent_below == 6
    legacy.store.close()
