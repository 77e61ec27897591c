"""MinIO with security on (issue 17): TLS against the stack CA, a user and policy per job, object lock.

Against the stack's real MinIO; the service tests run only when the stack runs with security on
(``SEALSTREAM_SECURITY=1``). Each case is tried for real: the server refuses, nothing is stored
or deleted. The unit tests at the end (no service) pin which credentials and policies each job
gets, with security on and off.
"""

from __future__ import annotations

import io
import json
import os
import socket
import ssl
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import urllib3
from minio import Minio
from minio.commonconfig import GOVERNANCE
from minio.deleteobjects import DeleteObject
from minio.error import S3Error
from minio.retention import Retention

from infra.minio import MINIO_USERS, POLICIES, policy
from infra.pki import StackPKI
from sealstream.settings import load_settings
from storage import BlobStore, BlobStoreUnavailable, Manifest
from storage.blobs import minio_client
from trust import merkle
from trust.hashes import sha256


def _secured(settings) -> None:
    if not settings.security:
        pytest.skip("MinIO security tests need the stack with SEALSTREAM_SECURITY=1")


@pytest.fixture(scope="module")
def secured(stack, settings):
    _secured(settings)
    return settings


def _pool(ca: Path | None) -> urllib3.PoolManager:
    kw = {"ca_certs": str(ca)} if ca else {}
    return urllib3.PoolManager(cert_reqs="CERT_REQUIRED", retries=urllib3.Retry(total=0),
                               timeout=urllib3.Timeout(connect=5, read=10), **kw)


def _client(settings, access: str | None, secret: str | None, *, secure: bool = True,
            ca: Path | None = None) -> Minio:
    return Minio(settings.minio_address, access, secret, secure=secure,
                 http_client=_pool(ca or settings.minio_ca_file) if secure else None)


def _put(client: Minio, bucket: str, key: str, data: bytes) -> None:
    client.put_object(bucket, key, io.BytesIO(data), len(data))


def _raw(store: BlobStore) -> tuple[bytes, str]:
    payload = os.urandom(256)
    return payload, store.put_raw(payload)


def _manifest() -> Manifest:
    leaves = tuple(sha256(os.urandom(16)) for _ in range(3))
    start = datetime(2030, 1, 1, tzinfo=timezone.utc)
    return Manifest("sec-" + os.urandom(8).hex(), merkle.root(merkle.leaf_hashes(leaves)), start,
                    start + timedelta(seconds=5), leaves)


# -- who may connect -------------------------------------------------------------------------------

def test_a_client_without_credentials_is_refused(secured) -> None:
    s = secured
    pipeline = BlobStore.from_settings(s, "pipeline")
    _, key = _raw(pipeline)
    anonymous = _client(s, None, None)
    for attempt in (lambda: anonymous.stat_object(s.minio_bucket, key),
                    lambda: _put(anonymous, s.minio_bucket, "raw/" + "0" * 64, b"x"),
                    lambda: list(anonymous.list_objects(s.minio_bucket, prefix="raw/"))):
        with pytest.raises(S3Error) as info:
            attempt()
        assert info.value.code == "AccessDenied"


@pytest.mark.parametrize("user", ["admin", *MINIO_USERS])
def test_a_wrong_secret_is_refused(secured, user: str) -> None:
    access, secret = secured.minio_credentials(user)
    wrong = _client(secured, access, secret[::-1] + "x")
    with pytest.raises(S3Error) as info:
        wrong.bucket_exists(secured.minio_bucket)
    assert info.value.code == "SignatureDoesNotMatch"
    with pytest.raises(BlobStoreUnavailable, match="SignatureDoesNotMatch"):
        BlobStore.connect(secured.minio_address, access, secret + "x", secured.minio_bucket, secure=True,
                          ca_file=secured.minio_ca_file, retries=0)


