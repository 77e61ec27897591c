"""The device directory the ingest checks ask: ``resolve(did) -> DeviceKey | None``.

Two implementations:

- `LedgerDirectory` — the real one: asks the ledger's registry
  (``LedgerClient.resolve_key``, docs/contracts.md "Key resolution as of a
  height") and caches each answer for `ttl` seconds (negative answers for
  `negative_ttl`), so a revocation is honoured at most `ttl` seconds late.
- `ManifestDirectory` — **for tests and demos without a ledger only**: trusts
  a simulator factory's ``devices.json`` (`pipelines.devices.factory`); every
  device listed is active, nothing is ever revoked unless `revoked` says so.
  It proves nothing about registration; never use it in production.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Protocol

from .checks import DeviceKey

__all__ = ["DeviceDirectory", "LedgerDirectory", "ManifestDirectory", "device_key_from_resolution"]


class DeviceDirectory(Protocol):
    def resolve(self, did: str) -> Optional[DeviceKey]:
        """The device's registered key and status, or None if it is not a registered device."""


def device_key_from_resolution(did: str, answer: Optional[dict]) -> Optional[DeviceKey]:
    """Map a ``GET /registry/key/{did}`` answer (``{state_height, resolution}``) to a `DeviceKey`.

    - never bound, ``unknown``, ``unregistered``, or bound to something that is
      not a device -> None (``unknown-device``);
    - ``revoked`` (the device or its org) -> revoked (``revoked-device``);
    - ``not_current`` (the did was rotated away, or not yet in force) -> the
      device's key *of the time*, so a statement signed by `did` fails the
      signature check (``bad-signature``);
    - ``valid`` -> active with key `did`.
    """
    if not answer:
        return None
    res = answer.get("resolution") if "resolution" in answer else answer
    if not isinstance(res, dict) or res.get("type") not in (None, "device"):
        return None
    status = res.get("status")
    if status == "valid" or (status == "active" and res.get("key") == did):
        return DeviceKey(did, did, False, res.get("id"))
    if status == "revoked":
        return DeviceKey(did, res.get("key") or did, True, res.get("id"))
    if status == "not_current" and res.get("key"):
        return DeviceKey(did, res["key"], False, res.get("id"))
    return None


class LedgerDirectory:
    """Device keys from the ledger registry (current height), cached with a TTL.

    `client` is a blocking `ledger.client.LedgerClient` (anything with
    ``resolve_key(did) -> dict | None``).  Errors reaching the ledger propagate
    (the worker retries the message rather than dead-lettering it).
    """

    def __init__(self, client: Any, *, ttl: float = 30.0, negative_ttl: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, Optional[DeviceKey]]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_layout(cls, ledger_home: Path, **kw: Any) -> "LedgerDirectory":
        from ledger.client import LedgerClient

        return cls(LedgerClient.from_layout(ledger_home), **kw)

    def resolve(self, did: str) -> Optional[DeviceKey]:
        now = self._clock()
        with self._lock:
            hit = self._cache.get(did)
        if hit is not None and hit[0] > now:
            return hit[1]
        key = device_key_from_resolution(did, self._client.resolve_key(did))
        expires = now + (self._ttl if key is not None else self._negative_ttl)
        with self._lock:
            self._cache[did] = (expires, key)
        return key

    def invalidate(self, did: Optional[str] = None) -> None:
        with self._lock:
            if did is None:
                self._cache.clear()
            else:
                self._cache.pop(did, None)


class ManifestDirectory:
    """TESTS AND DEMOS ONLY: the devices of simulator factories' ``devices.json``.

    Every listed device is active with the key of its did; `revoked` names
    dids to treat as revoked.  Files are re-read when they change (mtime), so
    devices added by a later simulator run are picked up.
    """

    def __init__(self, manifests: Iterable[Path], revoked: Iterable[str] = ()) -> None:
        self._paths = [Path(p) for p in manifests]
        self._revoked = frozenset(revoked)
        self._mtimes: dict[Path, float] = {}
        self._devices: dict[Path, dict[str, DeviceKey]] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_factories(cls, settings: Any, names: Iterable[str], **kw: Any) -> "ManifestDirectory":
        from .devices.factory import MANIFEST, factory_dir

        return cls([factory_dir(settings, n) / MANIFEST for n in names], **kw)

    def _refresh(self) -> None:
        for path in self._paths:
            try:
                mtime = path.stat().st_mtime
            except FileNotFoundError:
                self._devices.pop(path, None)
                continue
            if self._mtimes.get(path) == mtime:
                continue
            doc = json.loads(path.read_text("utf-8"))
            self._devices[path] = {
                d["did"]: DeviceKey(d["did"], d["did"], d["did"] in self._revoked, d.get("name"))
                for d in doc.get("devices", [])
            }
            self._mtimes[path] = mtime

    def resolve(self, did: str) -> Optional[DeviceKey]:
        with self._lock:
            self._refresh()
            for devices in self._devices.values():
                if did in devices:
                    return devices[did]
        return None
