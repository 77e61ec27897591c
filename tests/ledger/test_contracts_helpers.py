"""Shared helpers of the contracts tests (no tests here): a chain without consensus."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ledger import SealerSet, Transaction
from ledger.contracts import ContractApp, ContractsGenesis, GenesisEntity, GenesisOrg
from ledger.executor import BlockContext
from trust import canonical
from trust.identity import KeyPair


def key(name: str) -> KeyPair:
    return KeyPair.from_seed(hashlib.sha256(f"contracts-{name}".encode()).digest())


ADMIN = key("consortium-admin")
ACME = key("acme-admin")
BETA = key("beta-admin")
NODE0 = key("node0")


#: Every fee 0. The registry/anchors/app/sim tests check each contract's own
#: rules (who may register, rotate, anchor), which a key without tokens (any
#: key registered after genesis, any unregistered key) would otherwise meet as
#: INSUFFICIENT_QUOTA first; fees and quotas are tested in test_contracts_tokens.py.
FREE = {"*": 0}


def default_genesis(fees: dict | None = FREE, balances: dict | None = None) -> ContractsGenesis:
    """acme (admin ACME, with node0) and beta (admin BETA); `fees` None: the default schedule."""
    return ContractsGenesis(
        ADMIN.did,
        (GenesisOrg("acme", "Acme Forge", ACME.did), GenesisOrg("beta", "Beta Mills", BETA.did)),
        (GenesisEntity("node0", "node", "acme", NODE0.did),),
        balances or {},
        fees,
    )


class Chain:
    """Feeds blocks to a `ContractApp` (execute, then apply) like a committing replica."""

    def __init__(self, app: ContractApp | None = None) -> None:
        self.app = app or ContractApp(default_genesis())
        self.height = 0
        self.nonces: dict[str, int] = {}
        self.sealers = SealerSet((NODE0.did,))
        self.roots: list[bytes] = [self.app.state_root()]
        self.results: list[tuple] = []

    def tx(self, signer: KeyPair, kind: str, payload: Any) -> Transaction:
        n = self.nonces.get(signer.did, 0) + 1
        self.nonces[signer.did] = n
        return Transaction.create(signer, n, kind, payload)

    def ctx(self, height: int) -> BlockContext:
        return BlockContext(height, 0, 1000 * height, NODE0.did, False, self.sealers)

    def block(self, *txs: Transaction) -> list[dict]:
        self.height += 1
        ex = self.app.execute(self.ctx(self.height), txs)
        self.app.apply(ex)
        self.roots.append(ex.state_root)
        self.results.append(ex.results)
        return list(ex.results)

    def one(self, signer: KeyPair, kind: str, payload: Any) -> dict:
        """Run one tx in its own block; returns its result."""
        return self.block(self.tx(signer, kind, payload))[0]


def code(result: dict) -> str | None:
    """The refusal code of a result (None when it succeeded); also checks its shape."""
    assert canonical.decode(canonical.encode(result)) == result
    json.dumps(result)
    if result["ok"]:
        assert set(result) >= {"ok"} and "code" not in result
        return None
    assert set(result) == {"ok", "code", "message"} and result["code"].isupper()
    return result["code"]
