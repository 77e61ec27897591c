"""Kafka producer clients side by side: kafka-python vs confluent-kafka, same run, same messages.

    .venv/bin/python bench/producers.py [--small N] [--large N] [--repeats R] [--security on|off|both] [--json]

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

Producers authenticate as a factory (``factory-bench-producers``), as the simulator's devices do.
``--security on|off|both`` runs against private brokers (the project's infra.Kafka on free ports)
started with Kafka security on (TLS listener, the factory's certificate, ACLs: WRITE/DESCRIBE on
the bench topics, IDEMPOTENT_WRITE) and/or off (PLAINTEXT), interleaved in the same run; with
``both`` the table adds the on/off ratio per client. Without it: the stack's broker as configured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.devices.images import jpeg_frame, pad_jpeg
from pipelines.devices.payloads import Payload
from pipelines.devices.producer import CLIENTS, Delivery, open_sink
from pipelines.devices.signing import OutMessage, seal
from pipelines.devices.timeseries import CONTENT_TYPE as TS_TYPE
from pipelines.devices.timeseries import timeseries_batch
from sealstream.settings import Settings, load_settings
from sealstream._kafka_config import kafka_endpoint, kafka_secured
from trust.identity import KeyPair

TOPICS = {"small": "bench.producers.small", "large": "bench.producers.large"}
LARGE_BYTES = 1_000_000
FACTORY = "bench-producers"


def _allow_factory(settings: Settings) -> None:
    """The bench factory's principal, allowed to produce to the bench topics only (as to *.raw)."""
    from confluent_kafka.admin import AdminClient

    from infra import Stack
    from infra.kafka_acls import Acl, _binding

    Stack(settings).ensure_factory(FACTORY)
    principal = f"factory-{FACTORY}"
    acls = [Acl(principal, "TOPIC", t, "LITERAL", op) for t in TOPICS.values() for op in ("WRITE", "DESCRIBE")]
    admin = AdminClient(kafka_endpoint(settings, "admin").confluent({"log_level": 4}))
    for fut in admin.create_acls([_binding(a) for a in acls], request_timeout=30).values():
        fut.result(30)


def _topics(settings: Settings, create: bool) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(**kafka_endpoint(settings, "admin").kafka_python(), client_id="sealstream-bench")
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
    sink = open_sink(settings, sorted({m.topic for m in msgs}), client, factory=FACTORY)
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
    ap.add_argument("--security", choices=["on", "off", "both"], default=None,
                    help="private brokers with Kafka security on / off / both, interleaved (default: the stack's)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    base = load_settings()
    stacks: dict[str, Any] = {}
    tmp = None
    if args.security is None:
        targets = {"on" if kafka_secured(base) else "off": base}
    else:
        import tempfile

        from infra.private_stack import PrivateStack

        tmp = tempfile.TemporaryDirectory(prefix="ss-bench-producers-")
        modes = ["on", "off"] if args.security == "both" else [args.security]
        for mode in modes:
            mb = base.model_copy(update={"kafka_security": mode == "on"})
            stacks[mode] = PrivateStack(Path(tmp.name) / mode, base=mb, kafka=True).__enter__()
        targets = {mode: ps.settings for mode, ps in stacks.items()}
    report: dict = {"workloads": {}, "crc32c": _has_crc32c(), "security": list(targets)}
    try:
        for settings in targets.values():
            _topics(settings, create=True)
            if kafka_secured(settings):
                _allow_factory(settings)
        for workload, n in (("small", args.small), ("large", args.large)):
            msgs = build(workload, n)
            runs: dict[str, list[dict]] = {f"{c}/{m}": [] for c in CLIENTS for m in targets}
            for _ in range(args.repeats):
                for client in CLIENTS:
                    for mode, settings in targets.items():
                        runs[f"{client}/{mode}"].append(measure(settings, client, msgs))
            med = {k: {f: statistics.median(r[f] for r in rs) for f in ("msgs_per_s", "mb_per_s")}
                   | {"errors": sum(r["errors"] for r in rs)} for k, rs in runs.items()}
            w: dict[str, Any] = {"messages": n, "bytes_per_message": round(statistics.mean(m.size for m in msgs)),
                                 "median": med, "runs": runs}
            for mode in targets:
                w[f"ratio_confluent_over_kafka_python/{mode}"] = (med[f"confluent/{mode}"]["msgs_per_s"]
                                                                  / med[f"kafka-python/{mode}"]["msgs_per_s"])
            if len(targets) == 2:
                for c in CLIENTS:
                    w[f"ratio_security_on_over_off/{c}"] = med[f"{c}/on"]["msgs_per_s"] / med[f"{c}/off"]["msgs_per_s"]
            report["workloads"][workload] = w
    finally:
        for settings in targets.values():
            _topics(settings, create=False)
        for ps in stacks.values():
            ps.close()
        if tmp is not None:
            tmp.cleanup()
    if args.json:
        print(json.dumps(report, indent=2))
        return
    where = ", ".join(f"{m}: {s.kafka_bootstrap}" for m, s in targets.items())
    print(f"producers: medians of {args.repeats} interleaved runs (Kafka security {where}); "
          f"kafka-python crc32c accelerator: {'yes' if report['crc32c'] else 'no (pure-Python CRC)'}")
    print(f"{'workload':10} {'bytes/msg':>10} {'client/security':>18} {'msgs/s':>10} {'MB/s':>8} {'errors':>6}")
    for workload, w in report["workloads"].items():
        for k, m in w["median"].items():
            print(f"{workload:10} {w['bytes_per_message']:>10} {k:>18} {m['msgs_per_s']:>10.0f} "
                  f"{m['mb_per_s']:>8.1f} {m['errors']:>6}")
        for k, v in w.items():
            if k.startswith("ratio_"):
                print(f"{'':10} {'':>10} {k:>40} {v:>6.2f}x")


if __name__ == "__main__":
    main()
