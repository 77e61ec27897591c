"""Sans-I/O PBFT replica over blocks (Castro & Liskov, OSDI 1999 / TOCS 2002).

`Replica.handle(event) -> list[Effect]` is the whole interface: the host feeds
messages, timer expiries, client requests and the time (`Tick`), and carries
out the effects *in order* (make a `CommitBlock` or a `Persist` durable
before sending what follows it: `Persist(SafetyState)` precedes every
PRE-PREPARE, PREPARE, COMMIT and VIEW-CHANGE the replica signs, so a replica
restarted with `Replica(safety=...)` rejoins its view without ever signing
a conflicting vote). Per-sender flood limits bound the log entries buffered
per (sender, view) (`sender_quota` drops). Nothing in here reads a clock, opens a socket, starts a thread or
draws a random number, so a seeded simulator replays any run exactly.

Protocol summary (section numbers are the TOCS paper's):

* Sequence numbers are block heights and blocks are decided one at a time:
  the primary proposes height h+1 only after committing h. This keeps
  `prev_hash` and `state_root` of a proposal well defined and makes the
  view-change state a single prepared certificate.
* Normal case (§4.2): PRE-PREPARE(v, h, block) from primary(v); each backup
  validates the block (links, signatures, nonces, executes it and checks the
  state root) and broadcasts PREPARE; *prepared* = pre-prepare + quorum-1
  prepares; then COMMIT; *committed* = prepared + quorum commits, whose
  signatures form the block's `CommitCertificate`.
* Checkpoints (§4.3) every K blocks; a quorum of matching CHECKPOINTs makes it
  stable, moves the low watermark and truncates the log below it.
* View change (§4.4, §4.5.2): a sealer with pending work starts a timer; on
  expiry, on an invalid proposal, or on proof of equivocation it sends
  VIEW-CHANGE(v+1) with its highest commit certificate and prepared
  certificate. The new primary collects a quorum and sends NEW-VIEW with a
  PRE-PREPARE re-proposing the highest-view prepared block at the next height
  (its header, hence its hash, unchanged). A replica that sees f+1
  VIEW-CHANGEs for higher views joins the smallest; the timer for view w is
  only started once a quorum of VIEW-CHANGE(w) is in, and doubles each time.
* State transfer: a replica that sees evidence of a higher height (a status,
  a message for a later height, a checkpoint or commit certificate above it)
  fetches blocks with certificates and applies them after verifying.
* Backups (nodes outside the epoch's sealer set) apply `CommittedBlock`
  pushes (one sealer per backup and block) after verifying the certificate.

Invalid input never raises: the message is dropped and `drops[reason]`
counted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol, Union

from trust.identity import verify_signature

from ._types import (
    Block,
    BlockHash,
    BlockHeader,
    CommitCertificate,
    Genesis,
    SealerSet,
    Transaction,
    TxId,
    Verifier,
    epoch_of,
    is_epoch_end,
    tx_root_of,
)
from ._nonces import NonceWindow
from .errors import CertificateError
from .executor import BlockContext, Execution, Executor, KVExecutor
from .messages import (
    Blocks,
    Checkpoint,
    CheckpointCertificate,
    Commit,
    CommittedBlock,
    FetchBlocks,
    Message,
    NewView,
    PrePrepare,
    Prepare,
    PreparedCertificate,
    Request,
    Status,
    ViewChange,
    preprepare_signing_bytes,
)

__all__ = [
    "MessageReceived",
    "TimerFired",
    "RequestSubmitted",
    "RequestsSubmitted",
    "Tick",
    "Event",
    "Send",
    "Broadcast",
    "SetTimer",
    "CancelTimer",
    "CommitBlock",
    "Persist",
    "SafetyState",
    "Reply",
    "Effect",
    "Equivocation",
    "BlockSource",
    "Replica",
]

# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class MessageReceived:
    sender: str
    msg: Message


@dataclass(frozen=True)
class TimerFired:
    timer_id: tuple


@dataclass(frozen=True)
class RequestSubmitted:
    """A client hands `tx` to this node; replies go to `client` (opaque to the core).

    `relay=False` when the client sends the request to every sealer itself (the
    client library does), so sealers need not relay it to each other; requests
    that wait longer than a block time still reach the primary on status ticks.
    """

    tx: Transaction
    client: Any = None
    relay: bool = True


@dataclass(frozen=True)
class RequestsSubmitted:
    """A client hands several transactions at once (one frame); each is handled
    as by `RequestSubmitted`, and the primary considers cutting a block once,
    after all of them."""

    txs: tuple[Transaction, ...]
    client: Any = None
    relay: bool = True


@dataclass(frozen=True)
class Tick:
    """The host's current time in milliseconds (the core never reads a clock)."""

    now: int


Event = Union[MessageReceived, TimerFired, RequestSubmitted, RequestsSubmitted, Tick]

# ---------------------------------------------------------------- effects


@dataclass(frozen=True)
class Send:
    to: str
    msg: Message


@dataclass(frozen=True)
class Broadcast:
    """Send `msg` to each node of `to` (never includes the sender)."""

    msg: Message
    to: tuple[str, ...]


@dataclass(frozen=True)
class SetTimer:
    """(Re)arm timer `timer_id` to fire once after `delay` ms."""

    timer_id: tuple
    delay: int


@dataclass(frozen=True)
class CancelTimer:
    timer_id: tuple


@dataclass(frozen=True)
class CommitBlock:
    """Persist this block (append-only, fsync) before the effects after it."""

    block: Block
    cert: CommitCertificate
    results: tuple[Any, ...]


@dataclass(frozen=True)
class Reply:
    client: Any
    tx_id: TxId
    result: Any


Vote = tuple[int, int, bytes]  # (view, height, digest)


def _vote_wire(v: Vote | None) -> Any:
    return None if v is None else [v[0], v[1], v[2]]


def _vote_from(w: Any) -> Vote | None:
    if w is None:
        return None
    if (not isinstance(w, list) or len(w) != 3 or type(w[0]) is not int or type(w[1]) is not int
            or type(w[2]) is not bytes or w[0] < 0 or w[1] < 0):
        raise ValueError("bad vote in safety state")
    return (w[0], w[1], w[2])


@dataclass(frozen=True)
class SafetyState:
    """What a replica must remember across a crash so it never contradicts what it signed.

    `view`/`changing`: the highest view it entered (and whether it was still
    changing into it, i.e. had sent VIEW-CHANGE(view) without a NEW-VIEW);
    `nv_floor`/`nv_slot`: what the NEW-VIEW that installed `view` constrains
    (no proposal at heights <= nv_floor; at nv_slot's height only its digest);
    `preprepare`/`prepare`/`commit`: the last (view, height, digest) it signed
    a PRE-PREPARE (also inside a NEW-VIEW), PREPARE and COMMIT for (blocks are
    decided one at a time, so the last of each kind is all that can still
    matter); `prepared`: its prepared certificate, reported in VIEW-CHANGEs.
    """

    view: int = 0
    changing: bool = False
    nv_floor: int = 0
    nv_slot: Vote | None = None
    preprepare: Vote | None = None
    prepare: Vote | None = None
    commit: Vote | None = None
    prepared: PreparedCertificate | None = None

    def to_wire(self) -> dict:
        return {"view": self.view, "changing": self.changing, "nv_floor": self.nv_floor,
                "nv_slot": _vote_wire(self.nv_slot), "preprepare": _vote_wire(self.preprepare),
                "prepare": _vote_wire(self.prepare), "commit": _vote_wire(self.commit),
                "prepared": None if self.prepared is None else self.prepared.to_wire()}

    @classmethod
    def from_wire(cls, w: Any) -> "SafetyState":
        if not isinstance(w, dict) or set(w) != {"view", "changing", "nv_floor", "nv_slot", "preprepare",
                                                 "prepare", "commit", "prepared"}:
            raise ValueError("bad safety state")
        if type(w["view"]) is not int or type(w["nv_floor"]) is not int or type(w["changing"]) is not bool:
            raise ValueError("bad safety state")
        return cls(w["view"], w["changing"], w["nv_floor"], _vote_from(w["nv_slot"]), _vote_from(w["preprepare"]),
                   _vote_from(w["prepare"]), _vote_from(w["commit"]),
                   None if w["prepared"] is None else PreparedCertificate.from_wire(w["prepared"]))


