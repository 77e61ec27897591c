"""Client requests waiting for a block (PBFT's Request stage).

`Mempool` admits a request (duplicate, replay, signature and per-submitter
checks, the app's admission and the mempool's caps; stable refusal codes go back
to the client as `Reply` at once, and a refused tx is never ordered), relays it to
the sealers when the node was first handed it, keeps who waits for which tx,
and after each commit answers them and purges what the block made stale.
A backup holds no mempool: it only relays (after the app's admission, so it
relays nothing a sealer would refuse for who sent it).

Admission, in order, all before the signature check (a flood costs no Ed25519):
the per-submitter cap (``submitter-busy``); the app's rule, when the executor has
one (`admit(tx, nodes) -> (code, org)`: the contracts want a registered, active
submitter that holds the fee, `ledger.contracts.admission`; the KV app has none);
then, on a sealer, the global cap `Params.max_mempool` (``mempool-full``) and the
organisation's share of it, `Params.org_mempool_share_pct` (``org-busy``). What the app
admits with no organisation (a node's own reputation txs) counts against neither cap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..values import Block, SealerSet, Transaction, TxId
from ..messages import Request
from .events import Broadcast, Reply, Send

if TYPE_CHECKING:
    from ..consensus import Replica

__all__ = ["Mempool"]

_RELAY_BATCH = 64


class Mempool:
    def __init__(self, r: Replica) -> None:
        self.r = r
        #: tx id -> (tx, when it was admitted); insertion order is age order
        self.txs: dict[bytes, tuple[Transaction, int]] = {}
        #: mempool entries per submitter (admission cap `Params.max_pending_per_submitter`)
        self.pending: dict[str, int] = {}
        #: mempool entries per organisation, and the organisation of each entry that has one
        self.org_pending: dict[str, int] = {}
        self.org_of: dict[bytes, str] = {}
        self._admit = getattr(r.executor, "admit", None)
        self._nodes = frozenset(r.genesis.node_ids())
        #: tx id -> the clients waiting for its answer
        self.clients: dict[bytes, list[Any]] = {}

    def check_tx(self, tx: Transaction) -> str | None:
        chain = self.r.chain
        if tx.tx_id in chain.tx_index:
            return "duplicate"
        if not chain.nonces.fresh(tx.submitter, tx.nonce):
            return "replay"
        if not tx.verify_signature(self.r._verify):
            return "bad-signature"
        return None

    def on_request(self, tx: Transaction, client: Any, relay: bool, propose: bool = True) -> bool:
        """Admit a client request; True iff it entered this sealer's mempool."""
        r = self.r
        tid = tx.tx_id
        if client is not None:
            lst = self.clients.setdefault(tid, [])
            if client not in lst:
                lst.append(client)
        if tid in r.chain.tx_index:
            r._drop("duplicate_request")
            if client is not None:
                r.out.append(Reply(client, tid, r.chain.result_of(tid)))
            return False
        if tid in self.txs:
            r._drop("duplicate_request")
            return False
        # before the signature check, so a flood costs no Ed25519; only admitted (signed) txs are counted
        busy = self.pending.get(tx.submitter, 0) >= r.params.max_pending_per_submitter and r.is_sealer
        err: str | None = "submitter-busy" if busy else None
        org: str | None = ""  # "": counts against the global cap only (an app with no organisations)
        if err is None and self._admit is not None:
            err, org = self._admit(tx, self._nodes)  # org None: a node's own tx, outside the caps
        if err is None and r.is_sealer and org is not None:
            err = self._over_cap(org)
        if err is None:
            err = self.check_tx(tx)
        if err is not None:
            r._drop(f"request_{err}")
            if client is not None:
                r.out.append(Reply(client, tid, {"error": err}))
                self.clients.pop(tid, None)
            return False
        if relay:
            r._broadcast_sealers(r._signed(Request(r.me, tx)))
        if not r.is_sealer:
            return False
        self.txs[tid] = (tx, r.now)
        self.pending[tx.submitter] = self.pending.get(tx.submitter, 0) + 1
        if org is not None:
            self.org_of[tid] = org
            if org:
                self.org_pending[org] = self.org_pending.get(org, 0) + 1
        if propose:
            r.vc.arm_timer()
            r.normal.maybe_propose()
        return True

    def on_requests(self, txs: tuple[Transaction, ...], client: Any, relay: bool) -> None:
        """A client's batch: each tx as by `on_request`, then one proposal check."""
        added = False
        for tx in txs:
            added = self.on_request(tx, client, relay=relay, propose=False) or added
        if added:
            self.r.vc.arm_timer()
            self.r.normal.maybe_propose()

    def on_request_msg(self, msg: Request) -> None:
        if not self.r._check_sig(msg):
            return
        self.on_request(msg.tx, None, relay=False)

    def _over_cap(self, org: str) -> str | None:
        p = self.r.params
        if len(self.org_of) >= p.max_mempool:  # every entry but the nodes' own counts
            return "mempool-full"
        if org and self.org_pending.get(org, 0) >= max(1, p.max_mempool * p.org_mempool_share_pct // 100):
            return "org-busy"
        return None

    def unpend(self, submitter: str, tid: bytes | None = None) -> None:
        n = self.pending.get(submitter, 0) - 1
        if n > 0:
            self.pending[submitter] = n
        else:
            self.pending.pop(submitter, None)
        org = self.org_of.pop(tid, None) if tid is not None else None
        if org:
            m = self.org_pending.get(org, 0) - 1
            if m > 0:
                self.org_pending[org] = m
            else:
                self.org_pending.pop(org, None)

    def hand_over(self, next_sealers: SealerSet) -> None:
        """Leaving the sealer set: hand pending requests to the new sealers."""
        r = self.r
        nxt = r._others(next_sealers.members)
        for tx, _ in self.txs.values():
            if nxt:
                r.out.append(Broadcast(r._signed(Request(r.me, tx)), nxt))
        self.txs.clear()
        self.pending.clear()
        self.org_pending.clear()
        self.org_of.clear()

    def committed(self, block: Block) -> None:
        """Answer the clients of `block`'s txs; drop what the block made a replay."""
        r = self.r
        chain = r.chain
        out = r.out
        for tx in block.txs:
            if self.txs.pop(tx.tx_id, None) is not None:
                self.unpend(tx.submitter, tx.tx_id)
            for client in self.clients.pop(tx.tx_id, []):
                out.append(Reply(client, tx.tx_id, chain.result_of(tx.tx_id)))
        for tid, (tx, _) in list(self.txs.items()):
            if not chain.nonces.fresh(tx.submitter, tx.nonce):
                del self.txs[tid]
                self.unpend(tx.submitter, tid)
                for client in self.clients.pop(tid, []):
                    out.append(Reply(client, TxId(tid), {"error": "replay"}))

    def relay_old(self) -> None:
        """Status tick: relay to the primary requests that waited longer than a block time."""
        r = self.r
        if self.txs and not r.vc.changing and r.primary != r.me:
            old = [tx for tx, t in self.txs.values() if r.now - t >= r.params.block_time_ms]
            for tx in old[:_RELAY_BATCH]:
                r.out.append(Send(r.primary, r._signed(Request(r.me, tx))))
