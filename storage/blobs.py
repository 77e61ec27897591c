"""The MinIO/S3 blob store: content-addressed payloads and batch manifests.

Object layout in one bucket:

- ``raw/<sha256 hex>``     every accepted payload, byte for byte;
- ``manifests/<batch_id>`` the batch's leaf list (`storage.manifest`, JSON).

A confidential record's key record (its wrapped data keys) is not an object: it is a row of
PostgreSQL's ``key_records`` (`storage.key_records`, migration 0010), so no MinIO user deletes
anything and the bucket can be write-once.

Every object carries its SHA-256 (lowercase hex) in the user metadata
``x-amz-meta-sha256``.  Writes are idempotent: `put_raw` PUTs the content-addressed bytes
without a HEAD first and without the SDK (`storage._s3put`: signed over the digest
it already has; the same key always holds the same bytes; the server
verifies the signed payload hash of every PUT); a manifest is immutable
(stat first: another content under the same batch id is a `BlobConflict`).  Reads verify:
`get_raw` hashes what it read and raises `BlobDigestMismatch` naming the key
when the bytes are not what the key promises.  SDK and network errors become
`BlobStoreUnavailable`.

Who signs: `BlobStore.from_settings(settings, principal)` connects as that job's MinIO user
(`Settings.minio_credentials`: with security on its own user and policy, over TLS verified
against the stack CA; off, the root user in plaintext as before); `minio_client` gives the
same SDK client for other uses.
"""

from __future__ import annotations

import io
import ssl
from pathlib import Path
from typing import Any, Optional, Union

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from trust.hashes import sha256

from ._s3put import ObjectPut, PutRefused, PutUnavailable
from .errors import BlobConflict, BlobDigestMismatch, BlobError, BlobNotFound, BlobStoreUnavailable
from .manifest import Manifest
from .records import manifest_key, raw_key

__all__ = ["BlobStore", "DIGEST_METADATA", "minio_client"]


#: User-metadata name of the object digest (sent as ``x-amz-meta-sha256``).
DIGEST_METADATA = "sha256"
_DIGEST_HEADER = "x-amz-meta-" + DIGEST_METADATA
_MISSING = {"NoSuchKey", "NoSuchObject"}


def _hex_digest(digest: Union[bytes, str]) -> str:
    if isinstance(digest, bytes) and len(digest) == 32:
        return digest.hex()
    if isinstance(digest, str) and len(digest) == 64:
        try:
            bytes.fromhex(digest)
            return digest.lower()
        except ValueError:
            pass
    raise ValueError(f"want a SHA-256 digest (32 bytes or 64 hex digits), got {digest!r}")


def _http_pool(timeout: float, retries: int, ca_file: Optional[Union[str, Path]], maxsize: int = 16
               ) -> urllib3.PoolManager:
    """The SDK's connection pool: certificates verified against `ca_file` (None: the system's trust
    store; used only over TLS)."""
    tls: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED"}
    if ca_file is not None:
        tls["ca_certs"] = str(ca_file)
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=min(5.0, timeout), read=timeout),
        retries=urllib3.Retry(total=retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        maxsize=maxsize, **tls,
    )


def minio_client(settings: Any, principal: str, *, timeout: float = 30.0, retries: int = 3) -> Minio:
    """An SDK client of the stack's MinIO signing as `principal` (`Settings.minio_credentials`), over
    TLS verified against `Settings.minio_ca_file` when `Settings.minio_tls`."""
    access_key, secret_key = settings.minio_credentials(principal)
    return Minio(settings.minio_address, access_key, secret_key, secure=settings.minio_tls,
                 http_client=_http_pool(timeout, retries, settings.minio_ca_file))


