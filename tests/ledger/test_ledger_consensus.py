"""Focused tests of the PBFT replica core, driven through the real simulator."""

from __future__ import annotations

from dataclasses import replace

from ledger import (
    Block,
    CommitCertificate,
    MessageReceived,
    Replica,
    RequestSubmitted,
    SetTimer,
    Tick,
    TimerFired,
)
from ledger.values import tx_root_of
from ledger._verify import CachedVerifier
from ledger.messages import Commit, CommittedBlock, PrePrepare, Prepare, Status, decode_message, encode_message
from ledger_helpers import Client, cluster, heights, key


def _run(sim, t):
    sim.run_until(sim.now + t)


def _chains_equal(sim):
    live = sim.honest_live()
    h = min(i.replica.height for i in live)
    for height in range(1, h + 1):
        hashes = {i.replica.block_at(height)[0].block_hash() for i in live}
        assert len(hashes) == 1, f"fork at {height}"
    return h


def _submit_all(sim, txs):
    for tx in txs:
        sim.submit(tx, sim.ids)


def test_normal_case_commits_in_order_with_certificates():
    sim = cluster(max_block_txs=3)
    c = Client()
    txs = [c.tx(i) for i in range(7)]
    _submit_all(sim, txs)
    _run(sim, 2000)
    assert set(heights(sim).values()) == {3}  # 3 + 3 + 1 txs, cut by size then by time
    _chains_equal(sim)
    r = sim.instances[0].replica
    assert [len(r.block_at(h)[0].txs) for h in (1, 2, 3)] == [3, 3, 1]
    for h in (1, 2, 3):
        block, cert = r.block_at(h)
        cert.verify(sim.genesis.chain_id, sim.genesis.sealers)
        assert block.header.prev_hash == (r.block_at(h - 1)[0].block_hash() if h > 1 else sim.genesis.genesis_hash())
        assert block.header.tx_root == tx_root_of(block.txs)
    assert r.view == 0 and r.view_change_count == 0
    assert all(t.tx_id in r.tx_index for t in txs)
    assert r.executor.state["k"] == 6


def test_no_empty_blocks_when_idle():
    sim = cluster()
    _run(sim, 10_000)
    assert set(heights(sim).values()) == {0}
    assert all(i.replica.view == 0 for i in sim.instances)


def test_replies_dedup_and_replay_refusal():
    sim = cluster()
    c = Client()
    tx = c.tx(1)
    _submit_all(sim, [tx])
    _run(sim, 1000)
    r = sim.instances[2].replica
    assert r.height == 1
    # the same tx again: a reply with the committed result, not a second commit
    out = r.handle(RequestSubmitted(tx, client="cli"))
    assert out[-1].result["height"] == 1 and out[-1].tx_id == tx.tx_id
    # another tx with the same (submitter, nonce): refused as a replay
    forged = type(tx).create(c.key, tx.nonce, "kv.put", {"key": "k", "value": 999})
    out = r.handle(RequestSubmitted(forged, client="cli"))
    assert out[-1].result == {"error": "replay"}
    assert r.drops["request_replay"] == 1
    # a bad client signature is refused too
    bad = replace(c.tx(2), signature=bytes(64))
    assert r.handle(RequestSubmitted(bad, client="cli"))[-1].result == {"error": "bad-signature"}
    _run(sim, 1000)
    assert set(heights(sim).values()) == {1}


def test_proposal_with_replayed_tx_is_invalid_and_triggers_view_change():
    sim = cluster()
    c = Client()
    tx = c.tx(1)
    _submit_all(sim, [tx])
    _run(sim, 1000)
    primary = sim.instances[0]
    backup = sim.instances[1].replica
    block1, _ = backup.block_at(1)
    hdr = replace(block1.header, height=2, prev_hash=block1.block_hash(), time=block1.header.time + 1)
    evil = Block(hdr, block1.txs)
    pp = PrePrepare(primary.node_id, 0, 2, evil).sign(sim.genesis.chain_id, primary.key.sign)
    out = backup.handle(MessageReceived(primary.node_id, pp))
    assert backup.drops["invalid_proposal"] == 1
    assert backup.changing and backup.view == 1
    assert any(type(e.msg).__name__ == "ViewChange" for e in out if hasattr(e, "msg"))


