"""Reputation: scores in ledger state and the reputation-chosen sealer sets.

The ICB paper's (Xia et al.) lightweight consensus: every node has a
reputation score; only the top k run PBFT as *sealers*, the others are
backups. Here a score changes **only from on-chain evidence**, applied while
executing a block, so every node computes the same table (it is part of the
state root) and a backup synchronises it just by applying blocks.

Evidence and rules (all integers, fixed point; parameters are genesis
`Params`, ``rep_*``):

* **Signing** (block h+1 carries block h's certificate, `Block.last_commit`,
  verified by the core): at the start of block h+1 each sealer of h's epoch
  that signed it gains ``rep_sign_reward``, capped at ``rep_max``, and its
  miss counter resets; a sealer missing from it counts a miss, and every
  ``rep_offline_after`` consecutive misses cost ``rep_offline_penalty``
  (offline detection).
* **Equivocation** (``reputation.evidence``: two conflicting signed
  PRE-PREPAREs, PREPAREs or COMMITs of one sealer for one view and height,
  `evidence.verify_evidence`): ``rep_equivocation_penalty`` once per
  offence (accused, view, height); a replay is refused ``EVIDENCE_REPLAYED``.
* **Heartbeat** (``reputation.heartbeat {height, hash}``, signed by a
  backup's node key): naming the hash of one of the last `RECENT_BLOCKS`
  blocks proves the backup follows the chain (it cannot be signed in
  advance); it gains ``rep_heartbeat_reward``, at most once per
  ``rep_heartbeat_interval`` blocks (refused ``HEARTBEAT_TOO_SOON``). This is
  how a backup, and a node excluded below the floor, recovers: slowly, while
  online. Sealers gain by signing instead (``IS_SEALER``).

Sealer choice (`next_sealers`, run by the last block of each epoch): the
eligible nodes (genesis nodes; with the contracts, also registered, active
``node`` entities whose current key is that did) whose score is at least
``rep_floor``, ranked by score, ties by genesis order (``node0`` first); the
top ``sealer_count`` form the set, ordered by genesis order. Nodes under the
floor are excluded until they recover; if none is eligible the set stays.

State: ``rep/node/<did>`` -> ``{score, missed, hb, offences}`` (absent:
never changed, i.e. ``{rep_initial, 0, 0, 0}``); ``rep/offence/<hex>`` ->
``[height, index]`` of the evidence punished; ``rep/sealers/<epoch>`` ->
the set's dids (written by the epoch's first block, for evidence about
older heights); ``rep/recent`` -> ``[first height, [block hash, ...]]``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from trust import canonical
from trust.identity import verify_signature

from .._consensus.app import BlockContext
from ..values import Params, SealerSet, Transaction, epoch_of
from ._app import Refused, TxContext, _TxView, check_fields, check_int, ok, refusal
from .evidence import EquivocationEvidence, verify_evidence
from .registry import resolve_key

__all__ = [
    "Rules",
    "NODE_PREFIX",
    "RECENT_BLOCKS",
    "METHODS",
    "default_record",
    "after_signed",
    "after_missed",
    "after_heartbeat",
    "after_offence",
    "rank",
    "begin_block",
    "next_sealers",
    "heartbeat",
    "evidence",
    "table",
    "History",
    "KVBook",
    "Reporter",
    "report",
    "own_score",
]

NODE_PREFIX = "rep/node/"
_OFFENCE = "rep/offence/"
_SEALERS = "rep/sealers/"
_RECENT = "rep/recent"
#: how many recent block hashes a heartbeat may name
RECENT_BLOCKS = 64

#: (view, did) -> True if did may seal (and send heartbeats)
Eligible = Callable[[Any, str, BlockContext], bool]


@dataclass(frozen=True)
class Rules:
    """The ``rep_*`` genesis parameters (fixed-point integers)."""

    sealer_count: int
    initial: int
    max: int
    floor: int
    sign_reward: int
    offline_after: int
    offline_penalty: int
    equivocation_penalty: int
    heartbeat_reward: int
    heartbeat_interval: int

    @classmethod
    def of(cls, p: Params) -> "Rules":
        return cls(p.sealer_count, p.rep_initial, p.rep_max, p.rep_floor, p.rep_sign_reward,
                   max(1, p.rep_offline_after), p.rep_offline_penalty, p.rep_equivocation_penalty,
                   p.rep_heartbeat_reward, max(1, p.rep_heartbeat_interval))


# ---------------------------------------------------------------- pure rules


def default_record(r: Rules) -> dict:
    return {"score": r.initial, "missed": 0, "hb": 0, "offences": 0}


def after_signed(rec: Mapping, r: Rules) -> dict:
    """The sealer signed the previous block's certificate."""
    return {**rec, "score": min(r.max, rec["score"] + r.sign_reward), "missed": 0}


