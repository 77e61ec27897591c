"""Camera frames: a synthetic conveyor scene rendered with Pillow, as JPEG.

The scene: a belt whose stripes move with time, a part travelling along it
(sometimes with a defect mark), a lighting gradient, and an overlay with the
device name, seq and UTC timestamp. Rendering depends only on (seed, device,
seq, ts), so the same seed gives the same bytes (for one Pillow/libjpeg build).
"""

from __future__ import annotations

import io
import struct
import time

from PIL import Image, ImageDraw, ImageFont

from ._rng import rng_for

__all__ = ["CONTENT_TYPE", "render_scene", "jpeg_frame", "pad_jpeg"]

CONTENT_TYPE = "image/jpeg"
_FONT_CACHE: dict[int, ImageFont.ImageFont | ImageFont.FreeTypeFont] = {}


def _font(size: int):
    if size not in _FONT_CACHE:
        try:
            _FONT_CACHE[size] = ImageFont.load_default(size=size)
        except TypeError:  # Pillow < 10.1: bitmap font only
            _FONT_CACHE[size] = ImageFont.load_default()
    return _FONT_CACHE[size]


def render_scene(seed: int, device: str, seq: int, ts_ms: int, size: tuple[int, int] = (640, 480),
                 defect_rate: float = 0.05) -> Image.Image:
    """The conveyor scene at time `ts_ms` as an RGB image."""
    w, h = size
    rng = rng_for(seed, device, seq, "image")
    base = rng_for(seed, device, "scene")
    tint = base.randint(-12, 12)
    img = Image.linear_gradient("L").rotate(90).resize((w, h)).point(lambda p: 40 + p // 4 + tint).convert("RGB")
    d = ImageDraw.Draw(img)
    belt_top, belt_bot = int(h * 0.45), int(h * 0.8)
    d.rectangle([0, belt_top, w, belt_bot], fill=(52, 54, 58))
    speed = 0.12 + 0.04 * base.random()  # px per ms * scale
    shift = int(ts_ms * speed * w / 640) % 40
    for x in range(-40 + shift, w, 40):
        d.line([x, belt_top, x + 12, belt_bot], fill=(70, 72, 76), width=3)
    d.line([0, belt_top, w, belt_top], fill=(150, 150, 150), width=2)
    d.line([0, belt_bot, w, belt_bot], fill=(30, 30, 30), width=2)
    span = w + 120
    px = int(ts_ms * speed * w / 640 * 0.5) % span - 120
    py = belt_top + (belt_bot - belt_top) // 2
    pw, ph = int(w * 0.16), int(h * 0.14)
    d.rounded_rectangle([px, py - ph // 2, px + pw, py + ph // 2], radius=max(2, pw // 10),
                        fill=(176, 132, 60), outline=(90, 70, 30), width=2)
    d.ellipse([px + pw // 3, py - ph // 5, px + 2 * pw // 3, py + ph // 5], fill=(120, 90, 40))
    if rng.random() < defect_rate:
        dx, dy = rng.randint(0, max(1, pw - 12)), rng.randint(-ph // 2, max(-ph // 2 + 1, ph // 2 - 12))
        d.ellipse([px + dx, py + dy, px + dx + 10, py + dy + 10], fill=(200, 30, 30))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts_ms // 1000)) + f".{ts_ms % 1000:03d}Z"
    font = _font(max(10, h // 30))
    d.rectangle([0, 0, w, h // 16 + 6], fill=(0, 0, 0))
    d.text((6, 3), f"{device}  #{seq}  {stamp}", fill=(230, 230, 230), font=font)
    return img


def jpeg_frame(seed: int, device: str, seq: int, ts_ms: int, size: tuple[int, int] = (640, 480),
               quality: int = 85) -> bytes:
    """The scene as baseline JPEG bytes (no EXIF, no optimisation passes)."""
    out = io.BytesIO()
    render_scene(seed, device, seq, ts_ms, size).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def pad_jpeg(data: bytes, min_size: int) -> bytes:
    """`data` grown to >= `min_size` bytes with COM segments after SOI: still a valid JPEG, same picture."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    need = min_size - len(data)
    segments = []
    while need > 0:
        body = min(65533, max(1, need - 4))
        segments.append(b"\xff\xfe" + struct.pack(">H", body + 2) + b"\x00" * body)
        need -= body + 4
    return data[:2] + b"".join(segments) + data[2:]