@dataclass(frozen=True)
class Persist:
    """Durably record `state` (fsync) before the effects after it: they are
    messages signed on the strength of it (see `SafetyState`)."""

    state: SafetyState


Effect = Union[Send, Broadcast, SetTimer, CancelTimer, CommitBlock, Persist, Reply]


@dataclass(frozen=True)
class Equivocation:
    """Proof that `node` signed two `kind` messages (``preprepare``: two
    proposals as primary of `view`; ``prepare``/``commit``: two votes) for
    one (`view`, `height`) with different digests. Nodes submit it as
    ``reputation.evidence`` (`ledger.contracts.evidence`)."""

    node: str
    view: int
    height: int
    digest_a: bytes
    sig_a: bytes
    digest_b: bytes
    sig_b: bytes
    kind: str = "preprepare"


class BlockSource(Protocol):
    """Read access to committed blocks older than the replica keeps in memory."""

    def get(self, height: int) -> tuple[Block, CommitCertificate] | None: ...


_VIEW = "view"
_CUT = "cut"
_STATUS = "status"
_FETCH = "fetch"
_MAX_FUTURE_VIEWS = 64
_RELAY_BATCH = 64
#: flood limits: most bytes of log entries buffered per (sender, view); the
#: message limit is `Replica.max_held_msgs` (4 L + 16 by default)
MAX_HELD_BYTES = 32 * 1024 * 1024
_SMALL_MSG = 200
_CHECKPOINTS = -1  # the (sender, view) bucket of checkpoints, which have no view


def _block_cost(block: Block) -> int:
    return 256 + sum(len(tx.raw) for tx in block.txs)


def _vc_cost(vc: ViewChange) -> int:
    return _SMALL_MSG + (0 if vc.prepared is None else _block_cost(vc.prepared.block)) + (
        0 if vc.cert is None else 100 * len(vc.cert.signatures))


def _timer(name: str, *args: Any) -> tuple:
    return (name, *args)


# ---------------------------------------------------------------- replica


