"""The device directory the ingest checks ask: ``resolve(did) -> DeviceKey | None``.

Implementations:

- `ProvenDirectory` — what the pipeline uses: resolves a device key with the
  light client and state proofs, never one node's word (threat model: any
  single ledger node's HTTP answers may lie). For a did it fetches
  ``GET /state/proofs?did=`` (the key index, the entity and its org, proven at
  one height), verifies the header of that height from genesis (certified
  headers, followed incrementally by one `LightClient` per directory), checks
  every proof against that header's state root and runs
  `registry.resolve_key` over a view holding *only* the proven values (a key
  not proven refuses the answer; nothing defaults). Freshness: a proof must be
  of a height >= the *floor* (the highest certified height verified from any
  node; refreshed from every node's ``/status`` every `floor_ttl` seconds)
  minus `allowed_lag` (0 by default), so a node serving a correct proof of an
  old state (before a revocation) is refused and the next node asked. When no
  node gives a fresh, proven answer it raises `DirectoryUnavailable` (a
  `ConnectionError`: transient, the record is retried, not dead-lettered).
  Answers are cached for `ttl` seconds, and never beyond `ttl` after the floor
  they were judged against was refreshed (negative answers: `negative_ttl`).
  See docs/pipeline.md "How ingest resolves device keys".
- `ManifestDirectory` — **for tests and demos without a ledger only**: trusts
  a simulator factory's ``devices.json`` (`pipelines.devices.factory`); every
  device listed is active, nothing is ever revoked unless `revoked` says so.
  It proves nothing about registration; never use it in production.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Protocol

from ledger.errors import LedgerError

from .checks import DeviceKey

__all__ = ["DeviceDirectory", "DirectoryUnavailable", "ManifestDirectory", "ProvenDirectory",
           "REFUSAL_REASONS", "device_key_from_resolution"]

log = logging.getLogger("sealstream.pipeline.directory")

#: Why `ProvenDirectory` refused a node's answer (the ``reason`` label of its counter).
#: stale: proven at a height below the floor - allowed_lag; bad-proof: a proof does not verify against
#: the certified state root; incomplete: a key that resolving needs is not proven; bad-header: the
#: node's headers do not verify, name another header than the certified one, or do not back the tip it
#: claims; unavailable: the node did not answer (or answered something undecodable).
REFUSAL_REASONS = ("stale", "bad-proof", "incomplete", "bad-header", "unavailable")


class DirectoryUnavailable(LedgerError, ConnectionError):
    """No node gave a fresh, proven answer now: transient (an outage of the ledger: retry the record,
    never dead-letter it)."""


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


#: most ``/headers`` pages one catch-up reads from one node (each page must extend the chain)
_MAX_HEADER_PAGES = 100_000


class _Unproven(LookupError):
    """Resolving read a state key that the answer did not prove."""


class _ProvenView:
    """A read-only state view over ONLY proven values (key -> canonical bytes, None = proven absent).

    Reading any other key raises `_Unproven`: resolving never defaults a record it was not shown."""

    def __init__(self, values: dict[str, Optional[bytes]]) -> None:
        self._values = values

    def _raw(self, key: str) -> Optional[bytes]:
        if key not in self._values:
            raise _Unproven(key)
        return self._values[key]

    def get(self, key: str, default: Any = None) -> Any:
        from trust import canonical

        raw = self._raw(key)
        return default if raw is None else canonical.decode(raw)

    peek = get

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._raw(key) is not None


@dataclass(frozen=True)
class _Verdict:
    """A proven answer: the device key (None: not a registered device) and the height it is proven at."""

    key: Optional[DeviceKey]
    height: int


class ProvenDirectory:
    """Device keys resolved from certified ledger state (see the module doc).

    `client` is a blocking `ledger.client.LedgerClient` (or anything with `genesis`, `nodes` (each with
    a `.name`), ``get_status(node)``, ``get_header_page(start, end, node)`` and
    ``get_state_proofs(dids=, node=)``); nodes are asked in its order. `allowed_lag`: how many blocks
    below the floor a proof may be (0: at or above it; the ledger makes no empty blocks, so a lag lets a
    proof from just before a revocation pass while nothing is committed after it). `floor_ttl`: how
    often the floor is refreshed from every node's status (default ``ttl / 2``). A revocation committed
    at height r is honoured at most `ttl` seconds after a reachable honest node reports a tip >= r.
    The floor refresh needs f+1 distinct nodes (f of the latest verified sealer set) whose claimed tip
    verifies, so at least one honest node's tip is in it; with fewer it raises `DirectoryUnavailable`.
    """

    def __init__(self, client: Any, *, ttl: float = 30.0, negative_ttl: float = 5.0,
                 floor_ttl: Optional[float] = None, allowed_lag: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from ledger._verify import CachedVerifier
        from ledger.light_client import LightClient

        if allowed_lag < 0:
            raise ValueError("allowed_lag must be >= 0")
        self._client = client
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._floor_ttl = ttl / 2 if floor_ttl is None else floor_ttl
        self.allowed_lag = allowed_lag
        self._clock = clock
        self._names = [a.name for a in client.nodes]
        if not self._names:
            raise ValueError("the ledger client names no node")
        self._light = LightClient.from_genesis(client.genesis, verify=CachedVerifier(10_000))
        self._floor_at: Optional[float] = None  # clock of the last successful floor refresh
        self._cache: dict[str, tuple[float, Optional[DeviceKey]]] = {}
        self._lock = threading.Lock()  # cache and counters
        self._sync = threading.Lock()  # the light client
        self._refreshing = threading.Lock()  # one floor refresh at a time
        self._pool = ThreadPoolExecutor(max_workers=len(self._names), thread_name_prefix="directory-status")
        self.refused: dict[str, int] = {r: 0 for r in REFUSAL_REASONS}

    @classmethod
    def from_layout(cls, ledger_home: Path, **kw: Any) -> "ProvenDirectory":
        from ledger.client import LedgerClient

        return cls(LedgerClient.from_layout(ledger_home), **kw)

    @property
    def floor(self) -> int:
        """The highest certified height verified (from any node)."""
        return self._light.height

    # ------------------------------------------------------------ resolve

    def resolve(self, did: str) -> Optional[DeviceKey]:
        now = self._clock()
        with self._lock:
            hit = self._cache.get(did)
        if hit is not None and hit[0] > now:
            return hit[1]
        floor_at = self.refresh_floor()
        verdict = self._resolve_proven(did)
        if verdict.key is None:
            expires = now + self._negative_ttl
        else:
            expires = min(now + self._ttl, floor_at + self._ttl)
        with self._lock:
            self._cache[did] = (expires, verdict.key)
        return verdict.key

    def invalidate(self, did: Optional[str] = None) -> None:
        with self._lock:
            if did is None:
                self._cache.clear()
            else:
                self._cache.pop(did, None)

    def _refuse(self, reason: str, node: str, did: str, detail: str) -> str:
        with self._lock:
            self.refused[reason] += 1
        log.warning("directory: refused %s's answer for %s (%s): %s", node, did, reason, detail)
        return f"{node}: {reason} ({detail})"

    def _resolve_proven(self, did: str) -> _Verdict:
        from ledger.contracts import verify_state_proof
        from ledger.contracts.registry import resolve_key

        errors = []
        for node in self._names:
            try:
                sp = self._client.get_state_proofs(dids=[did], node=node)
                height = int(sp.height)
                items = [(str(p.key), p.value, p.proof) for p in sp.proofs]
            except Exception as exc:  # noqa: BLE001 - any node may be down or answer garbage
                errors.append(self._refuse("unavailable", node, did, f"{type(exc).__name__}: {exc}"))
                continue
            need = self.floor - self.allowed_lag
            if height < need:
                errors.append(self._refuse("stale", node, did, f"proven at height {height}, below {need} "
                                           f"(floor {self.floor}, allowed lag {self.allowed_lag})"))
                continue
            if height < 1:
                errors.append(self._refuse("bad-header", node, did, "no block yet: nothing certifies the state"))
                continue
            if height > self._light.height and not self._sync_to(height, node):
                errors.append(self._refuse("bad-header", node, did,
                                           f"cannot back height {height} with certified headers "
                                           f"(verified up to {self._light.height})"))
                continue
            header = self._light.headers[height]
            if sp.header_hash != header.header_hash():
                errors.append(self._refuse("bad-header", node, did,
                                           f"the proofs name another header than the certified one at {height}"))
                continue
            values: dict[str, Optional[bytes]] = {}
            bad = None
            for key, value, proof in items:
                try:
                    if value is not None and type(value) is not bytes:
                        raise TypeError("the value is not canonical bytes")
                    verify_state_proof(header.state_root, key, value, proof)
                except Exception as exc:  # noqa: BLE001 - a hostile proof may be any shape
                    bad = f"{key}: {type(exc).__name__}: {exc}"
                    break
                values[key] = value
            if bad is not None:
                errors.append(self._refuse("bad-proof", node, did, bad))
                continue
            try:
                res = resolve_key(_ProvenView(values), did, height)
            except _Unproven as exc:
                errors.append(self._refuse("incomplete", node, did, f"{exc.args[0]} is not proven"))
                continue
            except Exception as exc:  # noqa: BLE001 - proven values of an unexpected shape
                errors.append(self._refuse("bad-proof", node, did, f"proven records do not resolve: {exc}"))
                continue
            answer = None if res is None else {"resolution": {"id": res.id, "type": res.type, "key": res.key,
                                                              "status": res.status}}
            return _Verdict(device_key_from_resolution(did, answer), height)
        raise DirectoryUnavailable(f"no ledger node gave a fresh, proven resolution of {did} "
                                   f"(floor {self.floor}): {'; '.join(errors)}")

    # ------------------------------------------------------------ the light client and the floor

    def _sync_to(self, height: int, node: str) -> bool:
        """Verify certified headers up to `height` from `node`; True once the light client has `height`.
        Headers that verify are kept even if a later one does not (the client only moves forward)."""
        from ledger.light_client import LightClientError

        with self._sync:
            pages = 0
            while self._light.height < height and pages < _MAX_HEADER_PAGES:
                start = self._light.height + 1
                pages += 1
                try:
                    items = self._client.get_header_page(start, height, node)
                except Exception as exc:  # noqa: BLE001 - a node may be down or answer garbage
                    log.warning("directory: headers %d..%d from %s: %s: %s", start, height, node,
                                type(exc).__name__, exc)
                    return False
                if not items:
                    break
                for hdr, cert in items:
                    if self._light.height >= height:
                        break
                    try:
                        self._light.add(hdr, cert)
                    except (LightClientError, AttributeError, TypeError) as exc:
                        log.warning("directory: %s served a header that does not verify: %s", node, exc)
                        return False
            return self._light.height >= height

    def refresh_floor(self, force: bool = False) -> float:
        """Raise the floor to the highest tip any node claims and backs with certified headers (at most
        every `floor_ttl` seconds unless `force`); the clock of the refresh the floor is as of.

        Every node's ``/status`` is asked; claims are tried from the highest down. A node whose claimed
        tip cannot be backed (its headers do not verify or stop short), or whose tip hash is not the
        certified header of its height, is ignored, logged and counted (``bad-header``). Raises
        `DirectoryUnavailable` unless f+1 distinct nodes gave a tip that verifies."""
        with self._refreshing:
            return self._refresh_floor(force)

    def _refresh_floor(self, force: bool) -> float:
        if not force and self._floor_at is not None and self._clock() - self._floor_at < self._floor_ttl:
            return self._floor_at
        started = self._clock()
        futures = {n: self._pool.submit(self._client.get_status, n) for n in self._names}
        claims = []
        for node, fut in futures.items():
            try:
                st = fut.result()
                claims.append((int(st["height"]), str(st.get("tip", "")), node))
            except Exception as exc:  # noqa: BLE001 - a node may be down or answer garbage
                log.info("directory: no status from %s: %s: %s", node, type(exc).__name__, exc)
        backed = 0
        for h, tip, node in sorted(claims, reverse=True):
            if h > self._light.height and not self._sync_to(h, node):
                self._refuse("bad-header", node, "the floor", f"claims tip {h} but backs it only up to "
                             f"{self._light.height} with certified headers; ignored")
                continue
            if h >= 1 and self._light.headers[h].header_hash().hex() != tip:
                self._refuse("bad-header", node, "the floor", f"its tip hash at {h} is not the certified header")
                continue
            backed += 1
        sealers = self._light.sealer_sets[max(self._light.sealer_sets)]
        if backed < sealers.f + 1:
            raise DirectoryUnavailable(f"only {backed} ledger node(s) gave a tip that verifies; need "
                                       f"{sealers.f + 1} to know how fresh a proof must be (floor {self.floor})")
        self._floor_at = started
        return started

    # ------------------------------------------------------------ metrics (a Prometheus collector)

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        c = CounterMetricFamily("sealstream_pipeline_directory_refused",
                                "ledger answers the device directory refused, by reason", labels=["reason"])
        with self._lock:
            for reason, n in self.refused.items():
                c.add_metric([reason], n)
        yield c
        yield GaugeMetricFamily("sealstream_pipeline_directory_floor_height",
                                "highest certified ledger height the device directory verified", value=self.floor)

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        close = getattr(self._client, "close", None)
        if close is not None:
            close()


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
