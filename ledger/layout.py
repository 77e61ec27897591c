"""The ledger state directory: genesis, node keys, addresses, per-node data.

One directory (``$SEALSTREAM_HOME/ledger`` for the CLI, a temp dir in tests)
holds everything a local cluster needs::

    genesis.json            the chain's genesis (JSON of `Genesis.to_wire()`)
    addresses.json          [{name, did, host, p2p_port, http_port}] per node
    keys/<name>.key         node keys, mode 0600 (`trust.identity.save_keypair`)
    keys/client.key         a submitter key for the CLI and tests
    nodes/<name>/blocks.db  each node's block store
    run/<name>.pid          pid files of running nodes
    logs/<name>.log         each node's JSON log

Genesis has no byte strings, so plain JSON is its exact wire form.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from trust.identity import KeyPair, load_keypair, save_keypair

from ._types import Genesis, Params
from .errors import LedgerError

__all__ = ["LayoutError", "NodeAddress", "LedgerLayout", "init_layout"]


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
) -> LedgerLayout:
    """Write fresh keys, genesis and addresses for `n_nodes` (the first `n_sealers` seal).

    `ports[i]` is node i's (p2p, http) port pair. Refuses to touch an existing
    ledger unless `force` (which deletes its keys and block stores too).
    """
    if not 1 <= n_sealers <= n_nodes:
        raise LayoutError(f"need 1 <= sealers <= nodes, got {n_sealers} sealers for {n_nodes} nodes")
    if len(ports) != n_nodes:
        raise LayoutError(f"need {n_nodes} port pairs, got {len(ports)}")
    layout = LedgerLayout(Path(root))
    if layout.exists() or (layout.root / "nodes").exists():
        if not force:
            raise LayoutError(f"a ledger already exists in {layout.root}; pass --force to replace it (its blocks are lost)")
        for sub in ("keys", "nodes", "run"):
            shutil.rmtree(layout.root / sub, ignore_errors=True)
        for f in (layout.genesis_path, layout.addresses_path):
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
    addresses = [NodeAddress(name, key.did, host, p2p, http) for name, key, (p2p, http) in zip(names, keys, ports)]
    _write_json(layout.genesis_path, genesis.to_wire())
    _write_json(layout.addresses_path, [asdict(a) for a in addresses])
    return layout


def _write_json(path: Path, value: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    tmp.replace(path)