class Replica:
    """One ledger node's consensus state machine (sealer or backup).

    `signer(bytes) -> signature` signs as `node_id`; `verify(did, msg, sig)`
    checks others (injectable so a host can cache). `committed` replays
    persisted blocks on restart. `safety` is the last `SafetyState` the host
    persisted (the `Persist` effects): with it a restarted replica rejoins
    the view it crashed in, refusing to sign any PREPARE/COMMIT that
    conflicts with one it signed before (it only never proposes again in that
    view). Without it (`safety=None`, e.g. a store written before it existed)
    it takes no part in the view it crashed in: `min_view` is then the
    highest view a host recorded, and the replica sits out
    `max(min_view, last certificate's view)`.
    """

    def __init__(
        self,
        genesis: Genesis,
        node_id: str,
        signer: Callable[[bytes], bytes],
        *,
        executor: Executor | None = None,
        verify: Verifier | None = None,
        committed: Iterable[tuple[Block, CommitCertificate]] = (),
        archive: BlockSource | None = None,
        now: int = 0,
        min_view: int = 0,
        safety: SafetyState | None = None,
    ) -> None:
        self.genesis = genesis
        self.params = genesis.params
        self.chain_id = genesis.chain_id
        self.me = node_id
        self.nodes = genesis.node_ids()
        self._node_set = frozenset(self.nodes)
        self._sign = signer
        self._verify_raw: Verifier = verify or verify_signature
        self.executor: Executor = executor if executor is not None else KVExecutor()
        self.archive = archive
        self.now = now
        # chain
        self.height = 0
        self.last_hash: BlockHash = genesis.genesis_hash()
        self.last_time = genesis.time
        self.last_cert: CommitCertificate | None = None
        self._committed_at = 0
        self.blocks: dict[int, tuple[Block, CommitCertificate]] = {}
        self.sealer_sets: dict[int, SealerSet] = {0: genesis.sealers}
        self.nonces = NonceWindow(self.params.nonce_window)
        self.tx_index: dict[bytes, tuple[int, int]] = {}
        self._sealers_memo: tuple[tuple[int, int], SealerSet, bool] | None = None
        self._results: dict[bytes, Any] = {}
        # requests
        self.mempool: dict[bytes, tuple[Transaction, int]] = {}
        #: mempool entries per submitter (admission cap `Params.max_pending_per_submitter`)
        self.pending: dict[str, int] = {}
        self.clients: dict[bytes, list[Any]] = {}
        # views
        self.view = 0
        self.changing = False
        self.vc_count = 0
        self.silent_below = 0
        self.no_propose_view = -1  # the view a restarted replica rejoined: it proposes nothing in it
        self.view_changes: dict[int, dict[str, ViewChange]] = {}
        self.new_view_msg: NewView | None = None
        self.nv_slot: tuple[int, int, bytes] | None = None
        self.nv_floor = 0  # heights <= this were committed before the current view
        self._sent_new_view: set[int] = set()
        self._view_timer: tuple | None = None
        # normal-case log for heights above `height`
        self.proposals: dict[tuple[int, int], PrePrepare] = {}
        self.prepares: dict[tuple[int, int, bytes], dict[str, bytes]] = {}
        self.pp_sigs: dict[tuple[int, int, bytes], bytes] = {}
        self.commits: dict[tuple[int, int, bytes], dict[str, bytes]] = {}
        self.sent_prepare: set[tuple[int, int]] = set()
        self.sent_commit: set[tuple[int, int]] = set()
        self.prepared: PreparedCertificate | None = None
        # the last (view, height, digest) signed per kind, persisted before sending
        self.vote_pp: Vote | None = None
        self.vote_prepare: Vote | None = None
        self.vote_commit: Vote | None = None
        self._persisted: SafetyState | None = None
        self.restored = False
        self._executions: dict[bytes, Execution | None] = {}
        # checkpoints (§4.3)
        self.checkpoints: dict[int, dict[bytes, dict[str, bytes]]] = {}
        self.stable = 0
        self.stable_cert: CheckpointCertificate | None = None
        self.my_checkpoint: Checkpoint | None = None
        # state transfer
        self.peer_heights: dict[str, int] = {}
        self.fetching: tuple[str, int] | None = None
        #: (height, since): when a backup first saw a peer one block ahead of `height`
        self._behind_since: tuple[int, int] | None = None
        self._fetch_rr = 0
        # accounting
        self.drops: Counter[str] = Counter()
        self.evidence: list[Equivocation] = []
        self.view_change_count = 0
        self._cut_armed = False
        self._out: list[Effect] = []
        self._verified: dict[tuple[str, bytes, bytes], bool] = {}
        self._backups_memo: dict[tuple[str, ...], list[str]] = {}
        # per-sender flood limits: buffered log entries per (sender, view)
        self._held: dict[tuple[str, int], list[int]] = {}
        self._held_dirty = False
        self.max_held_msgs = 4 * self.params.window + 16
        self.max_held_bytes = MAX_HELD_BYTES
        for block, cert in committed:
            if not self._apply_certified(block, cert, replay=True):
                raise CertificateError(f"persisted block {block.height} does not verify")
        self._out = []
        if safety is not None:
            self._restore(safety)
        elif self.last_cert is not None or min_view > 0:
            self.view = max(min_view, 0 if self.last_cert is None else self.last_cert.view)
            self.silent_below = self.view + 1

    def _restore(self, s: SafetyState) -> None:
        """Rejoin after a crash from the persisted `SafetyState` (see the class doc)."""
        cert_view = 0 if self.last_cert is None else self.last_cert.view
        if cert_view > s.view:
            # entered a later view through a certificate and crashed before
            # persisting it: nothing was signed in that view
            self.view = cert_view
        else:
            self.view = s.view
            self.changing = s.changing and self.is_sealer
            if not self.changing:
                self.nv_floor, self.nv_slot = s.nv_floor, s.nv_slot
        self.vote_pp, self.vote_prepare, self.vote_commit = s.preprepare, s.prepare, s.commit
        if s.prepared is not None and s.prepared.height == self.height + 1:
            self.prepared = s.prepared
        # it may have proposed (or sent a NEW-VIEW) in this view: never again
        self.no_propose_view = self.view
        self.restored = True
        self._persisted = s

    def safety_state(self) -> SafetyState:
        """What `Persist` records now."""
        return SafetyState(self.view, self.changing, self.nv_floor, self.nv_slot, self.vote_pp,
                           self.vote_prepare, self.vote_commit, self.prepared)

    def _persist(self) -> None:
        """Emit `Persist` if the safety state changed; it precedes every send that relies on it."""
        p = self._persisted
        if (p is not None and p.view == self.view and p.changing == self.changing and p.nv_floor == self.nv_floor
                and p.nv_slot == self.nv_slot and p.preprepare == self.vote_pp and p.prepare == self.vote_prepare
                and p.commit == self.vote_commit and p.prepared is self.prepared):
            return
        st = self.safety_state()
        self._persisted = st
        if self._out and isinstance(self._out[-1], Persist):
            self._out[-1] = Persist(st)  # nothing was sent in between: one write suffices
        else:
            self._out.append(Persist(st))

    # ------------------------------------------------------------ flood limits

    def _hold(self, sender: str, view: int, cost: int = _SMALL_MSG) -> bool:
        """Account one more buffered log entry of `sender` in `view`; False (dropped
        as ``sender_quota``) once it would exceed `max_held_msgs` or `max_held_bytes`."""
        if self._held_dirty:
            self._recount_held()
        key = (sender, view)
        got = self._held.get(key)
        if got is None:
            got = self._held[key] = [0, 0]
        if got[0] >= self.max_held_msgs or got[1] + cost > self.max_held_bytes:
            self._drop("sender_quota")
            return False
        got[0] += 1
        got[1] += cost
        return True

    def _recount_held(self) -> None:
        """Recompute the per-(sender, view) accounts after the log was truncated."""
        held: dict[tuple[str, int], list[int]] = {}

        def add(sender: str, view: int, cost: int) -> None:
            if sender != self.me:
                got = held.get((sender, view))
                if got is None:
                    got = held[(sender, view)] = [0, 0]
                got[0] += 1
                got[1] += cost

        for (v, _), pp in self.proposals.items():
            add(pp.sender, v, _block_cost(pp.block))
        for d in (self.prepares, self.commits):
            for (v, _, _), sigs in d.items():
                for sender in sigs:
                    add(sender, v, _SMALL_MSG)
        for v, vcs in self.view_changes.items():
            for sender, vc in vcs.items():
                add(sender, v, _vc_cost(vc))
        for by_digest in self.checkpoints.values():
            for sigs in by_digest.values():
                for sender in sigs:
                    add(sender, _CHECKPOINTS, _SMALL_MSG)
        self._held = held
        self._held_dirty = False

    @staticmethod
    def _may_sign(last: Vote | None, view: int, height: int, digest: bytes) -> bool:
        """False if `last` is a vote for the same (view, height) and another digest."""
        return last is None or last[0] != view or last[1] != height or last[2] == digest

    # ------------------------------------------------------------ helpers

    def _verify(self, did: str, msg: bytes, sig: bytes) -> bool:
        try:
            return self._verify_raw(did, msg, sig)
        except ValueError:
            return False

    def sealers_at(self, height: int) -> SealerSet | None:
        """Sealer set certifying block `height`, or None if not known yet."""
        return self.sealer_sets.get(epoch_of(max(height, 1), self.params.epoch_length))

    @property
    def sealers(self) -> SealerSet:
        """The set deciding the next block."""
        return self._sealers_now()[0]

    @property
    def is_sealer(self) -> bool:
        return self._sealers_now()[1]

    def _sealers_now(self) -> tuple[SealerSet, bool]:
        """(set deciding the next block, whether this replica is in it), memoised per height and known sets
        (a sealer asks for each request it admits; the sets only grow, one per epoch)."""
        key = (self.height, len(self.sealer_sets))
        got = self._sealers_memo
        if got is None or got[0] != key:
            s = self.sealers_at(self.height + 1)
            assert s is not None
            got = self._sealers_memo = (key, s, self.me in s)
        return got[1], got[2]

    @property
    def primary(self) -> str:
        return self.sealers.primary(self.view)

    @property
    def low_watermark(self) -> int:
        k = self.params.checkpoint_interval
        return max(self.stable, self.height - self.height % k)

    @property
    def high_watermark(self) -> int:
        return self.low_watermark + self.params.window

    def _others(self, members: Iterable[str]) -> tuple[str, ...]:
        return tuple(m for m in members if m != self.me)

    def _broadcast_sealers(self, msg: Message) -> None:
        to = self._others(self.sealers.members)
        if to:
            self._out.append(Broadcast(msg, to))

    def _signed(self, msg: Message) -> Any:
        return msg.sign(self.chain_id, self._sign)

    def _drop(self, reason: str) -> None:
        self.drops[reason] += 1

    def _timeout(self) -> int:
        p = self.params
        return min(p.max_view_change_timeout_ms, p.view_change_timeout_ms * (2 ** min(self.vc_count, 30)))

    def block_at(self, height: int) -> tuple[Block, CommitCertificate] | None:
        got = self.blocks.get(height)
        if got is None and self.archive is not None:
            got = self.archive.get(height)
        return got

    # ------------------------------------------------------------ entry points

    def start(self) -> list[Effect]:
        """Effects to run once when the host starts this replica."""
        self._out = []
        self._out.append(SetTimer(_timer(_STATUS), self.params.status_interval_ms))
        if self.changing and self.me not in self.view_changes.get(self.view, {}):
            # restarted while changing into `view`: say so again (same prepared
            # certificate, a commit certificate at least as high; `_send_status` sends it)
            self.view_changes.setdefault(self.view, {})[self.me] = self._own_view_change(self.view)
            self._vc_quorum_check(self.view)
        self._send_status()
        return self._take()

    def handle(self, event: Event) -> list[Effect]:
        self._out = []
        if isinstance(event, Tick):
            self.now = max(self.now, event.now)
        elif isinstance(event, MessageReceived):
            self._on_message(event.sender, event.msg)
        elif isinstance(event, TimerFired):
            self._on_timer(event.timer_id)
        elif isinstance(event, RequestSubmitted):
            self._on_request(event.tx, event.client, relay=event.relay)
        elif isinstance(event, RequestsSubmitted):
            added = False
            for tx in event.txs:
                added = self._on_request(tx, event.client, relay=event.relay, propose=False) or added
            if added:
                self._arm_view_timer()
                self._maybe_propose()
        return self._take()

    def _take(self) -> list[Effect]:
        out, self._out = self._out, []
        return out

    # ------------------------------------------------------------ requests

    def _check_tx(self, tx: Transaction) -> str | None:
        if tx.tx_id in self.tx_index:
            return "duplicate"
        if not self.nonces.fresh(tx.submitter, tx.nonce):
            return "replay"
        if not tx.verify_signature(self._verify):
            return "bad-signature"
        return None

    def _on_request(self, tx: Transaction, client: Any, relay: bool, propose: bool = True) -> bool:
        """Admit a client request; True iff it entered this sealer's mempool."""
        tid = tx.tx_id
        if client is not None:
            lst = self.clients.setdefault(tid, [])
            if client not in lst:
                lst.append(client)
        if tid in self.tx_index:
            self._drop("duplicate_request")
            if client is not None:
                self._out.append(Reply(client, tid, self._result_of(tid)))
            return False
        if tid in self.mempool:
            self._drop("duplicate_request")
            return False
        # before the signature check, so a flood costs no Ed25519; only admitted (signed) txs are counted
        busy = self.pending.get(tx.submitter, 0) >= self.params.max_pending_per_submitter and self.is_sealer
        err = "submitter-busy" if busy else self._check_tx(tx)
        if err is not None:
            self._drop(f"request_{err}")
            if client is not None:
                self._out.append(Reply(client, tid, {"error": err}))
                self.clients.pop(tid, None)
            return False
        if relay:
            self._broadcast_sealers(self._signed(Request(self.me, tx)))
        if not self.is_sealer:
            return False
        self.mempool[tid] = (tx, self.now)
        self.pending[tx.submitter] = self.pending.get(tx.submitter, 0) + 1
        if propose:
            self._arm_view_timer()
            self._maybe_propose()
        return True

    def _unpend(self, submitter: str) -> None:
        n = self.pending.get(submitter, 0) - 1
        if n > 0:
            self.pending[submitter] = n
        else:
            self.pending.pop(submitter, None)

    def _result_of(self, tid: bytes) -> Any:
        h, i = self.tx_index[tid]
        got = self.block_at(h)
        res = self._results.get(tid)
        return {"height": h, "index": i, "block": got[0].block_hash() if got else None, "result": res}

    # ------------------------------------------------------------ messages

    def _on_message(self, sender: str, msg: Message) -> None:
        # a relayed message (e.g. a NEW-VIEW forwarded to a late replica) is
        # fine: what counts is the signer, checked by each handler
        origin = getattr(msg, "sender", None)
        if sender not in self._node_set or origin not in self._node_set:
            self._drop("unknown_sender")
            return
        if origin == self.me:
            self._drop("own_message")
            return
        handler = self._handlers.get(type(msg))
        if handler is None:
            self._drop("unknown_kind")
            return
        handler(self, msg)

    def _check_sig(self, msg: Message) -> bool:
        if not msg.verify(self.chain_id, self._verify):
            self._drop("bad_signature")
            return False
        return True

    def _on_request_msg(self, msg: Request) -> None:
        if not self._check_sig(msg):
            return
        self._on_request(msg.tx, None, relay=False)

    def _slot_ok(self, view: int, height: int, sender: str) -> SealerSet | None:
        """Common checks of normal-case messages (§4.2): view, watermarks, sender."""
        if height <= self.height:
            self._drop("stale_height")
            return None
        if height > self.high_watermark:
            self._drop("out_of_watermark")
            self._note_height(sender, height - 1)
            return None
        if view < self.view:
            self._drop("old_view")
            return None
        if view > self.view + _MAX_FUTURE_VIEWS:
            self._drop("future_view")
            return None
        sealers = self.sealers_at(height)
        if sealers is None:
            self._drop("unknown_epoch")
            self._note_height(sender, height - 1)
            return None
        if sender not in sealers:
            self._drop("not_sealer")
            return None
        if height > self.height + 1:
            self._note_height(sender, height - 1)
        return sealers

    def _on_preprepare(self, msg: PrePrepare) -> None:
        sealers = self._slot_ok(msg.view, msg.height, msg.sender)
        if sealers is None:
            return
        if msg.sender != sealers.primary(msg.view):
            self._drop("not_primary")
            return
        if msg.block.height != msg.height:
            self._drop("invalid_proposal")
            return
        if not self._check_sig(msg):
            return
        self._add_proposal(msg)
        self._progress()

    def _add_proposal(self, msg: PrePrepare) -> None:
        key = (msg.view, msg.height)
        have = self.proposals.get(key)
        if have is not None:
            if have.digest != msg.digest:
                self._equivocation(have.sender, msg.view, msg.height, have.digest, have.sig, msg.digest, msg.sig)
            else:
                self._drop("duplicate")
            return
        if not self._hold(msg.sender, msg.view, _block_cost(msg.block)):
            return
        self.proposals[key] = msg
        # prepares seen earlier may already prove a conflicting proposal
        for (v, h, d), pps in list(self.pp_sigs.items()):
            if v == msg.view and h == msg.height and d != msg.digest:
                self._equivocation(msg.sender, v, h, msg.digest, msg.sig, d, pps)
                break

    def _on_prepare(self, msg: Prepare) -> None:
        sealers = self._slot_ok(msg.view, msg.height, msg.sender)
        if sealers is None:
            return
        primary = sealers.primary(msg.view)
        if msg.sender == primary:
            self._drop("primary_prepare")
            return
        if not self._check_sig(msg):
            return
        self._double_vote("prepare", self.prepares, msg)
        key = (msg.view, msg.height, msg.digest)
        sigs = self.prepares.get(key)
        if sigs is None or msg.sender not in sigs:
            if not self._hold(msg.sender, msg.view):
                return
            if sigs is None:
                sigs = self.prepares[key] = {}
        sigs[msg.sender] = msg.sig
        have = self.proposals.get((msg.view, msg.height))
        if key not in self.pp_sigs and self._verify(
            primary, preprepare_signing_bytes(self.chain_id, msg.view, msg.height, msg.digest, primary), msg.pp_sig
        ):
            self.pp_sigs[key] = msg.pp_sig
            if have is not None and have.digest != msg.digest:
                self._equivocation(primary, msg.view, msg.height, have.digest, have.sig, msg.digest, msg.pp_sig)
        self._progress()

    def _on_commit(self, msg: Commit) -> None:
        lc = self.last_cert
        if lc is not None and msg.height == self.height and msg.digest == self.last_hash and msg.view == lc.view:
            self._on_late_commit(msg)
            return
        sealers = self._slot_ok(msg.view, msg.height, msg.sender)
        if sealers is None:
            return
        if not self._check_sig(msg):
            return
        self._double_vote("commit", self.commits, msg)
        key = (msg.view, msg.height, msg.digest)
        sigs = self.commits.get(key)
        if sigs is None or msg.sender not in sigs:
            if not self._hold(msg.sender, msg.view):
                return
            if sigs is None:
                sigs = self.commits[key] = {}
        sigs[msg.sender] = msg.sig
        self._progress()

    def _double_vote(self, kind: str, log: dict[tuple[int, int, bytes], dict[str, bytes]],
                     msg: Prepare | Commit) -> None:
        """Keep as evidence a validly signed vote that contradicts one `msg.sender` sent before."""
        for (v, h, d), sigs in log.items():
            if v == msg.view and h == msg.height and d != msg.digest and msg.sender in sigs:
                self.evidence.append(Equivocation(msg.sender, v, h, d, sigs[msg.sender], msg.digest, msg.sig, kind))
                self._drop("double_vote")
                return

    def _equivocation(self, node: str, view: int, height: int, da: bytes, sa: bytes, db: bytes, sb: bytes) -> None:
        self.evidence.append(Equivocation(node, view, height, da, sa, db, sb))
        self._drop("equivocation")
        if view == self.view and not self.changing and self.is_sealer:
            self._start_view_change(self.view + 1)

    # ------------------------------------------------------------ normal case

    def _validate(self, pp: PrePrepare, fresh: bool) -> Execution | None:
        """Check a proposal for the next height and execute it (None = invalid)."""
        if pp.digest in self._executions:
            return self._executions[pp.digest]
        ex = self._validate_block(pp.block, fresh=fresh, view=pp.view)
        self._executions[pp.digest] = ex
        return ex

    def _validate_block(self, block: Block, *, fresh: bool, view: int, certified: bool = False) -> Execution | None:
        h = block.header
        p = self.params
        sealers = self.sealers_at(h.height)
        if sealers is None or h.height != self.height + 1 or h.prev_hash != self.last_hash:
            return None
        if h.epoch != epoch_of(h.height, p.epoch_length) or h.sealer_set_hash != sealers.hash():
            return None
        if h.time < self.last_time:
            return None
        if fresh:
            if h.view != view or h.proposer != sealers.primary(view):
                return None
            if h.time > self.now + p.max_clock_drift_ms:
                return None
            if not block.txs or len(block.txs) > p.max_block_txs:
                return None
        if not block.tx_root_ok() or not self._last_commit_ok(block, certified):
            return None
        seen: set[bytes] = set()
        in_block: set[tuple[str, int]] = set()
        for tx in block.txs:
            if tx.tx_id in seen or tx.tx_id in self.tx_index:
                return None
            seen.add(tx.tx_id)
            if (tx.submitter, tx.nonce) in in_block or not self.nonces.fresh(tx.submitter, tx.nonce):
                return None
            in_block.add((tx.submitter, tx.nonce))
            if not certified and not tx.verify_signature(self._verify):
                return None
        ctx = self._context(h.height, h.time, h.proposer, sealers, block.last_commit)
        ex = self.executor.execute(ctx, block.txs)
        if ex.state_root != h.state_root or ex.next_sealers != h.next_sealers:
            return None
        return ex

    def _context(self, h: int, t: int, proposer: str, sealers: SealerSet,
                 last_commit: CommitCertificate | None) -> BlockContext:
        p = self.params
        return BlockContext(h, epoch_of(h, p.epoch_length), t, proposer, is_epoch_end(h, p.epoch_length), sealers,
                            self.genesis, self.last_hash, last_commit,
                            self.sealers_at(h - 1) if last_commit is not None else None)

    def _last_commit_ok(self, block: Block, certified: bool) -> bool:
        """Block h (>= 2) carries a valid certificate of block h-1 (`Block.last_commit`).

        Only a certified block may lack it (a block committed before blocks
        carried it); one that carries it has it checked in full: 2f+1 valid
        signatures of h-1's sealers over h-1's header hash."""
        h = block.header
        lc = block.last_commit
        if not block.last_commit_ok():
            return False
        if lc is None:
            return h.height == 1 or certified
        if h.height == 1 or lc.height != h.height - 1 or lc.block_hash != h.prev_hash:
            return False
        return self._cert_verifies(lc, h.height - 1, "bad_last_commit")

    def _cert_verifies(self, cert: CommitCertificate, height: int, reason: str) -> bool:
        """`cert` holds a quorum of valid signatures of `height`'s sealers (else dropped as `reason`)."""
        sealers = self.sealers_at(height)
        if sealers is None:
            return False
        try:
            cert.verify(self.chain_id, sealers, self._verify)
        except CertificateError:
            self._drop(reason)
            return False
        return True

    def _progress(self) -> None:
        """Advance the next height as far as the log allows (§4.2)."""
        while True:
            h = self.height + 1
            # a quorum of commits for a block we hold is a certificate: apply it
            if self._commit_by_certificate(h):
                continue
            if self.changing or not self.is_sealer:
                return
            v = self.view
            pp = self.proposals.get((v, h))
            if pp is None:
                return
            nv = self.nv_slot == (v, h, pp.digest)
            if not nv and self.nv_slot is not None and self.nv_slot[0] == v and self.nv_slot[1] == h:
                # the NEW-VIEW of this view fixed another block here (a restarted
                # replica no longer holds that proposal, only its digest)
                self._drop("conflicts_new_view")
                return
            if h <= self.nv_floor:
                # NEW-VIEW proved a block is committed here: only state transfer fills it
                self._drop("below_new_view_floor")
                return
            ex = self._validate(pp, fresh=not nv)
            if ex is None:
                if pp.sender != self.me:
                    self._drop("invalid_proposal")
                    self._start_view_change(v + 1)
                return
            key = (v, h, pp.digest)
            primary = self.sealers.primary(v)
            if v < self.silent_below:
                return
            if self.me != primary and (v, h) not in self.sent_prepare:
                if not self._may_sign(self.vote_prepare, v, h, pp.digest):
                    self._drop("conflicting_vote")  # it prepared another block here before a restart
                    return
                self.sent_prepare.add((v, h))
                self.vote_prepare = (v, h, pp.digest)
                self._persist()
                prep = self._signed(Prepare(self.me, v, h, pp.digest, pp.sig))
                self.prepares.setdefault(key, {})[self.me] = prep.sig
                self._broadcast_sealers(prep)
            prepares = {s: g for s, g in self.prepares.get(key, {}).items() if s != primary}
            if len(prepares) < self.sealers.quorum - 1:
                return
            if self.prepared is None or self.prepared.height != h or self.prepared.view < v:
                self.prepared = PreparedCertificate(v, pp.block, pp.sig, tuple(sorted(prepares.items())))
            if (v, h) not in self.sent_commit:
                if not self._may_sign(self.vote_commit, v, h, pp.digest):
                    self._drop("conflicting_vote")
                    return
                self.sent_commit.add((v, h))
                self.vote_commit = (v, h, pp.digest)
                self._persist()  # the prepared certificate and the vote, before the COMMIT leaves
                com = self._signed(Commit(self.me, v, h, pp.digest))
                self.commits.setdefault(key, {})[self.me] = com.sig
                self._broadcast_sealers(com)
            commits = self.commits.get(key, {})
            if len(commits) < self.sealers.quorum:
                return
            cert = CommitCertificate(h, v, pp.digest, tuple(sorted(commits.items())))
            self._commit(pp.block, cert, ex)

    def _commit_by_certificate(self, h: int) -> bool:
        sealers = self.sealers_at(h)
        if sealers is None:
            return False
        for (v, hh, d), sigs in list(self.commits.items()):
            if hh != h or len(sigs) < sealers.quorum:
                continue
            block = None
            for (pv, ph), pp in self.proposals.items():
                if ph == h and pp.digest == d:
                    block = pp.block
                    break
            if block is None and self.prepared is not None and self.prepared.block.block_hash() == d:
                block = self.prepared.block
            if block is None:
                continue
            if v == self.view and not self.changing and (v, h) in self.sent_commit:
                continue  # the normal path commits it
            cert = CommitCertificate(h, v, d, tuple(sorted(sigs.items())))
            if self._apply_certified(block, cert):
                return True
        return False

    def _maybe_propose(self) -> None:
        """Primary: cut a block when full or when the oldest request is old enough."""
        if (not self.is_sealer or self.changing or self.primary != self.me or self.view < self.silent_below
                or self.view == self.no_propose_view):
            return
        h = self.height + 1
        if (self.view, h) in self.proposals or not self.mempool:
            return
        if self.nv_slot is not None and self.nv_slot[0] == self.view and self.nv_slot[1] >= h:
            return
        if h <= self.nv_floor:
            return  # catch up by state transfer first
        if h > self.high_watermark:
            return
        p = self.params
        # entries are inserted with a non-decreasing `now`, so the first is the oldest
        oldest = next(iter(self.mempool.values()))[1]
        wait = oldest + p.block_time_ms - self.now if len(self.mempool) < p.max_block_txs else 0
        wait = max(wait, self._last_commit_wait())
        if wait > 0:
            # an armed cut timer fires no later than this one would: the oldest
            # request only gets younger, and a late COMMIT re-runs this at once
            if not self._cut_armed:
                self._out.append(SetTimer(_timer(_CUT), wait))
                self._cut_armed = True
            return
        self._propose(h)

    def _last_commit_wait(self) -> int:
        """How much longer to wait for COMMITs missing from the tip's certificate,
        which the next block carries as evidence of who signed (`Params.last_commit_wait_ms`)."""
        cert = self.last_cert
        if cert is None or self.params.last_commit_wait_ms <= 0 or self.params.sealer_count <= 0:
            return 0  # without reputation nobody counts the signers
        sealers = self.sealers_at(self.height)
        if sealers is None or len(cert.signatures) >= sealers.n:
            return 0
        return self._committed_at + self.params.last_commit_wait_ms - self.now

    def _on_late_commit(self, msg: Commit) -> None:
        """A COMMIT for the tip that arrived after its certificate formed: add it
        to `last_cert`, so the next block's `last_commit` counts this sealer too."""
        cert = self.last_cert
        assert cert is not None
        sealers = self.sealers_at(msg.height)
        if sealers is None or msg.sender not in sealers:
            self._drop("not_sealer")
            return
        if msg.sender in cert.signers():
            self._drop("duplicate")
            return
        if not self._check_sig(msg):
            return
        self.last_cert = CommitCertificate(cert.height, cert.view, cert.block_hash,
                                           tuple(sorted((*cert.signatures, (msg.sender, msg.sig)))))
        self._maybe_propose()

    def _propose(self, h: int) -> None:
        p = self.params
        sealers = self.sealers
        txs: list[Transaction] = []
        in_block: set[tuple[str, int]] = set()
        for tx, _ in list(self.mempool.values()):
            if len(txs) == p.max_block_txs:
                break
            if (tx.submitter, tx.nonce) in in_block:
                continue  # same nonce, other payload: at most one of them commits
            in_block.add((tx.submitter, tx.nonce))
            txs.append(tx)
        if not txs:
            return
        epoch = epoch_of(h, p.epoch_length)
        t = max(self.now, self.last_time)
        lc = self.last_cert if h > 1 else None
        ex = self.executor.execute(self._context(h, t, self.me, sealers, lc), txs)
        header = BlockHeader(h, self.last_hash, tx_root_of(txs), ex.state_root, epoch, self.view, self.me, t,
                             sealers.hash(), ex.next_sealers, None if lc is None else lc.cert_hash())
        block = Block(header, tuple(txs), lc)
        digest = block.block_hash()
        if not self._may_sign(self.vote_pp, self.view, h, digest):
            return
        self.vote_pp = (self.view, h, digest)
        self._persist()
        pp = self._signed(PrePrepare(self.me, self.view, h, block))
        self._executions[pp.digest] = ex
        self.proposals[(self.view, h)] = pp
        self._broadcast_sealers(pp)
        self._arm_view_timer()
        self._progress()

    # ------------------------------------------------------------ committing

    def _apply_certified(self, block: Block, cert: CommitCertificate, replay: bool = False) -> bool:
        """Apply a block that carries a commit certificate (backups, state transfer)."""
        h = block.height
        if h != self.height + 1 or cert.height != h or cert.block_hash != block.block_hash():
            return False
        if not self._cert_verifies(cert, h, "bad_certificate"):
            return False
        ex = self._executions.get(cert.block_hash)
        if ex is None:
            ex = self._validate_block(block, fresh=False, view=cert.view, certified=True)
        if ex is None:
            self._drop("invalid_certified_block")
            return False
        self._commit(block, cert, ex, replay=replay)
        return True

    def _commit(self, block: Block, cert: CommitCertificate, ex: Execution, replay: bool = False) -> None:
        h = block.height
        hdr = block.header
        self.executor.apply(ex)
        self.height = h
        self.last_hash = block.block_hash()
        self.last_time = hdr.time
        self.last_cert = cert
        self._committed_at = self.now
        self.blocks[h] = (block, cert)
        for i, tx in enumerate(block.txs):
            self.tx_index[tx.tx_id] = (h, i)
            self._results[tx.tx_id] = ex.results[i] if i < len(ex.results) else None
            self.nonces.record(tx.submitter, tx.nonce)
        if hdr.next_sealers is not None:
            self.sealer_sets[hdr.epoch + 1] = hdr.next_sealers
            if not replay and self.me not in hdr.next_sealers and self.mempool:
                # leaving the sealer set: hand pending requests to the new sealers
                nxt = self._others(hdr.next_sealers.members)
                for tx, _ in self.mempool.values():
                    if nxt:
                        self._out.append(Broadcast(self._signed(Request(self.me, tx)), nxt))
                self.mempool.clear()
                self.pending.clear()
        if self.archive is not None:
            for old in [k for k in self.blocks if k < h - self.params.window]:
                del self.blocks[old]
        if replay:
            return
        self._out.append(CommitBlock(block, cert, ex.results))
        for i, tx in enumerate(block.txs):
            if self.mempool.pop(tx.tx_id, None) is not None:
                self._unpend(tx.submitter)
            for client in self.clients.pop(tx.tx_id, []):
                self._out.append(Reply(client, tx.tx_id, self._result_of(tx.tx_id)))
        for tid, (tx, _) in list(self.mempool.items()):
            if not self.nonces.fresh(tx.submitter, tx.nonce):
                del self.mempool[tid]
                self._unpend(tx.submitter)
                for client in self.clients.pop(tid, []):
                    self._out.append(Reply(client, tid, {"error": "replay"}))
        # adopt a later view proven by the certificate (a quorum is working in it)
        if cert.view > self.view:
            self._enter_view(cert.view)
        if cert.view == self.view:
            self.vc_count = 0
        self._gc_height(h)
        sealers_h = self.sealers_at(h)
        if sealers_h is not None and self.me in sealers_h:
            if h % self.params.checkpoint_interval == 0:
                cp = self._signed(Checkpoint(self.me, h, self.last_hash))
                self.my_checkpoint = cp
                self.checkpoints.setdefault(h, {}).setdefault(cp.digest, {})[self.me] = cp.sig
                to = self._others(sealers_h.members)
                if to:
                    self._out.append(Broadcast(cp, to))
                self._check_stable(h, cp.digest)
            self._push_to_backups(block, cert, sealers_h)
        if self.fetching is not None and self.height >= self.fetching[1]:
            self.fetching = None
            self._out.append(CancelTimer(_timer(_FETCH)))
        self._restart_view_timer()
        self._maybe_propose()

    def _push_to_backups(self, block: Block, cert: CommitCertificate, sealers: SealerSet) -> None:
        """Each backup gets each block from one sealer, `(j + height) % n` for backup j.

        A block carries its certificate, so one copy is enough for safety, and
        sealers share the pushes evenly. If that sealer is faulty, the backup
        still learns of the height from the next block (pushed by another
        sealer) or from any node's Status heartbeat, and fetches the block
        (state transfer): a faulty sender delays a backup, never stalls it.
        """
        backups = self._backups_of(sealers)
        if not backups:
            return
        i, n, h = sealers.index(self.me), sealers.n, block.height
        to = tuple(b for j, b in enumerate(backups) if (j + h) % n == i)
        if to:
            self._out.append(Broadcast(self._signed(CommittedBlock(self.me, block, cert)), to))

    def _backups_of(self, sealers: SealerSet) -> list[str]:
        got = self._backups_memo.get(sealers.members)
        if got is None:
            got = self._backups_memo[sealers.members] = [n for n in self.nodes if n not in sealers]
        return got

    def _gc_height(self, h: int) -> None:
        for d in (self.proposals,):
            for k in [k for k in d if k[1] <= h]:
                del d[k]
        for d2 in (self.prepares, self.commits, self.pp_sigs):
            for k in [k for k in d2 if k[1] <= h]:
                del d2[k]
        self.sent_prepare = {k for k in self.sent_prepare if k[1] > h}
        self.sent_commit = {k for k in self.sent_commit if k[1] > h}
        if self.prepared is not None and self.prepared.height <= h:
            self.prepared = None
        self._executions.clear()
        self._held_dirty = True

    # ------------------------------------------------------------ checkpoints

    def _on_checkpoint(self, msg: Checkpoint) -> None:
        if msg.height <= self.stable:
            self._drop("stale_checkpoint")
            return
        if msg.height % self.params.checkpoint_interval or msg.height > self.height + 64 * self.params.window:
            self._drop("out_of_watermark")
            return
        sealers = self.sealers_at(msg.height)
        if sealers is None or msg.sender not in sealers:
            self._drop("not_sealer")
            return
        if not self._check_sig(msg):
            return
        sigs = self.checkpoints.setdefault(msg.height, {}).setdefault(msg.digest, {})
        if msg.sender not in sigs and not self._hold(msg.sender, _CHECKPOINTS):
            return
        sigs[msg.sender] = msg.sig
        self._check_stable(msg.height, msg.digest)

    def _check_stable(self, h: int, digest: bytes) -> None:
        sealers = self.sealers_at(h)
        sigs = self.checkpoints.get(h, {}).get(digest, {})
        if sealers is None or len(sigs) < sealers.quorum or h <= self.stable:
            return
        mine = self.block_at(h) if h <= self.height else None
        if mine is not None and mine[0].block_hash() != digest:
            self._drop("checkpoint_mismatch")
            return
        self.stable = h
        self.stable_cert = CheckpointCertificate(h, digest, tuple(sorted(sigs.items())))
        # truncate the log below the low watermark (§4.3)
        for k in [k for k in self.checkpoints if k < h]:
            del self.checkpoints[k]
        self._held_dirty = True
        if h > self.height:
            for s in sigs:
                self._note_height(s, h)

    # ------------------------------------------------------------ view change

    def _arm_view_timer(self) -> None:
        if self.is_sealer and not self.changing and self._view_timer is None:
            self._view_timer = _timer(_VIEW, self.view)
            self._out.append(SetTimer(self._view_timer, self._timeout()))

    def _restart_view_timer(self) -> None:
        if self.changing:
            return
        if self._view_timer is not None:
            self._out.append(CancelTimer(self._view_timer))
            self._view_timer = None
        if self.mempool or (self.view, self.height + 1) in self.proposals:
            self._arm_view_timer()

    def _start_view_change(self, new_view: int) -> None:
        if new_view <= self.view and (self.changing or new_view < self.view):
            return
        if new_view == self.view and not self.changing:
            return
        if not self.is_sealer:
            return
        if self._view_timer is not None:
            self._out.append(CancelTimer(self._view_timer))
            self._view_timer = None
        self.view = new_view
        self.changing = True
        self.vc_count += 1
        self.view_change_count += 1
        self.nv_slot = None
        self._persist()  # a restart must not send anything in the views it left
        vc = self._own_view_change(new_view)
        self.view_changes.setdefault(new_view, {})[self.me] = vc
        self._broadcast_sealers(vc)
        self._vc_quorum_check(new_view)
        self._try_new_view(new_view)

    def _own_view_change(self, new_view: int) -> ViewChange:
        prepared = self.prepared if self.prepared is not None and self.prepared.height == self.height + 1 else None
        return self._signed(ViewChange(self.me, new_view, self.last_cert, prepared))

    def _vc_quorum_check(self, v: int) -> None:
        """Start the timer for view v once a quorum of VIEW-CHANGE(v) is in (§4.5.2)."""
        if not self.changing or self.view != v or self._view_timer is not None:
            return
        if len(self.view_changes.get(v, {})) >= self.sealers.quorum:
            self._view_timer = _timer(_VIEW, v)
            self._out.append(SetTimer(self._view_timer, self._timeout()))

    def _valid_view_change(self, vc: ViewChange, sealers: SealerSet) -> bool:
        if vc.sender not in sealers or not vc.verify(self.chain_id, self._verify):
            return False
        if vc.cert is not None:
            known = self.blocks.get(vc.cert.height)
            if known is not None and known[1] == vc.cert:
                pass
            else:
                cs = self.sealers_at(vc.cert.height)
                if cs is None:
                    return False
                try:
                    vc.cert.verify(self.chain_id, cs, self._verify)
                except CertificateError:
                    return False
        if vc.prepared is not None:
            ps = self.sealers_at(vc.prepared.height)
            if vc.prepared.height != vc.height + 1 or ps is None or vc.prepared.view >= vc.new_view:
                return False
            try:
                vc.prepared.verify(self.chain_id, ps, self._verify)
            except CertificateError:
                return False
        return True

    def _on_view_change(self, msg: ViewChange) -> None:
        sealers = self.sealers
        if msg.sender not in sealers:
            self._drop("not_sealer")
            return
        if msg.new_view < self.view or (msg.new_view == self.view and not self.changing):
            # a late replica: help it with the NEW-VIEW that installed our view
            if self.new_view_msg is not None and not self.changing and self._check_sig(msg):
                self._out.append(Send(msg.sender, self.new_view_msg))
            else:
                self._drop("old_view")
            return
        if msg.new_view > self.view + _MAX_FUTURE_VIEWS:
            self._drop("future_view")
            return
        if msg.sender in self.view_changes.get(msg.new_view, {}):
            self._drop("duplicate")
            return
        if not self._valid_view_change(msg, sealers):
            self._drop("bad_view_change")
            return
        if not self._hold(msg.sender, msg.new_view, _vc_cost(msg)):
            return
        self.view_changes.setdefault(msg.new_view, {})[msg.sender] = msg
        if msg.height > self.height:
            self._note_height(msg.sender, msg.height)
        # f+1 replicas want a later view: join the smallest of them (§4.5.2)
        higher = {}
        for v, vcs in self.view_changes.items():
            if v > self.view or (v == self.view and not self.changing):
                for s in vcs:
                    higher[s] = min(v, higher.get(s, v))
        if len(higher) >= sealers.f + 1 and self.is_sealer:
            target = sorted(higher.values())[-(sealers.f + 1)]
            target = min(v for v in higher.values() if v >= target) if target > self.view else None
            if target is not None and target > self.view:
                self._start_view_change(target)
        self._vc_quorum_check(self.view)
        self._try_new_view(msg.new_view)

    @staticmethod
    def _select(vcs: Iterable[ViewChange]) -> tuple[int, PreparedCertificate | None, ViewChange]:
        """Highest committed height and highest-view prepared block above it."""
        vcs = list(vcs)
        top = max(vcs, key=lambda v: (v.height, v.sender))
        best: PreparedCertificate | None = None
        for vc in vcs:
            p = vc.prepared
            if p is not None and p.height == top.height + 1:
                if best is None or p.view > best.view or (
                    p.view == best.view and p.block.block_hash() < best.block.block_hash()
                ):
                    best = p
        return top.height, best, top

    def _try_new_view(self, v: int) -> None:
        if v != self.view or not self.changing or v in self._sent_new_view or v == self.no_propose_view:
            return
        sealers = self.sealers
        if sealers.primary(v) != self.me:
            return
        vcs = self.view_changes.get(v, {})
        if len(vcs) < sealers.quorum:
            return
        chosen = tuple(vcs[s] for s in sorted(vcs)[: len(vcs)])
        _, best, _ = self._select(chosen)
        pp = None
        if best is not None:
            digest = best.block.block_hash()
            if not self._may_sign(self.vote_pp, v, best.height, digest):
                return
            self.vote_pp = (v, best.height, digest)
            self._persist()
            pp = self._signed(PrePrepare(self.me, v, best.height, best.block))
        nv = self._signed(NewView(self.me, v, chosen, pp))
        self._sent_new_view.add(v)
        self._broadcast_sealers(nv)
        self._install_new_view(nv, pp)

    def _on_new_view(self, msg: NewView) -> None:
        sealers = self.sealers
        if msg.view < self.view or (msg.view == self.view and not self.changing):
            self._drop("old_view")
            return
        if msg.sender != sealers.primary(msg.view):
            self._drop("not_primary")
            return
        if not self._check_sig(msg):
            return
        senders = set()
        for vc in msg.view_changes:
            if vc.new_view != msg.view or vc.sender in senders or not self._valid_view_change(vc, sealers):
                self._drop("bad_new_view")
                return
            senders.add(vc.sender)
        if len(senders) < sealers.quorum:
            self._drop("bad_new_view")
            return
        _, best, _ = self._select(msg.view_changes)
        pp = msg.preprepare
        if best is None:
            if pp is not None:
                self._drop("bad_new_view")
                return
        else:
            if (pp is None or pp.digest != best.block.block_hash() or pp.view != msg.view
                    or pp.height != best.height or pp.sender != msg.sender
                    or not pp.verify(self.chain_id, self._verify)):
                self._drop("bad_new_view")
                return
        self._install_new_view(msg, pp)

    def _install_new_view(self, msg: NewView, pp: PrePrepare | None) -> None:
        v = msg.view
        self._enter_view(v, persist=False)
        self.new_view_msg = msg
        max_c, best, top = self._select(msg.view_changes)
        self.nv_floor = max_c
        if max_c > self.height:
            self._note_height(top.sender, max_c)
        if pp is not None:
            self.nv_slot = (v, pp.height, pp.digest)
            if pp.height > self.height:
                self.proposals[(v, pp.height)] = pp
        self._persist()
        self._restart_view_timer()
        self._progress()
        self._maybe_propose()

    def _enter_view(self, v: int, persist: bool = True) -> None:
        if self._view_timer is not None:
            self._out.append(CancelTimer(self._view_timer))
            self._view_timer = None
        if v != self.view:
            self.nv_slot = None
            self.nv_floor = 0
            self.new_view_msg = None
        self.view = v
        self.changing = False
        for k in [k for k in self.view_changes if k <= v]:
            del self.view_changes[k]
        # old-view prepares are useless now; old-view commits and proposals
        # may still complete a commit certificate, so they stay until GC
        for d in (self.prepares, self.pp_sigs):
            for k in [k for k in d if k[0] < v]:
                del d[k]
        self._held_dirty = True
        if persist:
            self._persist()
        self._restart_view_timer()

    # ------------------------------------------------------------ timers

    def _on_timer(self, tid: tuple) -> None:
        name = tid[0]
        if name == _VIEW:
            if tid != self._view_timer:
                return
            self._view_timer = None
            if tid[1] == self.view:
                self._start_view_change(self.view + 1)
        elif name == _CUT:
            self._cut_armed = False
            self._maybe_propose()
        elif name == _STATUS:
            self._out.append(SetTimer(_timer(_STATUS), self.params.status_interval_ms))
            self._send_status()
        elif name == _FETCH:
            if self.fetching is not None:
                peer, target = self.fetching
                self.fetching = None
                self.peer_heights.pop(peer, None) if self.peer_heights.get(peer, 0) <= self.height else None
                self._fetch_next(exclude=peer)

    def _send_status(self) -> None:
        st = self._signed(Status(self.me, self.height, self.view, self.changing, self.stable))
        to = self._others(self.nodes)
        if to:
            self._out.append(Broadcast(st, to))
        if not self.is_sealer:
            return
        # retransmit what a lossy network may have eaten (PBFT relies on it)
        if self.changing:
            mine = self.view_changes.get(self.view, {}).get(self.me)
            if mine is not None:
                self._broadcast_sealers(mine)
        if self.my_checkpoint is not None and self.my_checkpoint.height > self.stable:
            self._broadcast_sealers(self.my_checkpoint)
        if self.mempool and not self.changing and self.primary != self.me:
            old = [tx for tx, t in self.mempool.values() if self.now - t >= self.params.block_time_ms]
            for tx in old[:_RELAY_BATCH]:
                self._out.append(Send(self.primary, self._signed(Request(self.me, tx))))

    def _on_status(self, msg: Status) -> None:
        if not self._check_sig(msg):
            return
        if msg.height > self.height:
            self._note_height(msg.sender, msg.height)
        if (msg.view < self.view and not self.changing and self.new_view_msg is not None
                and self.primary == self.me and msg.sender in self.sealers):
            self._out.append(Send(msg.sender, self.new_view_msg))

    # ------------------------------------------------------------ state transfer

    def _note_height(self, peer: str, height: int) -> None:
        if height <= self.height:
            return
        if height > self.peer_heights.get(peer, 0):
            self.peer_heights[peer] = height
        if self.fetching is None:
            if height == self.height + 1 and not self.is_sealer:
                # a backup one block behind: that block's push is most likely on its way (a Status
                # often overtakes it). Fetching at once cost both sides the block twice, so wait one
                # status interval; a later Status (every node sends them) fetches it if still missing.
                since = self._behind_since
                if since is None or since[0] != self.height:
                    self._behind_since = (self.height, self.now)
                    return
                if self.now - since[1] < self.params.status_interval_ms:
                    return
            self._fetch_next()

    def _fetch_next(self, exclude: str | None = None) -> None:
        cands = sorted(p for p, h in self.peer_heights.items() if h > self.height and p != exclude)
        if not cands:
            cands = sorted(p for p, h in self.peer_heights.items() if h > self.height)
        if not cands:
            return
        peer = cands[self._fetch_rr % len(cands)]
        self._fetch_rr += 1
        target = self.peer_heights[peer]
        to = min(target, self.height + self.params.fetch_batch)
        self.fetching = (peer, target)
        self._out.append(Send(peer, self._signed(FetchBlocks(self.me, self.height + 1, to))))
        self._out.append(SetTimer(_timer(_FETCH), self.params.fetch_timeout_ms))

    def _on_fetch(self, msg: FetchBlocks) -> None:
        if not self._check_sig(msg):
            return
        hi = min(msg.to_height, self.height, msg.from_height + self.params.fetch_batch - 1)
        entries = []
        for h in range(max(1, msg.from_height), hi + 1):
            got = self.block_at(h)
            if got is None:
                break
            entries.append(got)
        if entries:
            self._out.append(Send(msg.sender, self._signed(Blocks(self.me, tuple(entries)))))
        else:
            self._drop("fetch_unavailable")

    def _on_blocks(self, msg: Blocks) -> None:
        if not self._check_sig(msg):
            return
        applied = 0
        for block, cert in msg.entries:
            if block.height <= self.height:
                continue
            if not self._apply_certified(block, cert):
                self._drop("bad_block")
                break
            applied += 1
        if applied:
            self._progress()
        if self.fetching is not None and self.fetching[0] == msg.sender:
            peer, target = self.fetching
            self.fetching = None
            self._out.append(CancelTimer(_timer(_FETCH)))
            if applied and self.height < target:
                self.peer_heights[peer] = target
                self._fetch_next()
            elif self.height < max(self.peer_heights.values(), default=0):
                self._fetch_next(exclude=peer if not applied else None)

    def _on_committed_block(self, msg: CommittedBlock) -> None:
        h = msg.block.height
        if h <= self.height:
            self._drop("stale_height")
            return
        if h > self.height + 1:
            self._note_height(msg.sender, h)
            return
        if not self._check_sig(msg):
            return
        if self._apply_certified(msg.block, msg.cert):
            self._progress()
        else:
            self._drop("bad_block")

    _handlers: dict[type, Callable[["Replica", Any], None]] = {
        Request: _on_request_msg,
        PrePrepare: _on_preprepare,
        Prepare: _on_prepare,
        Commit: _on_commit,
        Checkpoint: _on_checkpoint,
        ViewChange: _on_view_change,
        NewView: _on_new_view,
        Status: _on_status,
        FetchBlocks: _on_fetch,
        Blocks: _on_blocks,
        CommittedBlock: _on_committed_block,
    }
