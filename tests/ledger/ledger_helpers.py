"""Helpers for ledger tests: small clusters driven by the real simulator."""

from __future__ import annotations

import hashlib
from dataclasses import replace


from ledger import Params, Transaction
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
