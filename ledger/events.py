"""Following the ledger's audit events (`GET /events`) from a client, with failover and optional proofs.

`follow_events(client, ...)` is an async iterator of `AuditEvent` (and, with
``tips=True``, `Tip` lines telling how far the node's committed state has
been seen). It reads one node's NDJSON stream; when that node goes away it
resumes on the next node *after the last event it yielded* (``after=seq``:
event numbers are part of the replicated state, so they are the same on
every node), so a node change neither repeats nor skips an event. Every
stream must continue the seq numbering without a gap (`EventGapError`).

What is proven (``verify=True``): each event is fetched again as the state
value at its key (``aud/ev/<seq>``) with a sparse-Merkle proof, checked
against the state root of a header verified from genesis (every certificate
checked by one `LightClient` kept for the whole stream, so headers are
fetched once), and the streamed event must equal the proven one. So the
event was raised by the contracts on the certified chain: its rule,
version, operation, height and tx are what every honest node computed.
Without ``verify`` the events are whatever the node sent.

What is not proven: that the stream is *complete up to now*. Seq
continuity catches a node that drops events in the middle; a node that
withholds the newest events looks like a quiet chain. With ``verify``, each
`Tip` (and the end of a finite stream) that says "every event up to height
H sent, the next is seq N" is checked by proving event N's key: absent, or
raised after H (`EventProofError` otherwise). So a verified `Tip` means the
stream is complete up to H; events after H are covered by the next tip.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator

import aiohttp

from trust import canonical

from ._client.errors import LedgerClientError, NodeUnavailable
from .https import describe
from .light_client import LightClient, LightClientError

if TYPE_CHECKING:
    from ._client.aio import AsyncLedgerClient

__all__ = ["AuditEvent", "Tip", "EventStreamError", "EventGapError", "EventProofError", "follow_events"]

log = logging.getLogger("sealstream.ledger.events")
#: a following stream with no line for this long is dropped and resumed on another node
FOLLOW_READ_TIMEOUT_S = 35.0



class EventStreamError(LedgerClientError):
    """Base of the errors of following events."""


class EventGapError(EventStreamError):
    """A node's stream skipped or repeated an event number."""


class EventProofError(EventStreamError):
    """An event (or the event count) did not verify against a certified header."""


@dataclass(frozen=True)
class AuditEvent:
    """One audit event as ``/events`` serves it (`ledger.contracts.audit.event_json`).

    ``id`` is ``"height-index-n"``; ``verified_at`` is the height of the
    certified header whose state root proved it (None: not verified)."""

    seq: int
    id: str
    height: int
    index: int
    n: int
    rule: str
    version: int
    kind: str
    rule_org: str
    severity: str
    message: str
    detail: str
    time: int
    tx_id: str
    submitter: str
    operation: dict = field(hash=False)
    key: str = ""
    verified_at: int | None = None

    @classmethod
    def from_json(cls, d: dict, verified_at: int | None = None) -> "AuditEvent":
        try:
            return cls(**{k: d[k] for k in _FIELDS}, verified_at=verified_at)
        except (KeyError, TypeError) as exc:
            raise EventStreamError(f"malformed event line: {exc}") from None

    def to_json(self) -> dict:
        """The ``/events`` form (plus ``verified_at``)."""
        return {**{k: getattr(self, k) for k in _FIELDS}, "verified_at": self.verified_at}

    @property
    def org(self) -> str:
        """The org of the operation that raised it."""
        return self.operation["org"]


_FIELDS = ("seq", "id", "height", "index", "n", "rule", "version", "kind", "rule_org", "severity", "message",
           "detail", "time", "tx_id", "submitter", "operation", "key")


@dataclass(frozen=True)
class Tip:
    """The node had committed `height` and sent every event before seq `next`."""

    height: int
    next: int
    verified: bool = False