def test_view_change_on_silent_primary_with_doubling_timeouts():
    sim = cluster(view_change_timeout_ms=200)
    sim.crash(sim.instances[0])  # primary of view 0
    c = Client()
    _submit_all(sim, [c.tx(i) for i in range(3)])
    _run(sim, 5000)
    live = sim.honest_live()
    assert {i.replica.height for i in live} == {1}
    assert all(i.replica.view == 1 and not i.replica.changing for i in live)
    _chains_equal(sim)
    # primary of view 1 crashes too: the next view change waits twice as long
    r = sim.instances[2].replica
    sim.crash(sim.instances[1])
    # f = 1: with two of four crashed no quorum exists; the timers still escalate
    _submit_all(sim, [c.tx(9)])
    delays = []
    orig = r.handle

    def spy(ev):
        out = orig(ev)
        delays.extend(e.delay for e in out if isinstance(e, SetTimer) and e.timer_id[0] == "view")
        return out

    r.handle = spy
    _run(sim, 3000)
    assert delays and delays[0] == 200  # normal-case timer after the last commit
    sim.restart(sim.instances[1])
    _run(sim, 20_000)
    assert r.height == 2
    assert r.view_change_count >= 2


def test_equivocating_primary_is_detected_and_replaced():
    sim = cluster()
    sim.instances[0].equivocate = True
    sim.instances[0].honest = False
    sim.byzantine.add(sim.instances[0].node_id)
    c = Client()
    _submit_all(sim, [c.tx(i) for i in range(3)])
    _run(sim, 10_000)
    honest = [i.replica for i in sim.instances[1:]]
    assert any(r.evidence for r in honest)
    ev = next(r.evidence[0] for r in honest if r.evidence)
    assert ev.node == sim.instances[0].node_id and ev.digest_a != ev.digest_b
    assert {r.height for r in honest} == {1}
    assert all(r.view >= 1 for r in honest)
    _chains_equal(sim)


def test_checkpoints_become_stable_and_truncate_the_log():
    sim = cluster(max_block_txs=1, checkpoint_interval=3)
    c = Client()
    for i in range(10):
        sim.submit(c.tx(i), sim.ids)
        _run(sim, 200)
    _run(sim, 2000)
    for inst in sim.instances:
        r = inst.replica
        assert r.height == 10
        assert r.stable == 9
        r.stable_cert.verify(sim.genesis.chain_id, sim.genesis.sealers, sim.verify)
        assert all(h >= r.stable for h in r.checkpoints)
        assert all(k[1] > r.height for k in list(r.prepares) + list(r.commits) + list(r.proposals))
        assert r.low_watermark == 9 and r.high_watermark == 15


def test_out_of_watermark_old_view_bad_signature_unknown_sender_are_dropped():
    sim = cluster()
    r = sim.instances[1].replica
    p = sim.instances[0]
    digest = bytes(32)
    far = Commit(p.node_id, 0, 100, digest).sign(sim.genesis.chain_id, p.key.sign)
    r.handle(MessageReceived(p.node_id, far))
    assert r.drops["out_of_watermark"] == 1
    forged = replace(Commit(p.node_id, 0, 1, digest).sign(sim.genesis.chain_id, p.key.sign), sig=bytes(64))
    r.handle(MessageReceived(p.node_id, forged))
    assert r.drops["bad_signature"] == 1
    stranger = key("stranger")
    msg = Commit(stranger.did, 0, 1, digest).sign(sim.genesis.chain_id, stranger.sign)
    r.handle(MessageReceived(stranger.did, msg))
    assert r.drops["unknown_sender"] == 1
    r.view = 3
    old = Prepare(sim.instances[2].node_id, 2, 1, digest).sign(sim.genesis.chain_id, sim.instances[2].key.sign)
    r.handle(MessageReceived(old.sender, old))
    assert r.drops["old_view"] == 1
    assert r.height == 0


