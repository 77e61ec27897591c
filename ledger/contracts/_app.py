"""The contract framework: `ContractApp`, the ledger's deterministic `Executor`.

Contracts are Python shipped with the ledger (no user code). A transaction's
``kind`` is ``<contract>.<method>`` (``registry.register_device``,
``anchors.anchor``); `ContractApp` hands it to that contract's method with a
`TxContext` (the block context, the tx, its index in the block and a
read/write view of the state) and records one result per transaction:

* ``{"ok": True, ...}`` when the method returns (its dict is merged in);
* ``{"ok": False, "code": "STABLE_CODE", "message": "..."}`` when it raises
  `Refused`, when the kind or payload is not understood (``UNKNOWN_KIND``,
  ``BAD_PAYLOAD``) or, as a last resort, when a contract has a bug
  (``INTERNAL``, with the exception's type name only, so the text is the same
  on every node). Nothing raises out of `execute`, and a refused transaction
  changes nothing: each tx writes into its own buffer, merged into the
  block's writes only when it succeeds.

Before the method runs, the *fee hook* (`tokens.charge` by default) charges
the tx's fee by kind to its submitter's account in that same buffer, or
refuses it with ``INSUFFICIENT_QUOTA``: a refused tx, whatever refused it,
is never charged, and a successful one commits fee and effect together
(its result then carries ``charged``).

State is a map ``text key -> canonical bytes of the value`` (one encoding per
value, so the bytes, not Python objects, are what nodes agree on). Reads go
through the tx's buffer, then the block's writes, then the committed map.

State root (see `_smt`): a compacted sparse Merkle tree over
``sha256(key utf-8) -> sha256(value bytes)``; the header's state root is
``sha256(canonical([STATE_TAG, tree root]))``. It is

* *incremental*: `execute` updates only the paths of the keys the block
  changed (path copying, the committed tree is shared, not copied);
* *deterministic*: the tree's shape and hashes are a function of the final
  key/value map only, not of the order of writes or of which node computed
  it, and the values are canonical bytes;
* *verifiable*: `ContractState.prove(key)` gives a membership or absence
  proof that `verify_state_proof` checks against a header's state root, and
  a from-scratch recomputation (`recompute_root`) must equal it (tested).

The five stages of the ICB paper's transaction sequencing (Xia et al.) map
onto the existing core as follows:

1. **Request** — the client signs a `Transaction` (submitter did, nonce,
   kind, payload) and sends it to the sealers (`ledger.client`); the core
   checks the signature and nonce window (`Replica`, `RequestSubmitted`).
2. **Preparation** — the primary orders pending requests into a block,
   executes it with `ContractApp.execute` and puts the state root and
   results' effects into the header (`Replica` cutting a block, PRE-PREPARE).
3. **Validation** — every sealer re-executes the block on its committed
   state with `execute` (which never changes that state) and accepts the
   proposal only if the state root (and, at an epoch end, the next sealer
   set) match the header (`Replica._validate_block`).
4. **Submission** — with a quorum of COMMITs the block is committed with its
   certificate; the core calls `ContractApp.apply` with the same
   `Execution` and persists the block and results (`CommitBlock`).
5. **Response** — each node returns the tx's result (`{"ok": ...}` or the
   refusal code) to the client, which accepts it once f+1 sealers agree
   (`Reply`, `TxReplies`, `Receipt.result`).

Contracts only ever see data from the block and the state, so every node
executes the same transactions in the same order with the same results.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Collection, Iterable, Iterator, Mapping, Sequence, cast

from trust import canonical
from trust.hashes import sha256
from trust.identity import is_did

from .._consensus.app import BlockContext, Execution
from ..values import Genesis, SealerSet, StateRoot, Transaction
from ..errors import LedgerError
from . import _smt

__all__ = [
    "AUTO",
    "GENEROUS_BALANCE",
    "FeeHook",
    "STATE_TAG",
    "Refused",
    "TxContext",
    "ContractState",
    "ContractApp",
    "ContractsGenesis",
    "GenesisOrg",
    "GenesisEntity",
    "recompute_root",
    "state_root_of",
    "verify_state_proof",
    "ok",
    "refusal",
]

#: Domain tag of the contracts' state root (the version of the state layout).
STATE_TAG = "sealstream/contracts/state/v1"
_DELETED = None
_PEEK_MAX = 8192


class _DecodeCache:
    """Decoded values by their canonical bytes, shared: for read-only use (`peek`).

    Equal bytes decode to equal values, so a hit and a miss give the same
    answer as long as nobody mutates what `peek` returned."""

    __slots__ = ("_d",)

    def __init__(self) -> None:
        self._d: dict[bytes, Any] = {}

    def __call__(self, raw: bytes) -> Any:
        d = self._d
        got = d.get(raw, d)
        if got is d:
            if len(d) >= _PEEK_MAX:
                d.clear()
            got = d[raw] = canonical.decode(raw)
        return got


class Refused(Exception):
    """A deterministic refusal: the tx is recorded with ``code`` and ``message``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


