"""The project's Kafka topics, in one place (docs/pipeline.md; DESIGN.md "One message, end to end").

Part of the config module: every layer may import it (docs/architecture.md). A device kind's raw
topic is `RAW_OF_KIND`; the reverse is `KIND_OF_RAW`.
"""

from __future__ import annotations

__all__ = ["ALERTS", "ANCHORS", "DEADLETTER", "KIND_OF_RAW", "RAW", "RAW_OF_KIND", "SEALED", "TOPICS"]

#: each device kind's raw topic (what a factory principal may produce to, and nothing else)
RAW_OF_KIND: dict[str, str] = {
    "timeseries": "iiot.timeseries.raw",
    "image": "iiot.images.raw",
    "video": "iiot.video.raw",
}
KIND_OF_RAW: dict[str, str] = {topic: kind for kind, topic in RAW_OF_KIND.items()}
RAW: tuple[str, ...] = tuple(RAW_OF_KIND.values())
#: records refused by the pipeline, with their reason
DEADLETTER = "iiot.deadletter"
#: the gateway's seal of every stored record
SEALED = "iiot.sealed"
#: a batch anchored on the ledger
ANCHORS = "iiot.anchors"
#: the verifier's and the bridge's alerts
ALERTS = "iiot.alerts"
#: every topic the stack creates
TOPICS: tuple[str, ...] = (*RAW, DEADLETTER, SEALED, ANCHORS, ALERTS)
