"""Replay dead letters whose cause is fixed: each original re-injected into its source topic once.

`replay(settings, pool, reason, group)` selects the source positions the
pipeline dead-lettered with `reason` (``dead_letters``, produced rows; of one
consumer group or of all), reads each original record at its position
(key, value, headers and record timestamp: the dead letter in
``iiot.deadletter`` has the same bytes but not the original timestamp, which the
``clock-skew`` check needs) and produces a copy to the same topic and partition
with two more headers, ``ss-replay-of: <topic>/<partition>/<offset>`` (the dead
letter's id: its source position) and ``ss-replay-nonce`` (random per run).
The workers of every group read the copy and check it from scratch; one that
fails again is dead-lettered again at its new position with its new reason.

Exactly once, per source position (``dead_letter_replays``,
`storage.deadletters.DeadLetterReplays`), in this order:

1. a PostgreSQL advisory lock: one replay per database at a time;
2. ``init_transactions`` of the transactional producer
   ``sealstream-replay-<database>``: fences any earlier run's producer (its
   in-flight writes are refused) and aborts its open transaction;
3. every unconfirmed intent (a run died between 4 and 6) is resolved: its
   source partition is scanned from the intent's ``scan_from`` (the partition's
   end offset before the copy was produced) to the end, *read_uncommitted* like
   the workers (Faust at-least-once), for a record with its ``ss-replay-of`` and
   nonce.  Found: confirmed.  Not found: the intent is deleted (never injected);
4. an intent per candidate (position, nonce, ``scan_from``) is committed;
5. the copies are produced in one Kafka transaction per chunk and committed;
6. the intents are confirmed with the copies' offsets.

A crash anywhere leaves either no copy and an intent that 3 deletes, or copies
(committed, or aborted but in the log and so read by the workers) whose intents
3 confirms.  What is counted is what a read_uncommitted consumer reads: a copy
of a run killed mid-transaction (between 5's produce and commit) is aborted, so
a read_committed consumer never sees it.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from storage.deadletters import DeadLetterReplays, ReplayCounts, ReplayIntent
from storage.records import KafkaPosition

from ._testhook import pause
from .checks import REASONS
from sealstream._kafka_config import KafkaLike, as_endpoint

__all__ = ["REPLAY_OF", "REPLAY_NONCE", "ReplayError", "UnknownReason", "ReplayBusy", "ReplayKafkaError",
           "ReplayResult", "Original", "dead_letter_id", "copy_headers", "read_originals", "find_copies",
           "replay", "plan"]

log = logging.getLogger("sealstream.pipeline")
REPLAY_OF, REPLAY_NONCE = "ss-replay-of", "ss-replay-nonce"
PAUSE_ENV, PAUSE_FILE_ENV = "SEALSTREAM_REPLAY_TEST_PAUSE", "SEALSTREAM_REPLAY_TEST_PAUSE_FILE"
_HEADROOM = 1024 * 1024


class ReplayError(Exception):
    """A replay refused or failed; ``code`` is the machine-readable reason."""

    code = "replay-failed"


class UnknownReason(ReplayError):
    code = "unknown-reason"

    def __init__(self, reason: str) -> None:
        self.reason, self.known = reason, list(REASONS)
        super().__init__(f"unknown dead-letter reason {reason!r}: use one of {', '.join(REASONS)}")


class ReplayBusy(ReplayError):
    code = "replay-running"


class ReplayKafkaError(ReplayError, ConnectionError):
    code = "kafka-unavailable"


def dead_letter_id(pos: KafkaPosition) -> str:
    """The id a copy names in ``ss-replay-of``: its dead-lettered source position."""
    return f"{pos.topic}/{pos.partition}/{pos.offset}"


@dataclass(frozen=True)
class Original:
    """A dead-lettered record as it is at its source position."""

    position: KafkaPosition
    key: Optional[bytes]
    value: bytes
    headers: list[tuple[str, bytes]]
    timestamp_ms: int


def copy_headers(original: Sequence[tuple[str, Optional[bytes]]], pos: KafkaPosition,
                 nonce: str) -> list[tuple[str, bytes]]:
    """The original headers (an earlier replay's ss-replay-* dropped: a copy of a copy names only
    its own dead letter) plus ``ss-replay-of`` and ``ss-replay-nonce``."""
    kept = [(k, v if v is not None else b"") for k, v in original if k not in (REPLAY_OF, REPLAY_NONCE)]
    return kept + [(REPLAY_OF, dead_letter_id(pos).encode("utf-8")), (REPLAY_NONCE, nonce.encode("ascii"))]


@dataclass
class ReplayResult:
    """What a run did (or, dry, would do), in distinct source positions."""

    reason: str
    group: Optional[str]
    dry_run: bool
    matched: int = 0  # dead-lettered with the reason (produced)
    already_replayed: int = 0  # confirmed by an earlier run
    unmarked: int = 0  # dead-lettered but never marked produced: skipped
    pending: int = 0  # dry run: intents of a run that died, resolved by the next real run
    replayed: int = 0  # copies produced and confirmed now
    recovered: int = 0  # a dead run's intents whose copy was found (any reason): confirmed, not produced
    forgotten: int = 0  # a dead run's intents whose copy was not found: deleted, replayable again
    missing: list[str] = field(default_factory=list)  # source record gone (retention): not replayed
    copies: list[dict] = field(default_factory=list)  # {"id", "topic", "partition", "offset"} this run

    @property
    def would_replay(self) -> int:
        return self.matched - self.already_replayed - self.pending

    def to_json(self) -> dict[str, Any]:
        out = {"reason": self.reason, "group": self.group, "dry_run": self.dry_run, "matched": self.matched,
               "already_replayed": self.already_replayed, "unmarked": self.unmarked}
        if self.dry_run:
            return {**out, "would_replay": self.would_replay, "pending": self.pending}
        return {**out, "replayed": self.replayed, "recovered": self.recovered, "forgotten": self.forgotten,
                "missing": self.missing, "copies": self.copies}


def check_reason(reason: str) -> None:
    if reason not in REASONS:
        raise UnknownReason(reason)


def _consumer(bootstrap: KafkaLike, max_bytes: int) -> Any:
    from confluent_kafka import Consumer

    return Consumer({**as_endpoint(bootstrap).confluent(), "group.id": f"sealstream-replay-{uuid.uuid4().hex}",
                     "enable.auto.commit": False, "enable.partition.eof": False,
                     "isolation.level": "read_uncommitted",  # as the workers read (Faust at-least-once)
                     "fetch.max.bytes": max_bytes, "max.partition.fetch.bytes": max_bytes, "log_level": 0})


def _kafka(what: str, exc: BaseException) -> ReplayKafkaError:
    return ReplayKafkaError(f"{what}: {exc}")


def _ends(c: Any, tps: Sequence[tuple[str, int]], timeout_s: float) -> dict[tuple[str, int], tuple[int, int]]:
    """Low and high watermarks (read_uncommitted: the high one, past open transactions) of the
    partitions of `tps` that exist (a deleted topic's are left out: nothing there can be read)."""
    from confluent_kafka import KafkaError, KafkaException, TopicPartition

    exist: set[tuple[str, int]] = set()
    for topic in sorted({t for t, _ in tps}):
        md = c.list_topics(topic, timeout=timeout_s).topics[topic]
        if md.error is not None:
            if md.error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise KafkaException(md.error)
            continue
        exist |= {(topic, p) for p in md.partitions}
    return {tp: c.get_watermark_offsets(TopicPartition(*tp), timeout=timeout_s, cached=False)
            for tp in tps if tp in exist}


def read_originals(bootstrap: KafkaLike, positions: Sequence[KafkaPosition], max_bytes: int,
                   timeout_s: float = 30.0) -> dict[KafkaPosition, Optional[Original]]:
    """Each position's record (None: no longer in its topic, or not a record); blocking."""
    from confluent_kafka import KafkaException, TopicPartition

    out: dict[KafkaPosition, Optional[Original]] = {p: None for p in positions}
    deadline = time.monotonic() + timeout_s
    c = _consumer(bootstrap, max_bytes)
    try:
        by_tp: dict[tuple[str, int], list[int]] = {}
        for p in positions:
            by_tp.setdefault((p.topic, p.partition), []).append(p.offset)
        for tp, (low, high) in _ends(c, list(by_tp), timeout_s).items():
            offsets = sorted(o for o in by_tp[tp] if low <= o < high)
            at = None  # the offset the consumer delivers next on this partition
            for off in offsets:
                if at is None or at > off or off - at > 500:
                    c.assign([TopicPartition(tp[0], tp[1], off)])
                    at = off
                while at <= off:
                    if time.monotonic() > deadline:
                        raise ReplayKafkaError(f"{tp[0]}/{tp[1]}: reading the originals took over {timeout_s:g} s")
                    m = c.poll(0.5)
                    if m is None:
                        if c.position([TopicPartition(*tp)])[0].offset > off:  # a gap: no record there
                            at = off + 1
                        continue
                    if m.error() is not None:
                        raise ReplayKafkaError(f"{tp[0]}/{tp[1]}: {m.error()}")
                    at = m.offset() + 1
                    if m.offset() == off:
                        pos = KafkaPosition(tp[0], tp[1], off)
                        out[pos] = Original(pos, m.key(), m.value() or b"", list(m.headers() or []),
                                            max(m.timestamp()[1], 0))  # 0: the producer's clock
        return out
    except KafkaException as exc:
        raise _kafka("reading the dead-lettered originals", exc) from exc
    finally:
        c.close()


def find_copies(bootstrap: KafkaLike, intents: Sequence[ReplayIntent], max_bytes: int,
                timeout_s: float = 60.0) -> dict[KafkaPosition, int]:
    """The intents whose copy is in its partition (at or after ``scan_from``, up to the current end,
    read_uncommitted): ``{position: copy offset}``; blocking."""
    from confluent_kafka import KafkaException, TopicPartition

    want: dict[tuple[Optional[bytes], Optional[bytes]], KafkaPosition] = {
        (dead_letter_id(i.position).encode("utf-8"), i.nonce.encode("ascii")): i.position for i in intents}
    found: dict[KafkaPosition, int] = {}
    if not want:
        return found
    starts: dict[tuple[str, int], int] = {}
    for i in intents:
        tp = (i.position.topic, i.position.partition)
        starts[tp] = min(starts.get(tp, i.scan_from), i.scan_from)
    deadline = time.monotonic() + timeout_s
    c = _consumer(bootstrap, max_bytes)
    try:
        ends = {tp: hw for tp, (_, hw) in _ends(c, list(starts), timeout_s).items()}  # deleted: not found
        todo = {tp: ends[tp] for tp in ends if starts[tp] < ends[tp]}
        if not todo:
            return found
        c.assign([TopicPartition(tp[0], tp[1], starts[tp]) for tp in todo])
        while todo and len(found) < len(want):
            if time.monotonic() > deadline:
                raise ReplayKafkaError(f"looking for copies: scan not finished within {timeout_s:g} s")
            for m in c.consume(500, 0.5):
                if m.error() is not None:
                    raise ReplayKafkaError(f"looking for copies in {m.topic()}/{m.partition()}: {m.error()}")
                h = {k: v for k, v in (m.headers() or [])}
                pos = want.get((h.get(REPLAY_OF), h.get(REPLAY_NONCE)))
                if pos is not None and pos.topic == m.topic() and pos.partition == m.partition():
                    found[pos] = m.offset()
                tp = (m.topic(), m.partition())
                if tp in todo and m.offset() >= todo[tp] - 1:
                    del todo[tp]
            if todo:  # gaps at the end (transaction markers): the position passed the end offset
                for tp in c.position([TopicPartition(*tp) for tp in todo]):
                    if tp.offset >= todo[(tp.topic, tp.partition)]:
                        del todo[(tp.topic, tp.partition)]
        return found
    except KafkaException as exc:
        raise _kafka("looking for copies of an interrupted replay", exc) from exc
    finally:
        c.close()


def plan(replays: DeadLetterReplays, reason: str, group: Optional[str] = None) -> ReplayResult:
    """The dry run: what `replay` would do now (PostgreSQL only; changes nothing)."""
    check_reason(reason)
    return _counted(ReplayResult(reason, group, True), replays.counts(reason, group))


def _counted(res: ReplayResult, counts: ReplayCounts) -> ReplayResult:
    res.matched, res.already_replayed, res.pending, res.unmarked = (counts.matched, counts.replayed,
                                                                    counts.pending, counts.unmarked)
    return res


def replay(replays: DeadLetterReplays, bootstrap: KafkaLike, reason: str, group: Optional[str] = None, *,
           max_message_bytes: int, chunk: int = 500, timeout_s: float = 60.0) -> ReplayResult:
    """Re-inject the dead letters of `reason` (and `group`) not replayed before, once each (module
    docstring); blocking. Raises `UnknownReason`, `ReplayBusy`, `ReplayKafkaError` (rerun: safe),
    `storage.StorageError`."""
    from confluent_kafka import KafkaException, Producer

    check_reason(reason)
    max_bytes = max_message_bytes + _HEADROOM
    res = ReplayResult(reason, group, False)
    with replays.lock() as locked:
        if not locked:
            raise ReplayBusy("another `sealstream pipeline deadletters replay` is running on this database: "
                             "wait for it to finish, then run this one again")
        producer = Producer({**as_endpoint(bootstrap).confluent(),
                             "transactional.id": f"sealstream-replay-{replays.database()}",
                             "enable.idempotence": True, "acks": "all", "message.max.bytes": max_bytes,
                             "transaction.timeout.ms": 60000, "log_level": 0})
        try:
            producer.init_transactions(timeout_s)  # fences an earlier run; aborts its open transaction
        except KafkaException as exc:
            raise _kafka(f"starting the replay producer on Kafka at {bootstrap}", exc) from exc
        pending = replays.pending()
        if pending:
            found = find_copies(bootstrap, pending, max_bytes, timeout_s)
            replays.confirm(sorted(found.items(), key=lambda kv: _key(kv[0])))
            gone = [i.position for i in pending if i.position not in found]
            replays.forget(gone)
            res.recovered, res.forgotten = len(found), len(gone)
            log.warning("replay: %d intent(s) of an interrupted run: %d copies found (confirmed), %d not (forgotten)",
                        len(pending), len(found), len(gone))
        _counted(res, replays.counts(reason, group))
        nonce = uuid.uuid4().hex
        skip: set[KafkaPosition] = set()  # missing originals: not replayed, not asked again this run
        while True:
            batch = [p for p in replays.candidates(reason, group, chunk + len(skip)) if p not in skip][:chunk]
            if not batch:
                break
            originals = read_originals(bootstrap, batch, max_bytes, timeout_s)
            for p, o in originals.items():
                if o is None:
                    skip.add(p)
                    res.missing.append(dead_letter_id(p))
            present = [o for p in batch if (o := originals[p]) is not None]
            if not present:
                continue
            _produce(producer, replays, bootstrap, reason, group, nonce, present, max_bytes, timeout_s, res)
        return res


def _produce(producer: Any, replays: DeadLetterReplays, bootstrap: KafkaLike, reason: str, group: Optional[str],
             nonce: str, originals: list[Original], max_bytes: int, timeout_s: float, res: ReplayResult) -> None:
    """Steps 4-6 for one chunk: intents committed, the copies in one transaction, then confirmed."""
    from confluent_kafka import KafkaException

    c = _consumer(bootstrap, max_bytes)
    try:
        ends = _ends(c, sorted({(o.position.topic, o.position.partition) for o in originals}), timeout_s)
    except KafkaException as exc:
        raise _kafka("reading the source partitions' end offsets", exc) from exc
    finally:
        c.close()
    mine = replays.begin(reason, group, nonce, [(o.position, ends[(o.position.topic, o.position.partition)][1])
                                                 for o in originals if (o.position.topic,
                                                                        o.position.partition) in ends])
    todo = [o for o in originals if o.position in mine]
    if not todo:
        return
    pause(PAUSE_ENV, PAUSE_FILE_ENV, "intent", f"{len(todo)} intents committed, nothing produced")
    copies: dict[KafkaPosition, int] = {}
    errors: list[str] = []

    def delivered(pos: KafkaPosition):
        def cb(err, msg) -> None:
            if err is not None:
                errors.append(f"{dead_letter_id(pos)}: {err}")
            else:
                copies[pos] = msg.offset()
        return cb

    try:
        producer.begin_transaction()
        for o in todo:
            producer.produce(o.position.topic, value=o.value, key=o.key, partition=o.position.partition,
                             headers=copy_headers(o.headers, o.position, nonce), timestamp=o.timestamp_ms,
                             on_delivery=delivered(o.position))
            producer.poll(0)
        left = producer.flush(timeout_s)
        if left or errors:
            raise ReplayKafkaError(f"{left} copies not acked within {timeout_s:g} s; {'; '.join(errors[:3])}")
        pause(PAUSE_ENV, PAUSE_FILE_ENV, "produced", f"{len(todo)} copies produced, transaction open")
        producer.commit_transaction(timeout_s)
    except KafkaException as exc:
        # The intents stay: the next run fences this producer and looks for the copies (an aborted
        # transaction's records are in the log, and read by the workers).
        raise _kafka("producing the copies (rerun the replay: it resolves this chunk first)", exc) from exc
    pause(PAUSE_ENV, PAUSE_FILE_ENV, "committed", f"{len(todo)} copies committed, not confirmed")
    replays.confirm(sorted(copies.items(), key=lambda kv: _key(kv[0])))
    res.replayed += len(todo)
    res.copies += [{"id": dead_letter_id(p), "topic": p.topic, "partition": p.partition, "offset": off}
                   for p, off in sorted(copies.items(), key=lambda kv: _key(kv[0]))]


def _key(p: KafkaPosition) -> tuple:
    return p.topic, p.partition, p.offset