def ok(**fields: Any) -> dict:
    return {"ok": True, **fields}


def refusal(code: str, message: str) -> dict:
    return {"ok": False, "code": code, "message": message}


def _key_hash(key: str) -> bytes:
    return sha256(key.encode("utf-8"))


def state_root_of(tree_root: bytes) -> StateRoot:
    """Header state root of a tree root."""
    return StateRoot(sha256(canonical.encode([STATE_TAG, tree_root])))


def recompute_root(state: Mapping[str, bytes]) -> StateRoot:
    """The state root of a whole map computed from scratch (for tests and audits)."""
    tree = _smt.build((_key_hash(k), sha256(v)) for k, v in state.items())
    return state_root_of(_smt.root_of(tree))


def verify_state_proof(state_root: bytes, key: str, value: bytes | None, proof: dict) -> None:
    """Raise `_smt.StateProofError` unless `proof` (from `ContractState.prove`) shows
    that under `state_root` the key holds the canonical bytes `value` (None: absent)."""
    tree_root = proof.get("tree_root") if isinstance(proof, dict) else None
    if type(tree_root) is not bytes or state_root_of(tree_root) != state_root:
        raise _smt.StateProofError("the proof's tree root does not give the state root")
    _smt.verify_proof(tree_root, _key_hash(key), None if value is None else sha256(value), proof)


# ---------------------------------------------------------------- state views


