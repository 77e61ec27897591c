"""Recipients' encryption keys (registry) and the confidentiality policy (`policy.*`): every rule
and refusal code, resolution as of heights, the audit events each change raises (issue 18)."""

from __future__ import annotations

import hashlib
import json

import pytest
from test_contracts_helpers import ACME, ADMIN, BETA, Chain, code, key

from ledger.contracts import audit, confidentiality, registry
from ledger.contracts.confidentiality import grant_status, policy_closure, recipients_at
from ledger.contracts.registry import resolve_enc_key


def xkey(name: str) -> str:
    """A 32-byte value as an X25519 public key in hex (the contract checks the form only)."""
    return hashlib.sha256(f"x25519-{name}".encode()).hexdigest()


@pytest.fixture
def chain() -> Chain:
    c = Chain()
    assert code(c.one(ACME, "registry.register_device", {"id": "cam-1", "org": "acme",
                                                         "key": key("cam-1").did})) is None
    assert code(c.one(ACME, "registry.register_gateway", {"id": "gw-1", "org": "acme", "key": key("gw-1").did})) is None
    return c


def enc(c: Chain, signer, rid: str, org: str, k: str | None = None) -> dict:
    return c.one(signer, "registry.register_enc_key", {"id": rid, "org": org, "key": k or xkey(rid)})


def test_register_enc_key(chain: Chain) -> None:
    p = {"id": "acme.analytics", "org": "acme", "key": xkey("a"), "name": "analytics team"}
    assert code(chain.one(BETA, "registry.register_enc_key", p)) == "FORBIDDEN"      # another org's admin
    assert code(chain.one(ADMIN, "registry.register_enc_key", p)) == "FORBIDDEN"     # not acme's admin
    assert code(chain.one(key("cam-1"), "registry.register_enc_key", p)) == "FORBIDDEN"
    assert code(chain.one(ACME, "registry.register_enc_key", {**p, "org": "nowhere"})) == "NOT_FOUND"
    assert code(chain.one(ACME, "registry.register_enc_key", {**p, "org": "cam-1"})) == "NOT_FOUND"  # not an org
    assert code(chain.one(ACME, "registry.register_enc_key", p)) is None
    h = chain.height
    assert code(chain.one(ACME, "registry.register_enc_key", p)) == "ALREADY_EXISTS"
    assert code(chain.one(ACME, "registry.register_enc_key", {**p, "id": "other"})) == "KEY_IN_USE"
    assert code(chain.one(BETA, "registry.register_enc_key", {"id": "beta", "org": "beta", "key": xkey("a")})) \
        == "KEY_IN_USE"
    # an org may name its own recipient after itself (recipients have their own id space)
    assert code(enc(chain, ACME, "acme", "acme")) is None
    st = chain.app.state
    r = resolve_enc_key(st, "acme.analytics", h)
    assert r.valid and r.org == "acme" and r.key == bytes.fromhex(xkey("a")) and r.registered == (h, 0)
    assert resolve_enc_key(st, "acme.analytics", h - 1).status == "unregistered"
    assert resolve_enc_key(st, "nobody", h).status == "unknown"
    rec = registry.get_enc_key(st, "acme.analytics")
    assert json.loads(json.dumps(registry.enc_key_json("acme.analytics", rec)))["name"] == "analytics team"
    assert [i for i, _ in registry.enc_keys(st, org="acme")] == ["acme", "acme.analytics"]
    assert registry.resolve(st, "acme", chain.height).key == ACME.did  # the org entity is untouched


@pytest.mark.parametrize("bad", [xkey("a").upper(), xkey("a")[:-2], "0" * 64, 7, b"\x01" * 32, "did:key:z6Mk"])
def test_register_enc_key_bad_key(chain: Chain, bad) -> None:
    root = chain.app.state_root()
    assert code(chain.one(ACME, "registry.register_enc_key", {"id": "r", "org": "acme", "key": bad})) == "BAD_PAYLOAD"
    assert chain.app.state_root() == root


