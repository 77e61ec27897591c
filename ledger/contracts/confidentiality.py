"""`policy`: who may read a confidential stream, as of a height (issue 18).

A *stream* is a named flow of payloads a device encrypts for its recipients: either a device
(its registry entity id: the policy of that device) or any other id an organisation claims with
its first grant. The recipients are the ids of the registry's encryption keys
(``registry.register_enc_key``: an org or a named consumer, of any org: sharing with a partner
is the point). Devices wrap each payload's data key for every recipient in force
(`recipients_at`, read from the ledger as of now); a reader proves against the same answer as
of the height its record was anchored.

Transactions (payload fields; ``?`` = optional):

============== ============================ =============================================
kind           payload                      who may submit
============== ============================ =============================================
policy.grant   stream, recipient            the admin of the stream's org
policy.revoke  stream, recipient, reason?   the admin of the stream's org
policy.erase   device, statements, reason,  the admin of the device's org
               scope?
============== ============================ =============================================

The stream's org: the org of the device it names; else the org that claimed it (the first
grant, by that org's admin); a stream id naming an org, node or gateway is refused. Each change
raises an audit event (`audit.raise_event`: rule ``policy.grant`` / ``policy.revoke``, kind
``builtin``, severity ``info``) so it is on the event stream with who and when.

Refusal codes: ``BAD_PAYLOAD``, ``NOT_FOUND`` (no such recipient or device), ``FORBIDDEN``,
``ORG_REVOKED``, ``REVOKED`` (granting a revoked recipient), ``ALREADY_GRANTED``,
``NOT_GRANTED``.

**Erasure** (``policy.erase``): the device's org records that the content of some of the
device's confidential records is destroyed (their key records deleted wherever the system holds
them; the signed ciphertext and every proof stay). ``statements`` is a list of 1..`MAX_ERASE`
statement hashes (32 bytes each); the contract cannot see statements (they are not on chain), so
an erasure is a claim of the device's org about its own device: a verifier applies it to a
record only when the record's signed ``device`` is the erasure's. Statements already erased are
skipped (an erasure re-run after a failure is harmless). It raises an audit event (rule
``policy.erase``, severity ``warning``) with the count, the reason and the scope text.

State: ``pol/erased/<statement hash hex>`` -> ``[h, i, device]`` (the erasing tx's position),
``pol/erasure/<h>-<i>`` -> ``{device, by, reason, scope, statements}`` (one per erasure tx).
``pol/stream/<stream>`` -> ``{org, created: [h, i], grants: {recipient: [[h, i, rh, ri],
...]}}``, one ``[from, to)`` interval per grant; ``rh, ri`` are null while the grant is in force.
A change by the tx at ``(h, i)`` holds for every position after it (as the registry's).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import audit, registry
from ._app import Refused, TxContext, check_did, check_fields, check_id, check_text

__all__ = [
    "MAX_ERASE",
    "METHODS",
    "Erasure",
    "Recipient",
    "erased_key",
    "erasure_at",
    "get_stream",
    "grant_status",
    "policy_closure",
    "recipients_at",
    "stream_json",
    "stream_key",
]

_END = 1 << 63


def stream_key(stream: str) -> str:
    return "pol/stream/" + stream


def erased_key(statement_hash: bytes) -> str:
    """Where the erasure of one record is: ``pol/erased/<statement hash hex>``."""
    return "pol/erased/" + bytes(statement_hash).hex()


def erasure_key(height: int, index: int) -> str:
    return f"pol/erasure/{height}-{index}"


#: statement hashes per ``policy.erase`` tx (the client sends bigger erasures as several txs)
MAX_ERASE = 1000


@dataclass(frozen=True)
class Erasure:
    """The erasure of one record: the position of its ``policy.erase`` tx and the device it named."""

    statement_hash: bytes
    height: int
    index: int
    device: str

    def to_json(self) -> dict:
        return {"statement_hash": self.statement_hash.hex(), "height": self.height, "index": self.index,
                "device": self.device}


def erasure_at(reader: Any, statement_hash: bytes, device: str | None = None) -> Erasure | None:
    """The erasure of `statement_hash` in `reader`'s state (a proven one for a verifier), or None;
    with `device`, only an erasure naming that device (the record's signed device) counts."""
    v = getattr(reader, "peek", reader.get)(erased_key(statement_hash))
    if v is None:
        return None
    h, i, dev = v
    if device is not None and dev != device:
        return None
    return Erasure(bytes(statement_hash), h, i, dev)


def get_stream(reader: Any, stream: str) -> dict | None:
    return reader.get(stream_key(stream)) if isinstance(stream, str) else None


@dataclass(frozen=True)
class Recipient:
    """A recipient in force for a stream at a position: its id, org and X25519 public key then."""

    id: str
    org: str
    key: bytes
    granted: tuple[int, int]

    def to_json(self) -> dict:
        return {"id": self.id, "org": self.org, "key": self.key.hex(),
                "granted": {"height": self.granted[0], "index": self.granted[1]}}


def _covers(iv: list, pos: tuple[int, int]) -> bool:
    start = (iv[0], iv[1])
    end = None if iv[2] is None else (iv[2], iv[3])
    return start < pos and (end is None or pos <= end)


def recipients_at(reader: Any, stream: str, height: int, index: int | None = None) -> list[Recipient]:
    """The recipients of `stream` in force after block `height` (or as tx `index` of it saw
    it): granted then and with an active encryption key then (the key of that time), by id."""
    pos = (height, _END if index is None else index)
    rec = getattr(reader, "peek", reader.get)(stream_key(stream)) if isinstance(stream, str) else None
    if rec is None:
        return []
    out = []
    for rid in sorted(rec["grants"]):
        ivs = [iv for iv in rec["grants"][rid] if _covers(iv, pos)]
        if not ivs:
            continue
        r = registry.resolve_enc_key(reader, rid, height, index)
        if r.valid:
            assert r.org is not None and r.key is not None  # a valid resolution has both
            out.append(Recipient(rid, r.org, r.key, (ivs[-1][0], ivs[-1][1])))
    return out


def grant_status(reader: Any, stream: str, recipient: str, height: int, index: int | None = None) -> str:
    """``granted`` (in force, key active), ``revoked`` (granted before but not then, or its key or
    org revoked by then) or ``never`` (no grant up to then), after block `height`."""
    pos = (height, _END if index is None else index)
    rec = get_stream(reader, stream)
    ivs = [] if rec is None else rec["grants"].get(recipient, [])
    if not any((iv[0], iv[1]) < pos for iv in ivs):
        return "never"
    if not any(_covers(iv, pos) for iv in ivs):
        return "revoked"
    return "granted" if registry.resolve_enc_key(reader, recipient, height, index).valid else "revoked"


def policy_closure(reader: Any, stream: str) -> list[str]:
    """The state keys `recipients_at` reads for `stream`: what a device or reader must hold,
    proven at one height, to resolve the recipients (the stream, each recipient, its org)."""
    keys = [stream_key(stream)]
    rec = get_stream(reader, stream)
    for rid in sorted(rec["grants"]) if rec else ():
        keys.append(registry.enc_key(rid))
        r = registry.get_enc_key(reader, rid)
        if r is not None and registry.ent_key(r["org"]) not in keys:
            keys.append(registry.ent_key(r["org"]))
    return keys


def stream_json(stream: str, rec: dict) -> dict:
    def pos(h: Any, i: Any) -> dict | None:
        return None if h is None else {"height": h, "index": i}

    return {"stream": stream, "org": rec["org"], "created": pos(*rec["created"]),
            "grants": {rid: [{"from": pos(iv[0], iv[1]), "to": pos(iv[2], iv[3])} for iv in ivs]
                       for rid, ivs in sorted(rec["grants"].items())}}


# ---------------------------------------------------------------- transactions


def _org_of_submitter(tc: TxContext) -> str | None:
    oid = tc.state.peek(registry.did_key(tc.submitter))
    rec = None if oid is None else tc.state.peek(registry.ent_key(oid))
    return oid if rec is not None and rec["type"] == "org" else None


def _stream_and_authority(tc: TxContext, stream: str, create: bool) -> dict:
    """The stream's record (a new one when `create` and it has none), after checking the
    submitter is the current admin of the stream's active org."""
    rec = tc.state.get(stream_key(stream))
    if rec is None:
        ent = tc.state.peek(registry.ent_key(stream))
        if ent is not None and ent["type"] != "device":
            raise Refused("BAD_PAYLOAD", f"{stream!r} is a registry {ent['type']}, not a device or a stream")
        org_id = ent["org"] if ent is not None else _org_of_submitter(tc)
        if org_id is None:
            raise Refused("FORBIDDEN", "only an organisation's admin claims a stream")
        if not create:
            raise Refused("NOT_GRANTED", f"stream {stream!r} has no grants")
        rec = {"org": org_id, "created": [tc.height, tc.index], "grants": {}}
    org = tc.state.peek(registry.ent_key(rec["org"]))
    if org is None or tc.submitter != org["keys"][-1][0]:
        raise Refused("FORBIDDEN", f"only the admin of {rec['org']!r} changes the policy of {stream!r}")
    if org["revoked"] is not None:
        raise Refused("ORG_REVOKED", f"organisation {rec['org']!r} is revoked")
    return rec


def grant(tc: TxContext, p: dict) -> dict:
    check_fields(p, ("stream", "recipient"))
    stream, rid = check_id(p["stream"], "stream"), check_id(p["recipient"], "recipient")
    rec = _stream_and_authority(tc, stream, create=True)
    r = registry.resolve_enc_key(tc.state, rid, tc.height, tc.index)
    if r.status == "unknown":
        raise Refused("NOT_FOUND", f"no recipient {rid!r}")
    if not r.valid:
        raise Refused("REVOKED", f"recipient {rid!r} is {r.status}")
    ivs = rec["grants"].get(rid, [])
    if ivs and ivs[-1][2] is None:
        raise Refused("ALREADY_GRANTED", f"{rid!r} already reads {stream!r}")
    rec["grants"][rid] = ivs + [[tc.height, tc.index, None, None]]
    tc.state.put(stream_key(stream), rec)
    ev = audit.raise_event(tc, rec["org"], "policy.grant", "info", f"{rid} may read stream {stream}",
                           "policy.grant", {"stream": stream, "recipient": rid})
    return {"stream": stream, "recipient": rid, "events": [ev]}


def revoke(tc: TxContext, p: dict) -> dict:
    check_fields(p, ("stream", "recipient"), ("reason",))
    stream, rid = check_id(p["stream"], "stream"), check_id(p["recipient"], "recipient")
    reason = check_text(p.get("reason", ""), "reason", 256)
    rec = _stream_and_authority(tc, stream, create=False)
    ivs = rec["grants"].get(rid, [])
    if not ivs or ivs[-1][2] is not None:
        raise Refused("NOT_GRANTED", f"{rid!r} does not read {stream!r}")
    ivs[-1] = [ivs[-1][0], ivs[-1][1], tc.height, tc.index]
    rec["grants"][rid] = ivs
    tc.state.put(stream_key(stream), rec)
    msg = f"{rid} may no longer read stream {stream}" + (f": {reason}" if reason else "")
    ev = audit.raise_event(tc, rec["org"], "policy.revoke", "info", msg, "policy.revoke",
                           {"stream": stream, "recipient": rid, "reason": reason})
    return {"stream": stream, "recipient": rid, "events": [ev]}


def erase(tc: TxContext, p: dict) -> dict:
    check_fields(p, ("device", "statements", "reason"), ("scope",))
    device = check_did(p["device"], "device")
    reason = check_text(p["reason"], "reason", 256)
    scope = check_text(p.get("scope", ""), "scope", 256)
    if not reason.strip():
        raise Refused("BAD_PAYLOAD", "an erasure needs a reason")
    hashes = p["statements"]
    if (not isinstance(hashes, list) or not 1 <= len(hashes) <= MAX_ERASE
            or any(type(h) is not bytes or len(h) != 32 for h in hashes)):
        raise Refused("BAD_PAYLOAD", f"statements: 1..{MAX_ERASE} statement hashes of 32 bytes")
    if len(set(hashes)) != len(hashes):
        raise Refused("BAD_PAYLOAD", "statements: each hash once")
    eid = tc.state.peek(registry.did_key(device))
    ent = None if eid is None else tc.state.peek(registry.ent_key(eid))
    if ent is None or ent["type"] != "device":
        raise Refused("NOT_FOUND", f"{device!r} is not a registered device")
    org = tc.state.peek(registry.ent_key(ent["org"]))
    if org is None or tc.submitter != org["keys"][-1][0]:
        raise Refused("FORBIDDEN", f"only the admin of {ent['org']!r} erases the records of its device {eid!r}")
    new = [h for h in hashes if erased_key(h) not in tc.state]
    for h in new:
        tc.state.put(erased_key(h), [tc.height, tc.index, device])
    tc.state.put(erasure_key(tc.height, tc.index), {"device": device, "by": tc.submitter, "reason": reason,
                                                    "scope": scope, "statements": len(new)})
    ev = audit.raise_event(tc, ent["org"], "policy.erase", "warning",
                           f"{len(new)} confidential records of device {eid} erased: {reason}", "policy.erase",
                           {"device": device, "entity": eid, "erased": len(new),
                            "already_erased": len(hashes) - len(new), "reason": reason, "scope": scope})
    return {"device": device, "erased": len(new), "already_erased": len(hashes) - len(new), "events": [ev]}


METHODS = {"grant": grant, "revoke": revoke, "erase": erase}


def kinds() -> Iterable[str]:
    return ("policy." + m for m in METHODS)