class ContractState:
    """Read-only view of committed state (the query API; safe to share).

    `get` decodes a fresh value each time, so callers cannot alter the state.
    """

    def __init__(self, data: Mapping[str, bytes], tree: _smt.Node, height: int,
                 cache: _DecodeCache | None = None) -> None:
        self._data = data
        self._tree = tree
        self.height = height
        self._peek = cache or _DecodeCache()

    @property
    def root(self) -> StateRoot:
        return state_root_of(_smt.root_of(self._tree))

    def raw(self, key: str) -> bytes | None:
        return self._data.get(key)

    def get(self, key: str, default: Any = None) -> Any:
        raw = self._data.get(key)
        return default if raw is None else canonical.decode(raw)

    def peek(self, key: str, default: Any = None) -> Any:
        """Like `get`, but the value may be shared: never modify it."""
        raw = self._data.get(key)
        return default if raw is None else self._peek(raw)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def items(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        """(key, value) for keys starting with `prefix`, in key order (a scan: queries only)."""
        for k in sorted(k for k in self._data if k.startswith(prefix)):
            yield k, canonical.decode(self._data[k])

    def prove(self, key: str) -> dict:
        """``{key, value (canonical bytes | None), tree_root, siblings, leaf}`` for `verify_state_proof`."""
        p = _smt.prove(self._tree, _key_hash(key))
        return {"key": key, "value": self._data.get(key), "tree_root": _smt.root_of(self._tree), **p}


class _TxView:
    """What a contract reads and writes while running one transaction."""

    __slots__ = ("_base", "_block", "writes", "_peek")

    def __init__(self, base: Mapping[str, bytes], block: dict[str, bytes | None],
                 cache: _DecodeCache | None = None) -> None:
        self._base = base
        self._block = block
        self.writes: dict[str, bytes | None] = {}
        self._peek = cache or _DecodeCache()

    def raw(self, key: str) -> bytes | None:
        w = self.writes
        if key in w:
            return w[key]
        b = self._block
        if key in b:
            return b[key]
        return self._base.get(key)

    def get(self, key: str, default: Any = None) -> Any:
        raw = self.raw(key)
        return default if raw is None else canonical.decode(raw)

    def peek(self, key: str, default: Any = None) -> Any:
        """Like `get`, but the value may be shared: never modify it (read-only lookups)."""
        raw = self.raw(key)
        return default if raw is None else self._peek(raw)

    def __contains__(self, key: str) -> bool:
        return self.raw(key) is not None

    def put(self, key: str, value: Any) -> None:
        self.writes[key] = canonical.encode(value)

    def delete(self, key: str) -> None:
        self.writes[key] = _DELETED


@dataclass(frozen=True)
class TxContext:
    """One transaction as a contract method sees it."""

    block: BlockContext
    index: int
    tx: Transaction
    state: _TxView

    @property
    def height(self) -> int:
        return self.block.height

    @property
    def submitter(self) -> str:
        return self.tx.submitter


#: A contract method: (ctx, payload dict) -> extra result fields (or None); raises `Refused`.
Method = Callable[[TxContext, dict], "dict | None"]
#: The pre-dispatch fee hook: (ctx) -> fee charged in the tx's buffer; raises `Refused`.
FeeHook = Callable[[TxContext], int]
#: `ContractApp(fee_hook=AUTO)`: `tokens.charge` when a tokens contract is installed.
AUTO = object()


# ---------------------------------------------------------------- genesis


_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")


@dataclass(frozen=True)
class GenesisOrg:
    id: str
    name: str
    admin: str

    def to_wire(self) -> dict:
        return {"id": self.id, "name": self.name, "admin": self.admin}


@dataclass(frozen=True)
class GenesisEntity:
    """A node, device or gateway registered at height 0."""

    id: str
    type: str
    org: str
    key: str

    def to_wire(self) -> dict:
        return {"id": self.id, "type": self.type, "org": self.org, "key": self.key}


#: Starting balance `ContractsGenesis.for_ledger` gives the consortium, the
#: operator org and each genesis node (10**12: a million txs a second for ~11 days).
GENEROUS_BALANCE = 10 ** 12
_MAX_INT = (1 << 63) - 1


def _pairs(value: Any, what: str) -> tuple[tuple[str, int], ...]:
    """A map or pairs of ``name -> int`` as sorted pairs (one form, so equal geneses compare equal)."""
    items = value.items() if isinstance(value, Mapping) else value
    try:
        pairs = tuple(sorted((k, v) for k, v in items))
    except (TypeError, ValueError):
        raise LedgerError(f"contracts genesis: {what} must map names to integers") from None
    if len({k for k, _ in pairs}) != len(pairs) or not all(
            isinstance(k, str) and type(v) is int and 0 <= v <= _MAX_INT for k, v in pairs):
        raise LedgerError(f"contracts genesis: {what} must map distinct names to integers in [0, 2**63-1]")
    return pairs


@dataclass(frozen=True)
class ContractsGenesis:
    """The contracts' state at height 0: the consortium admin, orgs, entities,
    token balances and the fee schedule.

    Wire form (JSON-friendly, no byte strings)::

        {"admin": did, "orgs": [{id, name, admin}], "entities": [{id, type, org, key}],
         "balances": {account id: amount}, "fees"?: {kind pattern: fee}}

    `balances` name ``consortium`` or genesis org/entity ids; `fees` None
    (absent on the wire) means `tokens.DEFAULT_FEES`. Both may be given as
    maps; they are kept as sorted ``(name, int)`` pairs.
    """

    admin: str
    orgs: tuple[GenesisOrg, ...] = ()
    entities: tuple[GenesisEntity, ...] = ()
    balances: tuple[tuple[str, int], ...] = ()
    fees: tuple[tuple[str, int], ...] | None = None

    def __post_init__(self) -> None:
        ids = ["consortium"] + [o.id for o in self.orgs] + [e.id for e in self.entities]
        keys = [self.admin] + [o.admin for o in self.orgs] + [e.key for e in self.entities]
        orgs = {o.id for o in self.orgs}
        if len(set(ids)) != len(ids) or not all(isinstance(i, str) and _ID.fullmatch(i) for i in ids):
            raise LedgerError("contracts genesis: ids must be distinct, valid and not 'consortium'")
        if not all(is_did(k) for k in keys):
            raise LedgerError("contracts genesis: admin and entity keys must be did:key ids")
        if any(e.type not in ("node", "device", "gateway") or e.org not in orgs for e in self.entities):
            raise LedgerError("contracts genesis: entities must be node/device/gateway of a genesis org")
        # org and entity keys are bound once each; the consortium key is not indexed,
        # so the consortium admin may also administer one genesis org
        bound = keys[1:]
        if len(set(bound)) != len(bound):
            raise LedgerError("contracts genesis: a key may be bound to one entity only")
        balances = _pairs(self.balances, "balances")
        if not {k for k, _ in balances} <= set(ids):
            raise LedgerError("contracts genesis: balances must name 'consortium' or genesis orgs/entities")
        if sum(v for _, v in balances) > _MAX_INT:
            raise LedgerError("contracts genesis: total balances must not exceed 2**63-1")
        object.__setattr__(self, "balances", balances)
        if self.fees is not None:
            from .tokens import valid_kind_pattern

            fees = _pairs(self.fees, "fees")
            if not all(valid_kind_pattern(k) for k, _ in fees):
                raise LedgerError("contracts genesis: fee kinds must be '*', '<contract>.*' or '<contract>.<method>'")
            object.__setattr__(self, "fees", fees)

    def to_wire(self) -> dict:
        w: dict[str, Any] = {"admin": self.admin, "orgs": [o.to_wire() for o in self.orgs],
             "entities": [e.to_wire() for e in self.entities]}
        if self.balances:  # only when set, so a genesis without tokens fields keeps its wire form
            w["balances"] = dict(self.balances)
        if self.fees is not None:
            w["fees"] = dict(self.fees)
        return w

    @classmethod
    def from_wire(cls, w: Any) -> "ContractsGenesis":
        try:
            if not isinstance(w, dict) or not set(w) <= {"admin", "orgs", "entities", "balances", "fees"}:
                raise TypeError
            orgs = tuple(GenesisOrg(o["id"], o["name"], o["admin"]) for o in w.get("orgs", []))
            ents = tuple(GenesisEntity(e["id"], e["type"], e["org"], e["key"]) for e in w.get("entities", []))
            balances, fees = w.get("balances", {}), w.get("fees")
            if not isinstance(balances, dict) or not (fees is None or isinstance(fees, dict)):
                raise TypeError
            return cls(w["admin"], orgs, ents, balances, fees)  # type: ignore[arg-type]  # maps: __post_init__
        except (KeyError, TypeError):
            raise LedgerError("bad contracts genesis: want {admin, orgs, entities, balances?, fees?}") from None

    @classmethod
    def for_ledger(cls, genesis: Genesis, admin: str, org: str = "operator",
                   org_name: str = "ledger operator", balance: int = GENEROUS_BALANCE,
                   fees: Mapping[str, int] | None = None) -> "ContractsGenesis":
        """Default: one org (administered by `admin`) holding every genesis node,
        named by its genesis name (or ``node<i>``); the consortium, the org and
        each node start with `balance` tokens; `fees` None: the default schedule."""
        ents = tuple(GenesisEntity(n.name or f"node{i}", "node", org, n.did) for i, n in enumerate(genesis.nodes))
        balances = {i: balance for i in ["consortium", org] + [e.id for e in ents]} if balance else {}
        return cls(admin, (GenesisOrg(org, org_name, admin),), ents, balances, fees)  # type: ignore[arg-type]  # maps


# ---------------------------------------------------------------- the app


@dataclass(frozen=True)
class _Pending:
    base: Any  # the committed tree this execution started from
    writes: dict
    tree: _smt.Node
    height: int


class ContractApp:
    """The contracts as one `ledger.executor.Executor`.

    `contracts` maps a contract name to ``{method name: Method}``; by default
    `registry`, `anchors`, `tokens`, `audit`, `reputation` and ``policy`` (`confidentiality`).
    `genesis` fills the height-0 state through the ``genesis_writes`` of `registry` and `tokens`.

    `fee_hook` runs before every dispatched method, in the tx's own buffer: it
    returns the fee it charged (added to the result as ``charged`` when > 0)
    or raises `Refused` (``INSUFFICIENT_QUOTA``), and its writes commit only
    together with the method's, so a tx refused by its contract is not
    charged. By default it is `tokens.charge` whenever a ``tokens`` contract
    is installed, and none otherwise.
    """

    def __init__(self, genesis: ContractsGenesis,
                 contracts: Mapping[str, Mapping[str, Method]] | None = None,
                 fee_hook: "FeeHook | None | object" = AUTO) -> None:
        from . import anchors, audit, confidentiality, registry, reputation, tokens

        self.genesis = genesis
        self.contracts: dict[str, Mapping[str, Method]] = dict(
            contracts if contracts is not None
            else {"registry": registry.METHODS, "anchors": anchors.METHODS, "tokens": tokens.METHODS,
                  "audit": audit.METHODS, "reputation": reputation.METHODS,
                  "policy": confidentiality.METHODS})
        #: reputation records after each block where they changed (``/reputation?height=``)
        self.rep_history = reputation.History()
        if fee_hook is AUTO:
            fee_hook = tokens.charge if "tokens" in self.contracts else None
        self.fee_hook: FeeHook | None = cast("FeeHook | None", fee_hook)  # AUTO resolved above
        writes = [*registry.genesis_writes(genesis), *tokens.genesis_writes(genesis)]
        data = {k: canonical.encode(v) for k, v in writes}
        self._data: dict[str, bytes] = data
        self._tree: _smt.Node = _smt.build((_key_hash(k), sha256(v)) for k, v in data.items())
        self._root = state_root_of(_smt.root_of(self._tree))
        self.height = 0
        self._cache = _DecodeCache()

    # ------------------------------------------------------------ Executor

    def state_root(self) -> StateRoot:
        return self._root

    def execute(self, ctx: BlockContext, txs: Sequence[Transaction]) -> Execution:
        block: dict[str, bytes | None] = {}
        results = []
        if ctx.reputation:  # last block's certificate counted before the txs (ledger/contracts/reputation.py)
            from .reputation import begin_block

            view = _TxView(self._data, block, self._cache)
            begin_block(view, ctx)
            block.update(view.writes)
        for i, tx in enumerate(txs):
            view = _TxView(self._data, block, self._cache)
            result = self._run(TxContext(ctx, i, tx, view))
            if result["ok"]:
                block.update(view.writes)
            results.append(result)
        changes = []
        for k, v in block.items():
            if v is None and k not in self._data:
                continue
            if v is not None and self._data.get(k) == v:
                continue
            changes.append((_key_hash(k), None if v is None else sha256(v)))
        tree = _smt.update(self._tree, changes)
        nxt = self.next_sealers(ctx, block) if ctx.epoch_end else None
        pending = _Pending(self._tree, block, tree, ctx.height)
        return Execution(state_root_of(_smt.root_of(tree)), tuple(results), nxt, pending)

    def apply(self, execution: Execution) -> None:
        p = execution.pending
        if not isinstance(p, _Pending) or p.base is not self._tree:
            raise LedgerError("execution was not computed on the committed state")
        data = self._data
        for k, v in p.writes.items():
            if v is None:
                data.pop(k, None)
            else:
                data[k] = v
        self._tree = p.tree
        self._root = execution.state_root
        self.height = p.height
        self.rep_history.note(p.height, {k: v for k, v in p.writes.items() if k.startswith("rep/node/")})

    def next_sealers(self, ctx: BlockContext, writes: Mapping[str, bytes | None]) -> SealerSet:
        """Sealer set of epoch `ctx.epoch + 1`: the top by reputation when the chain keeps it."""
        if ctx.reputation:
            from .reputation import next_sealers

            return next_sealers(_TxView(self._data, dict(writes), self._cache), ctx)
        return ctx.sealers

    def admit(self, tx: Transaction, nodes: Collection[str]) -> tuple[str | None, str | None]:
        """Mempool admission against the committed state (`ledger.contracts.admission`)."""
        from .admission import admit

        return admit(self.state, tx, nodes)

    # ------------------------------------------------------------ queries

    @property
    def state(self) -> ContractState:
        """The committed state (read-only)."""
        return ContractState(self._data, self._tree, self.height, self._cache)

    def snapshot(self) -> dict[str, bytes]:
        """A copy of the committed map (tests, audits, `recompute_root`)."""
        return dict(self._data)

    # ------------------------------------------------------------ dispatch

    def _run(self, tc: TxContext) -> dict:
        kind = tc.tx.kind
        contract, _, method = kind.partition(".")
        fn = self.contracts.get(contract, {}).get(method) if method else None
        if fn is None:
            return refusal("UNKNOWN_KIND", f"no contract method for kind {kind[:64]!r}")
        if not isinstance(tc.tx.payload, dict):
            return refusal("BAD_PAYLOAD", f"{kind}: payload must be a map")
        try:
            # the fee first, into the same buffer: refused below -> not charged either
            charged = self.fee_hook(tc) if self.fee_hook is not None else 0
            extra = fn(tc, tc.tx.payload)
        except Refused as r:
            return refusal(r.code, r.message)
        except Exception as exc:  # noqa: BLE001 - a contract bug must not split the nodes
            return refusal("INTERNAL", f"{kind}: contract error {type(exc).__name__}")
        res = ok(**(extra or {}))
        if charged:
            res["charged"] = charged
        return res


# ---------------------------------------------------------------- payload checks


def check_fields(payload: dict, required: Iterable[str], optional: Iterable[str] = ()) -> None:
    """Refuse (``BAD_PAYLOAD``) unless `payload` has exactly these fields."""
    req = set(required)
    allowed = req | set(optional)
    missing = sorted(req - set(payload))
    extra = sorted(k for k in payload if k not in allowed)
    if missing:
        raise Refused("BAD_PAYLOAD", f"missing field(s): {', '.join(missing)}")
    if extra:
        raise Refused("BAD_PAYLOAD", f"unknown field(s): {', '.join(str(e)[:32] for e in extra)}")


def check_id(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise Refused("BAD_PAYLOAD", f"{field} must match {_ID.pattern}")
    return value


def check_did(value: Any, field: str) -> str:
    if not isinstance(value, str) or not is_did(value):
        raise Refused("BAD_PAYLOAD", f"{field} must be an Ed25519 did:key id")
    return value


def check_text(value: Any, field: str, max_len: int = 128) -> str:
    if not isinstance(value, str) or len(value) > max_len:
        raise Refused("BAD_PAYLOAD", f"{field} must be text of at most {max_len} characters")
    return value


def check_int(value: Any, field: str, lo: int = 0, hi: int = (1 << 63) - 1) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise Refused("BAD_PAYLOAD", f"{field} must be an integer in [{lo}, {hi}]")
    return value