class BlobStore:
    """One bucket of a MinIO/S3 endpoint."""

    def __init__(self, client: Minio, bucket: str, raw_put: Optional[ObjectPut] = None) -> None:
        self.client = client
        self.bucket = bucket
        self._raw_put = raw_put  # `put_raw` without the SDK (`storage._s3put`); None: through `client`

    @classmethod
    def connect(
        cls, endpoint: str, access_key: str, secret_key: str, bucket: str, *, secure: bool = False,
        timeout: float = 30.0, retries: int = 3, ca_file: Optional[Union[str, Path]] = None,
    ) -> "BlobStore":
        """A store for `bucket` at `endpoint` (``host:port``); creates the bucket if missing (and
        allowed: with security on only `stack up`/`stack provision` make buckets).  `secure`: TLS,
        the server's certificate verified against `ca_file` (None: the system's trust store)."""
        client = Minio(endpoint, access_key, secret_key, secure=secure,
                       http_client=_http_pool(timeout, retries, ca_file))
        store = cls(client, bucket)
        store.ensure_bucket()
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None) if secure else None
        store._raw_put = ObjectPut(endpoint, access_key, secret_key, bucket, secure=secure,
                                   region=store._region(), timeout=timeout, retries=retries, ssl_context=context)
        return store

    @classmethod
    def from_settings(cls, settings: Any, principal: str = "pipeline") -> "BlobStore":
        """The stack's store as MinIO user `principal` (`Settings.minio_credentials`; with security
        off every principal is the root user): ``pipeline`` (workers, the anchor agent: put and get,
        no delete; the default), ``verifier`` (`sealstream verify`, evidence, the verifier agent: read
        only), ``analyst`` (reading data: read only). No user may delete."""
        access_key, secret_key = settings.minio_credentials(principal)
        return cls.connect(
            settings.minio_address, access_key, secret_key, settings.minio_bucket, secure=settings.minio_tls,
            ca_file=settings.minio_ca_file,
        )

    # -- plumbing -----------------------------------------------------------

    def _unavailable(self, key: str, exc: Exception) -> BlobStoreUnavailable:
        return BlobStoreUnavailable(key, f"blob store {self.bucket}/{key}: {exc}")

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (safe when racing another worker)."""
        bucket = self.bucket
        try:
            if not self.client.bucket_exists(bucket):
                self.client.make_bucket(bucket)
        except S3Error as exc:
            if exc.code == "AccessDenied":
                raise BlobStoreUnavailable("", f"blob store {bucket}: {exc.code} ({exc.message}): this user "
                                               "may not make buckets; `sealstream stack provision` does") from exc
            if exc.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise BlobStoreUnavailable("", f"blob store {bucket}: {exc}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise BlobStoreUnavailable("", f"blob store {bucket}: {exc}") from exc

    def _region(self) -> str:
        """The bucket's region as the SDK signs for it (asked once; MinIO's default otherwise)."""
        try:
            return str(self.client._get_region(self.bucket))
        except (MinioException, urllib3.exceptions.HTTPError, OSError, AttributeError):
            return "us-east-1"

    def _stat_digest(self, key: str) -> Optional[str]:
        """The digest metadata of `key` ('' when absent), None when there is no object."""
        try:
            stat = self.client.stat_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in _MISSING:
                return None
            raise self._unavailable(key, exc) from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._unavailable(key, exc) from exc
        return (stat.metadata or {}).get(_DIGEST_HEADER, "")

    def _put(self, key: str, data: bytes, content_type: str, digest: str) -> None:
        try:
            self.client.put_object(
                self.bucket, key, io.BytesIO(data), len(data), content_type=content_type,
                metadata={DIGEST_METADATA: digest},
            )
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._unavailable(key, exc) from exc

    def _get(self, key: str) -> tuple[bytes, str]:
        """Bytes and digest metadata of `key`."""
        response = None
        try:
            response = self.client.get_object(self.bucket, key)
            data = response.read()
            meta = response.headers.get(_DIGEST_HEADER, "")
        except S3Error as exc:
            if exc.code in _MISSING:
                raise BlobNotFound(key) from None
            raise self._unavailable(key, exc) from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._unavailable(key, exc) from exc
        finally:
            if response is not None:
                response.close()
                response.release_conn()
        return data, meta

    # -- raw payloads -------------------------------------------------------

    def put_raw(self, payload: bytes, content_type: str = "application/octet-stream",
                digest: Optional[bytes] = None) -> str:
        """Archive `payload` at ``raw/<sha256>`` (with its digest metadata); the key.

        `digest`: the payload's SHA-256 when the caller already computed it (the
        worker checked it against the device's signed statement), so it is not
        hashed again here; the server refuses a body that does not match it
        (through the SDK, which signs its own hash, it is compared here instead).

        One PUT, no HEAD first: the key is the content's digest, so re-putting an
        existing object writes the same bytes and metadata again (idempotent), and
        the server checks the body against the request's signed payload hash
        (``x-amz-content-sha256``, the digest itself, over HTTP and TLS alike), so
        what is stored is what was hashed.  Only when the PUT is refused (e.g. a write-once bucket)
        does a stat decide: an object already there with our digest is success.
        """
        if digest is None or self._raw_put is None:
            actual = sha256(payload)
            if digest is not None and digest != actual:
                raise ValueError(f"payload digest is {actual.hex()}, not {digest.hex()}")
            digest = actual
        hex_digest = digest.hex()
        key = "raw/" + hex_digest
        try:
            if self._raw_put is None:
                self._put(key, payload, content_type, hex_digest)
            else:
                try:
                    self._raw_put.put(key, payload, hex_digest, content_type, {DIGEST_METADATA: hex_digest})
                except (PutRefused, PutUnavailable) as exc:
                    raise self._unavailable(key, exc) from exc
        except BlobStoreUnavailable as exc:
            if not isinstance(exc.__cause__, (S3Error, PutRefused)) or self._stat_digest(key) != hex_digest:
                raise
        return key

    def has_raw(self, digest: Union[bytes, str]) -> bool:
        """True when an object exists at ``raw/<digest>`` (content not checked)."""
        key = "raw/" + _hex_digest(digest)
        return self._stat_digest(key) is not None

    def get_raw(self, digest: Union[bytes, str]) -> bytes:
        """The payload with this SHA-256, verified: `BlobDigestMismatch` if the
        stored bytes hash to anything else, `BlobNotFound` if absent."""
        expected = _hex_digest(digest)
        key = raw_key(bytes.fromhex(expected))
        data, _ = self._get(key)
        actual = sha256(data).hex()
        if actual != expected:
            raise BlobDigestMismatch(key, expected, actual)
        return data

    # -- manifests ----------------------------------------------------------

    def put_manifest(self, manifest: Manifest) -> str:
        """Store a (checked) manifest at ``manifests/<batch_id>``; the key.
        Idempotent for the same manifest; `BlobConflict` for another one."""
        manifest.check()
        data = manifest.to_bytes()
        digest = sha256(data).hex()
        key = manifest_key(manifest.batch_id)
        existing = self._stat_digest(key)
        if existing == digest:
            return key
        if existing is not None:
            raise BlobConflict(key, f"manifest {key!r} already exists with other contents (sha256 {existing})")
        self._put(key, data, "application/json", digest)
        return key

    def get_manifest(self, batch_id: str) -> Manifest:
        """The manifest of `batch_id`, checked against its digest metadata and its root."""
        key = manifest_key(batch_id)
        data, expected = self._get(key)
        actual = sha256(data).hex()
        if actual != expected:
            raise BlobDigestMismatch(key, expected or "(no digest metadata)", actual)
        manifest = Manifest.from_bytes(data)
        if manifest.batch_id != batch_id:
            raise BlobError(key, f"manifest {key!r} is for batch {manifest.batch_id!r}")
        manifest.check()
        return manifest