def test_plaintext_http_is_refused(secured) -> None:
    """The port speaks TLS only: an HTTP request (with valid credentials) gets no S3 answer."""
    access, secret = secured.minio_credentials("pipeline")
    plain = Minio(secured.minio_address, access, secret, secure=False,
                  http_client=urllib3.PoolManager(retries=urllib3.Retry(total=0)))
    with pytest.raises(Exception) as info:  # any failure: the server never answers in S3
        plain.bucket_exists(secured.minio_bucket)
    assert not isinstance(info.value, S3Error)
    host, port = secured.minio_address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"GET /minio/health/ready HTTP/1.1\r\nHost: {secured.minio_address}\r\n\r\n".encode())
        answer = sock.recv(4096)
    assert b"200 OK" not in answer  # Go's TLS server: "400 ... Client sent an HTTP request to an HTTPS server"


def test_a_ca_from_another_stack_is_refused(secured, tmp_path) -> None:
    """A client that trusts another stack's CA does not trust this server (and sends it nothing)."""
    other = StackPKI(tmp_path / "other")
    other.ensure_ca()
    access, secret = secured.minio_credentials("pipeline")
    stranger = _client(secured, access, secret, ca=other.ca_cert_path)
    with pytest.raises(urllib3.exceptions.MaxRetryError) as info:
        stranger.bucket_exists(secured.minio_bucket)
    assert isinstance(info.value.reason, urllib3.exceptions.SSLError)
    assert "certificate verify failed" in str(info.value.reason)
    with pytest.raises(BlobStoreUnavailable, match="certificate verify failed"):
        BlobStore.connect(secured.minio_address, access, secret, secured.minio_bucket, secure=True,
                          ca_file=other.ca_cert_path, retries=0)
    # the system trust store does not know the stack CA either
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        Minio(secured.minio_address, access, secret, secure=True,
              http_client=urllib3.PoolManager(retries=urllib3.Retry(total=0))).bucket_exists(secured.minio_bucket)
    # ... nor does the SDK-free PUT path
    with pytest.raises(ssl.SSLCertVerificationError):
        ctx = ssl.create_default_context(cafile=str(other.ca_cert_path))
        host, port = secured.minio_address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            ctx.wrap_socket(sock, server_hostname=host).close()


# -- what each job may do --------------------------------------------------------------------------

def test_the_pipeline_user_puts_and_gets_but_cannot_delete(secured) -> None:
    s = secured
    store = BlobStore.from_settings(s, "pipeline")
    payload, key = _raw(store)
    assert store.get_raw(sha256(payload)) == payload
    m = _manifest()
    mkey = store.put_manifest(m)
    assert store.get_manifest(m.batch_id) == m
    for bucket, k in ((s.minio_bucket, key), (s.minio_bucket, mkey)):
        with pytest.raises(S3Error) as info:
            store.client.remove_object(bucket, k)
        assert info.value.code == "AccessDenied"
        errors = list(store.client.remove_objects(bucket, [DeleteObject(k)]))
        assert errors and errors[0].code == "AccessDenied"
    assert store.get_raw(sha256(payload)) == payload
    # nothing outside its prefixes, no bucket administration
    with pytest.raises(S3Error, match="AccessDenied"):
        _put(store.client, s.minio_bucket, "elsewhere/x", b"x")
    with pytest.raises(S3Error, match="AccessDenied"):
        store.client.make_bucket("sealstream-not-allowed-" + os.urandom(4).hex())
    with pytest.raises(S3Error, match="AccessDenied"):
        store.client.delete_object_lock_config(s.minio_bucket)
    with pytest.raises(S3Error, match="AccessDenied"):
        store.client.set_bucket_policy(s.minio_bucket, '{"Version":"2012-10-17","Statement":[]}')


@pytest.mark.parametrize("user", ["verifier", "analyst"])
def test_readers_cannot_put_or_delete(secured, user: str) -> None:
    s = secured
    payload, key = _raw(BlobStore.from_settings(s, "pipeline"))
    reader = BlobStore.from_settings(s, user)
    assert reader.get_raw(sha256(payload)) == payload
    with pytest.raises(BlobStoreUnavailable, match="AccessDenied"):
        reader.put_raw(os.urandom(64))
    with pytest.raises(BlobStoreUnavailable, match="AccessDenied"):
        reader.put_manifest(_manifest())
    with pytest.raises(S3Error, match="AccessDenied"):
        reader.client.remove_object(s.minio_bucket, key)
    assert reader.get_raw(sha256(payload)) == payload


