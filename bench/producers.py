"""Kafka producer clients side by side: kafka-python vs confluent-kafka, same run, same messages.

    .venv/bin/python bench/producers.py [--small N] [--large N] [--repeats R] [--json]

Workloads (pre-built and signed before timing, so only producing is measured):
  small   signed time-series batches (Arrow IPC, ~1.5 KB) with their 9 headers
  large   signed 1 MB JPEG images (a camera frame padded with COM segments)

Both clients are driven through `pipelines.devices.producer` with the
simulator's settings (acks=all, idempotent, linger 5 ms, 1 MiB batches). A
measurement is: send N records, flush, stop the clock when every delivery is
acknowledged. Each (workload, client) runs R times, interleaved so machine
load hits both alike; the table shows medians and confluent/kafka-python
ratios of the medians. Records go to throwaway topics ``bench.producers.*``
(short retention), deleted afterwards.

kafka-python computes record-batch CRC32C in pure Python unless the optional
``crc32c`` package is installed; the report says which. Measured here (1 broker
on loopback, 3 partitions): without crc32c kafka-python did ~2.8k small msgs/s
and ~6 MB/s of 1 MB images vs confluent-kafka ~63k msgs/s and ~430 MB/s
(22x, 72x); with crc32c ~12.4k msgs/s and ~125 MB/s vs ~47k and ~177 MB/s
(3.8x, 1.4x). Hence confluent-kafka is the simulator's default producer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.devices.images import jpeg_frame, pad_jpeg
from pipelines.devices.payloads import Payload
from pipelines.devices.producer import CLIENTS, Delivery, open_sink
from pipelines.devices.signing import OutMessage, seal
from pipelines.devices.timeseries import CONTENT_TYPE as TS_TYPE
from pipelines.devices.timeseries import timeseries_batch
from sealstream.settings import Settings, load_settings
from trust.identity import KeyPair

TOPICS = {"small": "bench.producers.small", "large": "bench.producers.large"}
LARGE_BYTES = 1_000_000


def _topics(settings: Settings, create: bool) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="sealstream-bench")
    try:
        existing = set(admin.list_topics())
        if create:
            new = [NewTopic(t, num_partitions=settings.kafka_partitions, replication_factor=1,
                            topic_configs={"max.message.bytes": str(2 * LARGE_BYTES), "retention.ms": "120000"})
                   for t in TOPICS.values() if t not in existing]
            if new:
                admin.create_topics(new, timeout_ms=30_000)
        else:
            gone = [t for t in TOPICS.values() if t in existing]
            if gone:
                admin.delete_topics(gone, timeout_ms=30_000)
    finally:
        admin.close()


def _has_crc32c() -> bool:
    try:
        import crc32c  # noqa: F401
    except ImportError:
        return False
    return True


def build(workload: str, n: int) -> list[OutMessage]:
    """N signed messages from one device, retargeted at the bench topic."""
    kp = KeyPair.from_seed(bytes(32))
    t0 = 1_700_000_000_000
    msgs = []
    if workload == "small":
        for i in range(n):
            msg = seal(kp, i, t0 + i, Payload("timeseries", TS_TYPE, timeseries_batch(1, "bench", i, t0 + i)))
            msgs.append(replace(msg, topic=TOPICS["small"]))
    else:
        base = pad_jpeg(jpeg_frame(1, "bench", 0, t0), LARGE_BYTES)
        for i in range(n):
            data = base[:-3] + bytes([i % 256]) + base[-2:]  # distinct payloads, same size
            msg = seal(kp, i, t0 + i, Payload("image", "image/jpeg", data))
            msgs.append(replace(msg, topic=TOPICS["large"]))
    return msgs


def measure(settings: Settings, client: str, msgs: list[OutMessage]) -> dict:
    sink = open_sink(settings, sorted({m.topic for m in msgs}), client)
    acked = errors = 0

    def done(d: Delivery) -> None:
        nonlocal acked, errors
        if d.error is None:
            acked += 1
        else:
            errors += 1

    try:
        start = time.perf_counter()
        for m in msgs:
            sink.send(m, done)
        sink.flush(120)
        seconds = time.perf_counter() - start
    finally:
        sink.close()
    total = sum(m.size for m in msgs)
    return {"seconds": seconds, "msgs_per_s": len(msgs) / seconds, "mb_per_s": total / seconds / 1e6,
            "acked": acked, "errors": errors}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=20_000, help="time-series messages per measurement")
    ap.add_argument("--large", type=int, default=150, help="1 MB images per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    settings = load_settings()
    _topics(settings, create=True)
    report: dict = {"workloads": {}, "crc32c": _has_crc32c()}
    try:
        for workload, n in (("small", args.small), ("large", args.large)):
            msgs = build(workload, n)
            runs: dict[str, list[dict]] = {c: [] for c in CLIENTS}
            for _ in range(args.repeats):
                for client in CLIENTS:
                    runs[client].append(measure(settings, client, msgs))
            med = {c: {k: statistics.median(r[k] for r in runs[c]) for k in ("msgs_per_s", "mb_per_s")}
                   | {"errors": sum(r["errors"] for r in runs[c])} for c in CLIENTS}
            report["workloads"][workload] = {
                "messages": n, "bytes_per_message": round(statistics.mean(m.size for m in msgs)),
                "median": med, "runs": runs,
                "ratio_confluent_over_kafka_python": med["confluent"]["msgs_per_s"] / med["kafka-python"]["msgs_per_s"],
            }
    finally:
        _topics(settings, create=False)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"producers: medians of {args.repeats} interleaved runs against {settings.kafka_bootstrap}; "
          f"kafka-python crc32c accelerator: {'yes' if report['crc32c'] else 'no (pure-Python CRC)'}")
    print(f"{'workload':10} {'bytes/msg':>10} {'client':>13} {'msgs/s':>10} {'MB/s':>8} {'errors':>6}")
    for workload, w in report["workloads"].items():
        for c in CLIENTS:
            m = w["median"][c]
            print(f"{workload:10} {w['bytes_per_message']:>10} {c:>13} {m['msgs_per_s']:>10.0f} "
                  f"{m['mb_per_s']:>8.1f} {m['errors']:>6}")
        print(f"{'':10} {'':>10} {'ratio':>13} {w['ratio_confluent_over_kafka_python']:>9.2f}x  "
              "(confluent / kafka-python)")


if __name__ == "__main__":
    main()
