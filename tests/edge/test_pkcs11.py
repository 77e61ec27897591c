"""edge.pkcs11: Ed25519 device keys on a real PKCS#11 token (SoftHSM2 from Debian, a token per
test in tmp_path). Statements signed by the token verify with trust.statement; every failure is
a Pkcs11Error with its reason and never shows the PIN."""

from __future__ import annotations

import os
import threading

import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, ObjectClass

import edge.pkcs11 as ep
from edge.model import Signer
from edge.pkcs11 import Pkcs11Error, Pkcs11Signer, generate, public_key_from_ec_point
from infra.softhsm import ensure_softhsm
from trust.identity import public_key_from_did, verify_signature
from trust.statement import Statement, to_kafka_headers, from_kafka_headers, verify_statement

from _pkcs11_token import init_token, reload_module


@pytest.fixture(scope="session")
def hsm(settings):
    return ensure_softhsm(auto_install=settings.auto_install)


@pytest.fixture
def token(hsm, tmp_path, monkeypatch):
    tok = init_token(hsm, tmp_path, monkeypatch)[0]
    yield tok
    leaked = [(t.label, t.refs) for t in ep._tokens.values()]  # every signer is closed by now
    for t in list(ep._tokens.values()):  # a failed test must not leave a login behind for the next one
        t.refs = 1
        ep._release(t)
    assert not leaked, f"shared token sessions still referenced after the test: {leaked}"


@pytest.fixture
def key(token):
    signer = generate(token.module, pin=token.pin, token_label=token.label, key_label="press-7")
    yield signer
    signer.close()


def _statement(did: str, seq: int = 1) -> tuple[Statement, bytes]:
    payload = b"ARROW1\x00 time-series of press 7 " + bytes(range(64))
    return Statement.for_payload(did, seq, 1_700_000_000_000 + seq, "timeseries",
                                 "application/vnd.apache.arrow.stream", payload), payload


def _reason(excinfo) -> str:
    exc = excinfo.value
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__), \
        "the library's exception must not be chained"
    return exc.reason


def test_token_signs_a_statement_that_trust_verifies(token, key):
    signer_protocol: Signer = key  # edge.model.Signer (a static protocol: did + sign)
    assert signer_protocol.did == key.did and callable(signer_protocol.sign)
    with Pkcs11Signer.from_config(token.section("press-7")) as signer:
        assert signer.did == key.did and signer.did.startswith("did:key:z6Mk")
        assert public_key_from_did(signer.did) == signer.public_key
        stmt, payload = _statement(signer.did)
        sig = signer.sign(stmt.signing_bytes())
        assert type(sig) is bytes and len(sig) == 64
        assert verify_statement(stmt, sig)
        assert verify_signature(signer.did, stmt.signing_bytes(), sig)
        # through the Kafka headers, as the pipeline receives it
        stmt2, sig2 = from_kafka_headers(to_kafka_headers(stmt, sig))
        assert stmt2 == stmt and verify_statement(stmt2, sig2) and stmt2.matches_payload(payload)
        # a statement about anything else does not verify with that signature
        other, _ = _statement(signer.did, seq=2)
        assert not verify_statement(other, sig)
        assert signer.sign(other.signing_bytes()) == signer.sign(other.signing_bytes())  # Ed25519 is deterministic


def test_the_did_is_the_tokens_public_key(token, key):
    # the signer keeps the token logged in for this process (PKCS#11 login state is per application)
    with pkcs11.lib(token.module).get_token(token_label=token.label).open() as s:
        pub = s.get_key(object_class=ObjectClass.PUBLIC_KEY, key_type=KeyType.EC_EDWARDS, label="press-7")
        point = pub[Attribute.EC_POINT]
        priv = s.get_key(object_class=ObjectClass.PRIVATE_KEY, key_type=KeyType.EC_EDWARDS, label="press-7")
        assert priv[Attribute.SENSITIVE] and not priv[Attribute.EXTRACTABLE]
    assert point[:2] == b"\x04\x20" and len(point) == 34
    assert public_key_from_did(key.did) == point[2:]


def test_ec_point_wrapped_and_raw_forms():
    raw = bytes(range(32))
    assert public_key_from_ec_point(raw) == raw
    assert public_key_from_ec_point(b"\x04\x20" + raw) == raw
    assert public_key_from_ec_point(b"\x04\x81\x20" + raw) == raw
    for bad in (b"", raw[:31], b"\x04\x21" + raw + b"\x00", b"\x03\x20" + raw, b"\x04" + bytes(65)):
        with pytest.raises(Pkcs11Error) as ei:
            public_key_from_ec_point(bad)
        assert ei.value.reason == "key-invalid"