def after_missed(rec: Mapping, r: Rules) -> dict:
    """The sealer is missing from it: a penalty every `offline_after` misses in a row."""
    missed = rec["missed"] + 1
    if missed < r.offline_after:
        return {**rec, "missed": missed}
    return {**rec, "score": max(0, rec["score"] - r.offline_penalty), "missed": 0}


def after_heartbeat(rec: Mapping, r: Rules, ref_height: int) -> dict:
    return {**rec, "score": min(r.max, rec["score"] + r.heartbeat_reward), "hb": ref_height}


def after_offence(rec: Mapping, r: Rules) -> dict:
    return {**rec, "score": max(0, rec["score"] - r.equivocation_penalty), "offences": rec["offences"] + 1}


def rank(scores: Iterable[tuple[str, int]], k: int, floor: int) -> tuple[str, ...]:
    """Top `k` of ``(did, score)`` pairs given in genesis order, among scores >= `floor`;
    ties by genesis order; the result in genesis order."""
    order = {d: i for i, (d, _) in enumerate(scores)}
    cands = [(-s, order[d], d) for d, s in scores if s >= floor]
    top = sorted(cands)[:k]
    return tuple(d for _, _, d in sorted(top, key=lambda t: t[1]))


# ---------------------------------------------------------------- state


def _rec(view: Any, did: str, r: Rules) -> dict:
    got = view.peek(NODE_PREFIX + did) if hasattr(view, "peek") else view.get(NODE_PREFIX + did)
    return default_record(r) if got is None else got


def _sealers_of(view: Any, epoch: int) -> SealerSet | None:
    got = view.get(_SEALERS + str(epoch))
    return None if got is None else SealerSet(tuple(got))


def begin_block(view: Any, ctx: BlockContext) -> None:
    """Count block h's certificate (carried by block h+1 = `ctx`), record the
    epoch's set and the previous block's hash. Runs before the block's txs."""
    r = Rules.of(ctx.genesis.params)  # type: ignore[union-attr]
    if _SEALERS + str(ctx.epoch) not in view:
        view.put(_SEALERS + str(ctx.epoch), list(ctx.sealers.members))
    recent = view.get(_RECENT)
    hashes = [*([] if recent is None else recent[1]), ctx.prev_hash][-RECENT_BLOCKS:]
    view.put(_RECENT, [ctx.height - len(hashes), hashes])
    lc, last = ctx.last_commit, ctx.last_sealers
    if lc is None or last is None:
        return  # block 1 (or a block from before certificates were carried)
    signed = set(lc.signers())
    for did in last.members:
        rec = _rec(view, did, r)
        new = after_signed(rec, r) if did in signed else after_missed(rec, r)
        if new != rec:
            view.put(NODE_PREFIX + did, new)


def genesis_eligible(view: Any, did: str, ctx: BlockContext) -> bool:
    """KV chains: every genesis node may seal."""
    return did in ctx.genesis.node_ids()  # type: ignore[union-attr]


def registry_eligible(view: Any, did: str, ctx: BlockContext) -> bool:
    """Contracts: a genesis node whose did is the current key of an active registered node."""
    if did not in ctx.genesis.node_ids():  # type: ignore[union-attr]
        return False
    res = resolve_key(view, did, ctx.height, 0)
    return res is not None and res.valid and res.type == "node"


def next_sealers(view: Any, ctx: BlockContext, eligible: Eligible = registry_eligible) -> SealerSet:
    """The set of epoch ``ctx.epoch + 1`` (see the module doc)."""
    r = Rules.of(ctx.genesis.params)  # type: ignore[union-attr]
    scores = [(d, _rec(view, d, r)["score"]) for d in ctx.genesis.node_ids()  # type: ignore[union-attr]
              if eligible(view, d, ctx)]
    top = rank(scores, r.sealer_count, r.floor)
    return SealerSet(top) if top else ctx.sealers


# ---------------------------------------------------------------- transactions


