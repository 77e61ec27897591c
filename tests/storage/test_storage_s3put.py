"""`storage._s3put.ObjectPut`: the archive's PUT without the SDK.

Against the stack's real MinIO: the signed payload hash is enforced by the
server, bad credentials are refused, metadata arrives. Against small
loopback servers (stand-ins, to make a connection go stale or a 503 happen
on demand): the retries.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from storage import BlobStore
from storage._s3put import UNSIGNED_PAYLOAD, ObjectPut, PutRefused, PutUnavailable
from storage.blobs import minio_client
from trust.hashes import sha256


def _put(settings, bucket: str, principal: str = "pipeline", **kw) -> ObjectPut:
    """As the pipeline workers PUT (their MinIO user; TLS against the stack CA with security on)."""
    access, secret = settings.minio_credentials(principal)
    ca = settings.minio_ca_file
    context = ssl.create_default_context(cafile=str(ca) if ca else None) if settings.minio_tls else None
    return ObjectPut(settings.minio_address, kw.pop("access", access), kw.pop("secret", secret), bucket,
                     secure=settings.minio_tls, ssl_context=context, **kw)


@pytest.mark.services
def test_put_lands_with_metadata_and_reads_back(blob_store: BlobStore, settings) -> None:
    body = os.urandom(3000)
    digest = sha256(body).hex()
    _put(settings, blob_store.bucket).put("raw/" + digest, body, digest, "image/jpeg", {"sha256": digest})
    stat = blob_store.client.stat_object(blob_store.bucket, "raw/" + digest)
    assert stat.size == 3000 and stat.content_type == "image/jpeg"
    assert stat.metadata["x-amz-meta-sha256"] == digest
    assert blob_store.get_raw(digest) == body


@pytest.mark.services
def test_server_refuses_a_body_that_does_not_match_the_signed_hash(blob_store: BlobStore, settings) -> None:
    body = os.urandom(2000)
    claimed = sha256(b"something else").hex()
    with pytest.raises(PutRefused) as info:
        _put(settings, blob_store.bucket).put("raw/" + claimed, body, claimed, "application/octet-stream")
    assert info.value.status == 400 and info.value.code == "XAmzContentSHA256Mismatch"
    assert not blob_store.has_raw(claimed)


@pytest.mark.services
def test_unsigned_payload_is_accepted(blob_store: BlobStore, settings) -> None:
    key = "baseline/" + os.urandom(8).hex()  # the benchmark's untrusted baseline: the root user, any prefix
    _put(settings, blob_store.bucket, "admin").put(key, b"x" * 100, UNSIGNED_PAYLOAD, "application/octet-stream")
    assert minio_client(settings, "admin").stat_object(blob_store.bucket, key).size == 100


@pytest.mark.services
def test_wrong_secret_is_refused(blob_store: BlobStore, settings) -> None:
    body = b"payload"
    with pytest.raises(PutRefused) as info:
        _put(settings, blob_store.bucket, secret="not-the-secret").put("raw/x", body, sha256(body).hex(), "a/b")
    assert info.value.status == 403 and info.value.code == "SignatureDoesNotMatch"


@pytest.mark.parametrize("when", ["20261122T045900Z", "20270101T000001Z"])
def test_signature_is_the_sdk_signers(when: str) -> None:
    """Our SigV4 against minio-py's (the reference), two days in a row (the signing key is cached per day)."""
    from urllib.parse import urlsplit

    from minio.credentials import Credentials
    from minio.signer import sign_v4_s3

    digest = sha256(b"body").hex()
    put = ObjectPut("127.0.0.1:9000", "AKIDEXAMPLE", "wJalr/K7MDENG+bPxRfiCY", "bucket", region="eu-west-1")
    for stamp in ("20261122T045900Z", when):
        headers = {"host": "127.0.0.1:9000", "content-type": "image/jpeg", "x-amz-content-sha256": digest,
                   "x-amz-date": stamp, "x-amz-meta-sha256": digest}
        ours = put._sigv4("PUT", "/bucket/raw/" + digest, headers, digest)
        date = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        theirs = sign_v4_s3(method="PUT", url=urlsplit("http://127.0.0.1:9000/bucket/raw/" + digest),
                            region="eu-west-1", headers=dict(headers),
                            credentials=Credentials("AKIDEXAMPLE", "wJalr/K7MDENG+bPxRfiCY"),
                            content_sha256=digest, date=date)["Authorization"]
        assert ours == theirs


@pytest.mark.parametrize("endpoint, host, port", [("127.0.0.1:9000", "127.0.0.1", 9000), ("[::1]:9000", "::1", 9000),
                                                 ("minio.local", "minio.local", 80), ("[::1]", "::1", 80)])
def test_endpoint_forms(endpoint: str, host: str, port: int) -> None:
    conn, reused = ObjectPut(endpoint, "k", "s", "b")._connection(fresh=False)
    assert (conn.host, conn.port, reused) == (host, port, False)


def test_closed_port_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    put = ObjectPut(f"127.0.0.1:{port}", "k", "s", "b", timeout=2, retries=2)
    with pytest.raises(PutUnavailable, match="ConnectionRefusedError"):
        put.put("raw/x", b"x", UNSIGNED_PAYLOAD, "a/b")


class _Server:
    """A loopback HTTP server answering PUTs from a script of statuses; counts requests and connections."""

    def __init__(self, statuses: list[int], close_after_each: bool = False) -> None:
        self.statuses, self.requests, self.connections = list(statuses), 0, 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                owner.connections += 1
                super().setup()

            def do_PUT(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                owner.requests += 1
                status = owner.statuses.pop(0) if owner.statuses else 200
                body = b"" if status == 200 else b"<Error><Code>SlowDown</Code><Message>busy</Message></Error>"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                if close_after_each:  # without saying so: the client's kept connection goes stale
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.endpoint = f"127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_stale_kept_connection_is_replaced() -> None:
    server = _Server([], close_after_each=True)
    try:
        put = ObjectPut(server.endpoint, "k", "s", "b", timeout=5, retries=2)
        for i in range(3):
            put.put(f"raw/{i}", b"abc", UNSIGNED_PAYLOAD, "a/b")
        assert server.requests == 3 and server.connections >= 3
    finally:
        server.close()


def test_5xx_is_retried_then_gives_up() -> None:
    server = _Server([503, 200])
    try:
        ObjectPut(server.endpoint, "k", "s", "b", timeout=5, retries=3).put("raw/a", b"abc", UNSIGNED_PAYLOAD, "a/b")
        assert server.requests == 2
        server.statuses = [503, 503, 503]
        with pytest.raises(PutUnavailable, match="SlowDown"):
            ObjectPut(server.endpoint, "k", "s", "b", timeout=5, retries=3).put("raw/b", b"x", UNSIGNED_PAYLOAD, "a/b")
        assert server.requests == 5
    finally:
        server.close()


def test_4xx_is_not_retried() -> None:
    server = _Server([403])
    try:
        with pytest.raises(PutRefused) as info:
            ObjectPut(server.endpoint, "k", "s", "b", retries=3).put("raw/a", b"abc", UNSIGNED_PAYLOAD, "a/b")
        assert (info.value.status, info.value.code, server.requests) == (403, "SlowDown", 1)
    finally:
        server.close()
