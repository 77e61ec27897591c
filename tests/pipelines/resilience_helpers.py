"""Harness for the resilience tests: worker subprocesses, a background simulator run, and the
"every accepted record stored exactly once" check against the simulator's sent-log.

The workers are `support.workers.WorkerProc.manifest`: `sealstream pipeline worker --directory
manifest` with the services of a given `Settings` (shared or private Kafka/MinIO), a fresh group
and factory; with `Anchoring` (a 4-node contracts ledger in the worker's home,
the gateway registered and funded) its anchor agent runs too, and
`Anchoring.check` asserts every record is the leaf of exactly one batch, each
batch anchored once where the ledger says (test_anchor_e2e's checks). `check_exactly_once` compares
the sent-log with PostgreSQL, MinIO and `iiot.sealed`/`iiot.deadletter`: each delivered good record has one
statement row, its Arrow rows or blob row, its object in MinIO with the right
digest, byte-identical seals (redelivery may repeat one, never change it) and
no dead letter.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from pipelines.offsets import pin_offsets as _pin
from devices_helpers import end_offsets, read_range, read_records
from pipelines.devices import RunConfig, RunSummary, SentRecord, Simulator, read_sent_log
from pipelines.devices.timeseries import read_timeseries
from sealstream.settings import Settings
from support.workers import WorkerProc
from storage.blobs import BlobStore
from storage.db import open_pool
from trust.hashes import sha256
from sealstream._kafka_config import kafka_endpoint

__all__ = ["Anchoring", "SimRun", "pin_offsets", "wait_stored", "check_exactly_once", "check_private_run",
           "stored_count", "Outcome"]

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = "gw-resilience"


def pin_offsets(settings: Settings, group: str, offsets: dict, timeout: float = 40.0) -> None:
    """Commit `offsets` for the (empty) consumer `group`, so its workers start exactly there."""
    _pin(kafka_endpoint(settings, "admin"), group, offsets, timeout)


class SimRun:
    """The simulator in a background thread (so the test can break things while it produces)."""

    def __init__(self, settings: Settings, config: RunConfig) -> None:
        self.settings, self.config = settings, config
        self.summary: Optional[RunSummary] = None
        self.error: Optional[BaseException] = None
        self.started = time.monotonic()
        self._sim = Simulator(settings, config)
        self._thread = threading.Thread(target=self._run, name="simulator", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.summary = self._sim.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised in join()
            self.error = exc

    def stop(self) -> None:
        """End the run early (it flushes and writes its sent-log as usual)."""
        self._sim.stop()

    def at(self, seconds: float) -> None:
        """Sleep until `seconds` after the run started."""
        time.sleep(max(0.0, self.started + seconds - time.monotonic()))

    def join(self, timeout: float = 120.0) -> list[SentRecord]:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError("the simulator did not finish")
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return list(read_sent_log(Path(self.summary.sent_log), self.summary.run_id))


def stored_count(settings: Settings, dids: list[str]) -> int:
    """Statements stored so far for these devices."""
    with open_pool(settings.postgres_dsn, max_size=1) as pool, pool.connection() as conn:
        return conn.execute("SELECT count(*) FROM statements WHERE device = ANY(%s)", (dids,)).fetchone()[0]


def _stored_hashes(settings: Settings, dids: list[str]) -> set[str]:
    with open_pool(settings.postgres_dsn, max_size=1) as pool, pool.connection() as conn:
        rows = conn.execute("SELECT encode(statement_hash, 'hex') FROM statements WHERE device = ANY(%s)",
                            (dids,)).fetchall()
    return {r[0] for r in rows}


def wait_stored(settings: Settings, good: list[SentRecord], workers: list[WorkerProc], timeout: float) -> None:
    """Poll PostgreSQL until every good statement is stored (fails early if every worker died)."""
    want = {r.statement_hash for r in good}
    dids = sorted({r.device for r in good})
    deadline = time.monotonic() + timeout
    while True:
        missing = want - _stored_hashes(settings, dids)
        if not missing:
            return
        if not any(w.alive() for w in workers):
            raise AssertionError("every worker exited:\n" + "\n---\n".join(w.tail() for w in workers))
        if time.monotonic() > deadline:
            metrics = ""
            for w in workers:
                if w.alive():
                    metrics += "\n".join(ln for ln in w.metrics().splitlines() if ln.startswith("sealstream_"))
            raise AssertionError(f"{len(missing)} of {len(want)} records not stored after {timeout:.0f} s\n"
                                 + metrics + "\n" + "\n---\n".join(w.tail() for w in workers))
        time.sleep(1.0)


@dataclass(frozen=True)
class Outcome:
    """What `check_exactly_once` saw: records stored, seals read (with repeats), seal repeats."""

    stored: int
    seals: int
    repeated_seals: int


def check_exactly_once(settings: Settings, good: list[SentRecord], sealed_start: dict, dlq_start: dict,
                       blobs: BlobStore, is_ours: Callable[[bytes], bool]) -> Outcome:
    """Each good record stored exactly once, archived with its digest, sealed (identically), not dead-lettered."""
    want = {r.statement_hash: r for r in good}
    dids = sorted({r.device for r in good})
    payloads = read_records(settings, [(r.topic, r.partition, r.offset) for r in good], timeout=60)
    assert len(payloads) == len(good), "the sent-log names records Kafka does not have"
    with open_pool(settings.postgres_dsn, max_size=1) as pool, pool.connection() as conn:
        st = conn.execute("SELECT encode(statement_hash, 'hex'), kafka_topic, kafka_partition, kafka_offset, "
                          "receipt_signature IS NOT NULL FROM statements WHERE device = ANY(%s)", (dids,)).fetchall()
        rd = dict(conn.execute("SELECT encode(statement_hash, 'hex'), count(*) FROM readings "
                               "WHERE device = ANY(%s) GROUP BY 1", (dids,)).fetchall())
        bl = dict(conn.execute("SELECT encode(b.statement_hash, 'hex'), b.object_key FROM blobs b "
                               "JOIN statements s USING (statement_hash) WHERE s.device = ANY(%s)",
                               (dids,)).fetchall())
    # -- statements: exactly the good set, each from its own Kafka position, each sealed
    assert len(st) == len({r[0] for r in st}) == len(want), (len(st), len(want))
    assert {r[0] for r in st} == set(want)
    for h, topic, part, off, sealed in st:
        r = want[h]
        assert (topic, part, off) == (r.topic, r.partition, r.offset), h
        assert sealed, f"statement {h} has no receipt"
    # -- readings = the Arrow rows of the payload; blobs point at their object, which holds the payload
    for r in good:
        payload = payloads[(r.topic, r.partition, r.offset)].value
        if r.kind == "timeseries":
            assert rd.get(r.statement_hash) == read_timeseries(payload).num_rows, r.statement_hash
            assert r.statement_hash not in bl
        else:
            assert bl.get(r.statement_hash) == "raw/" + sha256(payload).hex(), r.statement_hash
            assert r.statement_hash not in rd
        assert blobs.get_raw(sha256(payload)) == payload  # get_raw re-checks the digest
    # -- seals: every statement sealed, repeats (redelivery) byte-identical; no dead letter of a good record
    sealed = read_range(settings, sealed_start, end_offsets(settings, ["iiot.sealed"]), timeout=60)
    by_hash: dict[str, set[bytes]] = {}
    n = 0
    for rec in sealed:
        if rec.key is not None and is_ours(rec.key):
            n += 1
            by_hash.setdefault(json.loads(rec.value)["statement_hash"], set()).add(rec.value)
    assert set(by_hash) == set(want), (len(set(want) - set(by_hash)), len(set(by_hash) - set(want)))
    assert all(len(v) == 1 for v in by_hash.values()), "a statement was sealed with different bytes"
    positions = {(r.topic, r.partition, r.offset) for r in good}
    for rec in read_range(settings, dlq_start, end_offsets(settings, ["iiot.deadletter"]), timeout=60):
        h = dict(rec.headers)
        pos = (h["ss-dlq-topic"].decode(), int(h["ss-dlq-partition"]), int(h["ss-dlq-offset"]))
        assert pos not in positions, f"good record {pos} dead-lettered: {h['ss-dlq-reason'].decode()}"
    return Outcome(len(st), n, n - len(by_hash))


def check_private_run(settings: Settings, sent: list[SentRecord], workers: list[WorkerProc],
                      anchoring: "Anchoring") -> tuple[Outcome, list]:
    """On a private broker (everything on it is the test's): all of `sent` stored exactly once and sealed
    (`check_exactly_once` from offset 0), the dead-letter topic empty, every record anchored once."""
    zero = {tp: 0 for tp in end_offsets(settings, ["iiot.sealed", "iiot.deadletter"])}
    outcome = check_exactly_once(settings, sent, {tp: 0 for tp in zero if tp[0] == "iiot.sealed"},
                                 {tp: 0 for tp in zero if tp[0] == "iiot.deadletter"},
                                 BlobStore.from_settings(settings), lambda key: True)
    assert outcome.stored == len(sent)
    dlq = end_offsets(settings, ["iiot.deadletter"])
    assert set(dlq.values()) == {0}, f"records were dead-lettered: {dlq}"
    batches = anchoring.check(sent, workers)
    print(f"{outcome}; {len(batches)} batches anchored, sizes {sorted(b.tree_size for b in batches)}")
    return outcome, batches


class Anchoring:
    """A 4-node contracts ledger in ``<home>/ledger`` with `gateway` registered and funded: the workers
    started on this home run their anchor agent. Stop it with `close`."""

    def __init__(self, settings: Settings, gateway: str) -> None:
        from anchor_helpers import ledger_cluster, register_gateway
        from pipelines.worker import gateway_key

        self.settings, self.gateway = settings, gateway
        self.cluster = ledger_cluster(Path(settings.home) / "ledger")
        try:
            register_gateway(self.cluster, gateway, gateway_key(Path(settings.home), gateway))
            self.anchors_start = end_offsets(settings, ["iiot.anchors"])
        except BaseException:
            self.cluster.stop(timeout=5)
            raise

    def check(self, good: list[SentRecord], workers: list[WorkerProc], timeout: float = 180) -> list:
        """Wait until every good statement is in an anchored batch; then each is a leaf of exactly one batch,
        every batch of the gateway is anchored once, where the ledger's lookup puts it, on ``iiot.anchors`` once."""
        from anchor_helpers import wait_for
        from test_anchor_e2e import _all_anchored, _check_batches

        hashes = [r.statement_hash for r in good]
        with open_pool(self.settings.postgres_dsn, max_size=2) as pool:
            deadline = time.monotonic() + timeout
            while not _all_anchored(pool, hashes):
                if not any(w.alive() for w in workers):
                    raise AssertionError("every worker exited:\n" + "\n---\n".join(w.tail() for w in workers))
                if time.monotonic() > deadline:
                    raise AssertionError("not every statement anchored:\n" + "\n---\n".join(w.tail() for w in workers))
                time.sleep(1.0)

            def batches_done() -> bool:
                with pool.connection() as conn:
                    states = conn.execute("SELECT anchor_state FROM batches WHERE gateway = %s",
                                          (self.gateway,)).fetchall()
                return all(st == "anchored" for st, in states)

            wait_for(batches_done, 60, "every batch of the gateway anchored")
            return _check_batches(self.settings, self.cluster, pool, self.gateway, hashes, self.anchors_start)

    def close(self) -> None:
        self.cluster.stop(timeout=5)
