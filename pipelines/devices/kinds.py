"""The three payload kinds: their topic, content type, size limit and default sensors.

One table so the simulator, the fault injector and (later) the ingest agent agree
on where a kind goes and how large it may be. Limits are settings
(``SEALSTREAM_MAX_TIMESERIES_BYTES``, ``..._IMAGE_...``, ``..._VIDEO_...``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sealstream.settings import Settings
from trust.statement import KINDS
from sealstream.topics import RAW_OF_KIND

__all__ = ["KindInfo", "KIND_INFO", "ALL_KINDS", "kind_info", "max_payload_bytes", "parse_kinds"]


@dataclass(frozen=True)
class KindInfo:
    """Static facts about one payload kind."""

    kind: str
    topic: str
    content_type: str
    short: str
    sensors: tuple[str, ...]


KIND_INFO: dict[str, KindInfo] = {
    "timeseries": KindInfo("timeseries", RAW_OF_KIND["timeseries"], "application/vnd.apache.arrow.stream", "ts",
                           ("temperature", "vibration", "pressure", "current")),
    "image": KindInfo("image", RAW_OF_KIND["image"], "image/jpeg", "cam", ("camera",)),
    "video": KindInfo("video", RAW_OF_KIND["video"], "video/mp2t", "vid", ("camera",)),
}
#: In the order runs cycle through them.
ALL_KINDS: tuple[str, ...] = ("timeseries", "image", "video")
assert set(KIND_INFO) == set(KINDS)


def kind_info(kind: str) -> KindInfo:
    try:
        return KIND_INFO[kind]
    except KeyError:
        raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(ALL_KINDS)}") from None


def max_payload_bytes(settings: Settings, kind: str) -> int:
    """The largest payload of `kind` the ingest side accepts."""
    kind_info(kind)
    return int(getattr(settings, f"max_{kind}_bytes"))


def parse_kinds(text: str) -> tuple[str, ...]:
    """``"timeseries,image"`` -> ``("timeseries", "image")`` (known kinds, no duplicates, in ALL_KINDS order)."""
    wanted = {k.strip() for k in text.split(",") if k.strip()}
    for k in wanted:
        kind_info(k)
    if not wanted:
        raise ValueError("no kinds given; use one or more of timeseries,image,video")
    return tuple(k for k in ALL_KINDS if k in wanted)