def test_state_transfer_after_many_checkpoints_also_for_the_primary():
    sim = cluster(max_block_txs=1, checkpoint_interval=3, fetch_batch=4)
    primary = sim.instances[0]
    lagger = sim.instances[3]
    c = Client()
    sim.submit(c.tx(0), sim.ids)
    _run(sim, 500)
    sim.crash(lagger)
    sim.crash(primary)  # two down: nothing commits until one is back
    sim.restart(primary)
    for i in range(1, 25):
        sim.submit(c.tx(i), [x.node_id for x in sim.instances[:3]])
        _run(sim, 300)
    _run(sim, 3000)
    top = sim.instances[1].replica.height
    assert top == 25
    assert primary.replica.height == top  # the old primary restarted and caught up
    sim.restart(lagger)  # missed 8 checkpoints
    _run(sim, 5000)
    assert lagger.replica.height == top
    assert _chains_equal(sim) == top
    assert lagger.replica.executor.state_root() == sim.instances[1].replica.executor.state_root()
    # and it takes part again: a new request commits everywhere
    sim.submit(c.tx(99), sim.ids)
    _run(sim, 5000)
    assert set(heights(sim).values()) == {top + 1}


def test_restart_replays_persisted_blocks():
    sim = cluster()
    c = Client()
    _submit_all(sim, [c.tx(i) for i in range(5)])
    _run(sim, 2000)
    inst = sim.instances[2]
    before = inst.replica.height, inst.replica.executor.state_root(), inst.replica.last_hash
    sim.crash(inst)
    sim.restart(inst)
    r = inst.replica
    assert (r.height, r.executor.state_root(), r.last_hash) == before
    # with its persisted SafetyState it rejoins the view it crashed in (proposing nothing in it)
    assert r.restored and r.silent_below == 0 and r.no_propose_view == r.view
    # without one (a store from before SafetyState) it sits that view out
    legacy = Replica(sim.genesis, inst.node_id, inst.key.sign, committed=list(inst.persisted))
    assert legacy.silent_below == legacy.view + 1 and not legacy.restored


def test_backups_apply_pushed_blocks_and_reject_forged_certificates():
    sim = cluster(n_backups=2)
    c = Client()
    _submit_all(sim, [c.tx(i) for i in range(3)])
    _run(sim, 2000)
    backups = [i.replica for i in sim.instances[4:]]
    assert all(b.height == 1 and not b.is_sealer for b in backups)
    assert all(b.drops["stale_height"] == 0 for b in backups)  # one sealer pushed it to each
    # a fresh backup gets a block whose certificate lacks a quorum
    sealer = sim.instances[0]
    block, cert = sealer.replica.block_at(1)
    weak = CommitCertificate(cert.height, cert.view, cert.block_hash, cert.signatures[:2])
    fresh = Replica(sim.genesis, sim.instances[5].node_id, sim.instances[5].key.sign)
    msg = CommittedBlock(sealer.node_id, block, weak).sign(sim.genesis.chain_id, sealer.key.sign)
    fresh.handle(MessageReceived(sealer.node_id, msg))
    assert fresh.height == 0 and fresh.drops["bad_certificate"] == 1
    # the sender signs the header and certificate hashes only: txs swapped under a valid signature
    # and certificate are caught by the tx root (and a signature over another block fails)
    other = Block(block.header, (c.tx(99),) + block.txs[1:], block.last_commit)
    signed = CommittedBlock(sealer.node_id, block, cert).sign(sim.genesis.chain_id, sealer.key.sign)
    swapped = CommittedBlock(sealer.node_id, other, cert, signed.sig)
    assert swapped.verify(sim.genesis.chain_id, CachedVerifier())
    bad_blocks = fresh.drops["bad_block"]
    fresh.handle(MessageReceived(sealer.node_id, swapped))
    assert fresh.height == 0 and fresh.drops["bad_block"] == bad_blocks + 1
    bad_sig = CommittedBlock(sealer.node_id, block, cert, signed.sig[:-1] + bytes([signed.sig[-1] ^ 1]))
    fresh.handle(MessageReceived(sealer.node_id, bad_sig))
    assert fresh.height == 0 and fresh.drops["bad_signature"] == 1
    fresh.handle(MessageReceived(sealer.node_id, signed))
    assert fresh.height == 1


