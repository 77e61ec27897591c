"""Deterministic, seeded simulation of a ledger cluster (Twins-style).

Drives the real `Replica` with a simulated network: messages are delayed,
dropped, duplicated and reordered; nodes crash and restart (a restart is a
new `Replica` built from the blocks and the last `SafetyState` the node
persisted, round-tripped through its canonical bytes as a node's SQLite
state table would). A crash can also strike in the middle of one event's
effects: right after a `Persist` (before the messages it guards leave),
or part-way through a broadcast (after some recipients got a PREPARE/COMMIT
and before the next `Persist`); the effects after it are lost, as a
SIGKILL would lose them. Partitions come and
heal; Byzantine nodes are *twins* (two replicas sharing one key) or an
*equivocating primary* (sends conflicting signed proposals). Everything is
drawn from `random.Random(seed)`, so a seed replays a run exactly.

`Simulation.check()` asserts the invariants after every step: no two honest
replicas commit different blocks at one height, heights never go backwards,
every commit certificate verifies, no honest node (across its restarts)
signs two PRE-PREPAREs, PREPAREs or COMMITs with different digests for one
(view, height), and every such message leaves only after a `Persist`
recording it; `check_liveness()` asserts that every
request submitted to an honest majority is committed on every honest replica
once the network has healed, unless mempool admission refused it (issue 16:
the app's rule against the committed state, e.g. an unregistered submitter, or
a full mempool) and no honest replica committed it: a refused tx is answered at
once and never ordered (`refused`).
"""

from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass, field, replace
from typing import Any

from trust import canonical
from trust.identity import KeyPair, verify_signature

from .values import Block, CommitCertificate, Genesis, Params, Transaction
from .consensus import (
    Broadcast,
    CancelTimer,
    CommitBlock,
    MessageReceived,
    Persist,
    Replica,
    Reply,
    RequestSubmitted,
    RequestsSubmitted,
    SafetyState,
    Send,
    SetTimer,
    Tick,
    TimerFired,
)
from .errors import LedgerError
from .executor import KVExecutor
from .messages import Commit, Message, NewView, PrePrepare, Prepare

__all__ = ["SimConfig", "Simulation", "InvariantViolation", "CachingVerifier", "scenario", "run_seed"]

#: refusal codes of mempool admission (`ledger._consensus.mempool`, `ledger.contracts.admission`)
ADMISSION_CODES = frozenset({"NOT_REGISTERED", "REVOKED", "INSUFFICIENT_QUOTA", "mempool-full", "org-busy"})


class InvariantViolation(LedgerError, AssertionError):
    """A safety or liveness invariant failed in a simulation run."""


class CachingVerifier:
    """Memoises Ed25519 verifications (same answers, less CPU across replicas)."""

    def __init__(self) -> None:
        self.cache: dict[tuple[str, bytes, bytes], bool] = {}

    def __call__(self, did: str, msg: bytes, sig: bytes) -> bool:
        key = (did, msg, sig)
        got = self.cache.get(key)
        if got is None:
            got = verify_signature(did, msg, sig)
            if len(self.cache) > 200_000:
                self.cache.clear()
            self.cache[key] = got
        return got


@dataclass
class SimConfig:
    """One scenario. Times in simulated milliseconds."""

    seed: int
    n_sealers: int = 4
    n_backups: int = 0
    n_txs: int = 6
    chaos_ms: int = 2000
    max_ms: int = 30_000
    drop: float = 0.0
    dup: float = 0.0
    min_delay: int = 1
    max_delay: int = 20
    partition: bool = False
    crash: int = 0  # nodes crashed (and restarted) during chaos
    twins: bool = False
    equivocate: bool = False
    executor: Any = KVExecutor  # factory: () -> Executor
    params: Params = field(default_factory=lambda: Params(
        max_block_txs=4, block_time_ms=30, checkpoint_interval=3, view_change_timeout_ms=300,
        max_view_change_timeout_ms=5000, status_interval_ms=250, fetch_timeout_ms=300, fetch_batch=8,
        epoch_length=1000,
    ))


@dataclass
class _Instance:
    name: str
    node_id: str
    key: KeyPair
    replica: Replica | None = None
    alive: bool = True
    incarnation: int = 0
    persisted: list[tuple[Block, CommitCertificate]] = field(default_factory=list)
    safety: SafetyState | None = None  # the last Persist that completed
    crash_mode: str | None = None  # "after_persist" | "mid_send": crash inside the next such effect
    timers: dict[tuple, int] = field(default_factory=dict)
    honest: bool = True
    group: int = 0
    equivocate: bool = False


