"""The stack's certificate authority: one CA per state directory, a certificate per service and
per principal, renewed before expiry.

``sealstream stack up`` calls `StackPKI.ensure` for every service (server certificates whose
names are the stack's host) and every principal (client certificates whose subject CN is the
principal's name: Kafka maps it to ``User:<name>``, PostgreSQL to the role of the same name).
Keys are ECDSA P-256 (every TLS stack of the project speaks it: OpenSSL for Python, libpq and
MinIO's Go TLS, and the JDK for Kafka), PKCS#8 PEM without a password, 0600, written atomically.

Bring your own CA: ``SEALSTREAM_TLS_CA_FILE`` and ``SEALSTREAM_TLS_CA_KEY_FILE`` make the stack
issue its certificates from that CA instead of generating one. Clients of a remote cluster give
their files with ``SEALSTREAM_<SERVICE>_{CA,CERT,KEY}_FILE`` (see `sealstream._security`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sealstream._security import TLSFiles, pki_dir, write_private

__all__ = ["StackPKI", "CertSpec", "PKIError", "server_spec", "client_spec", "CA_DAYS", "LEAF_DAYS", "RENEW_BEFORE"]

#: lifetime of a generated CA and of a leaf certificate; a leaf is re-issued when less than
#: RENEW_BEFORE of it is left (so any `stack up` in the last month renews it), the CA likewise.
CA_DAYS = 3650
LEAF_DAYS = 397
RENEW_BEFORE = dt.timedelta(days=30)


class PKIError(Exception):
    """The stack's CA or a certificate cannot be made or read."""


@dataclass(frozen=True)
class CertSpec:
    """One certificate the stack needs: a server's (with the names clients dial) or a client's."""

    name: str
    common_name: str
    hosts: tuple[str, ...] = ()
    server: bool = False
    client: bool = False


def server_spec(service: str, hosts: Iterable[str]) -> CertSpec:
    """The certificate of a stack service, valid for the names clients dial (``server-<service>``)."""
    return CertSpec(name=f"server-{service}", common_name=service, hosts=tuple(dict.fromkeys(hosts)), server=True)


def client_spec(principal: str) -> CertSpec:
    """The certificate of a principal (``client-<principal>``, subject CN = the principal)."""
    return CertSpec(name=f"client-{principal}", common_name=principal, client=True)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    write_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))


def _san(hosts: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for host in hosts:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            out.append(x509.DNSName(host))
    return out


class StackPKI:
    """The CA and certificates under ``<home>/pki``: ``ca.crt``/``ca.key``, and per spec
    ``<name>.crt``/``<name>.key`` (`tls_files` gives a spec's paths)."""

    def __init__(self, home: Path, *, env: dict[str, str] | None = None) -> None:
        environ = os.environ if env is None else env
        self.dir = pki_dir(home)
        own_ca = environ.get("SEALSTREAM_TLS_CA_FILE")
        own_key = environ.get("SEALSTREAM_TLS_CA_KEY_FILE")
        if bool(own_ca) != bool(own_key):
            raise PKIError("bring your own CA with both SEALSTREAM_TLS_CA_FILE and SEALSTREAM_TLS_CA_KEY_FILE")
        self.external_ca = bool(own_ca)
        self.ca_cert_path = Path(own_ca) if own_ca else self.dir / "ca.crt"
        self.ca_key_path = Path(own_key) if own_key else self.dir / "ca.key"

    # -- the CA -----------------------------------------------------------------------------
    def ensure_ca(self) -> x509.Certificate:
        """The CA certificate, generated on first use (and again when it nears its end)."""
        if self.external_ca:
            cert = self._load_cert(self.ca_cert_path)
            if cert is None:
                raise PKIError(f"cannot read the CA certificate {self.ca_cert_path}")
            if self.dir / "ca.crt" != self.ca_cert_path:
                self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                write_private(self.dir / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))
            return cert
        cert = self._load_cert(self.ca_cert_path)
        if cert is not None and self.ca_key_path.exists() and cert.not_valid_after_utc - _now() > RENEW_BEFORE:
            return cert
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sealstream"),
                          x509.NameAttribute(NameOID.COMMON_NAME, f"sealstream stack CA {os.urandom(4).hex()}")])
        now = _now()
        cert = (x509.CertificateBuilder()
                .subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        _write_key(self.ca_key_path, key)
        write_private(self.ca_cert_path, cert.public_bytes(serialization.Encoding.PEM))
        return cert

    def _ca_key(self) -> ec.EllipticCurvePrivateKey:
        try:
            key = serialization.load_pem_private_key(self.ca_key_path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise PKIError(f"cannot read the CA key {self.ca_key_path}: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PKIError(f"the CA key {self.ca_key_path} is not an ECDSA key")
        return key

    # -- leaves -----------------------------------------------------------------------------
    def files(self, spec: CertSpec) -> TLSFiles:
        return TLSFiles(ca=self.dir / "ca.crt", cert=self.dir / f"{spec.name}.crt", key=self.dir / f"{spec.name}.key")

    def ensure(self, specs: Iterable[CertSpec]) -> dict[str, TLSFiles]:
        """Issue every certificate of `specs` that is missing, expiring, for other names, or from
        another CA; keep the rest. Returns each spec's files by name."""
        ca = self.ensure_ca()
        ca_key: ec.EllipticCurvePrivateKey | None = None
        out: dict[str, TLSFiles] = {}
        for spec in specs:
            files = self.files(spec)
            assert files.cert is not None and files.key is not None
            if not self._current(files.cert, files.key, spec, ca):
                ca_key = ca_key or self._ca_key()
                self._issue(spec, files.cert, files.key, ca, ca_key)
            out[spec.name] = files
        return out

    def _current(self, cert_path: Path, key_path: Path, spec: CertSpec, ca: x509.Certificate) -> bool:
        cert = self._load_cert(cert_path)
        if cert is None or not key_path.exists():
            return False
        if cert.issuer != ca.subject or cert.not_valid_after_utc - _now() <= RENEW_BEFORE:
            return False
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            return False
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not cn or cn[0].value != spec.common_name:
            return False
        try:
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            have = {str(n.value) for n in names}
        except x509.ExtensionNotFound:
            have = set()
        return have == {str(n.value) for n in _san(spec.hosts)}

    def _issue(self, spec: CertSpec, cert_path: Path, key_path: Path, ca: x509.Certificate,
               ca_key: ec.EllipticCurvePrivateKey) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if spec.server else []) + \
                 ([ExtendedKeyUsageOID.CLIENT_AUTH] if spec.client else [])
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sealstream"),
                                            x509.NameAttribute(NameOID.COMMON_NAME, spec.common_name)]))
                   .issuer_name(ca.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(min(now + dt.timedelta(days=LEAF_DAYS), ca.not_valid_after_utc))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                                content_commitment=False, data_encipherment=False,
                                                key_agreement=True, key_cert_sign=False, crl_sign=False,
                                                encipher_only=False, decipher_only=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                  critical=False))
        if spec.hosts:
            builder = builder.add_extension(x509.SubjectAlternativeName(_san(spec.hosts)), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write_key(key_path, key)
        write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))

    @staticmethod
    def _load_cert(path: Path) -> x509.Certificate | None:
        try:
            return x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError):
            return None

    def expiry(self, name: str) -> dt.datetime | None:
        """When certificate `name` (``ca`` for the CA) ends, or None when absent."""
        cert = self._load_cert(self.ca_cert_path if name == "ca" else self.dir / f"{name}.crt")
        return cert.not_valid_after_utc if cert else None