def test_config_short_field_names(token, key):
    # the spelling of edge/config.py's example: { module, token, label, pin_file }
    section = {"module": token.module, "token": token.label, "label": "press-7", "pin_file": str(token.pin_file())}
    with Pkcs11Signer.from_config(section) as signer:
        assert signer.did == key.did
    with pytest.raises(Pkcs11Error) as ei:
        Pkcs11Signer.from_config({**section, "key_label": "press-7"})
    assert _reason(ei) == "config-invalid"


def test_relative_pin_file_and_the_edge_signing_path(token, key):
    from edge.config import DeviceConfig
    from edge.signing import load_signer

    token.pin_file("rel.pin")
    section = {"module": token.module, "token_label": token.label, "key_label": "press-7", "pin_file": "rel.pin"}
    with Pkcs11Signer.from_config(section, base_dir=token.dir) as signer:
        assert signer.did == key.did
    device = DeviceConfig("press-7", "timeseries", {"pkcs11": token.section("press-7")}, ())
    signer = load_signer(device)  # edge.signing's self-test signature verifies under the token's did
    try:
        stmt, _ = _statement(signer.did)
        assert signer.did == key.did and verify_statement(stmt, signer.sign(stmt.signing_bytes()))
    finally:
        signer.close()


def test_pin_from_an_environment_variable(token, key, monkeypatch):
    monkeypatch.setenv("SS_TEST_TOKEN_PIN", token.pin)
    section = {"module": token.module, "token_label": token.label, "key_label": "press-7",
               "pin_env": "SS_TEST_TOKEN_PIN"}
    with Pkcs11Signer.from_config(section) as signer:
        assert signer.did == key.did
    monkeypatch.delenv("SS_TEST_TOKEN_PIN")
    with pytest.raises(Pkcs11Error) as ei:
        Pkcs11Signer.from_config(section)
    assert _reason(ei) == "pin-unavailable" and "SS_TEST_TOKEN_PIN" in str(ei.value)


def test_wrong_pin_is_pin_incorrect(token):
    with pkcs11.lib(token.module).get_token(token_label=token.label).open(rw=True, user_pin=token.pin) as s:
        s.generate_keypair(KeyType.EC_EDWARDS, store=True, label="press-7",
                           public_template={Attribute.EC_PARAMS: bytes.fromhex("06032b6570")})
    # no session is logged in: the token itself refuses the PIN
    section = token.section("press-7")
    section["pin_file"] = str(token.pin_file("wrong.pin", pin="0000-wrong"))
    with pytest.raises(Pkcs11Error) as ei:
        Pkcs11Signer.from_config(section)
    assert _reason(ei) == "pin-incorrect" and "0000-wrong" not in str(ei.value) and token.label in str(ei.value)
    # the right PIN still works afterwards, and while it is logged in a wrong one is refused too
    with Pkcs11Signer.from_config(token.section("press-7")) as good:
        with pytest.raises(Pkcs11Error) as ei:
            Pkcs11Signer.from_config(section)
        assert _reason(ei) == "pin-incorrect" and "0000-wrong" not in str(ei.value)
        assert good.sign(b"x") and good.did


def test_missing_key_is_key_not_found(token, key):
    with pytest.raises(Pkcs11Error) as ei:
        Pkcs11Signer.from_config(token.section("no-such-key"))
    assert _reason(ei) == "key-not-found" and "no-such-key" in str(ei.value)
    with pytest.raises(Pkcs11Error) as ei:
        Pkcs11Signer(token.module, pin=token.pin, token_label=token.label, key_id="00112233")
    assert _reason(ei) == "key-not-found"
    assert key.sign(b"still usable")  # the failed lookups did not disturb the shared session


def test_group_readable_pin_file_is_refused(token, key):
    for mode in (0o640, 0o604, 0o620):
        section = token.section("press-7")
        section["pin_file"] = str(token.pin_file("loose.pin", mode=mode))
        with pytest.raises(Pkcs11Error) as ei:
            Pkcs11Signer.from_config(section)
        assert _reason(ei) == "pin-file-insecure" and "chmod 600" in str(ei.value)
        assert token.pin not in str(ei.value)
    section["pin_file"] = str(token.dir / "absent.pin")
    with pytest.raises(Pkcs11Error) as ei:
        Pkcs11Signer.from_config(section)
    assert _reason(ei) == "pin-unavailable"


