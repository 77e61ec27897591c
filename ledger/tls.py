"""TLS 1.3 for ledger links, bound to the genesis keys (issue 16, "Links bound to genesis").

Every node's certificate is self-signed with its own Ed25519 node key (the key its did names),
built deterministically (`node_certificate`: fixed serial, validity and subject, and Ed25519
signatures are deterministic), so the certificate of a key is always the same bytes and anyone
can check it against the genesis. ``init`` publishes them in ``certs/<name>.pem``; they are public,
like ``genesis.json``, and are not a root of trust: `NodeTLS` trusts a published certificate only
if its public key is the genesis key of that node, so the trust store holds exactly the genesis
node set.

Three contexts (`NodeTLS`):

* ``peer_server``: the peers' port. TLS 1.3 only, no session tickets (no resumption), a client
  certificate is required and must verify against the trust store (a self-signed certificate of a
  genesis key); after the handshake the node takes the peer's identity from the certificate's
  public key (`peer_did`) and refuses any HELLO that names someone else. The handshake itself
  (CertificateVerify over the transcript, fresh randoms) proves possession of the key, so a
  replayed handshake or a certificate presented without its key fails there.
* ``peer_client``: dialing a peer. It presents the node's own certificate and pins the server's
  public key to the genesis key of the node it dialed (`pinned`): chain validation is not used
  (``CERT_NONE``), the pin is the check, made before any frame is written.
* ``client_server``: the clients' port: server authentication only (clients prove nothing at the
  transport; each transaction carries its submitter's signature).

Clients (`client_context`) pin each node's key from the genesis the same way, so they need only
the genesis, not the certificates.
"""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

from trust.identity import KeyPair, did_from_public_key, public_key_from_did

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["node_certificate", "cert_did", "peer_did", "pinned", "NodeTLS", "client_context",
           "handshake_reason", "TLSSetupError"]

_NOT_BEFORE = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
_NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc)


class TLSSetupError(Exception):
    """A published certificate does not match the genesis, or a context could not be built."""


def _private_key(key: KeyPair) -> "Ed25519PrivateKey":
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(key.seed)


def node_certificate(key: KeyPair) -> bytes:
    """The PEM of `key`'s self-signed certificate (the same bytes on every call)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    sk = _private_key(key)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, key.did),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sealstream ledger node")])
    serial = int.from_bytes(key.public_key[:16], "big") >> 1 or 1
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(sk.public_key())
            .serial_number(serial).not_valid_before(_NOT_BEFORE).not_valid_after(_NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(sk, None))
    return cert.public_bytes(serialization.Encoding.PEM)


def _der_did(der: bytes) -> str | None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        pub = x509.load_der_x509_certificate(der).public_key()
    except ValueError:
        return None
    if not isinstance(pub, Ed25519PublicKey):
        return None
    return did_from_public_key(pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def cert_did(pem: bytes) -> str | None:
    """The did of a PEM certificate's Ed25519 public key (None: not an Ed25519 certificate)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    except ValueError:
        return None
    return _der_did(der)


def peer_did(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """The did of the key in the certificate the other side presented (None: none, or not Ed25519)."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return None if not der else _der_did(der)


def pinned(ssl_object: ssl.SSLObject | ssl.SSLSocket | None, did: str) -> bool:
    """True when the server's certificate carries exactly `did`'s Ed25519 key."""
    return peer_did(ssl_object) == did


def handshake_reason(exc: BaseException) -> str:
    """A metric label for a failed handshake."""
    if isinstance(exc, TimeoutError):
        return "handshake_timeout"
    reason = getattr(exc, "reason", None) or ""
    if reason == "CERTIFICATE_VERIFY_FAILED" or "certificate verify failed" in str(exc):
        return "unknown_certificate"
    if reason in ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "NO_CERTIFICATE_RETURNED"):
        return "no_certificate"
    if reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNSUPPORTED_PROTOCOL", "UNKNOWN_PROTOCOL",
                  "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
        return "not_tls"
    if reason in ("UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION", "NO_PROTOCOLS_AVAILABLE"):
        return "old_protocol"
    if isinstance(exc, (ConnectionError, EOFError)) or isinstance(exc, ssl.SSLEOFError):
        return "closed"
    return "handshake_failed"


def _base(purpose: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if purpose == 0 else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.options |= ssl.OP_NO_TICKET | ssl.OP_NO_COMPRESSION
    if purpose == 0:
        ctx.num_tickets = 0  # no session tickets at all (TLS 1.3 would send stateful ones): no resumption
    ctx.check_hostname = False
    return ctx


def client_context() -> ssl.SSLContext:
    """A client's context: TLS 1.3, no certificate of its own; the caller checks `pinned`."""
    ctx = _base(1)
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _load_identity(ctx: ssl.SSLContext, key: KeyPair, cert_pem: bytes, workdir: Path | None) -> None:
    """`load_cert_chain` reads files only: the key goes through a 0600 file in a 0700 temp
    directory that is removed at once."""
    from cryptography.hazmat.primitives import serialization

    key_pem = _private_key(key).private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())
    with tempfile.TemporaryDirectory(dir=workdir, prefix=".tls-") as tmp:
        os.chmod(tmp, 0o700)
        path = os.path.join(tmp, "identity.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key_pem + cert_pem)
        ctx.load_cert_chain(path)


class NodeTLS:
    """The TLS contexts of one node: its own key, and the genesis nodes' certificates.

    `certs` maps each genesis node's did to its published PEM; a certificate whose key is not
    that did's is refused (`TLSSetupError`), so only genesis keys are trusted."""

    def __init__(self, key: KeyPair, certs: Mapping[str, bytes], *, workdir: Path | None = None) -> None:
        self.key = key
        self.did = key.did
        trusted = []
        for did, pem in certs.items():
            if cert_did(pem) != did:
                raise TLSSetupError(f"the published certificate of {did} does not carry its genesis key")
            trusted.append(pem.decode())
        own = node_certificate(key)
        self.nodes = frozenset(certs)
        self.peer_server = _base(0)
        self.peer_server.verify_mode = ssl.CERT_REQUIRED
        _load_identity(self.peer_server, key, own, workdir)
        if trusted:
            self.peer_server.load_verify_locations(cadata="".join(trusted))
        self.peer_client = _base(1)
        self.peer_client.verify_mode = ssl.CERT_NONE  # the pin to the genesis key is the check
        _load_identity(self.peer_client, key, own, workdir)
        self.client_server = _base(0)
        self.client_server.verify_mode = ssl.CERT_NONE
        _load_identity(self.client_server, key, own, workdir)

    @classmethod
    def for_node(cls, key: KeyPair, node_dids: Iterable[str], certs_dir: Path, names: Mapping[str, str],
                 *, workdir: Path | None = None) -> "NodeTLS":
        """From ``certs/<name>.pem`` of each genesis node (`names`: did -> name)."""
        certs: dict[str, bytes] = {}
        for did in node_dids:
            path = certs_dir / f"{names.get(did, did)}.pem"
            try:
                certs[did] = path.read_bytes()
            except FileNotFoundError:
                raise TLSSetupError(f"{path} is missing: every genesis node's certificate is needed "
                                    "(copy certs/ from the ledger's init)") from None
            public_key_from_did(did)
        return cls(key, certs, workdir=workdir)
