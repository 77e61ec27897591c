"""trust.identity: did:key, base58btc, Ed25519 signing, key files."""

from __future__ import annotations

import dataclasses
import os
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trust._base58 import b58decode, b58encode
from trust.identity import (
    IdentityError,
    KeyFileError,
    KeyPair,
    did_from_public_key,
    is_did,
    load_keypair,
    public_key_from_did,
    save_keypair,
    verify_signature,
)

# RFC 8032 §7.1 TEST 1.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PK = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIG = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
# A did:key / base58 public key pair published by an independent implementation
# (ACA-Py test data): checks the multicodec prefix and base58btc together.
EXT_DID = "did:key:z6MkmjY8GnV5i9YTDtPETC2uUAW6ejw3nk5mXF5yci5ab7th"
EXT_PK_B58 = "8HH5gYEeNc3z7PYXmd54d4x6qAfCNrqQqEB3nS7Zfu7K"


def test_rfc8032_vector():
    kp = KeyPair.from_seed(RFC8032_SEED)
    assert kp.public_key == RFC8032_PK
    assert kp.sign(b"") == RFC8032_SIG
    assert verify_signature(RFC8032_PK, b"", RFC8032_SIG)
    assert kp.did.startswith("did:key:z6Mk")


def test_external_did_key_vector():
    pk = b58decode(EXT_PK_B58)
    assert did_from_public_key(pk) == EXT_DID
    assert public_key_from_did(EXT_DID) == pk


def test_base58_known_values():
    assert b58encode(b"") == ""
    assert b58encode(b"\x00") == "1"
    assert b58encode(b"\x00\x00\x01") == "112"
    assert b58encode(b"hello world") == "StV1DL6CwTryKyV"
    assert b58decode("StV1DL6CwTryKyV") == b"hello world"
    with pytest.raises(ValueError):
        b58decode("0OIl")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=50))
def test_base58_round_trip(data):
    assert b58decode(b58encode(data)) == data


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_did_round_trip(seed):
    kp = KeyPair.from_seed(seed)
    assert public_key_from_did(kp.did) == kp.public_key
    assert did_from_public_key(kp.public_key) == kp.did
    assert is_did(kp.did)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "did:key:",
        "did:key:z",
        "did:key:zTjsVPtY",  # valid base58, too short for an Ed25519 key
        "did:web:example.com",
        "did:key:m" + "A" * 40,  # base64 multibase
        EXT_DID + "1",  # trailing data
        EXT_DID.replace("z6Mk", "z6Ls"),  # another multicodec
        EXT_DID[:-1] + "0",  # not base58
        "did:key:z1" + EXT_DID[len("did:key:z"):],  # leading zero byte: non-canonical
        None,
        b"did:key:z6Mk",
    ],
)
def test_bad_dids_rejected(bad):
    with pytest.raises(IdentityError):
        public_key_from_did(bad)  # type: ignore[arg-type]
    assert not is_did(bad)


def test_x25519_multicodec_rejected():
    x = "did:key:z" + b58encode(b"\xec\x01" + bytes(32))
    with pytest.raises(IdentityError):
        public_key_from_did(x)


def test_verify_signature_never_raises_on_bad_signature():
    kp = KeyPair.from_seed(bytes(range(32)))
    sig = kp.sign(b"msg")
    assert verify_signature(kp.did, b"msg", sig)
    assert verify_signature(kp.public_key, b"msg", sig)
    assert kp.verify(b"msg", sig)
    assert not verify_signature(kp.did, b"msg2", sig)
    assert not verify_signature(kp.did, b"msg", sig[:-1])
    assert not verify_signature(kp.did, b"msg", b"")
    assert not verify_signature(kp.did, b"msg", bytes(64))
    assert not verify_signature(kp.did, b"msg", b"\xff" * 64)
    assert not verify_signature(kp.did, b"msg", "not bytes")  # type: ignore[arg-type]
    other = KeyPair.generate()
    assert not verify_signature(other.public_key, b"msg", sig)


def test_verify_signature_rejects_malformed_keys():
    with pytest.raises(IdentityError):
        verify_signature(b"short", b"m", bytes(64))
    with pytest.raises(IdentityError):
        verify_signature("did:key:nope", b"m", bytes(64))


def test_keypair_value_semantics():
    a = KeyPair.from_seed(bytes(32))
    b = KeyPair.from_seed(bytes(32))
    assert a == b and hash(a) == hash(b)
    assert a.seed.hex() not in repr(a)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.did = "x"  # type: ignore[misc]
    with pytest.raises(IdentityError):
        KeyPair.from_seed(b"short")
    assert KeyPair.generate() != KeyPair.generate()


def test_key_file_round_trip_and_mode(tmp_path):
    kp = KeyPair.generate()
    path = tmp_path / "device.key"
    save_keypair(path, kp)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_keypair(path) == kp
    assert load_keypair(str(path)).seed == kp.seed


def test_key_file_not_overwritten(tmp_path):
    path = tmp_path / "k"
    save_keypair(path, KeyPair.generate())
    with pytest.raises(KeyFileError):
        save_keypair(path, KeyPair.generate())
    kp = KeyPair.generate()
    save_keypair(path, kp, overwrite=True)
    assert load_keypair(path) == kp


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o606, 0o610, 0o601])
def test_key_file_readable_by_others_refused(tmp_path, mode):
    path = tmp_path / "k"
    save_keypair(path, KeyPair.generate())
    os.chmod(path, mode)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_keypair(path)


def test_key_file_mode_0400_accepted(tmp_path):
    path = tmp_path / "k"
    kp = KeyPair.generate()
    save_keypair(path, kp)
    os.chmod(path, 0o400)
    assert load_keypair(path) == kp


@pytest.mark.parametrize(
    "content",
    [b"", b"{}", b"not json", b'{"v": 1, "type": "ed25519", "did": "x", "seed": "00"}',
     b'{"v": 2, "type": "ed25519", "did": "x", "seed": "' + b"00" * 32 + b'"}'],
)
def test_malformed_key_file(tmp_path, content):
    path = tmp_path / "k"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content)
    os.close(fd)
    with pytest.raises(KeyFileError):
        load_keypair(path)


def test_key_file_did_mismatch(tmp_path):
    path = tmp_path / "k"
    kp = KeyPair.generate()
    save_keypair(path, kp)
    text = path.read_text().replace(kp.did, KeyPair.generate().did)
    path.write_text(text)
    with pytest.raises(KeyFileError, match="does not match"):
        load_keypair(path)


def test_missing_key_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_keypair(tmp_path / "nope")
