"""``bench/pipeline.py --confidential`` (issue 18): a confidential stream against the same load in
plaintext, in one run, and the device-side cost of encryption and wrapping.

Pipeline: one message set is generated once (the simulator's payloads, all three kinds, for the
devices of one fresh factory) and sealed twice: as plain signed messages, and as confidential ones
(`pipelines.devices.confidential.seal_confidential`: the same payload encrypted for
``--recipients`` recipients, the statement over the envelope, the key record in ``ss-keys``). Each
drain produces its set into the raw topics right before it starts, pins a fresh consumer group at
the set's start and drains it with the real trusted worker (`sealstream pipeline worker`, with its
anchor agent by default) into its own throwaway database and bucket, so a drain reads exactly its
own records and nothing after them. Repeats alternate which set goes first; the rate of a drain is
counted as in bench/pipeline.py (seal timestamps, first record done to last). Ratio: confidential
records/s over plain records/s, medians (target >= 0.85).

What differs for the worker (and so what the ratio measures): a confidential record is stored as
an envelope blob in MinIO (its key record in a second object), never parsed into rows: the plain
run's time series are Arrow-parsed and COPYed into ``readings``, the confidential run's are not.

Device side: for the simulator's payloads of each kind, per message, ``seal`` (statement + Ed25519
signature, what every device does) against ``seal_confidential`` for 1, 3 and 10 recipients (AES-
256-GCM of the payload, one HPKE wrap per recipient, the statement over the envelope and its
signature), interleaved rounds in one process, medians of the per-message time; ratios over
signing alone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

__all__ = ["build_confidential_report", "device_cost", "format_confidential_report"]

TARGET_RATIO = 0.85
RECIPIENT_COUNTS = (1, 3, 10)


def _kafka(s: Any) -> Any:
    """The broker as bench/pipeline.py's helpers take it (an endpoint where the tree has one)."""
    try:
        from sealstream._kafka_config import kafka_endpoint
    except ImportError:
        return s.kafka_bootstrap
    return kafka_endpoint(s, "admin")


def _messages(fac: Any, n: int, seed: int, recipients: list[tuple[str, bytes]]) -> tuple[list, list]:
    """`n` payloads of the factory's devices (round robin), sealed plain and confidential."""
    from pipelines.devices import generate, seal
    from pipelines.devices.confidential import seal_confidential

    now = int(time.time() * 1000)
    plain, conf = [], []
    devices = list(fac.devices)
    for i in range(n):
        d = devices[i % len(devices)]
        seq, ts = i // len(devices) + 1, now + i
        p = generate(d.kind, seed, d.spec.name, seq, ts)
        plain.append(seal(d.keypair, seq, ts, p))
        conf.append(seal_confidential(d.keypair, seq, ts, p, stream=f"bench-{d.spec.name}", recipients=recipients))
    return plain, conf


def _produce(s: Any, fac: Any, msgs: list) -> Any:
    """Produce `msgs` to the raw topics; the `Load` of exactly that range."""
    from bench._pipeline_kafka import end_offsets
    from bench.pipeline import RAW, Load
    from pipelines.devices import open_sink

    start = end_offsets(_kafka(s), RAW)
    failed: list = []
    sink = open_sink(s, RAW)
    try:
        for m in msgs:
            sink.send(m, lambda d: failed.append(d) if getattr(d, "error", None) else None)
            sink.poll()
        if sink.flush(120) != 0:
            raise SystemExit("produce: messages still in flight after 120 s")
    finally:
        sink.close()
    if failed:
        raise SystemExit(f"produce failed: {failed[0]}")
    end = end_offsets(_kafka(s), RAW)
    by_kind: dict[str, int] = {}
    for m in msgs:
        by_kind[m.statement.kind] = by_kind.get(m.statement.kind, 0) + 1
    blob = sum(m.statement.size for m in msgs if m.statement.kind != "timeseries")
    return Load(start, end, fac.name, [d.did for d in fac.devices], len(msgs), by_kind, blob, [])


