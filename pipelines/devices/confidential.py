"""The device side of confidential streams (issue 18): what a device team calls.

`seal_confidential` encrypts a payload for the recipients in force (`confidential.envelope`),
signs the statement over the *envelope* (so ingest, sealing and anchoring see ciphertext
only) and returns the Kafka record: value = the envelope, headers = the statement's plus
``ss-keys``, the key record (wrapped data keys), which is not signed and which the worker
stores apart (a row of PostgreSQL's ``key_records``) so that erasure never touches a signed byte.

`recipients_in_force` reads the stream's recipients from the ledger as of now, every state
value proven at one certified height (a lying node cannot add a recipient).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from confidential.device import seal_and_sign
from confidential.envelope import DEFAULT_CHUNK_SIZE, KEYS_HEADER, key_record_of
from ledger.contracts import confidentiality, verify_state_proof
from ledger.contracts.confidentiality import Recipient
from ledger.light_client import LightClient
from trust import canonical
from trust.identity import KeyPair

from .kinds import kind_info
from .payloads import Payload
from .signing import OutMessage

__all__ = ["KEYS_HEADER", "ProvenState", "RecipientsInForce", "key_record_of", "proven_state", "recipients_in_force",
           "recipients_now", "seal_confidential"]

def seal_confidential(keypair: KeyPair, seq: int, ts_ms: int, payload: Payload, *, stream: str,
                      recipients: Sequence[Recipient | tuple[str, bytes]],
                      chunk_size: int = DEFAULT_CHUNK_SIZE) -> OutMessage:
    """Encrypt `payload` for `recipients` (`Recipient` or ``(id, X25519 public key)``), sign the
    statement over the envelope as message `seq` of the device owning `keypair`, and return the
    Kafka record (the key record in the ``ss-keys`` header)."""
    pairs = [(r.id, r.key) if isinstance(r, Recipient) else (r[0], r[1]) for r in recipients]
    m = seal_and_sign(keypair.sign, keypair.did, seq, ts_ms, payload.kind, payload.content_type, payload.data,
                      stream=stream, recipients=pairs, chunk_size=chunk_size)
    return OutMessage(kind_info(payload.kind).topic, keypair.did.encode("ascii"), m.envelope, m.headers,
                      m.statement, m.signature, keypair.did)


class ProvenState:
    """State values proven at one height: the reader `recipients_at` needs (``get``/``peek``)."""

    def __init__(self, values: dict[str, bytes | None], height: int, strict: bool = True) -> None:
        self._values = values
        self.height = height
        self.strict = strict

    def get(self, key: str, default: Any = None) -> Any:
        raw = self._values.get(key)
        if raw is None:
            if key not in self._values and self.strict:
                raise KeyError(f"state key {key!r} was not proven")
            return default
        return canonical.decode(raw)

    peek = get

    def __contains__(self, key: str) -> bool:
        return self._values.get(key) is not None


def _check(client: Any, sp: Any, headers: Any, strict: bool) -> ProvenState:
    lc = LightClient.from_genesis(client.genesis)
    lc.add_chain(headers)
    header = lc.headers.get(sp.height)
    if header is None or header.header_hash() != sp.header_hash:
        raise ValueError(f"the proofs name a header that is not the verified one at {sp.height}")
    values = {}
    for p in sp.proofs:
        verify_state_proof(header.state_root, p.key, p.value, p.proof)
        values[p.key] = p.value
    return ProvenState(values, sp.height, strict)


async def _proven(client: Any, keys: list[str], strict: bool = True) -> ProvenState:
    sp = await client.get_state_proofs(keys=keys)
    if sp.height < 1 or sp.header_hash is None:
        raise ValueError("the ledger has no block yet")
    return _check(client, sp, await client.get_headers(1, sp.height), strict)


def proven_state(client: Any, keys: list[str], strict: bool = True) -> ProvenState:
    """`keys` proven at the ledger's latest height against headers verified from genesis
    (`client`: a blocking `LedgerClient`); a value that does not check raises."""
    sp = client.get_state_proofs(keys=keys)
    if sp.height < 1 or sp.header_hash is None:
        raise ValueError("the ledger has no block yet")
    return _check(client, sp, client.get_headers(1, sp.height), strict)


async def recipients_in_force(client: Any, stream: str) -> tuple[int, list[Recipient]]:
    """``(height, recipients)`` of `stream` as of the ledger's latest certified height, from
    state proofs checked against headers verified from genesis (`client`: an
    `AsyncLedgerClient`). Up to three rounds (the stream's record, its recipients, their orgs),
    the last one proving the whole closure at one height."""
    keys = [confidentiality.stream_key(stream)]
    while True:
        partial = await _proven(client, keys, strict=False)
        closure = confidentiality.policy_closure(partial, stream)
        if set(closure) <= set(keys):
            break
        keys = closure
    state = ProvenState(partial._values, partial.height)
    return state.height, confidentiality.recipients_at(state, stream, state.height)


def recipients_now(client: Any, stream: str) -> tuple[int, list[Recipient]]:
    """`recipients_in_force` with a blocking `LedgerClient`."""
    keys = [confidentiality.stream_key(stream)]
    while True:
        partial = proven_state(client, keys, strict=False)
        closure = confidentiality.policy_closure(partial, stream)
        if set(closure) <= set(keys):
            break
        keys = closure
    state = ProvenState(partial._values, partial.height)
    return state.height, confidentiality.recipients_at(state, stream, state.height)


class RecipientsInForce:
    """The recipients in force for `stream`, as the simulator seals for them: read with
    `recipients_now` (every value proven at one certified height against headers verified from
    the genesis, never one node's unproven answer) at start and again once `refresh` seconds
    have passed, so that a `policy.grant`/`policy.revoke` takes effect within `refresh` seconds
    (plus the time the ledger takes to commit it). A failed refresh keeps the last proven set
    and tries again `refresh` seconds later (logged); a stream with no recipient in force raises
    (an envelope nobody could open is never sent)."""

    def __init__(self, client: Any, stream: str, refresh: float = 30.0, *, owns_client: bool = False,
                 clock: Any = None) -> None:
        import time

        self.client, self.stream, self.refresh = client, stream, refresh
        self._owns = owns_client
        self._clock = clock or time.monotonic
        self.height, self._recipients = recipients_now(client, stream)
        self._at = self._clock()
        self.refreshes = 0
        self._check()

    @classmethod
    def from_settings(cls, settings: Any, stream: str, refresh: float = 30.0) -> RecipientsInForce:
        """Through a ledger client of the local layout (`settings.ledger_home`)."""
        from ledger.client import LedgerClient

        client = LedgerClient.from_layout(settings.ledger_home)
        try:
            return cls(client, stream, refresh, owns_client=True)
        except BaseException:
            client.close()
            raise

    def _check(self) -> None:
        if not self._recipients:
            raise ValueError(f"stream {self.stream!r} has no recipient in force at height {self.height} "
                             f"(grant one with policy.grant); nothing is sealed for nobody")

    def current(self) -> list[Recipient]:
        if self._clock() - self._at >= self.refresh:
            import logging

            self._at = self._clock()
            try:
                self.height, self._recipients = recipients_now(self.client, self.stream)
                self.refreshes += 1
            except Exception as exc:  # noqa: BLE001 -- keep the last proven set, retry next time
                logging.getLogger(__name__).warning(
                    "recipients not refreshed", extra={"stream": self.stream, "error": f"{type(exc).__name__}: {exc}"})
            self._check()
        return list(self._recipients)

    @property
    def ids(self) -> list[str]:
        return sorted(r.id for r in self._recipients)

    def close(self) -> None:
        if self._owns:
            self.client.close()
