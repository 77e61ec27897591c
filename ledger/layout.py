"""The ledger state directory: genesis, node keys, addresses, per-node data.

One directory (``$SEALSTREAM_HOME/ledger`` for the CLI, a temp dir in tests)
holds everything a local cluster needs::

    genesis.json            the chain's genesis (JSON of `Genesis.to_wire()`)
    addresses.json          [{name, did, host, p2p_port, http_port, client_port, metrics_port,
                             metrics_host}] per node
    certs/<name>.pem        each node's self-signed TLS certificate (public; `ledger.tls`)
    nodes/<name>/node.key   the node's key and nothing else (dir 0700, file 0600)
    client/client.key       a submitter key for the CLI and tests (dir 0700)
    admin/admin.key         the consortium admin (app "contracts" only; dir 0700)
    contracts.json          the contracts genesis (app "contracts" only)
    nodes/<name>/blocks.db  each node's block store
    run/<name>.pid          pid files of running nodes
    logs/<name>.log         each node's JSON log

Genesis has no byte strings, so plain JSON is its exact wire form.

Keys: a node process reads only its own directory's key (and the public files), so nodes run
under separate users need nothing of each other's; key files are written 0600 to a temporary
name and renamed, so no reader ever sees a partial or wider-readable key. Layouts from before
this keep ``keys/<name>.key`` and are still read.

TLS (`LedgerLayout.tls`): a layout with ``certs/`` runs its peers' links as mutually
authenticated TLS 1.3 bound to the genesis keys, its clients on ``client_port`` over TLS
(`ledger.tls`) and its HTTP API over HTTPS pinned to the same keys (`ledger.https`);
``init_layout(tls=False)`` (``sealstream ledger init --plaintext``, the bench's comparison) and
layouts from before this run the previous plaintext transport on one port and plain HTTP. Every
node also has a plain-HTTP ``/metrics`` listener (``metrics_port`` on ``metrics_host``) for
Prometheus.

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
from typing import TYPE_CHECKING, Sequence

from trust import canonical
from trust.hashes import sha256
from trust.identity import KeyPair, load_keypair, save_keypair

if TYPE_CHECKING:
    from .tls import NodeTLS

from .values import Genesis, Params
from .errors import LedgerError

if TYPE_CHECKING:
    from .contracts import ContractsGenesis
    from .executor import Executor

__all__ = ["APPS", "LayoutError", "NodeAddress", "LedgerLayout", "init_layout", "contracts_genesis_hash",
           "app_tag", "write_key"]

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
    """Where one node listens: `p2p_port` for replicas (and, without TLS, clients), `http_port` for
    queries, `client_port` for clients over TLS (None: a plaintext layout, clients use `p2p_port`),
    `metrics_port` on `metrics_host` for Prometheus (plain HTTP, ``/metrics`` only; None: a layout
    from before it, whose ``/metrics`` is on the HTTP API only).

    A TLS layout (`client_port` set) serves its HTTP API over HTTPS with the node's certificate;
    callers pin it to the node's genesis key (`ledger.https`)."""

    name: str
    did: str
    host: str
    p2p_port: int
    http_port: int
    client_port: int | None = None
    metrics_port: int | None = None
    metrics_host: str | None = None

    @property
    def https(self) -> bool:
        """True when the HTTP API speaks TLS (a TLS layout: `ledger.https` pins it)."""
        return self.client_port is not None

    @property
    def http_url(self) -> str:
        return f"{'https' if self.https else 'http'}://{self.host}:{self.http_port}"

    @property
    def metrics_target(self) -> str | None:
        """``host:port`` Prometheus scrapes for ``/metrics`` over plain HTTP (None: none it can: a TLS
        layout from before the metrics port, whose ``/metrics`` is behind the pinned HTTPS API)."""
        if self.metrics_port is not None:
            return f"{self.metrics_host or self.host}:{self.metrics_port}"
        return None if self.https else f"{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str | None:
        target = self.metrics_target
        return None if target is None else f"http://{target}/metrics"


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

    def legacy_key_path(self, name: str) -> Path:
        """Where layouts from before per-node key directories kept every key."""
        return self.root / "keys" / f"{name}.key"

    def _key(self, path: Path, name: str) -> Path:
        legacy = self.legacy_key_path(name)
        return legacy if not path.exists() and legacy.exists() else path

    def key_path(self, name: str) -> Path:
        """Node `name`'s key file: ``nodes/<name>/node.key`` (or a legacy ``keys/<name>.key``)."""
        if name in ("client", "admin"):
            return self.client_key_path if name == "client" else self.admin_key_path
        return self._key(self.node_dir(name) / "node.key", name)

    @property
    def client_key_path(self) -> Path:
        return self._key(self.root / "client" / "client.key", "client")

    @property
    def admin_key_path(self) -> Path:
        return self._key(self.root / "admin" / "admin.key", "admin")

    @property
    def certs_dir(self) -> Path:
        return self.root / "certs"

    @property
    def tls(self) -> bool:
        """True when this ledger's links run TLS bound to the genesis keys (``certs/`` exists)."""
        return self.certs_dir.is_dir()

    def node_tls(self, name: str, key: KeyPair | None = None) -> "NodeTLS":
        """The TLS contexts of node `name` (its key, the published genesis certificates)."""
        from .tls import NodeTLS

        g = self.genesis()
        names = {n.did: n.name for n in g.nodes}
        return NodeTLS.for_node(key or self.node_key(name), g.node_ids(), self.certs_dir, names,
                                workdir=self.node_dir(name) if self.node_dir(name).is_dir() else None)

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
    ports: Sequence[tuple[int, ...]],
    host: str = "127.0.0.1",
    metrics_host: str = "127.0.0.1",
    params: Params | None = None,
    chain_id: str | None = None,
    force: bool = False,
    app: str = "contracts",
    tls: bool = True,
) -> LedgerLayout:
    """Write fresh keys, genesis and addresses for `n_nodes` (the first `n_sealers` seal).

    `ports[i]` is node i's (p2p, http, client, metrics) ports; with `tls` (the default) each node's
    certificate goes to ``certs/``, its HTTP API serves HTTPS and clients get their own port (the
    third; without it, or ``tls=False``, the previous plaintext transport on one port and plain
    HTTP). The fourth, when given, is a plain-HTTP listener on `metrics_host` serving ``/metrics``
    only (for Prometheus, which cannot pin the node's key). `app` is ``"contracts"``
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
        for sub in ("keys", "nodes", "run", "certs", "client", "admin"):
            shutil.rmtree(layout.root / sub, ignore_errors=True)
        for f in (layout.genesis_path, layout.addresses_path, layout.contracts_path):
            f.unlink(missing_ok=True)
    layout.root.mkdir(parents=True, exist_ok=True)
    names = [f"node{i}" for i in range(n_nodes)]
    keys = [KeyPair.generate() for _ in names]
    for name, key in zip(names, keys):
        write_key(layout.node_dir(name) / "node.key", key)
    write_key(layout.root / "client" / "client.key", KeyPair.generate())
    tls = tls and all(len(p) > 2 for p in ports)
    if tls:
        from .tls import node_certificate

        layout.certs_dir.mkdir(exist_ok=True)
        for name, key in zip(names, keys):
            _write_bytes(layout.certs_dir / f"{name}.pem", node_certificate(key))
    genesis = Genesis.create(chain_id or f"sealstream-{os.urandom(4).hex()}", [k.did for k in keys], n_sealers,
                             params or Params())
    genesis = Genesis(genesis.chain_id, tuple(type(n)(n.did, name) for n, name in zip(genesis.nodes, names)),
                      genesis.sealers, genesis.params, genesis.time)
    if app == "contracts":
        from .contracts import ContractsGenesis

        admin = KeyPair.generate()
        write_key(layout.root / "admin" / "admin.key", admin)
        cg = ContractsGenesis.for_ledger(genesis, admin.did)
        _write_json(layout.contracts_path, cg.to_wire())
        genesis = Genesis(genesis.chain_id, genesis.nodes, genesis.sealers, genesis.params, genesis.time,
                          app_tag(cg))
    addresses = [NodeAddress(name, key.did, host, p[0], p[1], p[2] if tls else None,
                             p[3] if len(p) > 3 else None, metrics_host if len(p) > 3 else None)
                 for name, key, p in zip(names, keys, ports)]
    _write_json(layout.genesis_path, genesis.to_wire())
    _write_json(layout.addresses_path, [asdict(a) for a in addresses])
    return layout


def write_key(path: Path, key: KeyPair) -> None:
    """`key` to `path` in a directory of its own (0700), the file 0600 from its creation and
    renamed into place, so it is never seen partial or with wider modes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    save_keypair(tmp, key)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _write_json(path: Path, value: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    tmp.replace(path)