def test_messages_round_trip_through_canonical_bytes():
    sim = cluster()
    c = Client()
    _submit_all(sim, [c.tx(i) for i in range(4)])
    seen = {}
    for inst in sim.instances:
        orig = inst.replica.handle

        def spy(ev, orig=orig):
            if isinstance(ev, MessageReceived):
                seen.setdefault(type(ev.msg).__name__, ev.msg)
            return orig(ev)

        inst.replica.handle = spy
    sim.crash(sim.instances[0])
    _run(sim, 5000)
    assert {"Request", "Prepare", "Commit", "ViewChange", "NewView", "Status"} <= set(seen)
    for msg in seen.values():
        back = decode_message(encode_message(msg))
        assert back == msg
        assert back.verify(sim.genesis.chain_id, sim.verify)


def test_time_is_only_what_the_host_says():
    sim = cluster()
    r = Replica(sim.genesis, sim.ids[0], sim.instances[0].key.sign)
    c = Client()
    r.handle(Tick(5_000))
    out = r.handle(RequestSubmitted(c.tx(), client="x"))
    cut = [e for e in out if isinstance(e, SetTimer) and e.timer_id == ("cut",)]
    assert cut and cut[0].delay == sim.genesis.params.block_time_ms
    assert not [e for e in r.handle(TimerFired(("cut",))) if hasattr(e, "msg")]  # too early: re-armed
    r.handle(Tick(5_000 + cut[0].delay))
    out = r.handle(TimerFired(("cut",)))
    pp = next(e.msg for e in out if hasattr(e, "msg") and isinstance(e.msg, PrePrepare))
    assert pp.block.header.time == 5_000 + cut[0].delay


def test_status_from_a_higher_node_triggers_fetch():
    sim = cluster()
    r = sim.instances[3].replica
    peer = sim.instances[1]
    st = Status(peer.node_id, 7, 0, False, 6).sign(sim.genesis.chain_id, peer.key.sign)
    out = r.handle(MessageReceived(peer.node_id, st))
    fetch = [e for e in out if hasattr(e, "msg") and type(e.msg).__name__ == "FetchBlocks"]
    assert fetch and fetch[0].to == peer.node_id and fetch[0].msg.from_height == 1


def test_a_backup_one_block_behind_waits_a_status_interval_for_the_push_before_fetching():
    """A Status often overtakes the pushed block: one block behind, a backup fetches only if the
    block is still missing a status interval later; further behind, at once."""
    from ledger.messages import FetchBlocks

    sim = cluster(n_backups=1)
    sealer, me = sim.instances[0], sim.instances[4]
    chain_id, iv = sim.genesis.chain_id, sim.genesis.params.status_interval_ms

    def status(h, sender=sealer):
        return MessageReceived(sender.node_id, Status(sender.node_id, h, 0, False, 0).sign(chain_id, sender.key.sign))

    def fetches(effects):
        return [e for e in effects if isinstance(getattr(e, "msg", None), FetchBlocks)]

    backup = Replica(sim.genesis, me.node_id, me.key.sign, now=1_000)
    assert not fetches(backup.handle(status(1)))
    backup.handle(Tick(1_000 + iv - 1))
    assert not fetches(backup.handle(status(1, sim.instances[1])))
    backup.handle(Tick(1_000 + iv))
    assert fetches(backup.handle(status(1))) and backup.fetching is not None
    # two blocks behind: no wait
    other = Replica(sim.genesis, me.node_id, me.key.sign, now=1_000)
    assert fetches(other.handle(status(2)))
    # a sealer one block behind fetches at once, as before
    s1 = Replica(sim.genesis, sim.instances[1].node_id, sim.instances[1].key.sign, now=1_000)
    assert fetches(s1.handle(status(1)))
