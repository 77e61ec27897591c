"""Video chunks: short H.264 segments in MPEG-TS (``video/mp2t``), encoded with PyAV.

A chunk is `frames` frames of the conveyor scene (`images.render_scene`) at
`fps`, ending at the statement time. MPEG-TS is self-delimiting, so chunks can
be archived and replayed one by one, and every chunk starts with a key frame.
x264 runs single-threaded with the ultrafast/zerolatency preset: fast and
byte-for-byte deterministic for one PyAV build. Format notes: docs/formats.md.
"""

from __future__ import annotations

import io
from fractions import Fraction
from typing import cast

import av

from .images import render_scene

__all__ = ["CONTENT_TYPE", "video_chunk", "decode_video", "pad_mpegts", "TS_PACKET"]

CONTENT_TYPE = "video/mp2t"
TS_PACKET = 188
#: An MPEG-TS null packet (PID 0x1FFF): demuxers discard it, so padding keeps the chunk valid.
_NULL_PACKET = b"\x47\x1f\xff\x10" + b"\xff" * 184


def _codec() -> str:
    for name in ("libx264", "h264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - not built into this PyAV wheel
            continue
    raise RuntimeError("PyAV has no H.264 or MPEG-4 encoder")


def video_chunk(seed: int, device: str, seq: int, end_ms: int, *, frames: int = 20, fps: int = 10,
                size: tuple[int, int] = (320, 240)) -> bytes:
    """One MPEG-TS segment of `frames` frames ending at `end_ms`."""
    buf = io.BytesIO()
    container = av.open(buf, "w", format="mpegts")
    stream = cast(av.VideoStream, container.add_stream(_codec(), rate=fps))  # a video codec: a video stream
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.time_base = Fraction(1, fps)
    if stream.codec_context.name in ("libx264", "h264"):
        stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
    stream.codec_context.thread_count = 1
    step = 1000 // fps
    start = end_ms - (frames - 1) * step
    for i in range(frames):
        frame = av.VideoFrame.from_image(render_scene(seed, device, seq, start + i * step, size, defect_rate=0.0))
        frame.pts = i
        frame.time_base = stream.time_base
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return buf.getvalue()


def decode_video(data: bytes) -> list[tuple[int, int]]:
    """Decode every frame of a chunk; returns their (width, height). Raises `av.error.FFmpegError` on garbage."""
    with av.open(io.BytesIO(data), "r", format="mpegts") as container:
        return [(f.width, f.height) for f in container.decode(video=0)]


def pad_mpegts(data: bytes, min_size: int) -> bytes:
    """`data` grown to >= `min_size` bytes with null packets: still a valid chunk, same frames."""
    missing = max(0, min_size - len(data))
    return data + _NULL_PACKET * (-(-missing // TS_PACKET))
