"""The core's side of reputation: a proposal for h+1 must carry a valid
certificate of block h (`Block.last_commit`), every sealer checks it before
preparing, and a COMMIT arriving after the quorum joins the carried certificate."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from ledger import Block, BlockHeader, CommitCertificate, Params, Transaction
from ledger.values import tx_root_of
from ledger.consensus import Broadcast, MessageReceived
from ledger.messages import Commit, PrePrepare, Prepare
from ledger.sim import SimConfig, Simulation
from trust.identity import KeyPair

PARAMS = Params(max_block_txs=4, block_time_ms=30, checkpoint_interval=5, view_change_timeout_ms=300,
                status_interval_ms=250, epoch_length=100, sealer_count=4)


def _chain(height: int = 3) -> Simulation:
    sim = Simulation(SimConfig(seed=11, n_sealers=4, params=PARAMS))
    client = KeyPair.from_seed(hashlib.sha256(b"rep-consensus-client").digest())
    for i in range(height):
        sim.at(200 * i, lambda i=i: sim.submit(Transaction.create(client, i + 1, "kv.put", {"key": "k", "value": i}),
                                               sim.ids))
    sim.run_until(200 * height + 2000)
    assert {i.replica.height for i in sim.instances} == {height}
    return sim


def _proposal(sim: Simulation, last_commit: CommitCertificate | None, lc_hash: bytes | None = None) -> PrePrepare:
    """A primary's PRE-PREPARE for the next height carrying `last_commit` (header hash of `lc_hash` if given)."""
    prim = next(i for i in sim.instances if i.node_id == sim.instances[1].replica.primary)
    r = prim.replica
    h = r.height + 1
    tx = Transaction.create(KeyPair.from_seed(b"\x05" * 32), 1, "kv.put", {"key": "x", "value": 1})
    ex = r.executor.execute(r._context(h, r.last_time, r.me, r.sealers, last_commit), [tx])
    header = BlockHeader(h, r.last_hash, tx_root_of([tx]), ex.state_root, 0, r.view, r.me, r.last_time,
                         r.sealers.hash(), None,
                         lc_hash if lc_hash is not None else (None if last_commit is None else last_commit.cert_hash()))
    return PrePrepare(r.me, r.view, h, Block(header, (tx,), last_commit)).sign(sim.genesis.chain_id, prim.key.sign)


def _backup(sim: Simulation):
    return next(i for i in sim.instances if i.node_id != i.replica.primary)


def _prepares(effects) -> list:
    return [e for e in effects if isinstance(e, Broadcast) and isinstance(e.msg, Prepare)]


def test_a_valid_last_commit_is_prepared() -> None:
    sim = _chain()
    b = _backup(sim)
    pp = _proposal(sim, b.replica.last_cert)
    assert _prepares(b.replica.handle(MessageReceived(pp.sender, pp)))


@pytest.mark.parametrize("case", ["missing", "forged", "other_block", "too_few", "hash_mismatch", "stranger"])
def test_a_bad_last_commit_is_refused(case: str) -> None:
    sim = _chain()
    b = _backup(sim)
    cert = b.replica.last_cert
    assert cert is not None
    lc, lc_hash = cert, None
    if case == "missing":
        lc = None
    elif case == "forged":
        lc = replace(cert, signatures=tuple((s, bytes(64)) for s, _ in cert.signatures))
    elif case == "other_block":
        lc = replace(cert, block_hash=b"\x07" * 32)
    elif case == "too_few":
        lc = replace(cert, signatures=cert.signatures[:1])
    elif case == "hash_mismatch":
        lc_hash = b"\x09" * 32
    elif case == "stranger":  # a signer outside the sealer set
        k = KeyPair.from_seed(b"\x03" * 32)
        lc = replace(cert, signatures=(*cert.signatures, (k.did, bytes(64))))
    pp = _proposal(sim, lc, lc_hash)
    effects = b.replica.handle(MessageReceived(pp.sender, pp))
    assert not _prepares(effects)
    assert b.replica.drops["invalid_proposal"] == 1
    assert b.replica.changing  # an invalid proposal starts a view change


def test_late_commit_joins_the_carried_certificate() -> None:
    sim = _chain()
    r = sim.instances[0].replica
    r.last_cert = cert = replace(r.last_cert, signatures=r.last_cert.signatures[:3])  # as when the quorum formed
    missing = [i for i in sim.instances if i.node_id not in cert.signers()]
    assert len(missing) == 1
    for inst in missing:
        late = Commit(inst.node_id, cert.view, cert.height, cert.block_hash).sign(sim.genesis.chain_id, inst.key.sign)
        r.handle(MessageReceived(inst.node_id, late))
    assert sorted(r.last_cert.signers()) == sorted(sim.ids)
    r.last_cert = cert
    forged = Commit(missing[0].node_id, cert.view, cert.height, cert.block_hash, sig=bytes(64))
    r.handle(MessageReceived(forged.sender, forged))
    assert r.last_cert == cert and r.drops["bad_signature"] >= 1  # a forged late COMMIT changes nothing


@pytest.mark.parametrize("cls", [Prepare, Commit])
def test_double_votes_are_kept_as_evidence_that_verifies(cls) -> None:
    from ledger.contracts.evidence import from_equivocation, verify_evidence
    from ledger.sim import CachingVerifier

    sim = _chain()
    r = sim.instances[0].replica
    voter = next(i for i in sim.instances[1:] if i.node_id != r.primary)
    h, v = r.height + 1, r.view
    for digest in (b"\x01" * 32, b"\x01" * 32, b"\x02" * 32):  # the repeat is no offence, the other digest is
        msg = cls(voter.node_id, v, h, digest).sign(sim.genesis.chain_id, voter.key.sign)
        r.handle(MessageReceived(voter.node_id, msg))
    assert len(r.evidence) == 1 and r.drops["double_vote"] == 1
    ev = from_equivocation(r.evidence[0])
    assert (ev.kind, ev.node, ev.view, ev.height) == (cls.KIND, voter.node_id, v, h)
    verify_evidence(ev, sim.genesis.chain_id, sim.genesis.node_ids(), r.sealers_at(h), CachingVerifier())
