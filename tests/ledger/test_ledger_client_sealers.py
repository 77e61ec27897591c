"""The client counts replies from the sealers *at the committing height*, following rotations.

The chain comes from the real replicas in the simulator with an executor that
rotates the sealer set every epoch (as reputation will); the client's header
reads are served from that chain in-process, and its replies are `TxReplies`
frames signed with the nodes' keys, fed to `_on_reply` as its TCP reader does.
"""

from __future__ import annotations

import asyncio

import pytest

from ledger import CommitCertificate
from ledger.client import AsyncLedgerClient, NodeUnavailable, _Wait
from ledger.layout import NodeAddress
from ledger.replies import TxReplies
from ledger_helpers import Client, key, rotating_cluster


@pytest.fixture(scope="module")
def chain():
    sim = rotating_cluster()
    c = Client()
    txs = [c.tx(i) for i in range(11)]
    for tx in txs:
        sim.submit(tx, sim.ids)
        sim.run_until(sim.now + 400)
    sim.run_until(sim.now + 3000)
    rep = sim.instances[4].replica
    assert rep.height == 11
    return sim, rep, txs


def _client(sim, rep, *, forged_first: bool = False):
    addrs = [NodeAddress(f"n{i}", did, "127.0.0.1", 1, 2) for i, did in enumerate(sim.ids)]
    client = AsyncLedgerClient(sim.genesis, addrs, key("rotating-client"))
    items = [(rep.block_at(h)[0].header, rep.block_at(h)[1]) for h in range(1, rep.height + 1)]
    calls = []

    async def get_headers(start=1, end=None, node=None):
        calls.append((start, end, node))
        hi = rep.height if end is None else min(end, rep.height)
        got = items[start - 1:hi]
        if node == "n0" and forged_first:  # a faulty node: too few signatures on its first header
            h, c = got[0]
            got = [(h, CommitCertificate(c.height, c.view, c.block_hash, c.signatures[:1]))] + got[1:]
        if node == "n1":
            raise NodeUnavailable("down")
        return got

    client.get_headers = get_headers
    return client, calls


def _frame(sim, i, tx_id, answer) -> bytes:
    inst = sim.instances[i]
    return TxReplies.of(inst.node_id, [(tx_id, answer)]).sign(sim.genesis.chain_id, inst.key.sign).encode()


def test_client_counts_only_sealers_of_the_committing_height_after_rotations(chain):
    sim, rep, txs = chain
    tx = next(t for t in txs if rep.tx_index[t.tx_id][0] == 10)  # epoch 3: n3, n4, n0, n1
    answer = rep._result_of(tx.tx_id)
    epoch3 = rep.sealers_at(10)
    ids = sim.ids
    assert ids[2] not in epoch3 and ids[4] in epoch3 and ids[4] not in sim.genesis.sealers

    async def main():
        client, calls = _client(sim, rep, forged_first=True)
        assert client.sealers == sim.genesis.sealers
        wait = _Wait(tx, asyncio.get_running_loop())
        client._waits[tx.tx_id] = wait
        # n2 was a genesis sealer, but is not one at height 10
        client._on_reply(_frame(sim, 2, tx.tx_id, answer))
        await client._sync_task  # the client follows headers to the end of epoch 2
        assert client.light.height >= 9 and client.sealers_at(10) == epoch3
        assert client.header_errors >= 1  # n0 served a forged header; n1 was down; n2 was used
        assert calls[0][2] == "n0" and any(c[2] == "n2" for c in calls)
        assert not wait.future.done() and client.not_sealer_votes == 1
        # n4 was a backup at genesis and is a sealer of epoch 3: its vote counts
        client._on_reply(_frame(sim, 4, tx.tx_id, answer))
        assert not wait.future.done()  # one of f+1 = 2
        # a node outside genesis is refused outright
        outsider = key("outsider")
        bad = TxReplies.of(outsider.did, [(tx.tx_id, answer)]).sign(sim.genesis.chain_id, outsider.sign).encode()
        client._on_reply(bad)
        assert client.replies_rejected == 1 and not wait.future.done()
        client._on_reply(_frame(sim, 3, tx.tx_id, answer))
        receipt = wait.future.result()
        assert receipt.height == 10 and receipt.nodes == tuple(sorted((ids[3], ids[4])))
        # submits now go to the current sealers
        await client.refresh_sealers()
        assert client.light.height == 11 and client.voters == frozenset(epoch3.members)
        await client.close()

    asyncio.run(main())


def test_votes_for_an_unknown_epoch_wait_for_the_headers(chain):
    """f+1 genesis sealers agreeing is not enough when they are not the sealers of that height."""
    sim, rep, txs = chain
    tx = next(t for t in txs if rep.tx_index[t.tx_id][0] == 7)  # epoch 2: n2, n3, n4, n0
    answer = rep._result_of(tx.tx_id)
    epoch2 = rep.sealers_at(7)
    ids = sim.ids
    assert ids[1] not in epoch2

    async def main():
        client, _ = _client(sim, rep)
        client.get_headers_orig = client.get_headers
        gate = asyncio.Event()

        async def slow(start=1, end=None, node=None):
            await gate.wait()
            return await client.get_headers_orig(start, end, node)

        client.get_headers = slow
        wait = _Wait(tx, asyncio.get_running_loop())
        client._waits[tx.tx_id] = wait
        for i in (1, 3):  # n1 (not in epoch 2) and n3
            client._on_reply(_frame(sim, i, tx.tx_id, answer))
        await asyncio.sleep(0.01)
        assert not wait.future.done()  # two genesis sealers agree, but epoch 2's set is not known yet
        gate.set()
        await client._sync_task
        assert not wait.future.done()  # once known: only n3 counts
        client._on_reply(_frame(sim, 0, tx.tx_id, answer))
        assert wait.future.result().nodes == tuple(sorted((ids[0], ids[3])))
        await client.close()

    asyncio.run(main())