def test_rotate_and_revoke_enc_key_as_of_heights(chain: Chain) -> None:
    assert code(enc(chain, ACME, "r1", "acme", xkey("k1"))) is None
    h1 = chain.height
    assert code(chain.one(BETA, "registry.rotate_enc_key", {"id": "r1", "key": xkey("k2")})) == "FORBIDDEN"
    assert code(chain.one(ACME, "registry.rotate_enc_key", {"id": "r1", "key": xkey("k1")})) == "KEY_IN_USE"
    assert code(chain.one(ACME, "registry.rotate_enc_key", {"id": "nope", "key": xkey("k2")})) == "NOT_FOUND"
    assert code(chain.one(ACME, "registry.rotate_enc_key", {"id": "r1", "key": xkey("k2")})) is None
    h2 = chain.height
    assert code(chain.one(BETA, "registry.revoke_enc_key", {"id": "r1"})) == "FORBIDDEN"
    assert code(chain.one(ADMIN, "registry.revoke_enc_key", {"id": "r1", "reason": "lost laptop"})) is None
    h3 = chain.height
    assert code(chain.one(ACME, "registry.revoke_enc_key", {"id": "r1"})) == "REVOKED"
    assert code(chain.one(ACME, "registry.rotate_enc_key", {"id": "r1", "key": xkey("k3")})) == "REVOKED"
    st = chain.app.state
    assert resolve_enc_key(st, "r1", h1).key == bytes.fromhex(xkey("k1"))
    assert resolve_enc_key(st, "r1", h2 - 1).key == bytes.fromhex(xkey("k1"))
    assert resolve_enc_key(st, "r1", h2).key == bytes.fromhex(xkey("k2"))
    assert resolve_enc_key(st, "r1", h2, 0).key == bytes.fromhex(xkey("k1"))  # as tx 0 of that block saw it
    assert resolve_enc_key(st, "r1", h3 - 1).status == "active"
    r = resolve_enc_key(st, "r1", h3)
    assert r.status == "revoked" and r.revoked == (h3, 0) and r.key == bytes.fromhex(xkey("k2"))
    assert registry.get_enc_key(st, "r1")["reason"] == "lost laptop"


def test_org_revocation_revokes_its_recipients(chain: Chain) -> None:
    assert code(enc(chain, BETA, "beta.qa", "beta")) is None
    assert code(chain.one(ADMIN, "registry.revoke", {"id": "beta"})) is None
    h = chain.height
    assert resolve_enc_key(chain.app.state, "beta.qa", h - 1).valid
    assert resolve_enc_key(chain.app.state, "beta.qa", h).status == "revoked"
    assert code(enc(chain, BETA, "beta.qa2", "beta")) == "ORG_REVOKED"
    assert code(chain.one(BETA, "registry.rotate_enc_key", {"id": "beta.qa", "key": xkey("n")})) == "ORG_REVOKED"


def grant(c: Chain, signer, stream: str, rid: str) -> dict:
    return c.one(signer, "policy.grant", {"stream": stream, "recipient": rid})


def test_grant_and_revoke_as_of_heights(chain: Chain) -> None:
    assert code(enc(chain, ACME, "acme.qa", "acme")) is None
    assert code(enc(chain, BETA, "beta.buyer", "beta")) is None
    assert code(grant(chain, ACME, "cam-1", "acme.qa")) is None
    g1 = chain.height
    assert code(grant(chain, ACME, "cam-1", "beta.buyer")) is None           # a partner's recipient
    g2 = chain.height
    assert code(grant(chain, ACME, "cam-1", "beta.buyer")) == "ALREADY_GRANTED"
    assert code(chain.one(ACME, "policy.revoke", {"stream": "cam-1", "recipient": "beta.buyer",
                                                  "reason": "contract ended"})) is None
    r1 = chain.height
    assert code(chain.one(ACME, "policy.revoke", {"stream": "cam-1", "recipient": "beta.buyer"})) == "NOT_GRANTED"
    assert code(grant(chain, ACME, "cam-1", "beta.buyer")) is None           # granted again
    g3 = chain.height
    st = chain.app.state

    def ids(h: int) -> list[str]:
        return [r.id for r in recipients_at(st, "cam-1", h)]

    assert ids(g1 - 1) == [] and ids(g1) == ["acme.qa"]
    assert ids(g2) == ["acme.qa", "beta.buyer"] and ids(r1 - 1) == ["acme.qa", "beta.buyer"]
    assert ids(r1) == ["acme.qa"] and ids(g3) == ["acme.qa", "beta.buyer"]
    assert recipients_at(st, "cam-1", g2)[1].key == bytes.fromhex(xkey("beta.buyer"))
    assert recipients_at(st, "cam-1", g3)[1].granted == (g3, 0)
    assert grant_status(st, "cam-1", "beta.buyer", g1) == "never"
    assert grant_status(st, "cam-1", "beta.buyer", g2) == "granted"
    assert grant_status(st, "cam-1", "beta.buyer", r1) == "revoked"
    assert grant_status(st, "cam-1", "beta.buyer", g3) == "granted"
    assert grant_status(st, "cam-1", "nobody", g3) == "never"
    assert recipients_at(st, "no-such-stream", g3) == []
    assert policy_closure(st, "cam-1") == ["pol/stream/cam-1", "reg/enc/acme.qa", "reg/ent/acme",
                                           "reg/enc/beta.buyer", "reg/ent/beta"]
    view = confidentiality.stream_json("cam-1", confidentiality.get_stream(st, "cam-1"))
    assert json.loads(json.dumps(view))["grants"]["beta.buyer"][0]["to"] == {"height": r1, "index": 0}


