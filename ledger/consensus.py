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

Layout: this module is the front. `Replica` owns one object per
sub-protocol, each with its own state, in `ledger._consensus` (hyper-h2's
connection/stream split): `events` (the vocabulary), `safety` (`SafetyState`,
the votes signed), `quotas` (flood limits), `mempool`, `normal` (the normal
case), `commit` (the chain, committing, backup push), `checkpoints`,
`viewchange` and `transfer` (state transfer). The front routes each event to
the part that handles it and collects the effects in order; the state the
host, the simulator and the tests read (`height`, `view`, `mempool`,
`drops`, ...) is exposed on it. The core imports no application: the
executor is passed in (`KVExecutor` is only the front's default when none is).
"""

from __future__ import annotations

from collections import Counter
from operator import attrgetter
from typing import Any, Callable, Iterable, Iterator

from trust.identity import verify_signature

from ._consensus.app import BlockContext, Executor
from ._consensus.checkpoints import Checkpoints
from ._consensus.commit import Chain
from ._consensus.freshness import Freshness
from ._consensus.events import (
    CUT,
    FETCH,
    STATUS,
    VIEW,
    BlockSource,
    Broadcast,
    CancelTimer,
    CommitBlock,
    Effect,
    Equivocation,
    Event,
    MessageReceived,
    Persist,
    Reply,
    RequestsSubmitted,
    RequestSubmitted,
    Send,
    SetTimer,
    Tick,
    TimerFired,
    timer,
)
from ._consensus.mempool import Mempool
from ._consensus.normal import NormalCase
from ._consensus.quotas import MAX_HELD_BYTES, SenderQuotas
from ._consensus.safety import SafetyState
from ._consensus.transfer import StateTransfer
from ._consensus.viewchange import Views
from ._consensus.votes import Votes
from .values import Block, CommitCertificate, Genesis, SealerSet, Verifier
from .errors import CertificateError
from .messages import (
    Blocks,
    Checkpoint,
    Commit,
    CommittedBlock,
    FetchBlocks,
    Message,
    NewView,
    Prepare,
    PrePrepare,
    Request,
    Status,
    ViewChange,
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
    "MAX_HELD_BYTES",
]


def _part(part: str, name: str) -> Any:
    """A front attribute that is `name` of the sub-protocol object `part` (read and write;
    read through `operator.attrgetter`: hosts and the simulator read `height` and the like often)."""

    def set_(self: Replica, value: Any) -> None:
        setattr(getattr(self, part), name, value)

    return property(attrgetter(f"{part}.{name}"), set_, doc=f"`{part}.{name}`")


class Replica:
    """One ledger node's consensus state machine (sealer or backup).

    `signer(bytes) -> signature` signs as `node_id`; `verify(did, msg, sig)`
    checks others (injectable so a host can cache). `executor` is the
    replicated application (`KVExecutor` when None). `committed` replays
    persisted blocks on restart. `safety` is the last `SafetyState` the host
    persisted (the `Persist` effects): with it a restarted replica rejoins
    the view it crashed in, refusing to sign any PREPARE/COMMIT that
    conflicts with one it signed before (it only never proposes again in that
    view). Without it (`safety=None`, e.g. a store written before it existed)
    it takes no part in the view it crashed in: `min_view` is then the
    highest view a host recorded, and the replica sits out
    `max(min_view, last certificate's view)`.

    The sub-protocols: `chain` (`Chain`), `pool` (`Mempool`), `normal`
    (`NormalCase`), `vc` (`Views`), `ckpt` (`Checkpoints`), `transfer`
    (`StateTransfer`), `quotas` (`SenderQuotas`) and `votes` (`Votes`).
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
        if executor is None:
            from .executor import KVExecutor  # the default app; a host passes its own

            executor = KVExecutor()
        self.executor: Executor = executor
        self.archive = archive
        self.now = now
        self.drops: Counter[str] = Counter()
        #: proofs of double signing (`Equivocation`), kept for reputation
        self.evidence: list[Equivocation] = []
        self._evidence_slots: set[tuple[str, int, str]] = set()
        #: the effects of the event being handled, in order
        self.out: list[Effect] = []
        # the sub-protocols, each with its own state
        self.chain = Chain(self, genesis)
        self.pool = Mempool(self)
        self.normal = NormalCase(self)
        self.vc = Views(self)
        self.ckpt = Checkpoints(self)
        self.transfer = StateTransfer(self)
        self.votes = Votes(self)
        self.fresh = Freshness(self)
        self.quotas = SenderQuotas(node_id, self.drops, self._held_entries, 4 * self.params.window + 16)
        self._handlers: dict[type, Callable[[Any], None]] = {
            Request: self.pool.on_request_msg,
            PrePrepare: self.normal.on_preprepare,
            Prepare: self.normal.on_prepare,
            Commit: self.normal.on_commit,
            Checkpoint: self.ckpt.on_checkpoint,
            ViewChange: self.vc.on_view_change,
            NewView: self.vc.on_new_view,
            Status: self.transfer.on_status,
            FetchBlocks: self.transfer.on_fetch,
            Blocks: self.transfer.on_blocks,
            CommittedBlock: self.transfer.on_committed_block,
        }
        for block, cert in committed:
            if not self.chain.apply_certified(block, cert, replay=True):
                raise CertificateError(f"persisted block {block.height} does not verify")
        self.out = []
        if safety is not None:
            self.votes.restore(safety)
        elif self.chain.last_cert is not None or min_view > 0:
            self.vc.view = max(min_view, 0 if self.chain.last_cert is None else self.chain.last_cert.view)
            self.vc.silent_below = self.vc.view + 1

    # ------------------------------------------------------------ state, as the host reads it

    # the chain
    height = _part("chain", "height")
    last_hash = _part("chain", "last_hash")
    last_time = _part("chain", "last_time")
    last_cert = _part("chain", "last_cert")
    blocks = _part("chain", "blocks")
    sealer_sets = _part("chain", "sealer_sets")
    nonces = _part("chain", "nonces")
    tx_index = _part("chain", "tx_index")
    _results = _part("chain", "results")
    # requests
    mempool = _part("pool", "txs")
    pending = _part("pool", "pending")
    clients = _part("pool", "clients")
    # views
    view = _part("vc", "view")
    changing = _part("vc", "changing")
    vc_count = _part("vc", "vc_count")
    silent_below = _part("vc", "silent_below")
    no_propose_view = _part("vc", "no_propose_view")
    view_changes = _part("vc", "view_changes")
    new_view_msg = _part("vc", "new_view_msg")
    nv_slot = _part("vc", "nv_slot")
    nv_floor = _part("vc", "nv_floor")
    view_change_count = _part("vc", "view_change_count")
    # the normal-case log
    proposals = _part("normal", "proposals")
    prepares = _part("normal", "prepares")
    pp_sigs = _part("normal", "pp_sigs")
    commits = _part("normal", "commits")
    sent_prepare = _part("normal", "sent_prepare")
    sent_commit = _part("normal", "sent_commit")
    prepared = _part("normal", "prepared")
    # what it signed
    vote_pp = _part("votes", "pp")
    vote_prepare = _part("votes", "prepare")
    vote_commit = _part("votes", "commit")
    restored = _part("votes", "restored")
    # checkpoints
    checkpoints = _part("ckpt", "log")
    stable = _part("ckpt", "stable")
    stable_cert = _part("ckpt", "stable_cert")
    my_checkpoint = _part("ckpt", "mine")
    # state transfer
    peer_heights = _part("transfer", "peer_heights")
    fetching = _part("transfer", "fetching")
    # flood limits
    max_held_msgs = _part("quotas", "max_msgs")
    max_held_bytes = _part("quotas", "max_bytes")

    def safety_state(self) -> SafetyState:
        """What `Persist` records now."""
        return self.votes.state()

    def sealers_at(self, height: int) -> SealerSet | None:
        """Sealer set certifying block `height`, or None if not known yet."""
        return self.chain.sealers_at(height)

    @property
    def sealers(self) -> SealerSet:
        """The set deciding the next block."""
        return self.chain.sealers_now()[0]

    @property
    def is_sealer(self) -> bool:
        return self.chain.sealers_now()[1]

    @property
    def primary(self) -> str:
        return self.chain.sealers_now()[0].primary(self.vc.view)

    @property
    def low_watermark(self) -> int:
        return self.ckpt.low_watermark

    @property
    def high_watermark(self) -> int:
        return self.ckpt.high_watermark

    def block_at(self, height: int) -> tuple[Block, CommitCertificate] | None:
        return self.chain.block_at(height)

    def _result_of(self, tid: bytes) -> Any:
        return self.chain.result_of(tid)

    def _context(self, h: int, t: int, proposer: str, sealers: SealerSet,
                 last_commit: CommitCertificate | None) -> BlockContext:
        return self.chain.context(h, t, proposer, sealers, last_commit)

    # ------------------------------------------------------------ entry points

    def start(self) -> list[Effect]:
        """Effects to run once when the host starts this replica."""
        self.out = []
        self.out.append(SetTimer(timer(STATUS), self.params.status_interval_ms))
        self.vc.resume()
        self._send_status()
        return self._take()

    def handle(self, event: Event) -> list[Effect]:
        self.out = []
        if isinstance(event, Tick):
            self.now = max(self.now, event.now)
        elif isinstance(event, MessageReceived):
            self._on_message(event.sender, event.msg)
        elif isinstance(event, TimerFired):
            self._on_timer(event.timer_id)
        elif isinstance(event, RequestSubmitted):
            self.pool.on_request(event.tx, event.client, relay=event.relay)
        elif isinstance(event, RequestsSubmitted):
            self.pool.on_requests(event.txs, event.client, relay=event.relay)
        return self._take()

    def _take(self) -> list[Effect]:
        out, self.out = self.out, []
        return out

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
        handler(msg)

    def _on_timer(self, tid: tuple) -> None:
        name = tid[0]
        if name == VIEW:
            self.vc.on_timer(tid)
        elif name == CUT:
            self.normal.on_cut_timer()
        elif name == STATUS:
            self.out.append(SetTimer(timer(STATUS), self.params.status_interval_ms))
            self._send_status()
        elif name == FETCH:
            self.transfer.on_timer()

    def _send_status(self) -> None:
        st = self._signed(Status(self.me, self.chain.height, self.vc.view, self.vc.changing, self.ckpt.stable))
        to = self._others(self.nodes)
        if to:
            self.out.append(Broadcast(st, to))
        if not self.is_sealer:
            return
        # retransmit what a lossy network may have eaten (PBFT relies on it)
        self.vc.retransmit()
        self.ckpt.retransmit()
        self.pool.relay_old()

    # ------------------------------------------------------------ helpers the parts share

    def _held_entries(self) -> Iterator[tuple[str, int, int]]:
        """(sender, view, cost) of every buffered log entry (`SenderQuotas.recount`)."""
        yield from self.normal.held_entries()
        yield from self.vc.held_entries()
        yield from self.ckpt.held_entries()

    def _verify(self, did: str, msg: bytes, sig: bytes) -> bool:
        try:
            return self._verify_raw(did, msg, sig)
        except ValueError:
            return False

    def _check_sig(self, msg: Message) -> bool:
        if not msg.verify(self.chain_id, self._verify):
            self._drop("bad_signature")
            return False
        return True

    def _others(self, members: Iterable[str]) -> tuple[str, ...]:
        return tuple(m for m in members if m != self.me)

    def _broadcast_sealers(self, msg: Message) -> None:
        to = self._others(self.sealers.members)
        if to:
            self.out.append(Broadcast(msg, to))

    def _signed(self, msg: Message) -> Any:
        return msg.sign(self.chain_id, self._sign)

    def _drop(self, reason: str) -> None:
        self.drops[reason] += 1

    def keep_evidence(self, e: Equivocation) -> None:
        """Record one proof of double signing per sealer, height and kind (one suffices to punish;
        more from one Byzantine sealer would only grow memory); others are dropped, counted."""
        slot = (e.node, e.height, e.kind)
        if slot in self._evidence_slots:
            self._drop("evidence_repeat")
            return
        if len(self._evidence_slots) >= 4096:
            h = self.chain.height
            self._evidence_slots = {s for s in self._evidence_slots if s[1] > h}
        self._evidence_slots.add(slot)
        self.evidence.append(e)