def test_no_user_of_an_earlier_stack_may_delete(stack, secured) -> None:
    """The ``erasure`` user deleted key records when they were objects; they are rows now
    (`storage.key_records`), so provisioning removes it and no MinIO user deletes anything."""
    admin = stack.minio.admin()
    admin.user_add("erasure", "an-earlier-stacks-secret-0123")  # as an earlier stack left it
    stack.minio.provision()
    users = json.loads(admin.user_list())
    assert "erasure" not in users and set(MINIO_USERS) <= set(users)


# -- object lock (WORM) -----------------------------------------------------------------------------

def test_object_lock_keeps_every_archived_version(secured) -> None:
    """raw/<sha256> (and manifests/) under a default retention: a version can be neither deleted nor
    replaced, not even by the root user; an overwrite or a delete without a version only stacks a new
    version or a delete marker on top, and the original bytes stay readable by version id."""
    s = secured
    if not s.minio_worm:
        pytest.skip("object lock is off (SEALSTREAM_MINIO_OBJECT_LOCK=0)")
    root = minio_client(s, "admin")
    cfg = root.get_object_lock_config(s.minio_bucket)
    assert (cfg.mode, cfg.duration, cfg.duration_unit) == (s.minio_retention_mode, s.minio_retention_days, "Days")
    store = BlobStore.from_settings(s, "pipeline")
    payload, key = _raw(store)
    original = root.stat_object(s.minio_bucket, key)
    assert original.metadata["x-amz-object-lock-mode"] == s.minio_retention_mode
    until = datetime.fromisoformat(original.metadata["x-amz-object-lock-retain-until-date"].replace("Z", "+00:00"))
    assert until > datetime.now(timezone.utc) + timedelta(days=s.minio_retention_days - 1)
    # the root user deletes the version: refused
    with pytest.raises(S3Error) as info:
        root.remove_object(s.minio_bucket, key, version_id=original.version_id)
    assert "WORM" in info.value.message
    # ... overwrites the key and deletes it (a marker): the original version is untouched
    _put(root, s.minio_bucket, key, b"forged")
    root.remove_object(s.minio_bucket, key)
    with pytest.raises(S3Error) as info:
        root.remove_object(s.minio_bucket, key, version_id=original.version_id)
    resp = root.get_object(s.minio_bucket, key, version_id=original.version_id)
    try:
        assert resp.read() == payload
    finally:
        resp.close()
        resp.release_conn()
    # the same for a manifest
    m = _manifest()
    mkey = store.put_manifest(m)
    version = root.stat_object(s.minio_bucket, mkey).version_id
    with pytest.raises(S3Error, match="WORM"):
        root.remove_object(s.minio_bucket, mkey, version_id=version)
    # and the pipeline user cannot shorten a retention or lift it
    errors = list(store.client.remove_objects(s.minio_bucket, [DeleteObject(key, original.version_id)],
                                              bypass_governance_mode=True))
    assert errors and errors[0].code == "AccessDenied"
    with pytest.raises(S3Error, match="AccessDenied|WORM protected"):
        store.client.set_object_retention(s.minio_bucket, key, Retention(GOVERNANCE, datetime.now(timezone.utc)
                                                                         + timedelta(days=1)),
                                          version_id=original.version_id)
    assert root.stat_object(s.minio_bucket, key, version_id=original.version_id).size == len(payload)


# -- which credentials and policies (no service) ---------------------------------------------------

@pytest.fixture
def own_home(monkeypatch, tmp_path) -> Path:
    for var in ("ROOT_PASSWORD", "ROOT_PASSWORD_FILE", "PIPELINE_SECRET", "PIPELINE_SECRET_FILE", "CA_FILE",
                "SECURE", "OBJECT_LOCK"):
        monkeypatch.delenv(f"SEALSTREAM_MINIO_{var}", raising=False)
    monkeypatch.delenv("SEALSTREAM_STACK_HOME", raising=False)
    return tmp_path


def test_credentials_with_security_off_are_the_root_user_for_everyone(own_home) -> None:
    tmp_path = own_home
    s = load_settings(security=False, home=tmp_path)
    for user in ("admin", *MINIO_USERS):
        assert s.minio_credentials(user) == (s.minio_root_user, "sealstream-dev-secret")
    assert (s.minio_tls, s.minio_worm, s.minio_ca_file) == (False, False, None)


