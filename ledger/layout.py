"""The ledger state directory: genesis, node keys, addresses, per-node data.

One directory (``$SEALSTREAM_HOME/ledger`` for the CLI, a temp dir in tests)
holds everything a local cluster needs::

    genesis.json            the chain's genesis (JSON of `Genesis.to_wire()`)
    addresses.json          [{name, did, host, p2p_port, http_port}] per node
    keys/<name>.key         node keys, mode 0600 (`trust.identity.save_keypair`)
    keys/client.key         a submitter key for the CLI and tests
    keys/admin.key          the consortium admin (app "contracts" only)
    contracts.json          the contracts genesis (app "contracts" only)
    nodes/<name>/blocks.db  each node's block store
    run/<name>.pid          pid files of running nodes
    logs/<name>.log         each node's JSON log

Genesis has no byte strings, so plain JSON is its exact wire form.

The application (`init_layout(app=...)`): ``"contracts"`` (the default of
``sealstream ledger init|up``) runs `ledger.contracts.ContractApp` from
``contracts.json`` (`ContractsGenesis.for_ledger(genesis, admin.did)`: one
org ``operator`` administered by ``keys/admin.key``, holding the genesis
nodes); ``"kv"`` runs `KVExecutor` (``kv.put``; the benchmark and the
consensus tests). The genesis records the contracts genesis by its hash
(`Genesis.app` = ``contracts:<hex>``, part of the genesis hash), and
`LedgerLayout.executor` refuses to build an app whose ``contracts.json`` does
not match it, so every node of a chain runs the same contracts genesis.
Layouts from before this have no ``app`` and keep running KV.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trust import canonical
from trust._hashes import sha256
from trust.identity import KeyPair, load_keypair, save_keypair

from ._types import Genesis, Params
from .errors import LedgerError

if TYPE_CHECKING:
    from .contracts import ContractsGenesis
    from .executor import Executor

__all__ = ["APPS", "LayoutError", "NodeAddress", "LedgerLayout", "init_layout", "contracts_genesis_hash",
           "app_tag"]

#: Applications a layout can run.
APPS = ("contracts", "kv")
_CONTRACTS_GENESIS_TAG = "sealstream/contracts/genesis/v1"


def contracts_genesis_hash(cg: "ContractsGenesis") -> bytes:
    """sha256 of the canonical bytes of `cg`'s wire form (domain-tagged)."""
    return sha256(canonical.encode([_CONTRACTS_GENESIS_TAG, cg.to_wire()]))


def app_tag(cg: "ContractsGenesis | None") -> str:
    """`Genesis.app` for a contracts genesis (``""``: the KV app)."""
    return "" if cg is None else "contracts:" + contracts_genesis_hash(cg).hex()


class LayoutError(LedgerError):
    """The ledger state directory is missing, incomplete or already initialised."""


@dataclass(frozen=True)
class NodeAddress:
    """Where one node listens: `p2p_port` for replicas and clients, `http_port` for queries."""

    name: str
    did: str
    host: str
    p2p_port: int
    http_port: int

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"


