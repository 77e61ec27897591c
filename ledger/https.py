"""HTTPS to a node's HTTP API, pinned to the node's genesis key (issue 16, "the HTTP API serves over TLS too").

A node of a TLS layout serves its HTTP API over TLS 1.3 with its own certificate
(`ledger.tls.node_certificate`: self-signed with its Ed25519 node key). A caller trusts the
connection only if the certificate carries exactly the Ed25519 key that the genesis names for
that node; the check is the one `ledger.tls` makes for the client port (`ledger.tls.peer_did`),
here made *inside the TLS handshake*: a `PinnedContext` builds its connections from SSL objects
whose ``do_handshake`` raises `PinError` when the peer's key is another one, so no request is
written to, and no answer read from, a man in the middle, a node presenting another node's
certificate, or a stale certificate. No CA, no hostname: the pin is the check.

Both kinds of caller get the same context: aiohttp (``session.get(url, ssl=pins.context(addr))``,
`ledger._client.queries`, `ledger.events`) and urllib (`get`, for `infra.ledger_cluster` and the CLI).
`Pins` keeps one context per node, so aiohttp pools connections per node.

A plaintext layout (``ledger init --plaintext``, the bench's comparison; `NodeAddress.https`
False) keeps plain HTTP and `Pins.context` gives None. Prometheus scrapes a separate plain-HTTP
listener that serves ``/metrics`` only (`NodeAddress.metrics_port`), so it needs no pin.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .tls import client_context, peer_did

if TYPE_CHECKING:
    from .values import Genesis
    from .layout import NodeAddress

__all__ = ["PinError", "PinnedContext", "pinned_context", "Pins", "get", "describe"]


class PinError(ssl.SSLCertVerificationError):
    """The node's TLS certificate does not carry its genesis key; the message names the node."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "pinned key mismatch"


def _check(obj: ssl.SSLObject | ssl.SSLSocket) -> None:
    ctx = obj.context
    if not isinstance(ctx, PinnedContext):  # pragma: no cover - only PinnedContext uses these classes
        return
    got = peer_did(obj)
    if got != ctx.did:
        shown = "no Ed25519 key" if got is None else f"key {got}"
        raise PinError(f"ledger node {ctx.node}{ctx.where}: its TLS certificate carries {shown}, not its "
                       f"genesis key {ctx.did}; refused (a man in the middle, another node on its address, "
                       "or the wrong ledger's addresses)")


class _PinnedObject(ssl.SSLObject):
    """asyncio's side (aiohttp): the pin is checked as the handshake completes."""

    def do_handshake(self) -> None:
        super().do_handshake()
        _check(self)


class _PinnedSocket(ssl.SSLSocket):
    """A blocking socket's side (urllib, http.client)."""

    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        _check(self)


class PinnedContext(ssl.SSLContext):
    """A TLS 1.3 client context that accepts only a certificate of key `did` (node `node`)."""

    sslobject_class = _PinnedObject
    sslsocket_class = _PinnedSocket
    did: str
    node: str
    where: str


def pinned_context(did: str, node: str, where: str = "") -> PinnedContext:
    """A client context pinned to `did` (`node`, `where` for the error: e.g. ``" at host:port"``).

    TLS 1.3 only, no client certificate, no CA and no hostname check (`ledger.tls.client_context`):
    the pin, checked in the handshake, is the check."""
    base = client_context()
    ctx = PinnedContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = base.minimum_version
    ctx.maximum_version = base.maximum_version
    ctx.options = base.options
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.did, ctx.node, ctx.where = did, node, where
    return ctx


class Pins:
    """One pinned context per node of a ledger: the key the genesis names for the node's name
    (`genesis`), else the address's did (a caller without the genesis)."""

    def __init__(self, genesis: "Genesis | None" = None) -> None:
        self._dids: Mapping[str, str] = {} if genesis is None else {n.name: n.did for n in genesis.nodes}
        self._contexts: dict[tuple[str, str, int], PinnedContext] = {}

    def did(self, addr: "NodeAddress") -> str:
        return self._dids.get(addr.name, addr.did)

    def context(self, addr: "NodeAddress") -> PinnedContext | None:
        """The context for `addr`'s HTTP API (None: a plaintext layout's plain HTTP)."""
        if not addr.https:
            return None
        did = self.did(addr)
        key = (did, addr.host, addr.http_port)
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = self._contexts[key] = pinned_context(did, addr.name, f" at {addr.host}:{addr.http_port}")
        return ctx

    def aiohttp_ssl(self, addr: "NodeAddress") -> Any:
        """The ``ssl=`` of an aiohttp request to `addr` (True, aiohttp's default, for plain HTTP)."""
        ctx = self.context(addr)
        return True if ctx is None else ctx


def get(addr: "NodeAddress", path: str, *, timeout: float = 5.0, pins: Pins | None = None,
        genesis: "Genesis | None" = None) -> tuple[int, bytes]:
    """``GET path`` of `addr`'s HTTP API with urllib: (status, body), an HTTP error status included.

    Raises `PinError` when the certificate is not the node's genesis key's, `OSError` when the
    node does not answer."""
    ctx = (pins or Pins(genesis)).context(addr)
    try:
        with urllib.request.urlopen(addr.http_url + path, timeout=timeout, context=ctx) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, PinError):
            raise exc.reason from None
        raise


def describe(exc: BaseException) -> str:
    """A one-line reason for a failed request: the pin's sentence when a pin refused it."""
    seen: Iterable[BaseException | None] = (exc, getattr(exc, "certificate_error", None),
                                            getattr(exc, "reason", None), exc.__cause__, exc.__context__)
    for e in seen:
        if isinstance(e, PinError):
            return f"PinError {e}"
    return f"{type(exc).__name__} {exc}".strip()