def heartbeat(tc: TxContext, p: dict, eligible: Eligible = registry_eligible) -> dict:
    """``reputation.heartbeat {height, hash}`` from a backup's node key."""
    check_fields(p, ("height", "hash"))
    ctx = tc.block
    if not ctx.reputation:
        raise Refused("REPUTATION_OFF", "this chain does not keep reputation (sealer_count is 0)")
    ref = check_int(p["height"], "height", 1)
    if type(p["hash"]) is not bytes or len(p["hash"]) != 32:
        raise Refused("BAD_PAYLOAD", "hash must be 32 bytes")
    did = tc.submitter
    if not eligible(tc.state, did, ctx):
        raise Refused("NOT_A_NODE", "the submitter is not an active node of this ledger")
    if did in ctx.sealers:
        raise Refused("IS_SEALER", "sealers gain reputation by signing certificates, not heartbeats")
    first, hashes = tc.state.get(_RECENT) or (ctx.height, [])
    if not first <= ref < first + len(hashes):
        raise Refused("STALE_HEARTBEAT", f"height must be one of the last {RECENT_BLOCKS} blocks")
    if hashes[ref - first] != p["hash"]:
        raise Refused("BAD_HEARTBEAT", f"hash is not the hash of block {ref}")
    r = Rules.of(ctx.genesis.params)  # type: ignore[union-attr]
    rec = _rec(tc.state, did, r)
    if rec["hb"] and ref < rec["hb"] + r.heartbeat_interval:
        raise Refused("HEARTBEAT_TOO_SOON", f"one heartbeat per {r.heartbeat_interval} blocks "
                                            f"(last named block {rec['hb']})")
    new = after_heartbeat(rec, r, ref)
    tc.state.put(NODE_PREFIX + did, new)
    return {"node": did, "score": new["score"]}


def evidence(tc: TxContext, p: dict, eligible: Eligible = registry_eligible) -> dict:
    """``reputation.evidence``: see `evidence.EquivocationEvidence` for the payload and codes."""
    ctx = tc.block
    if not ctx.reputation:
        raise Refused("REPUTATION_OFF", "this chain does not keep reputation (sealer_count is 0)")
    ev = EquivocationEvidence.from_payload(p)
    g = ctx.genesis
    epoch = epoch_of(ev.height, g.params.epoch_length)  # type: ignore[union-attr]
    sealers = ctx.sealers if epoch == ctx.epoch else _sealers_of(tc.state, epoch)
    if epoch == 0 and sealers is None:
        sealers = g.sealers  # type: ignore[union-attr]
    verify_evidence(ev, g.chain_id, g.node_ids(), sealers, _verify)  # type: ignore[union-attr]
    key = _OFFENCE + ev.offence()
    if key in tc.state:
        raise Refused("EVIDENCE_REPLAYED", "this offence (accused, view, height) was punished before")
    tc.state.put(key, [tc.height, tc.index])
    r = Rules.of(g.params)  # type: ignore[union-attr]
    new = after_offence(_rec(tc.state, ev.node, r), r)
    tc.state.put(NODE_PREFIX + ev.node, new)
    return {"node": ev.node, "score": new["score"]}


def _verify(did: str, msg: bytes, sig: bytes) -> bool:
    return verify_signature(did, msg, sig)


METHODS = {"heartbeat": heartbeat, "evidence": evidence}


# ---------------------------------------------------------------- queries


def table(records: Mapping[str, Mapping], genesis: Any, sealers: SealerSet | None,
          ids: Mapping[str, str] | None = None) -> list[dict]:
    """One row per genesis node, in genesis order: ``{node, did, id, score,
    missed, heartbeat, offences, sealer, above_floor}`` (`records`: did ->
    record, absent = default; `ids`: did -> registry id)."""
    r = Rules.of(genesis.params)
    rows = []
    for n in genesis.nodes:
        rec = records.get(n.did) or default_record(r)
        rows.append({"node": n.name, "did": n.did, "id": (ids or {}).get(n.did), "score": rec["score"],
                     "missed": rec["missed"], "heartbeat": rec["hb"], "offences": rec["offences"],
                     "sealer": sealers is not None and n.did in sealers, "above_floor": rec["score"] >= r.floor})
    return rows


class History:
    """Each height's reputation records, kept where they changed (bounded), for
    ``/reputation?height=``: `note` after each applied block, `at` to read."""

    def __init__(self, keep: int = 4096) -> None:
        self.keep = keep
        self.current: dict[str, dict] = {}
        self._heights: list[int] = []
        self._snaps: list[dict[str, dict]] = []
        self.pruned_below = 0  # heights below this are no longer answerable

    def note(self, height: int, changed: Mapping[str, bytes | None]) -> None:
        """`changed`: the block's writes of ``rep/node/*`` keys (canonical bytes)."""
        if not changed:
            return
        cur = dict(self.current)
        for k, v in changed.items():
            did = k[len(NODE_PREFIX):]
            if v is None:
                cur.pop(did, None)
            else:
                cur[did] = canonical.decode(v)
        self.current = cur
        self._heights.append(height)
        self._snaps.append(cur)
        if len(self._heights) > self.keep:
            self.pruned_below = self._heights[1]
            del self._heights[0], self._snaps[0]

    def at(self, height: int) -> dict[str, dict] | None:
        """did -> record after block `height`; None once pruned."""
        if height < self.pruned_below:
            return None
        i = bisect.bisect_right(self._heights, height)
        return self._snaps[i - 1] if i else {}


def changed_records(writes: Mapping[str, bytes | None]) -> dict[str, bytes | None]:
    """The ``rep/node/*`` entries of a block's writes."""
    return {k: v for k, v in writes.items() if k.startswith(NODE_PREFIX)}


