"""The device/edge simulator: factories of signed devices producing telemetry to Kafka.

Modules, one idea each: `kinds` (topic, content type, limit per kind), `factory`
(device identities and manifest), `seqstore` (per-device seq that never goes
back), `timeseries`/`images`/`video` (seeded payload generators), `payloads`
(dispatch), `signing` (statement + signature + headers), `faults` (named bad
messages), `producer` (kafka-python / confluent-kafka), `sentlog` (what was
sent, where it landed), `simulator` (the run loop).
"""

from .factory import Device, DeviceSpec, Factory, FactoryError, devices_root, factory_dir
from .faults import FAULTS, FaultPlan, FaultSpec
from .kinds import ALL_KINDS, KIND_INFO, kind_info, max_payload_bytes, parse_kinds
from .payloads import Payload, generate, generate_oversized
from .producer import CLIENTS, Delivery, ProducerError, open_sink
from .sentlog import SentLog, SentRecord, read_sent_log
from .seqstore import SeqStore
from .signing import OutMessage, seal
from .simulator import RunConfig, RunStats, RunSummary, Simulator, run

__all__ = [
    "ALL_KINDS", "CLIENTS", "FAULTS", "KIND_INFO", "Delivery", "Device", "DeviceSpec", "Factory", "FactoryError",
    "FaultPlan", "FaultSpec", "OutMessage", "Payload", "ProducerError", "RunConfig", "RunStats", "RunSummary",
    "SentLog", "SentRecord", "SeqStore", "Simulator", "devices_root", "factory_dir", "generate",
    "generate_oversized", "kind_info", "max_payload_bytes", "open_sink", "parse_kinds", "read_sent_log", "run",
    "seal",
]
