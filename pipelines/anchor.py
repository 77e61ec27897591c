"""Anchoring (DESIGN.md step 7): sealed statements -> RFC 9162 batches -> ANCHOR on the ledger.

`Anchorer` is the blocking, idempotent core; the Faust agent (`pipelines.app`)
feeds it windows of ``iiot.sealed`` and tests call it directly::

    anchorer = Anchorer.from_settings(settings, gateway="gw-1")
    batches = anchorer.anchor_statements(hashes)   # stored statements -> anchored BatchRecords
    anchorer.close()

One batch, step by step (each step survives a crash at any point):

1. `add(leaves)`: drop statements already in a batch, cut the rest (at most
   `max_leaves` per batch, ordered by ``(ts, hash)``), and write each batch
   and its leaves in one transaction, state ``pending``.  The id is a function
   of the root (`pipelines._anchor_plan.batch_id_for`); a statement is in at
   most one batch (unique in ``batch_leaves``), so a batch written
   concurrently by another worker makes this one re-cut the rest.
2. `submit(batch_id)`: write ``manifests/<batch_id>`` (immutable, idempotent);
   resolve a batch left ``submitted`` by a crash by asking the ledger; claim
   it (``pending|failed -> submitted``, one winner); ask the ledger again
   (``anchors`` lookup by batch id) and only if it does not know the batch,
   submit ANCHOR signed by the gateway key.  ``DUPLICATE_BATCH`` means
   "already anchored": look it up and record it.  Any failure records
   ``failed`` with the reason and raises `AnchorError`; the caller retries.
3. On commit: `publish` (``iiot.anchors``), then ``anchored`` with
   ``(height, tx_index)``.  The ledger refuses a second ANCHOR for one batch
   id, so a batch is never anchored twice, whatever crashed where.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from ledger.client import TxRefused
from storage import BatchConflict, InvalidTransition, Manifest, StorageError
from storage.blobs import BlobStore
from storage.readers import Reader
from storage.records import BatchRecord, manifest_key, ms_to_datetime, raw_key
from storage.writers import Writer
from trust.hashes import StatementHash
from trust.receipt import seal_receipt

from ._anchor_metrics import sweep_metrics
from ._anchor_plan import (ANCHOR_KIND, AnchorCommit, BatchPlan, SealedLeaf, anchor_payload, anchor_value,
                           leaf_of_row, plan_batch, sweep_gateways)
from ._testhook import pause
from .metrics import PipelineMetrics

__all__ = ["Anchorer", "AnchorError", "AnchorRefused", "AnchorUnavailable", "AnchorConflict", "AnchorCommit",
           "SealedLeaf", "SweepResult", "window_ms"]

log = logging.getLogger("sealstream.pipeline.anchor")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: Test hook: pause (sleep forever) at a stage so a test can SIGKILL the worker exactly there.
PAUSE_ENV, PAUSE_FILE_ENV = "SEALSTREAM_ANCHOR_TEST_PAUSE", "SEALSTREAM_ANCHOR_TEST_PAUSE_FILE"
STAGES = ("manifest", "committed")


class AnchorError(Exception):
    """Anchoring a batch failed; the batch is kept (``failed``) and retried."""

    def __init__(self, batch_id: str, message: str) -> None:
        self.batch_id = batch_id
        super().__init__(f"batch {batch_id!r}: {message}")


class AnchorRefused(AnchorError):
    """The ledger committed the ANCHOR as refused (`code`: e.g. INSUFFICIENT_QUOTA, UNKNOWN_GATEWAY)."""

    def __init__(self, batch_id: str, code: str, message: str) -> None:
        self.code = code
        super().__init__(batch_id, f"ledger refused ANCHOR: {code} {message}")


class AnchorUnavailable(AnchorError):
    """No answer from the ledger (timeout, nodes unreachable): the outcome is unknown until looked up."""


class AnchorConflict(AnchorError):
    """The ledger holds this batch id with another root or size (never resolved automatically)."""


@dataclass(frozen=True)
class SweepResult:
    """One sweep pass: statements `found` (sealed, in no batch past the grace, of a gateway of our
    ledger), the `batches` written for them (none for those another worker batched first), and
    `waiting`: per reason, the sealing gateways (did -> statements) left alone."""

    found: int
    batches: tuple[BatchRecord, ...]
    waiting: dict[str, dict[str, int]]


def window_ms(batch: BatchRecord) -> tuple[int, int]:
    """A batch's window as ``[start_ms, end_ms]`` (the ANCHOR's ``window``)."""
    one = timedelta(milliseconds=1)
    return (batch.window_start - _EPOCH) // one, (batch.window_end - _EPOCH) // one


def _pause(stage: str, batch_id: str) -> None:
    """The test hook: if $SEALSTREAM_ANCHOR_TEST_PAUSE names `stage`, note the batch and hang."""
    pause(PAUSE_ENV, PAUSE_FILE_ENV, stage, batch_id)


class Anchorer:
    """Batches sealed statements and anchors them for one gateway (blocking; thread-safe).

    `ledger` is a `ledger.client.LedgerClient` whose key is the gateway's
    registered key; `gateway` is the gateway's registry id (also the
    ``batches.gateway`` column and the batch id prefix).  `publish(batch,
    commit, value)` is called once the ledger committed a batch and before it
    is recorded ``anchored`` (the agent produces `value` to ``iiot.anchors``).
    """

    def __init__(self, writer: Writer, reader: Reader, blobs: BlobStore, ledger: Any, gateway: str, *,
                 max_leaves: int = 512, metrics: Optional[PipelineMetrics] = None,
                 publish: Optional[Callable[[BatchRecord, AnchorCommit, bytes], None]] = None,
                 retry_max_s: float = 30.0, stale_s: float = 30.0, parallel: int = 4,
                 adopt_after_s: Optional[float] = None, on_close: Callable[[], None] = lambda: None) -> None:
        self.writer, self.reader, self.blobs, self.ledger = writer, reader, blobs, ledger
        self.gateway = gateway
        self.max_leaves = max_leaves
        self.metrics = metrics
        self.publish = publish
        self.retry_max_s = retry_max_s
        self.stale_s = stale_s
        self._recovered = False  # the first anchor_pending resolves every `submitted` batch (crash leftovers)
        self._on_close = on_close
        self.parallel = parallel  # batches submitted at once by anchor_pending (they share ledger blocks)
        self.adopt_after_s = adopt_after_s  # None/0: never anchor other gateways' stale batches
        self._gateways: dict[str, tuple[float, bool]] = {}  # name -> (expires, a gateway on our ledger)
        self._waiting_logged: dict[str, float] = {}  # sealing gateway did -> when the sweep last logged it
        self._lock = threading.Lock()
        self._inflight: set[str] = set()  # batch ids this process is submitting
        self._backoff: dict[str, tuple[float, float]] = {}  # batch id -> (next attempt, delay)
        self.errors: dict[str, AnchorError] = {}  # batch id -> its last failure (cleared once anchored)

    @classmethod
    def from_settings(cls, settings: Any, *, gateway: Optional[str] = None, ledger: Any = None,
                      **kw: Any) -> "Anchorer":
        """On the stack's PostgreSQL and MinIO and the ledger at ``settings.ledger_home``, signing with
        the gateway key ``<home>/gateway/<gateway>.key`` (default ``settings.pipeline_gateway``)."""
        from storage.db import open_pool

        from .worker import gateway_key

        name = gateway or settings.pipeline_gateway
        pool = open_pool(settings.postgres_dsn_for("pipeline"), max_size=4)
        owned = ledger is None
        if owned:
            from ledger.client import LedgerClient

            ledger = LedgerClient.from_layout(settings.ledger_home, key=gateway_key(Path(settings.home), name))

        def close() -> None:
            pool.close()
            if owned:
                ledger.close()

        kw.setdefault("max_leaves", settings.pipeline_anchor_max_leaves)
        kw.setdefault("adopt_after_s", settings.pipeline_anchor_adopt_after_s)
        return cls(Writer(pool), Reader(pool), BlobStore.from_settings(settings, "pipeline"), ledger, name,
                   on_close=close, **kw)

    def close(self) -> None:
        self._on_close()

    # -- 1. cut and record batches -------------------------------------------------

    def add(self, leaves: Iterable[SealedLeaf]) -> list[BatchRecord]:
        """Record pending batches for those of `leaves` not in any batch yet; the batches written."""
        todo = {bytes(lf.statement_hash): lf for lf in leaves}
        written: list[BatchRecord] = []
        if todo:
            stored = self.reader.statement_times(todo)
            absent = [h for h in todo if h not in stored]  # sealed against another database: not ours
            if absent:
                log.warning("%d seal(s), e.g. of statement %s: not in this database, never anchored here",
                            len(absent), absent[0].hex())
                if self.metrics:
                    self.metrics.anchor_skipped.labels("not-stored").inc(len(absent))
                for h in absent:
                    del todo[h]
        for _ in range(10):  # each conflict means another worker batched some of them: re-cut
            for h in self.reader.batched(todo):
                todo.pop(bytes(h), None)
            if not todo:
                return written
            ordered = sorted(todo.values(), key=lambda lf: (lf.ts_ms, bytes(lf.statement_hash)))
            try:
                for i in range(0, len(ordered), self.max_leaves):
                    plan = plan_batch(ordered[i:i + self.max_leaves], self.gateway)
                    assert plan is not None
                    written.append(self._write(plan))
                    for h in plan.leaves:
                        todo.pop(bytes(h), None)
                return written
            except BatchConflict as exc:
                log.info("re-cutting a window: %s", exc)
        raise AnchorError("?", f"could not cut a batch of {len(todo)} statements after 10 conflicts")

    def _write(self, plan: BatchPlan) -> BatchRecord:
        rec = BatchRecord(plan.batch_id, plan.root, plan.tree_size, ms_to_datetime(plan.window_start_ms),
                          ms_to_datetime(plan.window_end_ms), manifest_key(plan.batch_id), self.gateway)
        self.writer.write_batch(rec, plan.leaves)
        log.info("batch %s: %d leaves pending", plan.batch_id, plan.tree_size)
        return self.reader.batch(plan.batch_id) or rec

    # -- 2./3. submit ----------------------------------------------------------------

    def submit(self, batch_id: str) -> BatchRecord:
        """Anchor one recorded batch (one attempt); the anchored record, or `AnchorError`."""
        with self._lock:
            if batch_id in self._inflight:
                raise AnchorError(batch_id, "already being submitted by this process")
            self._inflight.add(batch_id)
        try:
            return self._submit(batch_id)
        finally:
            with self._lock:
                self._inflight.discard(batch_id)

    def _reseal(self, batch_id: str) -> None:
        """Seal an adopted batch's records with this gateway's key before anchoring it: a verifier
        accepts a receipt only from the gateway that submitted the ANCHOR (docs/verify.md,
        ``receipt-gateway``), so the adopter vouches for each stored payload itself."""
        key = getattr(self.ledger, "key", None)
        if key is None:
            raise AnchorError(batch_id, "this ledger client has no key to seal an adopted batch with")
        receipts = []
        for h in self.reader.batch_leaves(batch_id):
            rec = self.reader.statement(h)
            if rec is None:
                raise AnchorError(batch_id, f"adopted batch: statement {bytes(h).hex()} is not stored")
            receipts.append(seal_receipt(rec.statement.hash(), raw_key(rec.statement.payload_sha256), key))
        self.writer.write_receipts(receipts, replace=True)
        log.warning("adopted batch %s: %d record(s) sealed again by gateway %s", batch_id, len(receipts),
                    self.gateway)

    def _submit(self, batch_id: str) -> BatchRecord:
        batch = self.reader.batch(batch_id)
        if batch is None:
            raise AnchorError(batch_id, "no such batch")
        if batch.anchor_state == "anchored":
            return batch
        manifest = Manifest.for_batch(batch, tuple(self.reader.batch_leaves(batch_id)))
        self.blobs.put_manifest(manifest)
        _pause("manifest", batch_id)
        if batch.anchor_state == "submitted":
            # Left by a crash (or another process of this gateway): never resubmit before asking the ledger.
            found = self._lookup(batch)
            if found is not None:
                return self._record(batch, found)
            batch = self.writer.mark_failed(batch_id, "submitted before a restart; not on the ledger")
        try:
            batch = self.writer.mark_submitted(batch_id)
        except InvalidTransition:
            current = self.reader.batch(batch_id)
            if current is not None and current.anchor_state == "anchored":
                return current
            raise AnchorError(batch_id, "claimed by another submitter") from None
        found = self._lookup(batch)
        if found is not None:
            return self._record(batch, found)
        if batch.gateway and batch.gateway != self.gateway:
            self._reseal(batch_id)
        began = time.perf_counter()
        try:
            receipt = self.ledger.submit(ANCHOR_KIND, anchor_payload(batch.batch_id, batch.root, batch.tree_size,
                                                                     self.gateway, window_ms(batch)))
        except TxRefused as exc:  # refused at admission (never ordered): a verdict, like a committed refusal
            self._failed(batch_id, f"{exc.code}: {exc}")
            raise AnchorRefused(batch_id, exc.code, str(exc)) from exc
        except Exception as exc:  # any client error: the outcome is unknown, look it up
            found = self._lookup(batch, quiet=True)
            if found is not None:
                return self._record(batch, found)
            self._failed(batch_id, f"{type(exc).__name__}: {exc}")
            raise AnchorUnavailable(batch_id, f"ANCHOR not confirmed: {type(exc).__name__}: {exc}") from exc
        refusal = receipt.refusal
        if refusal is None:
            if self.metrics:
                self.metrics.anchor_seconds.observe(time.perf_counter() - began)
            commit = AnchorCommit(batch_id, batch.root, batch.tree_size, receipt.height, receipt.index,
                                  receipt.tx_id.hex())
            return self._record(batch, commit)
        code, message = refusal
        if code == "DUPLICATE_BATCH":
            found = self._lookup(batch)
            if found is not None:
                return self._record(batch, found)
        self._failed(batch_id, f"{code}: {message}")
        raise AnchorRefused(batch_id, code, message)

    def _lookup(self, batch: BatchRecord, quiet: bool = False) -> Optional[AnchorCommit]:
        """The ledger's record of this batch id, if any; `AnchorConflict` if it has other contents."""
        try:
            doc = self.ledger.get_anchor(batch.batch_id)
        except Exception as exc:
            if quiet:
                return None
            self._failed(batch.batch_id, f"anchors lookup: {type(exc).__name__}: {exc}")
            raise AnchorUnavailable(batch.batch_id, f"anchors lookup failed: {exc}") from exc
        if doc is None:
            return None
        commit = AnchorCommit.from_lookup(doc)
        if (commit.root, commit.tree_size) != (batch.root, batch.tree_size):
            self._failed(batch.batch_id, "the ledger holds this batch id with another root")
            raise AnchorConflict(batch.batch_id, f"the ledger anchored it with root {commit.root.hex()} "
                                                 f"size {commit.tree_size}")
        return commit

    def _failed(self, batch_id: str, reason: str) -> None:
        if self.metrics:
            self.metrics.batches_failed.inc()
        try:
            self.writer.mark_failed(batch_id, reason[:500])
        except StorageError as exc:
            log.warning("could not record the failure of batch %s: %s", batch_id, exc)
        log.warning("batch %s: %s", batch_id, reason)

    def _record(self, batch: BatchRecord, commit: AnchorCommit) -> BatchRecord:
        _pause("committed", batch.batch_id)
        if self.publish is not None:
            self.publish(batch, commit, anchor_value(commit, self.gateway, window_ms(batch), batch.manifest_key))
        rec = self.writer.mark_anchored(batch.batch_id, commit.height, commit.tx_index)
        with self._lock:
            self._backoff.pop(batch.batch_id, None)
            self.errors.pop(batch.batch_id, None)
        if self.metrics:
            self.metrics.batches_anchored.inc()
            now = datetime.now(timezone.utc)
            for ts in self.reader.leaf_times(batch.batch_id):
                self.metrics.device_to_anchored.observe(max(0.0, (now - ts).total_seconds()))
        log.info("batch %s anchored at height %d tx %d", batch.batch_id, commit.height, commit.tx_index)
        return rec

    # -- whole backlog ------------------------------------------------------------------

    def anchor_pending(self, *, respect_backoff: bool = False) -> list[BatchRecord]:
        """One attempt at each of this gateway's batches not anchored yet (oldest first, up to
        `parallel` at once: their ANCHORs share ledger blocks); the ones anchored now.  Failures
        stay recorded for the next call; with `respect_backoff` a batch that failed is retried
        only after its backoff (doubling up to `retry_max_s`).
        The first call resolves every ``submitted`` batch (left by a crash); later calls leave a
        ``submitted`` batch younger than `stale_s` to whoever claimed it.  With `adopt_after_s`,
        batches of *other* gateways of our ledger left unchanged that long (their worker is gone)
        are anchored too, under this gateway's key (the ledger refuses a second ANCHOR of an id,
        so a slow owner and an adopter cannot both anchor it)."""
        now = time.monotonic()
        stale = datetime.now(timezone.utc) - timedelta(seconds=self.stale_s)
        recovering, self._recovered = not self._recovered, True
        todo = []
        for batch in self.reader.open_batches(limit=1000, gateway=self.gateway):
            due, delay = self._backoff.get(batch.batch_id, (0.0, 0.0))
            if respect_backoff and due > now:
                continue
            if (batch.anchor_state == "submitted" and not recovering and batch.submitted_at is not None
                    and batch.submitted_at > stale):
                continue  # another process of this gateway is submitting it right now
            todo.append(batch.batch_id)
        if self.adopt_after_s:
            ours = [g for g in self.reader.stale_gateways(self.gateway, self.adopt_after_s)
                    if self._consortium_gateway(g)]  # the database may hold batches of other ledgers
            for batch in self.reader.stale_batches(self.gateway, self.adopt_after_s, gateways=ours) if ours else ():
                due, _ = self._backoff.get(batch.batch_id, (0.0, 0.0))
                if not respect_backoff or due <= now:
                    log.warning("adopting batch %s of gateway %s (unchanged for %.0f s)", batch.batch_id,
                                batch.gateway, self.adopt_after_s)
                    todo.append(batch.batch_id)
        if not todo:
            return []
        with ThreadPoolExecutor(max_workers=min(self.parallel, len(todo)), thread_name_prefix="anchor") as pool:
            outcomes = list(pool.map(self._attempt, todo))
        return [rec for rec in outcomes if rec is not None]

    def _consortium_gateway(self, name: Optional[str]) -> bool:
        """Is `name` a gateway on our ledger (so its batches are ours to adopt)?  Cached 60 s."""
        if not name:
            return False
        now = time.monotonic()
        hit = self._gateways.get(name)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            found = self.ledger.resolve(name)
        except Exception:  # noqa: BLE001 - ask again next pass
            return False
        ok = bool(found) and (found.get("entity") or {}).get("type") == "gateway"
        self._gateways[name] = (now + 60.0, ok)
        return ok

    def _attempt(self, batch_id: str) -> Optional[BatchRecord]:
        """`submit` for `anchor_pending`: a failure is kept (`errors`) and backs off, never raised."""
        try:
            return self.submit(batch_id)
        except Exception as exc:  # noqa: BLE001 - storage/MinIO errors too: the batch stays, retried
            err = exc if isinstance(exc, AnchorError) else AnchorError(batch_id, f"{type(exc).__name__}: {exc}")
            with self._lock:
                self.errors[batch_id] = err
                delay = min(max(0.5, self._backoff.get(batch_id, (0.0, 0.0))[1] * 2), self.retry_max_s)
                self._backoff[batch_id] = (time.monotonic() + delay, delay)
            log.warning("%s (retry in %.1f s)", err, delay)
            return None

    def backlog(self, buffered: int = 0) -> int:
        """Sealed statements not yet anchored: `buffered` (not cut yet) + leaves of open batches."""
        n = buffered + self.reader.open_leaves(self.gateway)
        if self.metrics:
            self.metrics.anchor_backlog.set(n)
        return n

    # -- the sweep: stored, sealed statements that no seal brought into a batch -------------------------

    def sweep(self, status: Callable[[Optional[str]], str], *, grace_s: float,
              limit: Optional[int] = None) -> SweepResult:
        """Batch the sealed statements that are in no batch although stored more than `grace_s`
        seconds ago: their seal never reached an anchor agent (lost, expired, never produced), or
        was deferred (its gateway was not on our ledger yet).  Only statements sealed by a gateway
        for which `status(did)` is ``"gateway"`` (`pipelines._anchor_plan.GATEWAY`) are batched;
        the others are counted in `SweepResult.waiting` (gauge ``sealstream_pipeline_anchor_sweep_waiting``)
        and logged, at most every 10 minutes per gateway.  At most `limit` statements per pass
        (default ``8 * max_leaves``), oldest ``ts`` first; the next pass takes the rest.

        Idempotent and safe with concurrent sweepers and agents: `add` cuts only statements in no
        batch, and the unique ``batch_leaves.statement_hash`` decides races (the loser re-cuts what
        is left), so a statement is never in two batches."""
        m = sweep_metrics(self.metrics)
        counts = self.reader.unbatched_gateways(grace_s)
        ours, waiting = sweep_gateways(counts, status)
        for reason, gws in waiting.items():
            m.sweep_waiting.labels(reason).set(sum(gws.values()))
            now = time.monotonic()
            for gw, n in gws.items():
                if now - self._waiting_logged.get(gw, -1e9) >= 600.0:
                    self._waiting_logged[gw] = now
                    log.warning("%d sealed statement(s) of gateway %s in no batch for over %.0f s, left alone "
                                "(%s): batched once it is a gateway on this ledger", n, gw, grace_s,
                                "not registered on this ledger yet, or another ledger's gateway"
                                if reason == "unknown-gateway" else "bound to an entity that is not a gateway")
        rows = self.reader.unbatched_statements(grace_s, ours, limit or 8 * self.max_leaves) if ours else []
        if not rows:
            return SweepResult(0, (), waiting)
        m.sweep_found.inc(len(rows))
        log.warning("sweep: %d sealed statement(s) in no batch for over %.0f s, batching them", len(rows), grace_s)
        written = self.add(leaf_of_row(h, ts, gw) for h, ts, gw in rows)
        return SweepResult(len(rows), tuple(written), waiting)

    def anchor_statements(self, hashes: Iterable[bytes]) -> list[BatchRecord]:
        """Batch the given stored statements (those not in a batch yet) and anchor every open batch
        of this gateway now; the batches holding `hashes`, anchored.  For tests and tools."""
        wanted = {bytes(h) for h in hashes}
        times = self.reader.statement_times(wanted)
        missing = wanted - {bytes(h) for h in times}
        if missing:
            raise AnchorError("?", f"{len(missing)} statement(s) not stored, e.g. {sorted(missing)[0].hex()}")
        self.add(SealedLeaf(StatementHash(h), (ts - _EPOCH) // timedelta(milliseconds=1)) for h, ts in times.items())
        self.anchor_pending()
        out: dict[str, BatchRecord] = {}
        for h in wanted:
            m = self.reader.batch_of(h)
            assert m is not None
            if m.batch.anchor_state != "anchored":
                raise self.errors.get(m.batch.batch_id) or AnchorError(m.batch.batch_id,
                                                                       f"not anchored: {m.batch.last_error}")
            out[m.batch.batch_id] = m.batch
        return sorted(out.values(), key=lambda b: (b.window_start, b.batch_id))
