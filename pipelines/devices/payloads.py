"""One entry point for payload generation: kind -> bytes, deterministic given the seed."""

from __future__ import annotations

from dataclasses import dataclass

from . import images, timeseries, video
from .kinds import kind_info

__all__ = ["Payload", "generate", "generate_oversized"]


@dataclass(frozen=True)
class Payload:
    """Bytes a device is about to sign and send, with their kind and MIME type."""

    kind: str
    content_type: str
    data: bytes = b""

    def __repr__(self) -> str:  # payloads can be megabytes
        return f"Payload({self.kind!r}, {self.content_type!r}, {len(self.data)} bytes)"


def generate(kind: str, seed: int, device: str, seq: int, ts_ms: int) -> Payload:
    """The payload device `device` (its name) sends as message `seq` at `ts_ms`."""
    info = kind_info(kind)
    if kind == "timeseries":
        data = timeseries.timeseries_batch(seed, device, seq, ts_ms)
    elif kind == "image":
        data = images.jpeg_frame(seed, device, seq, ts_ms)
    else:
        data = video.video_chunk(seed, device, seq, ts_ms)
    return Payload(kind, info.content_type, data)


def generate_oversized(kind: str, seed: int, device: str, seq: int, ts_ms: int, limit: int) -> Payload:
    """A payload of `kind` just above `limit` bytes that is still a valid file of its format."""
    info = kind_info(kind)
    if kind == "timeseries":
        data = timeseries.timeseries_of_size(seed, device, seq, ts_ms, limit + 1)
    elif kind == "image":
        data = images.pad_jpeg(images.jpeg_frame(seed, device, seq, ts_ms), limit + 1)
    else:
        data = video.pad_mpegts(video.video_chunk(seed, device, seq, ts_ms), limit + 1)
    return Payload(kind, info.content_type, data)
