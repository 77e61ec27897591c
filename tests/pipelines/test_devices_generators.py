"""Pure parts of the simulator: generators (deterministic, valid formats), fault plans, seqs, factories."""

from __future__ import annotations

import io
import json
import stat

import pyarrow as pa
import pytest
from PIL import Image

from pipelines.devices import Factory, FactoryError, FaultPlan, FaultSpec, SeqStore, generate, generate_oversized
from pipelines.devices.faults import FaultScheduler
from pipelines.devices.timeseries import SCHEMA, read_timeseries
from pipelines.devices.video import decode_video
from sealstream.settings import load_settings
from trust.identity import load_keypair

T0 = 1_700_000_000_123


@pytest.mark.parametrize("kind", ["timeseries", "image", "video"])
def test_same_seed_same_bytes(kind: str) -> None:
    a = generate(kind, 42, "dev-000", 7, T0)
    assert a.data == generate(kind, 42, "dev-000", 7, T0).data
    assert a.data != generate(kind, 43, "dev-000", 7, T0).data
    assert a.data != generate(kind, 42, "dev-001", 7, T0).data


def test_timeseries_is_arrow_ipc_with_schema() -> None:
    p = generate("timeseries", 1, "ts-000", 3, T0)
    assert p.content_type == "application/vnd.apache.arrow.stream"
    table = read_timeseries(p.data)
    assert table.schema == SCHEMA
    assert table.schema.field("ts").type == pa.timestamp("ms", tz="UTC")
    assert pa.types.is_dictionary(table.schema.field("sensor").type)
    assert set(table.column("sensor").to_pylist()) == {"temperature", "vibration", "pressure", "current"}
    assert max(table.column("ts").cast(pa.int64()).to_pylist()) == T0
    temps = [v for s, v in zip(table.column("sensor").to_pylist(), table.column("value").to_pylist())
             if s == "temperature"]
    assert all(40 < t < 90 for t in temps)


def test_timeseries_has_occasional_anomalies() -> None:
    """Over many batches a few carry a spike of several sigma; most do not."""
    def spiky(seq: int) -> bool:
        t = read_timeseries(generate("timeseries", 5, "ts-000", seq, T0 + seq * 1000).data)
        vib = [v for s, v in zip(t.column("sensor").to_pylist(), t.column("value").to_pylist()) if s == "vibration"]
        temp = [v for s, v in zip(t.column("sensor").to_pylist(), t.column("value").to_pylist()) if s == "temperature"]
        return max(vib) - min(vib) > 3 or max(temp) - min(temp) > 5
    n = sum(spiky(seq) for seq in range(300))
    assert 0 < n < 30


def test_image_is_a_jpeg_frame() -> None:
    p = generate("image", 1, "cam-000", 3, T0)
    assert p.content_type == "image/jpeg"
    with Image.open(io.BytesIO(p.data)) as img:
        img.load()
        assert img.format == "JPEG" and img.size == (640, 480)


def test_video_chunk_decodes() -> None:
    p = generate("video", 1, "vid-000", 3, T0)
    assert p.content_type == "video/mp2t"
    assert decode_video(p.data) == [(320, 240)] * 20


@pytest.mark.parametrize("kind,limit", [("timeseries", 200_000), ("image", 300_000), ("video", 400_000)])
def test_oversized_payloads_stay_valid(kind: str, limit: int) -> None:
    p = generate_oversized(kind, 1, "d", 1, T0, limit)
    assert limit < len(p.data) < limit * 1.3
    if kind == "timeseries":
        assert read_timeseries(p.data).schema == SCHEMA
    elif kind == "image":
        Image.open(io.BytesIO(p.data)).load()
    else:
        assert len(decode_video(p.data)) == 20


def test_fault_plan_parsing() -> None:
    plan = FaultPlan.parse(["bad-signature:0.01", "replay:5", "oversized"])
    assert plan.specs == (FaultSpec("bad-signature", rate=0.01), FaultSpec("replay", count=5),
                          FaultSpec("oversized", count=1))
    for bad in ("nope:1", "replay:-1", "replay:1.5", "replay:x"):
        with pytest.raises(ValueError):
            FaultPlan.parse([bad])


def test_fault_counts_are_interleaved_and_exact() -> None:
    sched = FaultScheduler(FaultPlan.parse(["replay:3", "clock-skew:2"]), seed=1)
    picks = []
    for _ in range(20):
        f = sched.next()
        picks.append(f)
        if f:
            sched.done(f)
    assert picks.count("replay") == 3 and picks.count("clock-skew") == 2
    assert all(not (a and b) for a, b in zip(picks, picks[1:]))  # never two faults in a row


def test_seq_store_never_goes_back(tmp_path) -> None:
    path = tmp_path / "seq.json"
    s = SeqStore(path, block=10)
    assert [s.take("a") for _ in range(3)] == [0, 1, 2]
    del s  # a crash: no close(), so the store resumes past the reserved block (a gap, never a reuse)
    after_crash = SeqStore(path, block=10)
    assert after_crash.take("a") == 10
    after_crash.close()  # a clean stop records the exact next seq: no gap
    assert SeqStore(path).take("a") == 11


def test_factory_persists_keys_and_manifest(tmp_path) -> None:
    s = load_settings(home=tmp_path)
    with pytest.raises(FactoryError, match="sealstream devices run"):
        Factory.load(s, "plant")
    f = Factory.ensure(s, "plant", 2, ("timeseries", "image"))
    assert [d.spec.name for d in f.devices] == ["ts-000", "ts-001", "cam-000", "cam-001"]
    manifest = json.loads((f.path / "devices.json").read_text())
    assert {d["kind"] for d in manifest["devices"]} == {"timeseries", "image"}
    for d in f.devices:
        key = f.path / d.spec.key_file
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert load_keypair(key).did == d.did
    again = Factory.ensure(s, "plant", 3, ("timeseries", "image", "video"))
    assert again.devices[:4] == f.devices  # same identities, more devices
    assert len(again.devices) == 9
    assert len(again.select(("video",), 2)) == 2
    with pytest.raises(FactoryError):
        Factory.ensure(s, "../etc", 1)
