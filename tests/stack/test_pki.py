"""The stack CA (infra.pki) and secret resolution (sealstream._security): files 0600, certificates
that a real TLS 1.3 handshake over loopback accepts, refusal of another CA's certificate, renewal
before expiry, and secrets from env, file or the stack. No services."""

from __future__ import annotations

import datetime as dt
import os
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from infra import pki as pki_mod
from infra.pki import PKIError, StackPKI, client_spec, server_spec
from sealstream._security import (
    SecretError,
    mask,
    new_secret,
    read_secret,
    tls_files,
    write_private,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _handshake(server_files, client_ca: Path, client_files=None, *, require_client: bool = True) -> str:
    """Run one TLS 1.3 handshake over loopback; the peer CN the server saw, or raise ssl.SSLError."""
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.minimum_version = ssl.TLSVersion.TLSv1_3
    sctx.load_cert_chain(server_files.cert, server_files.key)
    sctx.load_verify_locations(server_files.ca)
    sctx.verify_mode = ssl.CERT_REQUIRED if require_client else ssl.CERT_NONE
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]
    seen: dict[str, object] = {}

    def serve() -> None:
        conn, _ = lsock.accept()
        try:
            with sctx.wrap_socket(conn, server_side=True) as tls:
                peer = tls.getpeercert() or {}
                seen["cn"] = dict(x[0] for x in peer.get("subject", ())).get("commonName", "")
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as exc:
            seen["error"] = exc

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    cctx = ssl.create_default_context(cafile=str(client_ca))
    cctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if client_files is not None:
        cctx.load_cert_chain(client_files.cert, client_files.key)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with cctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.recv(2)
    finally:
        t.join(5)
        lsock.close()
    if "error" in seen:
        raise seen["error"]  # type: ignore[misc]
    return str(seen["cn"])


def test_ca_and_leaves_are_private_and_complete_a_mutual_tls_handshake(tmp_path: Path) -> None:
    pki = StackPKI(tmp_path, env={})
    files = pki.ensure([server_spec("kafka", ["127.0.0.1", "localhost"]), client_spec("pipeline")])
    for path in (pki.ca_key_path, files["server-kafka"].key, files["client-pipeline"].key,
                 files["server-kafka"].cert):
        assert _mode(path) == 0o600, path
    assert _mode(pki.dir) == 0o700
    cn = _handshake(files["server-kafka"], files["server-kafka"].ca, files["client-pipeline"])
    assert cn == "pipeline"
    # the client-side lookup names the same files
    assert tls_files(tmp_path, "kafka", "pipeline", env={}) == files["client-pipeline"]


def test_a_certificate_of_another_ca_is_refused_both_ways(tmp_path: Path) -> None:
    ours = StackPKI(tmp_path / "ours", env={}).ensure([server_spec("pg", ["127.0.0.1"]), client_spec("writer")])
    theirs = StackPKI(tmp_path / "theirs", env={}).ensure([server_spec("pg", ["127.0.0.1"]), client_spec("writer")])
    # a client with another CA's certificate: the server refuses it
    with pytest.raises((ssl.SSLError, OSError)):
        _handshake(ours["server-pg"], ours["server-pg"].ca, theirs["client-writer"])
    # a server with another CA's certificate: the client refuses it
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(theirs["server-pg"], ours["server-pg"].ca, ours["client-writer"])
    # a server certificate for another name is refused by hostname checking
    other = StackPKI(tmp_path / "ours", env={}).ensure([server_spec("minio", ["10.9.9.9"])])
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(other["server-minio"], other["server-minio"].ca, ours["client-writer"])


def test_ensure_keeps_current_certificates_and_renews_expiring_ones(tmp_path: Path, monkeypatch) -> None:
    pki = StackPKI(tmp_path, env={})
    spec = client_spec("verifier")
    first = pki.ensure([spec])["client-verifier"]
    before = first.cert.read_bytes()
    pki.ensure([spec])
    assert first.cert.read_bytes() == before, "a current certificate is kept"
    # a certificate with less than RENEW_BEFORE left is re-issued
    monkeypatch.setattr(pki_mod, "RENEW_BEFORE", dt.timedelta(days=pki_mod.LEAF_DAYS + 1))
    pki.ensure([spec])
    assert first.cert.read_bytes() != before
    # the same for the names: a server certificate for other hosts is re-issued
    monkeypatch.setattr(pki_mod, "RENEW_BEFORE", dt.timedelta(days=30))
    a = pki.ensure([server_spec("minio", ["127.0.0.1"])])["server-minio"].cert.read_bytes()
    b = pki.ensure([server_spec("minio", ["127.0.0.2"])])["server-minio"].cert.read_bytes()
    assert a != b


def test_a_new_ca_reissues_every_leaf(tmp_path: Path) -> None:
    pki = StackPKI(tmp_path, env={})
    leaf = pki.ensure([client_spec("alerts")])["client-alerts"]
    before = leaf.cert.read_bytes()
    pki.ca_cert_path.unlink()
    pki.ensure([client_spec("alerts")])
    cert = x509.load_pem_x509_certificate(leaf.cert.read_bytes())
    ca = x509.load_pem_x509_certificate(pki.ca_cert_path.read_bytes())
    assert leaf.cert.read_bytes() != before
    cert.verify_directly_issued_by(ca)


def test_bring_your_own_ca(tmp_path: Path) -> None:
    own = StackPKI(tmp_path / "corp", env={})
    own.ensure_ca()
    env = {"SEALSTREAM_TLS_CA_FILE": str(own.ca_cert_path), "SEALSTREAM_TLS_CA_KEY_FILE": str(own.ca_key_path)}
    pki = StackPKI(tmp_path / "stack", env=env)
    leaf = pki.ensure([client_spec("grafana")])["client-grafana"]
    cert = x509.load_pem_x509_certificate(leaf.cert.read_bytes())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(own.ca_cert_path.read_bytes()))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "grafana"
    with pytest.raises(PKIError):
        StackPKI(tmp_path / "x", env={"SEALSTREAM_TLS_CA_FILE": str(own.ca_cert_path)})


def test_secrets_resolve_env_then_file_then_stack_and_never_default(tmp_path: Path) -> None:
    with pytest.raises(SecretError) as err:
        read_secret(tmp_path, "pg_password", env={})
    assert "SEALSTREAM_PG_PASSWORD_FILE" in str(err.value)
    generated = new_secret(tmp_path, "pg_password")
    assert len(generated) >= 24 and new_secret(tmp_path, "pg_password") == generated
    assert _mode(tmp_path / "secrets" / "pg_password") == 0o600
    assert read_secret(tmp_path, "pg_password", env={}) == generated
    given = tmp_path / "given"
    write_private(given, b"from-a-file\n")
    assert read_secret(tmp_path, "pg_password", env={"SEALSTREAM_PG_PASSWORD_FILE": str(given)}) == "from-a-file"
    assert read_secret(tmp_path, "pg_password", env={"SEALSTREAM_PG_PASSWORD_FILE": str(given),
                                                      "SEALSTREAM_PG_PASSWORD": "from-env"}) == "from-env"
    with pytest.raises(SecretError):
        read_secret(tmp_path, "pg_password", env={"SEALSTREAM_PG_PASSWORD_FILE": str(tmp_path / "missing")})
    assert mask(f"postgresql://w:{generated}@h/db", generated) == "postgresql://w:***@h/db"


def test_write_private_is_atomic_and_never_world_readable(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        target = tmp_path / "d" / "k"
        write_private(target, b"one")
        write_private(target, b"two")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"two" and _mode(target) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["k"], "no temp file left behind"
