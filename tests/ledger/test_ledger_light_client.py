"""Light client: header chains from genesis across sealer-set changes, inclusion proofs."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ledger import CommitCertificate
from ledger.light_client import (
    CertificateInvalid,
    GenesisMismatch,
    HeaderLinkError,
    LightClient,
    LightClientError,
    SealerSetError,
    TxInclusionError,
    TxRootError,
    tx_proof,
    verify_chain,
)
from ledger_helpers import Client, cluster, rotating_cluster


@pytest.fixture(scope="module")
def rotating_chain():
    sim = rotating_cluster()
    c = Client()
    for i in range(11):
        sim.submit(c.tx(i), sim.ids)
        sim.run_until(sim.now + 400)
    sim.run_until(sim.now + 3000)
    return sim


def _items(rep):
    return [(rep.block_at(h)[0].header, rep.block_at(h)[1]) for h in range(1, rep.height + 1)]


def test_cluster_commits_across_sealer_set_changes(rotating_chain):
    sim = rotating_chain
    reps = [i.replica for i in sim.instances]
    assert {r.height for r in reps} == {11}
    assert len({r.last_hash for r in reps}) == 1
    r = reps[0]
    sets = {r.block_at(h)[0].header.sealer_set_hash for h in range(1, 12)}
    assert len(sets) == 4  # epochs 0..3
    assert [h for h in range(1, 12) if r.block_at(h)[0].header.next_sealers is not None] == [3, 6, 9]
    assert r.is_sealer is (r.me in r.sealers)


def test_light_client_follows_headers_from_genesis(rotating_chain):
    sim = rotating_chain
    rep = sim.instances[4].replica
    lc = LightClient.from_genesis(sim.genesis, sim.genesis.genesis_hash())
    lc.add_chain(_items(rep))
    assert lc.height == 11 and set(lc.sealer_sets) == {0, 1, 2, 3}
    block, _ = rep.block_at(7)
    lc.verify_block(block)
    tx = block.txs[0]
    proof = tx_proof(block, tx.tx_id)
    assert lc.verify_tx(tx, proof) == block.header
    with pytest.raises(TxInclusionError) as exc:
        lc.verify_tx(Client("other").tx(), proof)
    assert exc.value.step == "tx-in-block"


def test_light_client_names_the_failed_step(rotating_chain):
    sim = rotating_chain
    items = _items(sim.instances[0].replica)
    g = sim.genesis
    with pytest.raises(GenesisMismatch):
        LightClient.from_genesis(g, bytes(32))
    # a certificate signed by the old set for a block of the new epoch
    h4, c4 = items[3]
    lc = verify_chain(g, items[:3])
    bad = replace(h4, sealer_set_hash=g.sealers.hash())
    with pytest.raises(SealerSetError):
        lc.add(bad, c4)
    # too few signatures
    lc = verify_chain(g, items[:3])
    with pytest.raises(CertificateInvalid) as exc:
        lc.add(h4, CommitCertificate(c4.height, c4.view, c4.block_hash, c4.signatures[:2]))
    assert exc.value.step == "certificate"
    # a certificate of another block
    with pytest.raises(CertificateInvalid):
        lc.add(replace(h4, time=h4.time + 1), c4)
    # gaps and forks
    with pytest.raises(HeaderLinkError):
        lc.add(*items[4])
    with pytest.raises(HeaderLinkError):
        verify_chain(g, [items[0], (replace(items[1][0], prev_hash=bytes(32)), items[1][1])])
    # a block whose transactions were swapped
    block, _ = sim.instances[0].replica.block_at(2)
    lc = verify_chain(g, items)
    with pytest.raises(TxRootError):
        lc.verify_block(replace(block, txs=()))
    assert issubclass(TxRootError, LightClientError)


def test_tx_proofs_for_every_position():
    sim = cluster(max_block_txs=7)
    c = Client()
    for i in range(7):
        sim.submit(c.tx(i), sim.ids)
    sim.run_until(2000)
    rep = sim.instances[0].replica
    block, cert = rep.block_at(1)
    assert len(block.txs) == 7
    lc = verify_chain(sim.genesis, [(block.header, cert)])
    for tx in block.txs:
        lc.verify_tx(tx.tx_id, tx_proof(block, tx.tx_id))