def test_credentials_with_security_on_are_per_job_secrets(monkeypatch, own_home) -> None:
    from sealstream._security import SecretError, new_secret

    tmp_path = own_home
    s = load_settings(security=True, home=tmp_path)
    with pytest.raises(SecretError, match="minio_root_password"):  # never the dev default
        s.minio_credentials("admin")
    root = new_secret(tmp_path, "minio_root_password")
    pipeline = new_secret(tmp_path, "minio_pipeline_secret")
    assert s.minio_credentials("admin") == (s.minio_root_user, root)
    assert s.minio_credentials("pipeline") == ("pipeline", pipeline) and pipeline != root
    monkeypatch.setenv("SEALSTREAM_MINIO_PIPELINE_SECRET", "from-the-environment")
    assert s.minio_credentials("pipeline") == ("pipeline", "from-the-environment")
    assert s.minio_tls and s.minio_worm
    assert s.minio_ca_file == tmp_path / "pki" / "ca.crt"
    # a process with a home of its own on the same stack reads the stack's secrets and CA
    mine = load_settings(security=True, home=tmp_path / "own", stack_home=tmp_path)
    assert mine.minio_credentials("pipeline") == ("pipeline", "from-the-environment")
    monkeypatch.delenv("SEALSTREAM_MINIO_PIPELINE_SECRET")
    assert mine.minio_credentials("pipeline") == ("pipeline", pipeline)
    assert mine.minio_ca_file == tmp_path / "pki" / "ca.crt"


def test_policies_grant_no_delete() -> None:
    docs = {u: policy(u, "data") for u in MINIO_USERS}
    for user, doc in docs.items():
        for st in doc["Statement"]:
            assert st["Effect"] == "Allow"
            for action in st["Action"]:
                assert action in {"s3:GetBucketLocation", "s3:ListBucket", "s3:GetObject", "s3:PutObject"}, \
                    (user, action)
                if action == "s3:PutObject":
                    assert user == "pipeline"
    assert set(POLICIES) == set(MINIO_USERS)
    writes = [st for st in docs["pipeline"]["Statement"] if "s3:PutObject" in st["Action"]]
    assert sorted(r for st in writes for r in st["Resource"]) == [
        "arn:aws:s3:::data/manifests/*", "arn:aws:s3:::data/raw/*"]


def test_provisioning_moves_key_record_objects_of_an_earlier_stack_into_postgres(stack, settings) -> None:
    """Before migration 0010 key records were MinIO objects (``keys/<statement hash>`` in
    ``<bucket>-keys``); `provision` copies each whose statement is stored into ``key_records`` and
    removes the object, so erasure reaches the only copy; one naming no statement stays."""
    import uuid

    from storage import Writer, key_records, migrate, open_pool
    from storage_helpers import statement_record

    s = settings
    migrate(s.postgres_dsn)  # the stack's database, as `stack up` leaves it for the workers
    rec, _ = statement_record(int(uuid.uuid4().int % 10**9))
    orphan = os.urandom(32)
    root = minio_client(s, "admin")
    old = f"{s.minio_bucket}-keys"
    if not root.bucket_exists(old):
        root.make_bucket(old)
    with open_pool(s.postgres_dsn, max_size=1) as pool:
        assert Writer(pool).write_statements([rec]).inserted == 1
        _put(root, old, f"keys/{rec.hash.hex()}", b"wrapped keys of before")
        _put(root, old, f"keys/{orphan.hex()}", b"no statement")
        try:
            stack.minio.provision()
            assert key_records.read(pool, [rec.hash, orphan]) == {bytes(rec.hash): b"wrapped keys of before",
                                                                 orphan: None}
            names = {o.object_name for o in root.list_objects(old, prefix="keys/", recursive=True)}
            assert names == {f"keys/{orphan.hex()}"}
            stack.minio.provision()  # idempotent
            assert key_records.read(pool, [rec.hash])[bytes(rec.hash)] == b"wrapped keys of before"
        finally:
            root.remove_object(old, f"keys/{orphan.hex()}")
            root.remove_object(old, f"keys/{rec.hash.hex()}")