def device_cost(rounds: int = 5, per_round: int = 60, seed: int = 1) -> dict[str, Any]:
    """Per-message µs of signing alone and of encrypt + wrap + sign for 1, 3, 10 recipients."""
    from confidential.keys import RecipientKey
    from pipelines.devices import generate, seal
    from pipelines.devices.confidential import seal_confidential
    from trust.identity import KeyPair

    kp = KeyPair.generate()
    rcpts = [(r.id, r.public) for r in (RecipientKey.generate(f"r{i}") for i in range(max(RECIPIENT_COUNTS)))]
    now = int(time.time() * 1000)
    out: dict[str, Any] = {}
    modes = ["sign"] + [f"confidential_{k}" for k in RECIPIENT_COUNTS]
    for kind in ("timeseries", "image", "video"):
        payloads = [generate(kind, seed, "dev", i + 1, now + i) for i in range(per_round)]
        times: dict[str, list[float]] = {m: [] for m in modes}
        for r in range(rounds):
            order = modes[r % len(modes):] + modes[:r % len(modes)]  # rotate: no mode always first
            for mode in order:
                k = 0 if mode == "sign" else int(mode.rsplit("_", 1)[1])
                t0 = time.perf_counter()
                for i, p in enumerate(payloads):
                    if k == 0:
                        seal(kp, i + 1, now + i, p)
                    else:
                        seal_confidential(kp, i + 1, now + i, p, stream="bench", recipients=rcpts[:k])
                times[mode].append((time.perf_counter() - t0) / len(payloads) * 1e6)
        med = {m: statistics.median(v) for m, v in times.items()}
        out[kind] = {"payload_bytes": round(statistics.median(len(p.data) for p in payloads)),
                     "us_per_message": {m: round(v, 1) for m, v in med.items()},
                     "ratio_over_sign": {m: round(v / med["sign"], 2) for m, v in med.items() if m != "sign"},
                     "rounds": rounds, "messages_per_round": per_round}
    return out