def test_a_revoked_recipient_key_drops_out_of_the_policy(chain: Chain) -> None:
    assert code(enc(chain, ACME, "acme.qa", "acme")) is None
    assert code(grant(chain, ACME, "cam-1", "acme.qa")) is None
    assert code(chain.one(ACME, "registry.rotate_enc_key", {"id": "acme.qa", "key": xkey("qa-2")})) is None
    rot = chain.height
    assert code(chain.one(ACME, "registry.revoke_enc_key", {"id": "acme.qa"})) is None
    rev = chain.height
    st = chain.app.state
    assert recipients_at(st, "cam-1", rot - 1)[0].key == bytes.fromhex(xkey("acme.qa"))
    assert recipients_at(st, "cam-1", rot)[0].key == bytes.fromhex(xkey("qa-2"))   # the key in force then
    assert recipients_at(st, "cam-1", rev) == []
    assert grant_status(st, "cam-1", "acme.qa", rev) == "revoked"
    assert code(grant(chain, ACME, "cam-1", "acme.qa")) == "REVOKED"   # the key is checked first
    assert code(chain.one(ACME, "policy.revoke", {"stream": "cam-1", "recipient": "acme.qa"})) is None
    assert code(grant(chain, ACME, "cam-1", "acme.qa")) == "REVOKED"


def test_policy_authority(chain: Chain) -> None:
    assert code(enc(chain, ACME, "acme.qa", "acme")) is None
    assert code(grant(chain, BETA, "cam-1", "acme.qa")) == "FORBIDDEN"        # acme's device
    assert code(grant(chain, ADMIN, "cam-1", "acme.qa")) == "FORBIDDEN"       # not acme's admin
    assert code(grant(chain, key("cam-1"), "cam-1", "acme.qa")) == "FORBIDDEN"  # the device itself
    assert code(grant(chain, ACME, "cam-1", "nobody")) == "NOT_FOUND"
    assert code(grant(chain, ACME, "gw-1", "acme.qa")) == "BAD_PAYLOAD"      # a gateway is not a stream
    assert code(grant(chain, ACME, "beta", "acme.qa")) == "BAD_PAYLOAD"      # nor an org
    assert code(chain.one(ACME, "policy.grant", {"stream": "x"})) == "BAD_PAYLOAD"
    assert code(chain.one(ACME, "policy.grant", {"stream": "a b", "recipient": "acme.qa"})) == "BAD_PAYLOAD"
    assert code(chain.one(ACME, "policy.revoke", {"stream": "line-3", "recipient": "acme.qa"})) == "NOT_GRANTED"
    # a named stream belongs to the org whose admin claims it first
    assert code(grant(chain, ACME, "line-3", "acme.qa")) is None
    assert confidentiality.get_stream(chain.app.state, "line-3")["org"] == "acme"
    assert code(grant(chain, BETA, "line-3", "acme.qa")) == "FORBIDDEN"
    assert code(chain.one(BETA, "policy.revoke", {"stream": "line-3", "recipient": "acme.qa"})) == "FORBIDDEN"
    assert code(grant(chain, key("stranger"), "line-9", "acme.qa")) == "FORBIDDEN"
    # the org's rotated admin key takes over; the old one is powerless
    acme2 = key("acme-admin-2")
    assert code(chain.one(ACME, "registry.rotate_key", {"id": "acme", "key": acme2.did})) is None
    assert code(chain.one(ACME, "policy.revoke", {"stream": "line-3", "recipient": "acme.qa"})) == "FORBIDDEN"
    assert code(chain.one(acme2, "policy.revoke", {"stream": "line-3", "recipient": "acme.qa"})) is None
    assert code(chain.one(ADMIN, "registry.revoke", {"id": "acme"})) is None
    assert code(grant(chain, acme2, "line-3", "acme.qa")) == "ORG_REVOKED"


