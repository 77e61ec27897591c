"""Ledger values: transactions, blocks, certificates, sealer sets, genesis.

All values are frozen dataclasses with a canonical wire form
(`to_wire()` -> a value `trust.canonical.encode` accepts, `from_wire()` back),
and every hash or signature is taken over `trust.canonical` bytes with a
domain-separation tag, so one value has exactly one hash.

Times are integer milliseconds (canonical encoding has no floats).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Iterable, NewType, Sequence

import cbor2 as _cbor2

from trust import canonical
from trust.hashes import sha256
from trust.identity import KeyPair, verify_signature
from trust.identity import is_did as _is_did_uncached

from ._merkle import leaf_hash, merkle_root
from .errors import CertificateError, WireError

__all__ = [
    "NodeId",
    "TxId",
    "BlockHash",
    "StateRoot",
    "Hash",
    "Transaction",
    "BlockHeader",
    "Block",
    "CommitCertificate",
    "SealerSet",
    "GenesisNode",
    "Params",
    "Genesis",
    "Verifier",
    "commit_signing_bytes",
    "epoch_of",
    "is_epoch_end",
    "quorum_size",
    "fault_tolerance",
]

#: A node's ``did:key`` id (its Ed25519 public key, see `trust.identity`).
NodeId = NewType("NodeId", str)
#: SHA-256 of a transaction's canonical signed body.
TxId = NewType("TxId", bytes)
#: SHA-256 of a block header's canonical bytes (`BlockHeader.header_hash`).
BlockHash = NewType("BlockHash", bytes)
#: Root of the application state after a block (the executor's digest).
StateRoot = NewType("StateRoot", bytes)
#: Any other 32-byte SHA-256 digest.
Hash = NewType("Hash", bytes)

#: `verify(did, message, signature) -> bool`; injectable so a host can cache.
Verifier = Callable[[str, bytes, bytes], bool]

_TX_TAG = "sealstream/tx/v1"
_HEADER_TAG = "sealstream/header/v1"
_SEALERS_TAG = "sealstream/sealers/v1"
_GENESIS_TAG = "sealstream/genesis/v1"
_CERT_TAG = "sealstream/cert/v1"
#: Domain tag of every signed consensus message (see `ledger.messages`).
MSG_TAG = "sealstream/pbft/v1"
# canonical heads shared by a tx's wire map and its signed body (`Transaction.signing_bytes`)
_TX_RAW_PREFIX = b"\xa5" + canonical.encode("sig")
_TX_SIGNING_PREFIX = b"\x82" + canonical.encode(_TX_TAG) + b"\xa4"


def is_did(value: object) -> bool:
    """`trust.identity.is_did`, memoised: ids repeat and their check decodes base58 twice."""
    return isinstance(value, str) and _is_did_cached(value)


@lru_cache(maxsize=65536)
def _is_did_cached(value: str) -> bool:
    return _is_did_uncached(value)


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise WireError(what)


def _is_hash(v: object) -> bool:
    return type(v) is bytes and len(v) == 32


def _as_int(v: object, what: str, minimum: int = 0) -> int:
    _need(type(v) is int and v >= minimum, f"{what} must be an int >= {minimum}")
    return v  # type: ignore[return-value]


def fault_tolerance(n: int) -> int:
    """f: the number of Byzantine sealers a set of `n` tolerates (n >= 3f+1)."""
    return (n - 1) // 3


def quorum_size(n: int) -> int:
    """Quorum: ceil((n+f+1)/2); equals 2f+1 when n = 3f+1 (PBFT §4).

    Any two quorums intersect in at least f+1 sealers, hence in an honest one,
    also when n is not of the form 3f+1.
    """
    f = fault_tolerance(n)
    return (n + f + 2) // 2


def epoch_of(height: int, epoch_length: int) -> int:
    """Epoch of block `height` (>= 1): blocks 1..E are epoch 0, and so on."""
    return (height - 1) // epoch_length


def is_epoch_end(height: int, epoch_length: int) -> bool:
    """True for the last block of an epoch; its header names the next set."""
    return height % epoch_length == 0


# ---------------------------------------------------------------- transactions


@dataclass(frozen=True, eq=False)
class Transaction:
    """A client request: `kind` + canonical `payload`, signed by `submitter`.

    Each (submitter, nonce) commits at most once, and a nonce must be above
    the submitter's highest committed nonce minus `Params.nonce_window`
    (replay protection that tolerates out-of-order commits).
    """

    submitter: str
    nonce: int
    kind: str
    payload: Any
    signature: bytes
    tx_id: TxId = field(init=False, repr=False)

    def __post_init__(self) -> None:
        raw = canonical.encode(self.to_wire())
        object.__setattr__(self, "_raw", raw)
        object.__setattr__(self, "tx_id", TxId(sha256(raw)))

    @property
    def raw(self) -> bytes:
        """The canonical bytes of `to_wire()`, encoded once; `tx_id` is their sha256.

        Blocks and requests carry a transaction as these bytes (a CBOR byte
        string), so a node hashes and decodes each transaction once however
        many messages hold it (`from_bytes`)."""
        return self.__dict__["_raw"]

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Transaction":
        """The transaction whose canonical bytes are `raw` (memoised: equal bytes, one object).

        The memo (`_TX_VERIFIED`) holds only txs whose signature verified; bytes not yet
        checked wait in a small probation memo (`_TX_UNVERIFIED`, a few MiB at most, no
        large txs), so unauthenticated bytes cannot grow a node's memory."""
        _need(type(raw) is bytes, "tx must be canonical bytes")
        tx = _TX_VERIFIED.d.get(raw)
        if tx is None:
            tx = _TX_UNVERIFIED.d.get(raw)
            if tx is None:
                tx = _tx_from_bytes(raw)
                _TX_UNVERIFIED.put(tx)
        return tx

    @staticmethod
    def signing_bytes_for(submitter: str, nonce: int, kind: str, payload: Any) -> bytes:
        """Bytes the submitter signs."""
        return canonical.encode(
            [_TX_TAG, {"submitter": submitter, "nonce": nonce, "kind": kind, "payload": payload}]
        )

    def signing_bytes(self) -> bytes:
        got = self.__dict__.get("_signing")
        if got is None:
            # `raw` is the canonical map {sig, kind, nonce, payload, submitter}: "sig" sorts
            # first, and the other four entries are, byte for byte, the signed map
            raw = self.raw
            prefix = _TX_RAW_PREFIX + canonical.encode(self.signature)
            if raw.startswith(prefix):
                got = _TX_SIGNING_PREFIX + raw[len(prefix):]
            else:  # pragma: no cover - the layout above is fixed by the canonical encoding
                got = self.signing_bytes_for(self.submitter, self.nonce, self.kind, self.payload)
            object.__setattr__(self, "_signing", got)
        return got

    @classmethod
    def create(cls, key: KeyPair, nonce: int, kind: str, payload: Any) -> "Transaction":
        """Build and sign a transaction with `key` (its did is the submitter)."""
        sig = key.sign(cls.signing_bytes_for(key.did, nonce, kind, payload))
        return cls(key.did, nonce, kind, payload, sig)

    def verify_signature(self, verify: Verifier | None = None) -> bool:
        """True iff the submitter's signature is valid (False for a bad did too)."""
        if not is_did(self.submitter):
            return False
        v = verify or verify_signature
        ok = v(self.submitter, self.signing_bytes(), self.signature)
        if ok:
            raw = self.raw
            if raw not in _TX_VERIFIED.d and "_lax" not in self.__dict__:
                # the object decoded first stays the one (same bytes, same signature check)
                _TX_VERIFIED.put(_TX_UNVERIFIED.pop(raw) or self)
        return ok

    @property
    def leaf(self) -> bytes:
        """RFC 9162 leaf hash of this transaction in its block's tx tree."""
        return leaf_hash(self.tx_id)

    def to_wire(self) -> dict:
        return {
            "submitter": self.submitter,
            "nonce": self.nonce,
            "kind": self.kind,
            "payload": self.payload,
            "sig": self.signature,
        }

    @classmethod
    def from_wire(cls, w: Any) -> "Transaction":
        _need(isinstance(w, dict) and set(w) == {"submitter", "nonce", "kind", "payload", "sig"}, "bad tx")
        _need(isinstance(w["submitter"], str), "tx submitter must be text")
        _as_int(w["nonce"], "tx nonce")
        _need(isinstance(w["kind"], str), "tx kind must be text")
        _need(type(w["sig"]) is bytes, "tx sig must be bytes")
        return cls(w["submitter"], w["nonce"], w["kind"], w["payload"], w["sig"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Transaction) and other.tx_id == self.tx_id

    def __hash__(self) -> int:
        return hash(self.tx_id)


class _TxMemo:
    """Txs by their canonical bytes, first in first out, bounded in entries and bytes."""

    def __init__(self, max_entries: int, max_bytes: int, max_entry: int) -> None:
        self.max_entries, self.max_bytes, self.max_entry = max_entries, max_bytes, max_entry
        self.d: dict[bytes, Transaction] = {}
        self.bytes = 0
        self._lock = threading.Lock()  # large frames are decoded on a worker thread

    def put(self, tx: Transaction) -> None:
        raw = tx.raw
        n = len(raw)
        if n > self.max_entry:
            return
        with self._lock:
            d = self.d
            if raw in d:
                return
            while d and (len(d) >= self.max_entries or self.bytes + n > self.max_bytes):
                old = next(iter(d))
                del d[old]
                self.bytes -= len(old)
            d[raw] = tx
            self.bytes += n

    def pop(self, raw: bytes) -> Transaction | None:
        with self._lock:
            tx = self.d.pop(raw, None)
            if tx is not None:
                self.bytes -= len(raw)
            return tx

    def clear(self) -> None:
        with self._lock:
            self.d.clear()
            self.bytes = 0


#: txs whose signature verified, and (small, bounded) those decoded but not yet checked
_TX_VERIFIED = _TxMemo(32768, 64 * 1024 * 1024, 1024 * 1024)
_TX_UNVERIFIED = _TxMemo(2048, 4 * 1024 * 1024, 16 * 1024)
#: a tx's bytes above this size are decoded with an item bound (`canonical.decode(max_items=)`)
_TX_BIG = 64 * 1024
_TX_MAX_ITEMS = 1 << 16


def _tx_from_bytes(raw: bytes) -> Transaction:
    try:
        w = canonical.decode(raw, max_items=_TX_MAX_ITEMS) if len(raw) > _TX_BIG else canonical.decode(raw)
    except ValueError as exc:
        raise WireError(f"tx is not canonical: {exc}") from None
    return _tx_of(raw, w)


def _clear_tx_memo() -> None:
    """Empty both tx memos (what ``_tx_from_bytes.cache_clear()`` did when it was an lru_cache)."""
    _TX_VERIFIED.clear()
    _TX_UNVERIFIED.clear()


_tx_from_bytes.cache_clear = _clear_tx_memo  # type: ignore[attr-defined]  # bench/_backup_apply.py


def _tx_from_certified_bytes(raw: bytes) -> Transaction:
    """Decode tx bytes of a block that claims a commit certificate, with the C decoder (cbor2), not strictly.

    Sound because such a block is used only after its certificate verified
    and its tx root matched (`Replica._apply_certified`): its tx bytes are
    then the ones a quorum of sealers committed, of which f+1 honest ones
    decoded them strictly, so they are canonical and any CBOR decoder gives
    the values the strict one would. Until then the object is inert; it is
    not memoised, so bytes that were never checked never stand in for a
    strictly decoded tx (`from_bytes`). The strict decoder cost a backup
    ~6 µs per tx, about a third of its work per block."""
    try:
        w = _cbor2.loads(raw)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a malformed tx
        raise WireError(f"tx does not decode: {exc}") from None
    tx = _tx_of(raw, w)
    object.__setattr__(tx, "_lax", True)  # never memoised, even once its signature verified
    return tx


def _tx_of(raw: bytes, w: Any) -> Transaction:
    _need(isinstance(w, dict) and set(w) == {"submitter", "nonce", "kind", "payload", "sig"}, "bad tx")
    _need(isinstance(w["submitter"], str), "tx submitter must be text")
    _as_int(w["nonce"], "tx nonce")
    _need(isinstance(w["kind"], str), "tx kind must be text")
    _need(type(w["sig"]) is bytes, "tx sig must be bytes")
    # `raw` decoded strictly, so it is exactly encode(to_wire()): no need to re-encode it
    tx = object.__new__(Transaction)
    for name, value in (("submitter", w["submitter"]), ("nonce", w["nonce"]), ("kind", w["kind"]),
                        ("payload", w["payload"]), ("signature", w["sig"]), ("_raw", raw),
                        ("tx_id", TxId(sha256(raw)))):
        object.__setattr__(tx, name, value)
    return tx


# ---------------------------------------------------------------- sealer sets


@dataclass(frozen=True)
class SealerSet:
    """The ordered sealers of one epoch; they run PBFT for that epoch's blocks.

    Primary of view v is ``members[v % n]`` (`primary`): the view number is
    global and monotonic across epochs, the set is the epoch's. Order matters
    (the reputation rules of the next issue sort it), so it is hashed as is.
    """

    members: tuple[str, ...]

    def __post_init__(self) -> None:
        _need(len(self.members) >= 1, "a sealer set needs members")
        _need(len(set(self.members)) == len(self.members), "duplicate sealer")

    @property
    def n(self) -> int:
        return len(self.members)

    @property
    def f(self) -> int:
        return fault_tolerance(self.n)

    @property
    def quorum(self) -> int:
        return quorum_size(self.n)

    def primary(self, view: int) -> str:
        return self.members[view % self.n]

    def __contains__(self, node: object) -> bool:
        return node in self.members

    def index(self, node: str) -> int:
        return self.members.index(node)

    def hash(self) -> Hash:
        return Hash(sha256(canonical.encode([_SEALERS_TAG, list(self.members)])))

    def to_wire(self) -> list:
        return list(self.members)

    @classmethod
    def from_wire(cls, w: Any) -> "SealerSet":
        _need(isinstance(w, list) and all(isinstance(m, str) for m in w), "bad sealer set")
        return cls(tuple(w))


# ---------------------------------------------------------------- blocks


@dataclass(frozen=True)
class BlockHeader:
    """What a commit certificate signs (through `header_hash`).

    `tx_root` is the RFC 9162 root over the leaf hashes of the tx ids,
    `state_root` the executor's state digest *after* this block,
    `view`/`proposer` the view and primary that first proposed it (kept when a
    new primary re-proposes it after a view change, so the hash never
    changes), `sealer_set_hash` the hash of the set certifying it, and
    `next_sealers` — set only on the last block of an epoch — the set of the
    next epoch, so a light client can follow set changes from genesis.
    `last_commit_hash` (blocks >= 2) is `CommitCertificate.cert_hash` of the
    certificate of block ``height - 1`` that the block carries
    (`Block.last_commit`, as Tendermint's LastCommit): which sealers signed the
    previous block is thereby on chain, the evidence reputation is computed from.
    """

    height: int
    prev_hash: BlockHash
    tx_root: Hash
    state_root: StateRoot
    epoch: int
    view: int
    proposer: str
    time: int
    sealer_set_hash: Hash
    next_sealers: SealerSet | None = None
    last_commit_hash: Hash | None = None

    def to_wire(self) -> dict:
        w = {
            "height": self.height,
            "prev": self.prev_hash,
            "tx_root": self.tx_root,
            "state_root": self.state_root,
            "epoch": self.epoch,
            "view": self.view,
            "proposer": self.proposer,
            "time": self.time,
            "sealers": self.sealer_set_hash,
            "next_sealers": None if self.next_sealers is None else self.next_sealers.to_wire(),
        }
        if self.last_commit_hash is not None:  # absent on block 1 (and on blocks made before it existed)
            w["last_commit"] = self.last_commit_hash
        return w

    @classmethod
    def from_wire(cls, w: Any) -> "BlockHeader":
        keys = {"height", "prev", "tx_root", "state_root", "epoch", "view", "proposer", "time",
                "sealers", "next_sealers"}
        _need(isinstance(w, dict) and (set(w) == keys or set(w) == keys | {"last_commit"}), "bad header")
        for k in ("prev", "tx_root", "state_root", "sealers"):
            _need(_is_hash(w[k]), f"header {k} must be a 32-byte hash")
        lc = w.get("last_commit")
        _need(lc is None or _is_hash(lc), "header last_commit must be a 32-byte hash")
        _need(isinstance(w["proposer"], str), "header proposer must be text")
        nxt = w["next_sealers"]
        return cls(
            _as_int(w["height"], "height"), BlockHash(w["prev"]), Hash(w["tx_root"]),
            StateRoot(w["state_root"]), _as_int(w["epoch"], "epoch"), _as_int(w["view"], "view"),
            w["proposer"], _as_int(w["time"], "time"), Hash(w["sealers"]),
            None if nxt is None else SealerSet.from_wire(nxt), None if lc is None else Hash(lc),
        )

    def header_hash(self) -> BlockHash:
        return _header_hash(self)


def _header_hash(h: BlockHeader) -> BlockHash:
    cached = h.__dict__.get("_hash")
    if cached is None:
        cached = BlockHash(sha256(canonical.encode([_HEADER_TAG, h.to_wire()])))
        object.__setattr__(h, "_hash", cached)
    return cached


def tx_root_of(txs: Sequence[Transaction]) -> Hash:
    """RFC 9162 root over the transactions' leaf hashes (empty tree allowed)."""
    return Hash(merkle_root([t.leaf for t in txs]))


@dataclass(frozen=True)
class Block:
    """A header and the transactions its `tx_root` commits to."""

    header: BlockHeader
    txs: tuple[Transaction, ...]
    last_commit: "CommitCertificate | None" = None

    @property
    def height(self) -> int:
        return self.header.height

    def block_hash(self) -> BlockHash:
        return self.header.header_hash()

    def tx_root_ok(self) -> bool:
        return tx_root_of(self.txs) == self.header.tx_root

    def last_commit_ok(self) -> bool:
        """The carried certificate of the previous block matches the header's hash of it."""
        lc = self.last_commit
        return self.header.last_commit_hash == (None if lc is None else lc.cert_hash())

    def to_wire(self) -> dict:
        """Header as a map; each tx as its canonical bytes (`Transaction.raw`);
        ``last_commit`` (the previous block's certificate) when carried."""
        w = {"header": self.header.to_wire(), "txs": [t.raw for t in self.txs]}
        if self.last_commit is not None:
            w["last_commit"] = self.last_commit.to_wire()
        return w

    @classmethod
    def from_wire(cls, w: Any, certified: bool = False) -> "Block":
        """`certified`: the block comes with a commit certificate that will be checked before any use
        of its txs, so their bytes are decoded by the fast, non-strict path (`_tx_from_certified_bytes`)."""
        _need(isinstance(w, dict) and set(w) in ({"header", "txs"}, {"header", "txs", "last_commit"})
              and isinstance(w["txs"], list), "bad block")
        of_bytes = _tx_from_certified_bytes if certified else Transaction.from_bytes
        txs = tuple(of_bytes(t) if type(t) is bytes else Transaction.from_wire(t) for t in w["txs"])
        lc = w.get("last_commit")
        return cls(BlockHeader.from_wire(w["header"]), txs, None if lc is None else CommitCertificate.from_wire(lc))


def commit_signing_bytes(chain_id: str, view: int, height: int, digest: bytes, signer: str) -> bytes:
    """Bytes a sealer signs in a COMMIT; the same signatures form certificates."""
    return canonical.encode(
        [MSG_TAG, chain_id, "commit", {"view": view, "height": height, "digest": digest, "sender": signer}]
    )


@dataclass(frozen=True)
class CommitCertificate:
    """Quorum of COMMIT signatures (PBFT §4.2) over one block's header hash.

    Signatures bind `(chain_id, view, height, block_hash, signer)`; the view is
    part of what is signed because PBFT counts commits per view.
    """

    height: int
    view: int
    block_hash: BlockHash
    signatures: tuple[tuple[str, bytes], ...]

    def signers(self) -> list[str]:
        return [s for s, _ in self.signatures]

    def cert_hash(self) -> Hash:
        """sha256 of the canonical certificate (a header's `last_commit_hash`)."""
        got = self.__dict__.get("_hash")
        if got is None:
            got = Hash(sha256(canonical.encode([_CERT_TAG, self.to_wire()])))
            object.__setattr__(self, "_hash", got)
        return got

    def verify(self, chain_id: str, sealers: SealerSet, verify: Verifier | None = None) -> None:
        """Raise `CertificateError` unless a quorum of distinct sealers signed."""
        v = verify or verify_signature
        seen: set[str] = set()
        for signer, sig in self.signatures:
            if signer not in sealers:
                raise CertificateError(f"height {self.height}: {signer} is not a sealer")
            if signer in seen:
                raise CertificateError(f"height {self.height}: duplicate signer {signer}")
            if not v(signer, commit_signing_bytes(chain_id, self.view, self.height, self.block_hash, signer), sig):
                raise CertificateError(f"height {self.height}: bad signature from {signer}")
            seen.add(signer)
        if len(seen) < sealers.quorum:
            raise CertificateError(
                f"height {self.height}: {len(seen)} signatures, quorum is {sealers.quorum}"
            )

    def to_wire(self) -> dict:
        return {
            "height": self.height,
            "view": self.view,
            "hash": self.block_hash,
            "sigs": [[s, g] for s, g in self.signatures],
        }

    @classmethod
    def from_wire(cls, w: Any) -> "CommitCertificate":
        _need(isinstance(w, dict) and set(w) == {"height", "view", "hash", "sigs"}, "bad certificate")
        _need(_is_hash(w["hash"]) and isinstance(w["sigs"], list), "bad certificate")
        sigs = []
        for p in w["sigs"]:
            _need(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and type(p[1]) is bytes,
                  "bad certificate signature")
            sigs.append((p[0], p[1]))
        return cls(_as_int(w["height"], "height"), _as_int(w["view"], "view"), BlockHash(w["hash"]), tuple(sigs))


# ---------------------------------------------------------------- genesis


@dataclass(frozen=True)
class GenesisNode:
    """A ledger node: its did (public key) and a human name."""

    did: str
    name: str = ""

    def to_wire(self) -> dict:
        return {"did": self.did, "name": self.name}


@dataclass(frozen=True)
class Params:
    """Consensus parameters fixed at genesis (times in milliseconds).

    `max_block_txs`/`block_time_ms`: a block is cut when this many requests
    wait or the oldest has waited this long. `checkpoint_interval` is PBFT's K;
    `log_window` is L, the distance between low and high watermarks (PBFT
    §4.3, L = 2K by default). `view_change_timeout_ms` is the first view-change
    timeout; it doubles with each consecutive view change (PBFT §4.5.2).

    `last_commit_wait_ms`: after committing h, the primary waits up to this
    long for the COMMITs of sealers missing from h's certificate before
    proposing h+1, so that the certificate it carries in h+1 (the evidence
    reputation counts) names every sealer that is online (only while reputation
    is on). `sealer_count` > 0 turns reputation on (contracts and KV apps):
    every epoch's sealers are the
    top `sealer_count` nodes by reputation; the ``rep_*`` fields are its
    fixed-point rules (docs/contracts.md, "Reputation").
    """

    max_block_txs: int = 256
    block_time_ms: int = 50
    checkpoint_interval: int = 10
    log_window: int = 0  # 0 -> 2 * checkpoint_interval
    view_change_timeout_ms: int = 1000
    max_view_change_timeout_ms: int = 60_000
    epoch_length: int = 1000
    status_interval_ms: int = 500
    fetch_timeout_ms: int = 1000
    fetch_batch: int = 64
    max_clock_drift_ms: int = 10_000
    nonce_window: int = 1024
    #: transactions of one submitter a sealer keeps in its mempool; more are refused with
    #: ``submitter-busy`` until some commit (in the wire form only when not the default)
    max_pending_per_submitter: int = 1024
    #: transactions a sealer keeps in its mempool in all (more: ``mempool-full``), and the share of
    #: them, in percent, that the submitters of one organisation may hold (more: ``org-busy``);
    #: organisations come from the app's admission (`Executor.admit`; none for the KV app)
    max_mempool: int = 16_384
    org_mempool_share_pct: int = 50
    # -- reputation (docs/contracts.md, "Reputation"); in the wire form only when not the default
    last_commit_wait_ms: int = 20
    sealer_count: int = 0
    rep_initial: int = 5_000
    rep_max: int = 10_000
    rep_floor: int = 2_000
    rep_sign_reward: int = 10
    rep_offline_after: int = 5
    rep_offline_penalty: int = 1_000
    rep_equivocation_penalty: int = 6_000
    rep_heartbeat_reward: int = 50
    rep_heartbeat_interval: int = 10

    @property
    def window(self) -> int:
        return self.log_window or 2 * self.checkpoint_interval

    def to_wire(self) -> dict:
        # fields added after chains existed are written only when set, so those
        # chains keep their genesis hash
        return {k: getattr(self, k) for k in self.__dataclass_fields__
                if k not in _LATER_PARAMS or getattr(self, k) != _LATER_PARAMS[k]}

    @classmethod
    def from_wire(cls, w: Any) -> "Params":
        _need(isinstance(w, dict) and set(w) <= set(cls.__dataclass_fields__), "bad params")
        return cls(**{k: _as_int(v, k) for k, v in w.items()})


_LATER_PARAMS = {k: Params.__dataclass_fields__[k].default for k in (
    "max_pending_per_submitter", "last_commit_wait_ms", "sealer_count", "rep_initial", "rep_max", "rep_floor",
    "rep_sign_reward", "rep_offline_after", "rep_offline_penalty", "rep_equivocation_penalty", "rep_heartbeat_reward",
    "rep_heartbeat_interval", "max_mempool", "org_mempool_share_pct")}


@dataclass(frozen=True)
class Genesis:
    """Chain id, all nodes (sealers and backups), the epoch-0 sealer set, params,
    and the application the chain runs.

    `app` is ``""`` for the default key/value app (`KVExecutor`) or
    ``"contracts:<sha256 hex>"`` naming the contracts genesis (`ContractApp`)
    by its hash (`ledger.layout.contracts_genesis_hash`). It is in the wire
    form, hence in `genesis_hash` (block 1's prev_hash), only when non-empty,
    so chains created before it keep their genesis hash, and nodes (or light
    clients) with a different contracts genesis cannot share a chain.
    """

    chain_id: str
    nodes: tuple[GenesisNode, ...]
    sealers: SealerSet
    params: Params = Params()
    time: int = 0
    app: str = ""

    def __post_init__(self) -> None:
        dids = [n.did for n in self.nodes]
        _need(len(set(dids)) == len(dids), "duplicate genesis node")
        _need(all(is_did(d) for d in dids), "genesis node ids must be did:key ids")
        _need(all(s in dids for s in self.sealers.members), "sealers must be genesis nodes")
        _need(self.params.epoch_length >= 1 and self.params.checkpoint_interval >= 1, "bad params")
        _need(isinstance(self.app, str) and len(self.app) <= 256, "genesis app must be short text")

    def node_ids(self) -> tuple[str, ...]:
        return tuple(n.did for n in self.nodes)

    def to_wire(self) -> dict:
        w = {
            "chain_id": self.chain_id,
            "nodes": [n.to_wire() for n in self.nodes],
            "sealers": self.sealers.to_wire(),
            "params": self.params.to_wire(),
            "time": self.time,
        }
        if self.app:
            w["app"] = self.app
        return w

    @classmethod
    def from_wire(cls, w: Any) -> "Genesis":
        base = {"chain_id", "nodes", "sealers", "params", "time"}
        _need(isinstance(w, dict) and (set(w) == base or set(w) == base | {"app"}), "bad genesis")
        _need(w.get("app", "x") != "", "bad genesis: an empty app is omitted")
        nodes = []
        for n in w["nodes"]:
            _need(isinstance(n, dict) and set(n) == {"did", "name"}, "bad genesis node")
            nodes.append(GenesisNode(n["did"], n["name"]))
        return cls(w["chain_id"], tuple(nodes), SealerSet.from_wire(w["sealers"]),
                   Params.from_wire(w["params"]), _as_int(w["time"], "time"), w.get("app", ""))

    def genesis_hash(self) -> BlockHash:
        """prev_hash of block 1."""
        return BlockHash(sha256(canonical.encode([_GENESIS_TAG, self.to_wire()])))

    @classmethod
    def create(cls, chain_id: str, nodes: Iterable[str], n_sealers: int | None = None,
               params: Params | None = None, time: int = 0) -> "Genesis":
        """Genesis with the first `n_sealers` of `nodes` as epoch-0 sealers."""
        ids = list(nodes)
        k = len(ids) if n_sealers is None else n_sealers
        return cls(chain_id, tuple(GenesisNode(d, f"node{i}") for i, d in enumerate(ids)),
                   SealerSet(tuple(ids[:k])), params or Params(), time)