@dataclass(frozen=True)
class LedgerLayout:
    """Paths inside one ledger state directory."""

    root: Path

    @property
    def genesis_path(self) -> Path:
        return self.root / "genesis.json"

    @property
    def addresses_path(self) -> Path:
        return self.root / "addresses.json"

    def key_path(self, name: str) -> Path:
        return self.root / "keys" / f"{name}.key"

    @property
    def client_key_path(self) -> Path:
        return self.key_path("client")

    @property
    def admin_key_path(self) -> Path:
        return self.key_path("admin")

    @property
    def contracts_path(self) -> Path:
        return self.root / "contracts.json"

    def node_dir(self, name: str) -> Path:
        return self.root / "nodes" / name

    def store_path(self, name: str) -> Path:
        return self.node_dir(name) / "blocks.db"

    def pid_path(self, name: str) -> Path:
        return self.root / "run" / f"{name}.pid"

    def log_path(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def exists(self) -> bool:
        return self.genesis_path.exists() and self.addresses_path.exists()

    def genesis(self) -> Genesis:
        try:
            return Genesis.from_wire(json.loads(self.genesis_path.read_text()))
        except FileNotFoundError:
            raise LayoutError(f"{self.genesis_path} does not exist; run `sealstream ledger init` first") from None

    def addresses(self) -> list[NodeAddress]:
        try:
            return [NodeAddress(**a) for a in json.loads(self.addresses_path.read_text())]
        except FileNotFoundError:
            raise LayoutError(f"{self.addresses_path} does not exist; run `sealstream ledger init` first") from None

    def address(self, name: str) -> NodeAddress:
        for a in self.addresses():
            if a.name == name:
                return a
        raise LayoutError(f"no node named {name!r} in {self.addresses_path}")

    def node_key(self, name: str) -> KeyPair:
        return load_keypair(self.key_path(name))

    def client_key(self) -> KeyPair:
        return load_keypair(self.client_key_path)

    def admin_key(self) -> KeyPair:
        """The consortium admin's key (contracts layouts only)."""
        if not self.admin_key_path.exists():
            raise LayoutError(f"{self.admin_key_path} does not exist: this ledger has no consortium admin "
                              "(it was initialised with the kv app); `sealstream ledger init --force` "
                              "replaces it with a contracts ledger (and deletes its blocks)")
        return load_keypair(self.admin_key_path)

    def app(self) -> str:
        """``"contracts"`` or ``"kv"``, as the genesis says."""
        return "contracts" if self.genesis().app.startswith("contracts:") else "kv"

    def contracts_genesis(self) -> "ContractsGenesis | None":
        """The contracts genesis from ``contracts.json``, or None when absent (a KV ledger)."""
        from .contracts import ContractsGenesis

        try:
            text = self.contracts_path.read_text()
        except FileNotFoundError:
            return None
        try:
            return ContractsGenesis.from_wire(json.loads(text))
        except ValueError as exc:
            raise LayoutError(f"{self.contracts_path} is not valid JSON ({exc})") from None
        except LedgerError as exc:
            raise LayoutError(f"{self.contracts_path}: {exc}") from None

    def check_app(self, genesis: Genesis | None = None) -> "ContractsGenesis | None":
        """The contracts genesis if the chain runs contracts, None for KV; raises
        `LayoutError` unless ``contracts.json`` matches the genesis' app hash."""
        g = genesis or self.genesis()
        cg = self.contracts_genesis()
        if g.app == "":
            if cg is not None:
                raise LayoutError(f"{self.contracts_path} exists but genesis {self.genesis_path} names no "
                                  "contracts app (a kv ledger); remove it or re-run `sealstream ledger init --force`")
            return None
        if not g.app.startswith("contracts:"):
            raise LayoutError(f"genesis {self.genesis_path} names an unknown app {g.app[:40]!r}")
        if cg is None:
            raise LayoutError(f"genesis {self.genesis_path} runs contracts but {self.contracts_path} is missing; "
                              "copy it from another node of this ledger")
        if app_tag(cg) != g.app:
            raise LayoutError(f"{self.contracts_path} does not match the genesis (its hash is "
                              f"{contracts_genesis_hash(cg).hex()[:16]}..., genesis wants "
                              f"{g.app.split(':', 1)[1][:16]}...); every node needs the same contracts.json")
        return cg

    def executor(self, genesis: Genesis | None = None) -> "Executor":
        """The app a node of this ledger runs: `ContractApp` or `KVExecutor` (see `check_app`)."""
        cg = self.check_app(genesis)
        if cg is None:
            from .executor import KVExecutor

            return KVExecutor()
        from .contracts import ContractApp

        return ContractApp(cg)


def init_layout(
    root: Path,
    *,
    n_nodes: int,
    n_sealers: int,
    ports: list[tuple[int, int]],
    host: str = "127.0.0.1",
    params: Params | None = None,
    chain_id: str | None = None,
    force: bool = False,
    app: str = "contracts",
) -> LedgerLayout:
    """Write fresh keys, genesis and addresses for `n_nodes` (the first `n_sealers` seal).

    `ports[i]` is node i's (p2p, http) port pair. `app` is ``"contracts"``
    (also writes ``keys/admin.key`` and ``contracts.json``, and binds its hash
    into the genesis) or ``"kv"``. Refuses to touch an existing ledger unless
    `force` (which deletes its keys and block stores too).
    """
    if app not in APPS:
        raise LayoutError(f"unknown app {app!r}; choose one of {', '.join(APPS)}")
    if not 1 <= n_sealers <= n_nodes:
        raise LayoutError(f"need 1 <= sealers <= nodes, got {n_sealers} sealers for {n_nodes} nodes")
    if len(ports) != n_nodes:
        raise LayoutError(f"need {n_nodes} port pairs, got {len(ports)}")
    layout = LedgerLayout(Path(root))
    if layout.exists() or (layout.root / "nodes").exists():
        if not force:
            raise LayoutError(f"a ledger already exists in {layout.root}; pass --force to replace it "
                              "(its blocks are lost)")
        for sub in ("keys", "nodes", "run"):
            shutil.rmtree(layout.root / sub, ignore_errors=True)
        for f in (layout.genesis_path, layout.addresses_path, layout.contracts_path):
            f.unlink(missing_ok=True)
    (layout.root / "keys").mkdir(parents=True, exist_ok=True)
    os.chmod(layout.root / "keys", 0o700)
    names = [f"node{i}" for i in range(n_nodes)]
    keys = [KeyPair.generate() for _ in names]
    for name, key in zip(names, keys):
        save_keypair(layout.key_path(name), key)
    save_keypair(layout.client_key_path, KeyPair.generate())
    genesis = Genesis.create(chain_id or f"sealstream-{os.urandom(4).hex()}", [k.did for k in keys], n_sealers,
                             params or Params())
    genesis = Genesis(genesis.chain_id, tuple(type(n)(n.did, name) for n, name in zip(genesis.nodes, names)),
                      genesis.sealers, genesis.params, genesis.time)
    if app == "contracts":
        from .contracts import ContractsGenesis

        admin = KeyPair.generate()
        save_keypair(layout.admin_key_path, admin)
        cg = ContractsGenesis.for_ledger(genesis, admin.did)
        _write_json(layout.contracts_path, cg.to_wire())
        genesis = Genesis(genesis.chain_id, genesis.nodes, genesis.sealers, genesis.params, genesis.time,
                          app_tag(cg))
    addresses = [NodeAddress(name, key.did, host, p2p, http) for name, key, (p2p, http) in zip(names, keys, ports)]
    _write_json(layout.genesis_path, genesis.to_wire())
    _write_json(layout.addresses_path, [asdict(a) for a in addresses])
    return layout


def _write_json(path: Path, value: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    tmp.replace(path)