def test_every_policy_change_raises_an_audit_event(chain: Chain) -> None:
    assert code(enc(chain, BETA, "beta.buyer", "beta")) is None
    n0 = audit.event_count(chain.app.state)
    res = grant(chain, ACME, "cam-1", "beta.buyer")
    hg = chain.height
    assert code(res) is None and res["events"][0]["rule"] == "policy.grant"
    assert code(chain.one(ACME, "policy.revoke", {"stream": "cam-1", "recipient": "beta.buyer",
                                                  "reason": "contract ended"})) is None
    assert code(grant(chain, BETA, "cam-1", "beta.buyer")) == "FORBIDDEN"     # refused: no event
    evs = audit.events(chain.app.state, after=n0 - 1 if n0 else None)
    assert [e["rule"] for e in evs] == ["policy.grant", "policy.revoke"]
    first = audit.event_json(evs[0])
    assert first["height"] == hg and first["submitter"] == ACME.did and first["rule_org"] == "acme"
    assert first["operation"]["params"] == {"stream": "cam-1", "recipient": "beta.buyer"}
    assert first["time"] == 1000 * hg                                          # the block time
    assert evs[1]["operation"]["params"]["reason"] == "contract ended"
    assert audit.event_count(chain.app.state) == n0 + 2
    json.dumps(audit.event_json(evs[1]))


def test_state_root_is_recomputable(chain: Chain) -> None:
    from ledger.contracts import recompute_root

    assert code(enc(chain, ACME, "acme.qa", "acme")) is None
    assert code(grant(chain, ACME, "cam-1", "acme.qa")) is None
    assert recompute_root(chain.app.snapshot()) == chain.app.state_root()
    # the value of the policy is provable at that root (what a device checks before it encrypts)
    from ledger.contracts import verify_state_proof

    st = chain.app.state
    for k in policy_closure(st, "cam-1"):
        verify_state_proof(chain.app.state_root(), k, st.raw(k), st.prove(k))


def test_erase_records_of_a_device(chain: Chain) -> None:
    from ledger.contracts.confidentiality import MAX_ERASE, erased_key, erasure_at

    cam = key("cam-1").did
    hs = [hashlib.sha256(f"st-{i}".encode()).digest() for i in range(3)]
    p = {"device": cam, "statements": hs[:2], "reason": "retention ended", "scope": "--before 2030-01-01"}
    assert code(chain.one(BETA, "policy.erase", p)) == "FORBIDDEN"                  # another org's admin
    assert code(chain.one(key("cam-1"), "policy.erase", p)) == "FORBIDDEN"          # the device itself
    assert code(chain.one(ACME, "policy.erase", {**p, "device": key("gw-1").did})) == "NOT_FOUND"  # a gateway
    assert code(chain.one(ACME, "policy.erase", {**p, "device": key("nobody").did})) == "NOT_FOUND"
    assert code(chain.one(ACME, "policy.erase", {**p, "reason": " "})) == "BAD_PAYLOAD"
    assert code(chain.one(ACME, "policy.erase", {**p, "statements": []})) == "BAD_PAYLOAD"
    assert code(chain.one(ACME, "policy.erase", {**p, "statements": [b"x" * 31]})) == "BAD_PAYLOAD"
    assert code(chain.one(ACME, "policy.erase", {**p, "statements": [hs[0], hs[0]]})) == "BAD_PAYLOAD"
    assert code(chain.one(ACME, "policy.erase", {**p, "statements": [hs[0]] * (MAX_ERASE + 1)})) == "BAD_PAYLOAD"
    r = chain.one(ACME, "policy.erase", p)
    assert code(r) is None and r["erased"] == 2 and r["already_erased"] == 0
    h = chain.height
    # a re-run (after a failure) skips what is already erased, and keeps the first position
    r2 = chain.one(ACME, "policy.erase", {**p, "statements": hs})
    assert code(r2) is None and (r2["erased"], r2["already_erased"]) == (1, 2)
    st = chain.app.state
    e = erasure_at(st, hs[0], cam)
    assert e is not None and (e.height, e.device) == (h, cam)
    assert erasure_at(st, hs[2]).height == chain.height
    assert erasure_at(st, hs[0], key("other").did) is None       # applies only to the device it names
    assert erasure_at(st, hashlib.sha256(b"never").digest()) is None
    assert st.get(erased_key(hs[1]))[2] == cam
    ev = [e for _, e in st.items("aud/ev/") if e["rule"] == "policy.erase"]
    assert len(ev) == 2 and ev[0]["severity"] == "warning" and ev[0]["submitter"] == ACME.did
    assert ev[0]["operation"]["params"]["reason"] == "retention ended"