def build_confidential_report(args: argparse.Namespace) -> dict[str, Any]:
    from bench.pipeline import Consumer, Drain, _drain, _median, _say, _start_ledger
    from confidential.keys import RecipientKey
    from pipelines.devices import Factory
    from sealstream.settings import load_settings

    base = load_settings()
    home = Path(tempfile.mkdtemp(prefix="ss-bench-conf-"))
    private = None
    ledger = None
    Consumer.created = []
    load_before = os.getloadavg()
    try:
        if args.kafka == "private":
            from infra.private_stack import PrivateStack

            private = PrivateStack(home / "private", base=base, kafka=True).__enter__()
        bootstrap = private.settings.kafka_bootstrap if private is not None else base.kafka_bootstrap
        s = load_settings(home=home, kafka_bootstrap_servers=bootstrap, pg_dsn=base.postgres_dsn,
                          minio_endpoint=base.minio_address,
                          stack_home=base.stack_dir.resolve())  # the stack's CA and secrets (security on)
        ledger = _start_ledger(home) if args.anchor else None
        fac = Factory.ensure(s, f"bench-{uuid.uuid4().hex[:8]}", args.devices)
        recipients = [(r.id, r.public) for r in (RecipientKey.generate(f"bench.r{i}")
                                                 for i in range(args.recipients))]
        plain, conf = _messages(fac, args.messages, args.seed, recipients)
        sets = {"plain": plain, "confidential": conf}
        drains: list[Drain] = []
        for r in range(args.repeats):
            order = ["plain", "confidential"] if r % 2 == 0 else ["confidential", "plain"]
            for label in order:
                load = _produce(s, fac, sets[label])
                d, _ = _drain("trusted", s, load, home, args, r)
                d.consumer = label
                drains.append(d)
                _say(args, f"repeat {r + 1}/{args.repeats} {label:12s} {d.records_per_s:8.1f} rec/s "
                           f"{d.blob_mb_per_s:6.2f} blob MB/s ({d.seconds} s)")
        figures: dict[str, dict[str, Any]] = {}
        for label in sets:
            ds = [d for d in drains if d.consumer == label]
            figures[label] = {k: _median(ds, k) for k in ("records_per_s", "seconds")}
            if args.anchor:
                figures[label]["anchored_per_s"] = _median(ds, "anchored_per_s")
        per_repeat = [c.records_per_s / p.records_per_s for c, p in
                      zip([d for d in drains if d.consumer == "confidential"],
                          [d for d in drains if d.consumer == "plain"])]
        ratio = round(figures["confidential"]["records_per_s"] / figures["plain"]["records_per_s"], 3)
        anchored_ratio = None
        if args.anchor and figures["plain"].get("anchored_per_s"):
            anchored_ratio = round(figures["confidential"]["anchored_per_s"] / figures["plain"]["anchored_per_s"], 3)
        _say(args, "device-side cost (encrypt + wrap + sign vs sign)")
        device = device_cost(rounds=args.device_rounds)
        return {
            "mode": "confidential",
            "load": {"messages": len(plain), "devices": len(fac.devices), "recipients": args.recipients,
                     "by_kind": {k: sum(1 for m in plain if m.statement.kind == k) for k in ("timeseries", "image",
                                                                                             "video")},
                     "plain_bytes": sum(len(m.value) for m in plain), "envelope_bytes": sum(len(m.value) for m in conf),
                     "key_record_bytes": sum(len(dict(m.headers)["ss-keys"]) for m in conf)},
            "repeats": args.repeats,
            "runs": [d.__dict__ for d in drains],
            "plain": figures["plain"], "confidential": figures["confidential"],
            "ratio": {"records_per_s": ratio, "per_repeat": [round(x, 3) for x in per_repeat],
                      "anchored_per_s": anchored_ratio},
            "target_ratio": TARGET_RATIO, "target_met": ratio >= TARGET_RATIO,
            "device": device,
            "anchoring": bool(args.anchor), "kafka": args.kafka,
            "created": {"databases": [d for d, _ in Consumer.created], "buckets": [b for _, b in Consumer.created],
                        "kept": bool(args.keep)},
            "load_average": {"before": [round(x, 2) for x in load_before],
                             "after": [round(x, 2) for x in os.getloadavg()]},
        }
    finally:
        if ledger is not None:
            ledger.stop(timeout=5)
        if private is not None:
            private.close()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)


def format_confidential_report(rep: dict[str, Any]) -> str:
    ld = rep["load"]
    lines = [f"load: {ld['messages']} messages {ld['by_kind']}, {ld['devices']} devices, {ld['recipients']} "
             f"recipient(s); {ld['plain_bytes']} payload bytes plain, {ld['envelope_bytes']} as envelopes, "
             f"{ld['key_record_bytes']} of key records",
             f"plain:        {rep['plain']['records_per_s']:.1f} records/s (median of {rep['repeats']})",
             f"confidential: {rep['confidential']['records_per_s']:.1f} records/s",
             f"ratio confidential/plain: {rep['ratio']['records_per_s']:.3f} (per repeat {rep['ratio']['per_repeat']}; "
             f"target >= {rep['target_ratio']}: {'met' if rep['target_met'] else 'MISSED'})"]
    if rep["ratio"].get("anchored_per_s") is not None:
        lines.append(f"anchored records/s: plain {rep['plain']['anchored_per_s']:.1f}, confidential "
                     f"{rep['confidential']['anchored_per_s']:.1f}, ratio {rep['ratio']['anchored_per_s']:.3f}")
    lines.append("device side, per message (median µs; ratio over signing alone):")
    for kind, d in rep["device"].items():
        us, ra = d["us_per_message"], d["ratio_over_sign"]
        parts = ", ".join(f"{k.split('_')[1]} recipient(s) {us[k]:.0f} ({ra[k]:.2f}x)"
                          for k in us if k != "sign")
        lines.append(f"  {kind} ({d['payload_bytes']} B): sign {us['sign']:.0f}; {parts}")
    la = rep["load_average"]
    lines.append(f"load average before {la['before']} after {la['after']}")
    return "\n".join(lines)
