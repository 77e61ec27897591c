"""Helpers for ledger tests: small clusters driven by the real simulator."""

from __future__ import annotations

import hashlib
from dataclasses import replace


from ledger import KVExecutor, Params, SealerSet, Transaction
from ledger.sim import SimConfig, Simulation
from trust.identity import KeyPair


def key(name: str) -> KeyPair:
    return KeyPair.from_seed(hashlib.sha256(name.encode()).digest())


class Client:
    """A submitter with its own nonces."""

    def __init__(self, name: str = "client") -> None:
        self.key = key(name)
        self.nonce = 0

    def tx(self, value: object = 0, k: str = "k") -> Transaction:
        self.nonce += 1
        return Transaction.create(self.key, self.nonce, "kv.put", {"key": k, "value": value})


def cluster(n_sealers: int = 4, n_backups: int = 0, **params: int) -> Simulation:
    base = SimConfig(seed=0).params
    cfg = SimConfig(seed=0, n_sealers=n_sealers, n_backups=n_backups, max_delay=5,
                    params=replace(base, **params))
    return Simulation(cfg)


def heights(sim: Simulation) -> dict[str, int]:
    return {i.name: i.replica.height for i in sim.instances if i.alive and i.replica}




__all__ = ["Client", "cluster", "heights", "key", "Params"]


def make_chain(n_blocks: int, txs_per_block: int = 3, n_sealers: int = 4, seed: str = "chain"):
    """A valid chain built without consensus (for store/light-client tests):
    returns (genesis, [(block, cert, results)], sealer keys)."""
    from ledger import Block, BlockHeader, CommitCertificate, Genesis, KVExecutor
    from ledger.values import commit_signing_bytes, epoch_of, is_epoch_end, tx_root_of
    from ledger.executor import BlockContext

    keys = [key(f"{seed}-sealer-{i}") for i in range(n_sealers)]
    genesis = Genesis.create(f"{seed}-chain", [k.did for k in keys])
    ex = KVExecutor()
    c = Client(f"{seed}-client")
    prev = genesis.genesis_hash()
    out = []
    p = genesis.params
    for h in range(1, n_blocks + 1):
        txs = tuple(c.tx(i, k=f"k{h % 7}") for i in range(txs_per_block))
        e = epoch_of(h, p.epoch_length)
        ctx = BlockContext(h, e, h * 10, keys[0].did, is_epoch_end(h, p.epoch_length), genesis.sealers)
        run = ex.execute(ctx, txs)
        ex.apply(run)
        hdr = BlockHeader(h, prev, tx_root_of(txs), run.state_root, e, 0, keys[0].did, h * 10,
                          genesis.sealers.hash(), run.next_sealers)
        block = Block(hdr, txs)
        bh = block.block_hash()
        sigs = tuple(sorted((k.did, k.sign(commit_signing_bytes(genesis.chain_id, 0, h, bh, k.did)))
                            for k in keys[:3]))
        out.append((block, CommitCertificate(h, 0, bh, sigs), run.results))
        prev = bh
    return genesis, out, keys


class Rotating(KVExecutor):
    """Sealer set of epoch e+1: four of the five nodes, shifted by one each epoch."""

    nodes: tuple[str, ...] = ()

    def next_sealers(self, ctx, state):
        e = ctx.epoch + 1
        return SealerSet(tuple(self.nodes[(e + i) % len(self.nodes)] for i in range(4)))


def rotating_cluster() -> Simulation:
    """Five nodes (4 sealers + 1 backup) whose sealer set rotates every 3 blocks."""
    sim = cluster(n_backups=1, max_block_txs=1, epoch_length=3, checkpoint_interval=2)
    Rotating.nodes = tuple(sim.ids)
    sim.cfg.executor = Rotating
    for inst in sim.instances:  # reboot with the rotating executor, from nothing
        sim.crash(inst)
        inst.persisted.clear()
        inst.safety = None
        sim.restart(inst)
    return sim