class _Prover:
    """Checks state values against headers verified from genesis, following the chain incrementally."""

    def __init__(self, client: "AsyncLedgerClient") -> None:
        self.client = client
        self.light = LightClient.from_genesis(client.genesis, verify=client._verify)

    async def value(self, key: str, node: str | None) -> tuple[Any, int]:
        from .contracts import StateProofError, verify_state_proof

        sp = await self.client.get_state_proof(key, node)
        if sp.height < 1 or sp.header_hash is None:
            raise EventProofError("the ledger has no block to verify against")
        if self.light.height < sp.height:
            try:
                self.light.add_chain(await self.client.get_headers(self.light.height + 1, sp.height, node))
            except LightClientError as exc:
                raise EventProofError(f"headers up to {sp.height} do not verify: {exc}") from None
        header = self.light.headers.get(sp.height)
        if header is None or header.header_hash() != sp.header_hash:
            raise EventProofError(f"the proof of {key!r} names a header that is not the verified one at {sp.height}")
        try:
            verify_state_proof(header.state_root, key, sp.value, sp.proof)
        except StateProofError as exc:
            raise EventProofError(f"state proof of {key!r} does not verify: {exc}") from None
        return (None if sp.value is None else canonical.decode(sp.value)), sp.height

    async def event(self, line: dict, node: str | None) -> AuditEvent:
        from .contracts import audit

        value, height = await self.value(line["key"], node)
        if value is None or audit.event_json(value) != {k: v for k, v in line.items() if k != "type"}:
            raise EventProofError(f"event {line.get('id')} (seq {line.get('seq')}) differs from the proven state")
        return AuditEvent.from_json(line, verified_at=height)

    async def complete(self, nxt: int, height: int, node: str | None) -> None:
        """Raise unless no event before seq `nxt` is missing up to `height`: event `nxt`
        is absent from the proven state, or was raised after `height`."""
        from .contracts import audit

        value, at = await self.value(audit.event_key(nxt), node)
        if value is not None and value["id"][0] <= height:
            raise EventProofError(f"event seq {nxt} was raised at height {value['id'][0]} (proven at {at}), "
                                  f"but the node said it had sent every event up to height {height}")


async def follow_events(client: "AsyncLedgerClient", from_height: int = 0, after: int | None = None, *,
                        follow: bool = False, verify: bool = False, tips: bool = False,
                        node: str | None = None, retry_s: float = 1.0) -> AsyncIterator[AuditEvent | Tip]:
    """Audit events oldest first: from the first at `from_height` or later, or after seq `after`.

    ``follow``: keep going as blocks commit (forever; switch nodes on failure);
    otherwise stop at the end of the committed events (`NodeUnavailable` if no
    node serves them). ``node``: only that node (name or did). ``tips``: also
    yield `Tip` items. ``verify``: prove each event (see the module doc)."""
    prover = _Prover(client) if verify else None
    expect = None if after is None else after + 1
    last_tip = -1
    # following: no total, but a read timeout well above the node's keepalive tip (`EVENTS_KEEPALIVE_S`),
    # so a node that hangs without closing is left for the next one
    timeout = aiohttp.ClientTimeout(total=None if follow else client.http_timeout * 6, sock_connect=5,
                                    sock_read=FOLLOW_READ_TIMEOUT_S if follow else None)
    failures = 0
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            errors = []
            for addr in client._address(node):
                q = {"follow": "1"} if follow else {}
                if expect is not None:
                    q["after"] = str(expect - 1)
                elif from_height:
                    q["from_height"] = str(from_height)
                try:
                    async with session.get(addr.http_url + "/events", params=q,
                                           ssl=client.http_pins.aiohttp_ssl(addr)) as resp:
                        if resp.status != 200:
                            body = await resp.text()
                            if resp.status == 404 and "no-contracts" in body:
                                raise EventStreamError(f"{addr.name} runs the kv app: no contracts, no events")
                            errors.append(f"{addr.name}: HTTP {resp.status} {body[:200]}")
                            continue
                        async for raw in resp.content:
                            if not raw.strip():
                                continue
                            try:
                                line = json.loads(raw)
                                kind = line["type"]
                            except (ValueError, KeyError, TypeError):
                                raise EventStreamError(f"{addr.name} sent a malformed /events line") from None
                            if kind == "event":
                                if expect is not None and line.get("seq") != expect:
                                    raise EventGapError(f"{addr.name} sent event seq {line.get('seq')}, "
                                                        f"expected {expect}")
                                ev = (await prover.event(line, addr.name) if prover is not None
                                      else AuditEvent.from_json(line))
                                expect = ev.seq + 1
                                failures = 0
                                yield ev
                                continue
                            nxt, height = int(line["next"]), int(line["height"])
                            if expect is not None and nxt != expect:
                                raise EventGapError(f"{addr.name} says the next event is {nxt}, expected {expect}")
                            expect = nxt
                            checked = False
                            if prover is not None and (kind == "end" or height != last_tip):
                                await prover.complete(nxt, height, addr.name)
                                checked = True
                            if kind == "end":
                                if tips:
                                    yield Tip(height, nxt, checked)
                                return
                            if tips and height != last_tip:
                                yield Tip(height, nxt, checked)
                            last_tip = height
                    errors.append(f"{addr.name}: the stream ended")
                except (aiohttp.ClientError, asyncio.TimeoutError, NodeUnavailable) as exc:
                    errors.append(f"{addr.name}: {describe(exc)}")
            if not follow:
                raise NodeUnavailable(f"GET /events failed on every node ({'; '.join(errors)})")
            failures += 1
            delay = min(retry_s * failures, 10.0)
            log.warning("event stream lost; retrying", extra={"errors": errors, "after": expect, "delay_s": delay})
            await asyncio.sleep(delay)
