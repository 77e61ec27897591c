"""A camera folder: new image files or video chunks, spooled once their size is stable, then moved to done/.

    [sources.cam-door]
    type = "files"
    device = "cam-1"                 # a [devices.cam-1] of kind image or video
    path = "/srv/camera/door"        # the folder the camera writes into (relative: to edge.toml's folder)
    done = "done"                    # where spooled files go (relative: inside `path`); default "done"
    pattern = "*.jpg"                # glob of the files to take; default "*" (hidden and *.tmp/*.part never)
    kind = "image"                   # image | video (must be the device's kind); default image
    content_type = "image/jpeg"      # default: from the extension (.jpg .png .ts .mp4 ...)
    poll_s = 0.5                     # how often the folder is listed
    stable_s = 1.0                   # a file is taken when its size and mtime did not change this long

Each file becomes one `BlobItem` (ts = the file's mtime: the camera's clock; ref = folder, name, size
and mtime, so a file re-emitted after a crash before its move is spooled once). It is moved to
done/ only after the agent spooled it: a file never leaves the folder unsigned. Unreadable files and
failed moves are reported (``file-unreadable``, ``move-failed``) and retried on the next poll.
"""

from __future__ import annotations

import asyncio
import fnmatch
import mimetypes
import os
import time
from pathlib import Path
from typing import Literal

from ..model import BlobItem, SourceContext

__all__ = ["FilesSource", "from_config"]

_CT = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".ts": "video/mp2t", ".mp4": "video/mp4",
       ".mkv": "video/x-matroska", ".webp": "image/webp"}
_KEYS = {"type", "device", "path", "done", "pattern", "kind", "content_type", "poll_s", "stable_s", "base_dir"}


class FilesSource:
    def __init__(self, name: str, device: str, folder: Path, done: Path, pattern: str = "*",
                 kind: Literal["image", "video"] = "image",
                 content_type: str | None = None, poll_s: float = 0.5, stable_s: float = 1.0) -> None:
        self.name, self.device, self.folder, self.done = name, device, folder, done
        self.pattern, self.kind, self.content_type = pattern, kind, content_type
        self.poll_s, self.stable_s = poll_s, stable_s
        self._seen: dict[str, tuple[int, int, float]] = {}  # name -> (size, mtime_ns, since)

    def _candidates(self) -> list[os.DirEntry]:
        out = []
        with os.scandir(self.folder) as it:
            for e in it:
                n = e.name
                if n.startswith(".") or n.endswith((".tmp", ".part")) or not fnmatch.fnmatch(n, self.pattern):
                    continue
                if e.is_file(follow_symlinks=False):
                    out.append(e)
        return sorted(out, key=lambda e: (e.stat().st_mtime_ns, e.name))

    def _ctype(self, name: str) -> str:
        if self.content_type:
            return self.content_type
        ext = os.path.splitext(name)[1].lower()
        return _CT.get(ext) or mimetypes.guess_type(name)[0] or "application/octet-stream"

    async def _take(self, ctx: SourceContext, entry: os.DirEntry) -> None:
        st = entry.stat()
        path = Path(entry.path)
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            ctx.error("file-unreadable", f"{path}: {exc}")
            return
        if len(data) != st.st_size:  # grew while read: not stable after all
            self._seen.pop(entry.name, None)
            return
        ref = f"files:{self.folder}:{entry.name}:{st.st_size}:{st.st_mtime_ns}"
        ok = await ctx.emit(BlobItem(self.device, self.kind, self._ctype(entry.name), data,
                                     st.st_mtime_ns // 1_000_000, int(time.time() * 1000), ref))
        if ok is False:  # refused (reason counted by the agent): left in place, retaken only once it changes
            self._seen[entry.name] = (st.st_size, st.st_mtime_ns, float("inf"))
            return
        try:
            target = self.done / entry.name
            if target.exists():
                target = self.done / f"{entry.name}.{st.st_mtime_ns}"
            os.replace(path, target)
            self._seen.pop(entry.name, None)
        except OSError as exc:
            ctx.error("move-failed", f"{path} -> {self.done}: {exc}")

    async def run(self, ctx: SourceContext) -> None:
        ctx.state("connecting")
        while True:
            try:
                self.done.mkdir(parents=True, exist_ok=True)
                entries = await asyncio.to_thread(self._candidates)
                ctx.state("connected")
            except OSError as exc:
                ctx.state("disconnected")
                ctx.error("folder-unreadable", f"{self.folder}: {exc}")
                await asyncio.sleep(max(self.poll_s, 1.0))
                continue
            now = time.monotonic()
            names = set()
            for e in entries:
                names.add(e.name)
                try:
                    st = e.stat()
                except OSError:
                    continue
                seen = self._seen.get(e.name)
                if seen is None or seen[:2] != (st.st_size, st.st_mtime_ns):
                    self._seen[e.name] = (st.st_size, st.st_mtime_ns, now)
                elif seen[2] != float("inf") and now - seen[2] >= self.stable_s:
                    await self._take(ctx, e)
            for gone in set(self._seen) - names:
                del self._seen[gone]
            await asyncio.sleep(self.poll_s)


def from_config(name: str, section: dict) -> FilesSource:
    unknown = sorted(set(section) - _KEYS)
    if unknown:
        known = ", ".join(sorted(_KEYS - {"base_dir"}))
        raise ValueError(f"unknown key(s) {', '.join(unknown)}; a files source takes {known}")
    device = section.get("device")
    if not isinstance(device, str) or not device:
        raise ValueError('needs device = "<a [devices.<name>] of kind image or video>"')
    folder = section.get("path")
    if not isinstance(folder, str) or not folder:
        raise ValueError('needs path = "<the camera folder>"')
    base = Path(section.get("base_dir") or ".")
    folder_p = Path(folder).expanduser()
    folder_p = folder_p if folder_p.is_absolute() else base / folder_p
    done = Path(str(section.get("done", "done"))).expanduser()
    done = done if done.is_absolute() else folder_p / done
    kind = section.get("kind", "image")
    if kind not in ("image", "video"):
        raise ValueError(f'kind must be "image" or "video", got {kind!r}')
    poll_s, stable_s = section.get("poll_s", 0.5), section.get("stable_s", 1.0)
    for k, v in (("poll_s", poll_s), ("stable_s", stable_s)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{k} must be a number of seconds > 0, got {v!r}")
    ct = section.get("content_type")
    if ct is not None and not isinstance(ct, str):
        raise ValueError("content_type must be a MIME type")
    return FilesSource(name, device, folder_p, done, str(section.get("pattern", "*")), kind, ct, float(poll_s),
                       float(stable_s))
