"""The content-addressed blob store against the real MinIO of the stack."""

from __future__ import annotations

import io
import os
import uuid
from datetime import timedelta

import pytest
from storage_helpers import utc

from storage import (
    BlobConflict,
    BlobDigestMismatch,
    BlobNotFound,
    BlobStore,
    BlobStoreUnavailable,
    Manifest,
    RecordError,
)
from trust import merkle
from trust.hashes import sha256

pytestmark = pytest.mark.services


def _objects(store: BlobStore, prefix: str) -> list:
    return list(store.client.list_objects(store.bucket, prefix=prefix))


def test_put_twice_stores_one_object(blob_store: BlobStore) -> None:
    payload = os.urandom(4096)
    key = blob_store.put_raw(payload, "image/jpeg")
    assert key == "raw/" + sha256(payload).hex()
    first = blob_store.client.stat_object(blob_store.bucket, key)
    assert blob_store.put_raw(payload, "image/jpeg") == key
    second = blob_store.client.stat_object(blob_store.bucket, key)
    assert len(_objects(blob_store, key)) == 1
    assert (second.etag, second.last_modified) == (first.etag, first.last_modified)  # not rewritten
    assert first.metadata["x-amz-meta-sha256"] == sha256(payload).hex()
    assert blob_store.get_raw(sha256(payload)) == payload == blob_store.get_raw(sha256(payload).hex())
    assert blob_store.has_raw(sha256(payload))


def test_put_with_a_known_digest(blob_store: BlobStore, settings) -> None:
    """A digest the caller already has is not recomputed; one that does not match the bytes is refused
    (by the server on the signed PUT, here on the SDK path) and nothing is stored under it."""
    payload, other = os.urandom(2048), os.urandom(2048)
    assert blob_store.put_raw(payload, "image/jpeg", sha256(payload)) == "raw/" + sha256(payload).hex()
    assert blob_store.get_raw(sha256(payload)) == payload
    with pytest.raises(BlobStoreUnavailable, match="XAmzContentSHA256Mismatch"):
        blob_store.put_raw(payload, "image/jpeg", sha256(other))
    assert not blob_store.has_raw(sha256(other))
    sdk_only = BlobStore(blob_store.client, blob_store.bucket)
    with pytest.raises(ValueError, match="payload digest"):
        sdk_only.put_raw(payload, "image/jpeg", sha256(other))
    assert not blob_store.has_raw(sha256(other))


def test_tampered_object_is_detected_on_read(blob_store: BlobStore) -> None:
    payload = os.urandom(1024)
    key = blob_store.put_raw(payload)
    forged = b"not what the device sent"
    # Overwrite through the raw client, keeping the digest metadata.
    blob_store.client.put_object(blob_store.bucket, key, io.BytesIO(forged), len(forged),
                                 metadata={"sha256": sha256(payload).hex()})
    with pytest.raises(BlobDigestMismatch) as info:
        blob_store.get_raw(sha256(payload))
    assert info.value.key == key and key in str(info.value)
    assert info.value.actual == sha256(forged).hex()


def test_object_without_digest_metadata_is_rewritten(blob_store: BlobStore) -> None:
    payload = os.urandom(512)
    key = "raw/" + sha256(payload).hex()
    blob_store.client.put_object(blob_store.bucket, key, io.BytesIO(b"junk"), 4)
    assert blob_store.put_raw(payload) == key
    assert blob_store.get_raw(sha256(payload)) == payload


def test_missing_blob(blob_store: BlobStore) -> None:
    digest = sha256(uuid.uuid4().bytes)
    with pytest.raises(BlobNotFound, match="raw/" + digest.hex()):
        blob_store.get_raw(digest)
    assert not blob_store.has_raw(digest)
    with pytest.raises(ValueError):
        blob_store.get_raw("abc")


def _manifest(batch_id: str, n: int = 7) -> Manifest:
    leaves = tuple(sha256(os.urandom(16)) for _ in range(n))
    start = utc(2030, 1, 1, 0, 0, 0)
    return Manifest(batch_id, merkle.root(merkle.leaf_hashes(leaves)), start, start + timedelta(seconds=5), leaves)


def test_manifest_round_trip_and_immutability(blob_store: BlobStore) -> None:
    batch_id = "m-" + uuid.uuid4().hex
    manifest = _manifest(batch_id)
    key = blob_store.put_manifest(manifest)
    assert key == "manifests/" + batch_id
    assert blob_store.put_manifest(manifest) == key
    assert blob_store.get_manifest(batch_id) == manifest
    with pytest.raises(BlobConflict, match="already exists with other contents"):
        blob_store.put_manifest(_manifest(batch_id))
    forged = _manifest(batch_id).to_bytes()
    blob_store.client.put_object(blob_store.bucket, key, io.BytesIO(forged), len(forged),
                                 metadata={"sha256": sha256(manifest.to_bytes()).hex()})
    with pytest.raises(BlobDigestMismatch, match=key):
        blob_store.get_manifest(batch_id)


def test_manifest_format_is_canonical() -> None:
    manifest = _manifest("m-format", n=2)
    data = manifest.to_bytes()
    assert Manifest.from_bytes(data) == manifest
    assert data.startswith(b'{"batch_id":"m-format","leaves":["')
    with pytest.raises(RecordError, match="canonical"):
        Manifest.from_bytes(data.replace(b",", b", ", 1))
    with pytest.raises(RecordError, match="malformed"):
        Manifest.from_bytes(b"[]")
    with pytest.raises(RecordError, match="do not hash to the root"):
        Manifest("m-bad", b"\0" * 32, manifest.window_start, manifest.window_end, manifest.leaves).check()


def test_bucket_is_created_when_missing(stack, settings) -> None:
    bucket = "sealstream-test-" + uuid.uuid4().hex[:12]
    access_key, secret_key = settings.minio_credentials("admin")  # makes a bucket: the stack's root user
    store = BlobStore.connect(settings.minio_address, access_key, secret_key, bucket, secure=settings.minio_tls,
                              ca_file=settings.minio_ca_file)
    try:
        assert store.client.bucket_exists(bucket)
        store.ensure_bucket()  # idempotent
        payload = os.urandom(32)
        store.put_raw(payload)
        assert store.get_raw(sha256(payload)) == payload
    finally:
        for obj in store.client.list_objects(bucket, recursive=True):
            store.client.remove_object(bucket, obj.object_name)
        store.client.remove_bucket(bucket)


def test_unreachable_store_is_a_storage_error() -> None:
    with pytest.raises(BlobStoreUnavailable):
        BlobStore.connect("127.0.0.1:1", "x", "y", "sealstream", timeout=1, retries=0)