class Simulation:
    """A seeded cluster of real replicas over a simulated network."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        n = cfg.n_sealers + cfg.n_backups
        self.keys = [KeyPair.from_seed(hashlib.sha256(f"sim-node-{i}".encode()).digest()) for i in range(n)]
        self.ids = [k.did for k in self.keys]
        self.genesis = Genesis.create(f"sim-{cfg.seed}", self.ids, cfg.n_sealers, cfg.params)
        self.verify = CachingVerifier()
        self.now = 0
        self._seq = 0
        self._queue: list[tuple[int, int, str, Any]] = []
        self.instances: list[_Instance] = []
        self.byzantine: set[str] = set()
        self.drop = cfg.drop
        self.dup = cfg.dup
        self.partitioned = False
        self.committed: dict[int, bytes] = {}  # height -> block hash (honest)
        self.max_height: dict[str, int] = {}
        self.submitted: dict[bytes, Transaction] = {}
        #: tx id -> the admission code an honest sealer answered it with (never ordered there)
        self.refused: dict[bytes, str] = {}
        self.steps = 0
        self.log: list[str] = []
        self.signed: dict[tuple[str, str, int, int], bytes] = {}  # (node, kind, view, height) -> digest
        self.mid_effect_crashes = 0
        self.rejoined = 0  # restarts that rejoined the view they crashed in (from a SafetyState)
        for i, key in enumerate(self.keys):
            self.instances.append(_Instance(f"n{i}", key.did, key))
        if cfg.twins:
            # the twin shares node 1's key (node 1 may be primary of view 1)
            bad = self.instances[1 % n]
            bad.honest = False
            twin = _Instance(bad.name + "'", bad.node_id, bad.key, honest=False)
            self.instances.append(twin)
            self.byzantine.add(bad.node_id)
        if cfg.equivocate:
            bad = self.instances[0]  # primary of view 0
            bad.honest = False
            bad.equivocate = True
            self.byzantine.add(bad.node_id)
        for inst in self.instances:
            self._boot(inst)

    # ------------------------------------------------------------ plumbing

    def _push(self, t: int, kind: str, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (t, self._seq, kind, payload))

    def _boot(self, inst: _Instance) -> None:
        inst.incarnation += 1
        inst.alive = True
        inst.timers.clear()
        safety = None
        if inst.safety is not None:
            # what a node reads back from its SQLite state table
            safety = SafetyState.from_wire(canonical.decode(canonical.encode(inst.safety.to_wire())))
        inst.replica = Replica(self.genesis, inst.node_id, _cached_signer(inst.key), executor=self.cfg.executor(),
                               verify=self.verify, committed=list(inst.persisted), now=self.now, safety=safety)
        if safety is not None and inst.incarnation > 1:
            self.rejoined += 1
        self._effects(inst, inst.replica.start())

    def _deliver_to(self, node_id: str) -> list[_Instance]:
        return [i for i in self.instances if i.node_id == node_id]

    def _send(self, src: _Instance, to: str, msg: Message) -> None:
        for dst in self._deliver_to(to):
            if dst is src:
                continue
            if self.partitioned and src.group != dst.group:
                continue
            if self.rng.random() < self.drop:
                continue
            copies = 2 if self.rng.random() < self.dup else 1
            for _ in range(copies):
                delay = self.rng.randint(self.cfg.min_delay, self.cfg.max_delay)
                self._push(self.now + delay, "msg", (dst, dst.incarnation, src.node_id, msg))

    def _signed_check(self, inst: _Instance, msg: Message, first: bool = True) -> None:
        """Honest nodes never sign conflicting votes, and persist each before it
        first leaves (`first=False`: a NEW-VIEW forwarded to a late replica)."""
        if not inst.honest or getattr(msg, "sender", None) != inst.node_id:
            return
        if isinstance(msg, NewView):
            if msg.preprepare is None:
                return
            msg = msg.preprepare
        if isinstance(msg, PrePrepare):
            kind, vote, field_ = "preprepare", (msg.view, msg.height, msg.digest), "preprepare"
        elif isinstance(msg, Prepare):
            kind, vote, field_ = "prepare", (msg.view, msg.height, msg.digest), "prepare"
        elif isinstance(msg, Commit):
            kind, vote, field_ = "commit", (msg.view, msg.height, msg.digest), "commit"
        else:
            return
        key = (inst.node_id, kind, vote[0], vote[1])
        have = self.signed.setdefault(key, vote[2])
        if have != vote[2]:
            self._fail(f"SAFETY: {inst.name} signed two {kind}s for view {vote[0]} height {vote[1]}")
        st = inst.safety
        if not first:
            return
        if st is None or getattr(st, field_) != vote or st.view < vote[0]:
            self._fail(f"{inst.name} sent a {kind} {vote[:2]} that its persisted state does not record")

    def _effects(self, inst: _Instance, effects: list) -> None:
        for e in effects:
            if not inst.alive:
                return  # crashed part-way: the rest of this event's effects are lost
            if isinstance(e, Send):
                self._signed_check(inst, e.msg, first=not isinstance(e.msg, NewView))
                if inst.crash_mode == "mid_send" and isinstance(e.msg, (Prepare, Commit, PrePrepare)):
                    self._crash_now(inst, "before a send")
                    return
                self._send(inst, e.to, e.msg)
            elif isinstance(e, Persist):
                inst.safety = e.state
                if inst.crash_mode == "after_persist":
                    self._crash_now(inst, "after a persist")
            elif isinstance(e, Broadcast):
                self._signed_check(inst, e.msg)
                if inst.equivocate and isinstance(e.msg, PrePrepare):
                    self._equivocate(inst, e)
                    continue
                if inst.crash_mode == "mid_send" and isinstance(e.msg, (Prepare, Commit, PrePrepare, NewView)):
                    # some recipients get it, then the node dies before its next Persist
                    k = self.rng.randint(0, len(e.to))
                    for to in e.to[:k]:
                        self._send(inst, to, e.msg)
                    self._crash_now(inst, f"after sending {type(e.msg).__name__} to {k}/{len(e.to)}")
                    return
                for to in e.to:
                    self._send(inst, to, e.msg)
            elif isinstance(e, SetTimer):
                gen = inst.timers.get(e.timer_id, 0) + 1
                inst.timers[e.timer_id] = gen
                self._push(self.now + max(1, e.delay), "timer", (inst, inst.incarnation, e.timer_id, gen))
            elif isinstance(e, CancelTimer):
                inst.timers[e.timer_id] = inst.timers.get(e.timer_id, 0) + 1
            elif isinstance(e, CommitBlock):
                self._on_commit(inst, e)
            elif isinstance(e, Reply):
                err = e.result.get("error") if isinstance(e.result, dict) else None
                if err in ADMISSION_CODES and inst.honest:
                    self.refused.setdefault(e.tx_id, err)

    def _equivocate(self, inst: _Instance, e: Broadcast) -> None:
        """Byzantine primary: a second, equally valid block for half the sealers."""
        pp: PrePrepare = e.msg  # type: ignore[assignment]
        hdr = pp.block.header
        alt_block = Block(replace(hdr, time=hdr.time + 1), pp.block.txs)
        alt = PrePrepare(pp.sender, pp.view, pp.height, alt_block).sign(self.genesis.chain_id, inst.key.sign)
        for i, to in enumerate(e.to):
            self._send(inst, to, pp if i % 2 == 0 else alt)

    def _on_commit(self, inst: _Instance, e: CommitBlock) -> None:
        inst.persisted.append((e.block, e.cert))
        if not inst.honest:
            return
        h = e.block.height
        bh = e.block.block_hash()
        try:
            sealers = inst.replica.sealers_at(h)  # type: ignore[union-attr]
            assert sealers is not None
            e.cert.verify(self.genesis.chain_id, sealers, self.verify)
        except Exception as exc:  # noqa: BLE001 - reported as invariant failure
            self._fail(f"{inst.name} committed height {h} with a bad certificate: {exc}")
        if e.cert.block_hash != bh:
            self._fail(f"{inst.name}: certificate for another block at {h}")
        have = self.committed.get(h)
        if have is None:
            self.committed[h] = bh
        elif have != bh:
            self._fail(f"SAFETY: {inst.name} committed {bh.hex()[:12]} at height {h}, others {have.hex()[:12]}")

    def _fail(self, what: str) -> None:
        raise InvariantViolation(f"seed {self.cfg.seed} t={self.now}ms: {what}")

    # ------------------------------------------------------------ driving

    def submit(self, tx: Transaction, to: list[str]) -> None:
        self.submitted[tx.tx_id] = tx
        for nid in to:
            for inst in self._deliver_to(nid):
                self._push(self.now, "submit", (inst, inst.incarnation, tx))

    def submit_many(self, txs: list[Transaction], to: list[str]) -> None:
        """Hand `txs` to each node of `to` in one event (`RequestsSubmitted`, as a client frame does)."""
        for tx in txs:
            self.submitted[tx.tx_id] = tx
        for nid in to:
            for inst in self._deliver_to(nid):
                self._push(self.now, "submit", (inst, inst.incarnation, tuple(txs)))

    def step(self) -> bool:
        if not self._queue:
            return False
        t, _, kind, payload = heapq.heappop(self._queue)
        self.now = max(self.now, t)
        self.steps += 1
        if kind == "call":
            payload()
        else:
            inst, inc = payload[0], payload[1]
            if not inst.alive or inc != inst.incarnation:
                return True
            rep = inst.replica
            assert rep is not None
            rep.handle(Tick(self.now))
            if kind == "msg":
                _, _, sender, msg = payload
                self._effects(inst, rep.handle(MessageReceived(sender, msg)))
            elif kind == "timer":
                _, _, tid, gen = payload
                if inst.timers.get(tid) != gen:
                    return True
                self._effects(inst, rep.handle(TimerFired(tid)))
            elif kind == "submit":
                if isinstance(payload[2], tuple):
                    self._effects(inst, rep.handle(RequestsSubmitted(payload[2], client="sim")))
                else:
                    self._effects(inst, rep.handle(RequestSubmitted(payload[2], client="sim")))
        self.check()
        return True

    def check(self) -> None:
        """Per-step invariants: heights never go backwards (safety is checked at commit)."""
        for inst in self.instances:
            if not inst.honest or inst.replica is None or not inst.alive:
                continue
            h = inst.replica.height
            if h < self.max_height.get(inst.name, 0):
                self._fail(f"{inst.name} height went back from {self.max_height[inst.name]} to {h}")
            self.max_height[inst.name] = h

    def at(self, t: int, fn: Any) -> None:
        self._push(t, "call", fn)

    def crash(self, inst: _Instance) -> None:
        inst.alive = False
        inst.replica = None
        inst.crash_mode = None
        self.log.append(f"t={self.now} crash {inst.name}")

    def _crash_now(self, inst: _Instance, where: str) -> None:
        self.mid_effect_crashes += 1
        self.log.append(f"t={self.now} crash {inst.name} {where}")
        self.crash(inst)

    def crash_inside(self, inst: _Instance, mode: str, within: int = 400) -> None:
        """Crash `inst` inside the next effect of `mode` ("after_persist" or
        "mid_send"), or at an event boundary after `within` ms if none comes."""
        if not inst.alive:
            return
        inst.crash_mode = mode
        inc = inst.incarnation
        self.at(self.now + within, lambda: self.crash(inst) if inst.alive and inst.incarnation == inc else None)

    def restart(self, inst: _Instance) -> None:
        if inst.alive and inst.crash_mode is not None:
            self.crash(inst)  # an armed crash that has not struck yet
        if not inst.alive:
            self.log.append(f"t={self.now} restart {inst.name} at {len(inst.persisted)}")
            self._boot(inst)

    def heal(self) -> None:
        self.partitioned = False
        self.drop = 0.0
        self.log.append(f"t={self.now} heal")

    def honest_live(self) -> list[_Instance]:
        return [i for i in self.instances if i.honest and i.alive and i.replica is not None]

    def done(self) -> bool:
        live = self.honest_live()
        if not live:
            return False
        for tid in self.submitted:
            if tid in self.refused and not any(tid in i.replica.tx_index for i in live):  # type: ignore[union-attr]
                continue
            for inst in live:
                if tid not in inst.replica.tx_index:  # type: ignore[union-attr]
                    return False
        hs = {i.replica.height for i in live}  # type: ignore[union-attr]
        return len(hs) == 1

    def run_until(self, t_end: int, stop_when_done: bool = False) -> None:
        while self._queue and self._queue[0][0] <= t_end:
            self.step()
            if stop_when_done and self.steps % 50 == 0 and self.done():
                return
        self.now = max(self.now, t_end)

    def check_liveness(self) -> None:
        live = self.honest_live()
        for tid, tx in self.submitted.items():
            if tid in self.refused and not any(tid in i.replica.tx_index for i in live):  # type: ignore[union-attr]
                continue  # refused at admission, answered at once, ordered nowhere
            for inst in live:
                rep = inst.replica
                assert rep is not None  # a live instance has its replica
                if tid not in rep.tx_index:
                    self._fail(
                        f"LIVENESS: tx {tid.hex()[:12]} (nonce {tx.nonce}) not committed on {inst.name} "
                        f"(height {rep.height}, view {rep.view}, changing {rep.changing}, "
                        f"mempool {len(rep.mempool)}) after healing"
                    )
        hs = {i.name: i.replica.height for i in live}  # type: ignore[union-attr]
        if len(set(hs.values())) > 1:
            self._fail(f"LIVENESS: honest heights differ after healing: {hs}")


def _cached_signer(key: KeyPair) -> Any:
    cache: dict[bytes, bytes] = {}

    def sign(msg: bytes) -> bytes:
        got = cache.get(msg)
        if got is None:
            got = key.sign(msg)  # Ed25519 is deterministic: caching changes nothing
            if len(cache) > 50_000:
                cache.clear()
            cache[msg] = got
        return got

    return sign


def scenario(seed: int) -> SimConfig:
    """The random scenario of `seed`: faults, delays and load."""
    r = random.Random(seed * 7919 + 1)
    kind = r.choice(["clean", "lossy", "lossy", "partition", "crash", "crash", "twins", "equivocate"])
    cfg = SimConfig(seed=seed)
    cfg.n_sealers = r.choice([4, 4, 4, 5, 7])
    cfg.n_backups = r.choice([0, 0, 0, 1, 2])
    cfg.n_txs = r.randint(1, 14)
    cfg.max_delay = r.choice([5, 20, 60, 150])
    cfg.dup = r.choice([0.0, 0.05, 0.2])
    if kind in ("lossy", "partition", "crash"):
        cfg.drop = r.choice([0.02, 0.1, 0.25])
    cfg.partition = kind == "partition" or (kind == "crash" and r.random() < 0.3)
    cfg.crash = (1 if cfg.n_sealers < 7 else r.choice([1, 2])) if kind == "crash" else 0
    cfg.twins = kind == "twins"
    cfg.equivocate = kind == "equivocate"
    return cfg


def run_seed(seed: int, cfg: SimConfig | None = None) -> Simulation:
    """Run one scenario to the end; raises `InvariantViolation` on any failure."""
    cfg = cfg or scenario(seed)
    sim = Simulation(cfg)
    r = random.Random(seed)
    honest_ids = sorted({i.node_id for i in sim.instances if i.node_id not in sim.byzantine})
    clients = [KeyPair.from_seed(hashlib.sha256(f"client-{seed}-{c}".encode()).digest()) for c in range(2)]
    nonces = [0, 0]
    majority = len(honest_ids) // 2 + 1
    batch: list[tuple[Transaction, int, list[str]]] = []
    for j in range(cfg.n_txs):
        c = r.randrange(2)
        nonces[c] += 1
        tx = Transaction.create(clients[c], nonces[c], "kv.put", {"key": f"k{j % 3}", "value": j})
        t = r.randint(0, cfg.chaos_ms)
        to = r.sample(honest_ids, r.randint(majority, len(honest_ids)))
        if seed % 3 == 2:
            # a third of the seeds hand requests over in batches of up to 3 (one client frame)
            batch.append((tx, t, to))
            if len(batch) == 3 or j == cfg.n_txs - 1:
                txs, t0, to0 = [b[0] for b in batch], batch[0][1], batch[0][2]
                sim.at(t0, lambda txs=txs, to=to0: sim.submit_many(txs, to))
                batch = []
        else:
            sim.at(t, lambda tx=tx, to=to: sim.submit(tx, to))
    if cfg.partition:
        start = r.randint(0, cfg.chaos_ms // 2)

        def split() -> None:
            sim.partitioned = True
            for inst in sim.instances:
                inst.group = r.randrange(2)
            sim.log.append(f"t={sim.now} partition")

        sim.at(start, split)
        sim.at(r.randint(start, cfg.chaos_ms), lambda: setattr(sim, "partitioned", False))
    crashed: list[_Instance] = []
    cfg.crash = min(cfg.crash, max(0, (cfg.n_sealers - 1) // 3 - len(sim.byzantine)))
    for _ in range(cfg.crash):
        victim = r.choice([i for i in sim.instances if i.honest])
        t0 = r.randint(0, cfg.chaos_ms)
        t1 = r.randint(t0, cfg.chaos_ms + 500)
        mode = r.choice(["boundary", "after_persist", "mid_send"])
        if mode == "boundary":
            sim.at(t0, lambda v=victim: sim.crash(v))
        else:
            sim.at(t0, lambda v=victim, m=mode: sim.crash_inside(v, m))
        sim.at(t1, lambda v=victim: sim.restart(v))
        crashed.append(victim)
    sim.at(cfg.chaos_ms, sim.heal)
    sim.run_until(cfg.chaos_ms + 500)
    for v in crashed:
        sim.restart(v)
    sim.run_until(cfg.max_ms, stop_when_done=True)
    sim.check_liveness()
    return sim