# ---------------------------------------------------------------- the KV app


class KVBook:
    """Reputation for `ledger.executor.KVExecutor` (every genesis node eligible):
    the same rules over its separate ``rep`` map (canonical bytes)."""

    def __init__(self, base: dict[str, bytes], ctx: BlockContext) -> None:
        self.base = base
        self.ctx = ctx
        self.block: dict[str, bytes | None] = {}
        v = _TxView(base, self.block)
        begin_block(v, ctx)
        self.block.update(v.writes)

    def run(self, index: int, tx: Transaction) -> dict:
        method = tx.kind.partition(".")[2]
        fn = {"heartbeat": heartbeat, "evidence": evidence}.get(method)
        if fn is None:
            return refusal("UNKNOWN_KIND", f"no contract method for kind {tx.kind[:64]!r}")
        if not isinstance(tx.payload, dict):
            return refusal("BAD_PAYLOAD", f"{tx.kind}: payload must be a map")
        v = _TxView(self.base, self.block)
        try:
            extra = fn(TxContext(self.ctx, index, tx, v), tx.payload, genesis_eligible)
        except Refused as r:
            return refusal(r.code, r.message)
        self.block.update(v.writes)
        return ok(**extra)

    def next_sealers(self) -> SealerSet:
        return next_sealers(_TxView(self.base, self.block), self.ctx, genesis_eligible)

    def changed(self) -> dict[str, bytes | None]:
        """This block's writes of node records (for `History.note`)."""
        return {k: v for k, v in self.block.items() if k.startswith(NODE_PREFIX) and self.base.get(k) != v}

    def merged(self) -> dict[str, bytes]:
        out = dict(self.base)
        for k, v in self.block.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = v
        return out


# ---------------------------------------------------------------- node side


class Reporter:
    """What a node submits so that reputation sees it (used by `ledger.node` and the tests).

    * evidence: each equivocation its replica caught (`Replica.evidence`),
      once, as ``reputation.evidence``;
    * heartbeats, while a backup: ``reputation.heartbeat`` naming its tip,
      once ``rep_heartbeat_interval`` blocks have passed since the last one
      it sent, and only if the tip holds a tx that is not a heartbeat, so
      heartbeats alone never keep an idle chain producing blocks.

    `nonce` is the first nonce (a node uses the time in microseconds, as the client does).
    """

    def __init__(self, key: Any, nonce: int = 0) -> None:
        self.key = key
        self.nonce = nonce
        self.last_ref = 0
        self._evidence_seen = 0
        self._offences: set[str] = set()

    def _tx(self, kind: str, payload: dict) -> Transaction:
        self.nonce += 1
        return Transaction.create(self.key, self.nonce, kind, payload)

    def due(self, replica: Any) -> list[Transaction]:
        """Transactions to submit now (call after each commit or timer)."""
        if replica.params.sealer_count <= 0:
            return []
        out = []
        from .evidence import from_equivocation

        for e in replica.evidence[self._evidence_seen:]:
            ev = from_equivocation(e)
            if ev.offence() not in self._offences:
                self._offences.add(ev.offence())
                out.append(self._tx("reputation.evidence", ev.to_payload()))
        self._evidence_seen = len(replica.evidence)
        h = replica.height
        if replica.is_sealer or h < 1 or h < self.last_ref + replica.params.rep_heartbeat_interval:
            return out
        got = replica.block_at(h)
        if got is None or all(tx.kind == "reputation.heartbeat" for tx in got[0].txs):
            return out
        self.last_ref = h
        out.append(self._tx("reputation.heartbeat", {"height": h, "hash": replica.last_hash}))
        return out


def report(history: History, genesis: Any, height: int, sealers: SealerSet | None,
           ids: Mapping[str, str] | None = None) -> dict | None:
    """What ``GET /reputation?height=`` answers: the table after block `height`
    (rows in genesis order, `sealers` the set deciding block ``height + 1``)
    with its canonical bytes, identical on every node; None once pruned."""
    recs = history.at(height)
    if recs is None:
        return None
    rows = table(recs, genesis, sealers, ids)
    names = {n.did: n.name for n in genesis.nodes}
    p = genesis.params
    return {"height": height, "enabled": p.sealer_count > 0, "sealer_count": p.sealer_count,
            "floor": p.rep_floor, "max": p.rep_max,
            "sealers": [] if sealers is None else [names.get(d, d) for d in sealers.members],
            "rows": rows, "canonical": canonical.encode(rows).hex()}


def own_score(history: History, genesis: Any, did: str) -> int:
    """A node's current score (the ``sealstream_ledger_reputation`` gauge)."""
    rec = history.current.get(did)
    return genesis.params.rep_initial if rec is None else rec["score"]