def test_token_module_and_config_errors(token, key, tmp_path):
    with pytest.raises(Pkcs11Error) as ei:
        Pkcs11Signer.from_config(token.section("press-7", token_label="no-such-token"))
    assert _reason(ei) == "token-not-found" and token.label in str(ei.value)  # lists what is there
    with pytest.raises(Pkcs11Error) as ei:
        Pkcs11Signer.from_config(token.section("press-7", module=str(tmp_path / "libnothing.so")))
    assert _reason(ei) == "module-missing"
    not_a_lib = tmp_path / "libfake.so"
    not_a_lib.write_bytes(b"not an ELF file")
    with pytest.raises(Pkcs11Error) as ei:
        Pkcs11Signer.from_config(token.section("press-7", module=str(not_a_lib)))
    assert _reason(ei) == "module-missing"
    for bad in ({"key_lable": "x"}, {"pin_env": "X"}, {"type": "file"}):
        with pytest.raises(Pkcs11Error) as ei:
            Pkcs11Signer.from_config(token.section("press-7", **bad))
        assert _reason(ei) == "config-invalid"
    with pytest.raises(Pkcs11Error) as ei:
        generate(token.module, pin=token.pin, token_label=token.label, key_label="press-7")
    assert _reason(ei) == "key-exists"


def test_key_of_another_type_is_refused(token):
    with pkcs11.lib(token.module).get_token(token_label=token.label).open(rw=True, user_pin=token.pin) as s:
        s.generate_keypair(KeyType.RSA, 2048, store=True, label="rsa-key")
    with pytest.raises(Pkcs11Error) as ei:
        Pkcs11Signer.from_config(token.section("rsa-key"))
    assert _reason(ei) == "key-invalid" and "RSA" in str(ei.value)


def test_token_without_eddsa_is_mechanism_unsupported(token, key, monkeypatch):
    real = ep._mechanisms
    monkeypatch.setattr(ep, "_mechanisms", lambda t: real(t) - {pkcs11.Mechanism.EDDSA})
    with pytest.raises(Pkcs11Error) as ei:
        Pkcs11Signer.from_config(token.section("press-7"))
    assert _reason(ei) == "mechanism-unsupported"


def test_signing_from_many_threads(token, key):
    stmts = [_statement(key.did, seq)[0] for seq in range(1, 201)]
    sigs: dict[int, bytes] = {}
    errors: list[BaseException] = []

    def work(part: list[Statement]) -> None:
        try:
            for st in part:
                sigs[st.seq] = key.sign(st.signing_bytes())
        except BaseException as exc:  # noqa: BLE001 - any failure in the thread is reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(stmts[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(sigs) == len(stmts)
    assert all(verify_statement(st, sigs[st.seq]) for st in stmts)


def test_session_reopened_after_the_library_is_reinitialised(token, key):
    before = key.sign(b"before")
    reload_module(token.module)  # every session handle of the process is now invalid
    assert key.sign(b"before") == before
    assert verify_signature(key.did, b"before", before)


def test_admin_command_generates_and_shows_a_key(token, capsys):
    pin_file = str(token.pin_file())
    base = ["--module", token.module, "--token-label", token.label, "--key-label", "cam-2", "--pin-file", pin_file]
    assert ep.main(["generate", *base]) == 0
    did = capsys.readouterr().out.strip()
    assert ep.main(["did", *base]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == did and did.startswith("did:key:z6Mk")
    assert ep.main(["generate", *base]) == 2
    out = capsys.readouterr()
    assert "key-exists" in out.err and token.pin not in out.err + out.out
    os.chmod(pin_file, 0o644)
    assert ep.main(["did", *base]) == 2
    assert "pin-file-insecure" in capsys.readouterr().err


def test_check_config_resolves_a_relative_pin_file_and_closes_its_signer(token, key, tmp_path, monkeypatch):
    # edge.toml names pin_file relative to its own folder; the process runs somewhere else
    from edge.config import check_config, load_config
    from edge.signing import load_signer

    token.pin_file("rel.pin")
    cfg = token.dir / "edge.toml"
    cfg.write_text(f"""
[edge]
factory = "plant-p"
[devices.press-7]
kind = "timeseries"
[devices.press-7.key.pkcs11]
module = "{token.module}"
token_label = "{token.label}"
key_label = "press-7"
pin_file = "rel.pin"
""")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    refs = {t.label: t.refs for t in ep._tokens.values()}  # the `key` fixture's signer holds one
    assert check_config(cfg) == []
    assert {t.label: t.refs for t in ep._tokens.values()} == refs, "check_config left its signer open"
    signer = load_signer(load_config(cfg).devices["press-7"])
    try:
        assert signer.did == key.did
    finally:
        signer.close()
