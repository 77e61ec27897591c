"""Sensor time series as Arrow IPC record batches (stream format).

Schema: ``ts`` timestamp[ms, UTC], ``sensor`` dictionary<int8, string>, ``value`` float64.
Each sensor follows a model: a device-specific baseline, a slow daily drift
(sawtooth, as after maintenance), a periodic component, Gaussian noise, and rare
anomalies (a spike of several sigma over a few rows). Values depend only on
(seed, device, row time), so the same seed gives the same bytes.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import pyarrow as pa

from ._rng import rng_for

__all__ = ["SCHEMA", "CONTENT_TYPE", "SensorModel", "SENSORS", "timeseries_batch", "read_timeseries",
           "timeseries_of_size"]

CONTENT_TYPE = "application/vnd.apache.arrow.stream"
SCHEMA = pa.schema([
    pa.field("ts", pa.timestamp("ms", tz="UTC"), nullable=False),
    pa.field("sensor", pa.dictionary(pa.int8(), pa.string()), nullable=False),
    pa.field("value", pa.float64(), nullable=False),
])


@dataclass(frozen=True)
class SensorModel:
    """How one sensor behaves: baseline, spread between devices, drift per day, cycle, noise."""

    name: str
    unit: str
    base: float
    spread: float
    drift_per_day: float
    amplitude: float
    period_s: float
    noise: float


SENSORS: tuple[SensorModel, ...] = (
    SensorModel("temperature", "degC", 62.0, 4.0, 3.0, 1.5, 600.0, 0.15),
    SensorModel("vibration", "mm/s", 2.8, 0.6, 0.8, 0.4, 37.0, 0.12),
    SensorModel("pressure", "bar", 6.0, 0.3, -0.2, 0.1, 120.0, 0.02),
    SensorModel("current", "A", 12.5, 1.5, 0.5, 2.0, 45.0, 0.25),
)
_DAY_MS = 86_400_000


def _value(model: SensorModel, offset: float, t_ms: int, noise: float) -> float:
    drift = model.drift_per_day * ((t_ms % _DAY_MS) / _DAY_MS)
    cycle = model.amplitude * math.sin(2 * math.pi * (t_ms / 1000.0) / model.period_s)
    return model.base + offset + drift + cycle + noise


def timeseries_batch(seed: int, device: str, seq: int, end_ms: int, *, rows_per_sensor: int = 10,
                     period_ms: int = 100, anomaly_rate: float = 0.02,
                     sensors: tuple[SensorModel, ...] = SENSORS) -> bytes:
    """One Arrow IPC stream: `rows_per_sensor` readings per sensor ending at `end_ms`, `period_ms` apart."""
    dev_rng = rng_for(seed, device, "offsets")
    offsets = [dev_rng.uniform(-m.spread, m.spread) for m in sensors]
    rng = rng_for(seed, device, seq, "timeseries")
    anomaly = None
    if rng.random() < anomaly_rate:
        s = rng.randrange(len(sensors))
        start = rng.randrange(rows_per_sensor)
        anomaly = (s, start, start + rng.randint(1, 3), rng.choice((-1, 1)) * rng.uniform(6, 12))
    ts: list[int] = []
    idx: list[int] = []
    values: list[float] = []
    t0 = end_ms - (rows_per_sensor - 1) * period_ms
    for r in range(rows_per_sensor):
        t = t0 + r * period_ms
        for s, model in enumerate(sensors):
            v = _value(model, offsets[s], t, rng.gauss(0.0, model.noise))
            if anomaly and anomaly[0] == s and anomaly[1] <= r < anomaly[2]:
                v += anomaly[3] * model.noise * 10
            ts.append(t)
            idx.append(s)
            values.append(round(v, 6))
    sensor = pa.DictionaryArray.from_arrays(pa.array(idx, pa.int8()), pa.array([m.name for m in sensors], pa.string()))
    batch = pa.record_batch([pa.array(ts, pa.timestamp("ms", tz="UTC")), sensor, pa.array(values, pa.float64())],
                            schema=SCHEMA)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, SCHEMA) as writer:
        writer.write_batch(batch)
    return sink.getvalue()


def timeseries_of_size(seed: int, device: str, seq: int, end_ms: int, min_size: int) -> bytes:
    """A valid batch of at least `min_size` bytes (more rows), for the `oversized` fault."""
    rows = max(10, min_size // 60)
    while True:
        data = timeseries_batch(seed, device, seq, end_ms, rows_per_sensor=rows, period_ms=10)
        if len(data) >= min_size:
            return data
        rows = rows * 2


def read_timeseries(data: bytes) -> pa.Table:
    """Parse an Arrow IPC stream payload into a table (raises `pyarrow.ArrowInvalid` on garbage)."""
    return pa.ipc.open_stream(pa.BufferReader(data)).read_all()
