"""`registry`: organisations, their admins, and the nodes, devices and gateways
they operate, each with an Ed25519 ``did:key``; rotation, revocation, and key
resolution *as of a height*.

Entities share one id space (`_app._ID`): the ``consortium`` (the consortium
admin's key), orgs (the org admin's key), and ``node``/``device``/``gateway``
entities that belong to one org. Every key change is kept, with the position
``[height, tx index]`` of the transaction that made it, so
`resolve(state, id, height)` answers "which key did this entity have, and was
it valid, after block `height`" from the current state alone.

Transactions (payload fields; ``?`` = optional):

========================== ============================= ==========================================
kind                       payload                       who may submit
========================== ============================= ==========================================
registry.register_org      id, name, admin (did)         the consortium admin
registry.register_node     id, org, key (did), name?     that org's admin
registry.register_device   id, org, key (did), name?     that org's admin
registry.register_gateway  id, org, key (did), name?     that org's admin
registry.rotate_key        id, key (did)                 entity: itself or its org's admin;
                                                         org: its admin or the consortium admin;
                                                         consortium: the consortium admin
registry.revoke            id, reason?                   entity: itself, its org's admin or the
                                                         consortium admin; org: the consortium admin
registry.register_enc_key  id, org, key (x25519 hex),    that org's admin
                           name?
registry.rotate_enc_key    id, key (x25519 hex)          the recipient's org's admin
registry.revoke_enc_key    id, reason?                   the recipient's org's admin or the
                                                         consortium admin
========================== ============================= ==========================================

*Recipients* (issue 18): an organisation (id = the org's id) or a named
consumer inside one (any other id) registers an X25519 public key (RFC 7748,
32 bytes as 64 lowercase hex digits) that devices wrap data keys to (HPKE,
RFC 9180) for confidential streams. Recipients have their own id space
(``reg/enc/``), so an org may name its own recipient after itself; a
recipient key, like a signing key, is bound once, ever. `resolve_enc_key`
answers as of a height like `resolve`; a revoked org revokes its recipients.

Refusal codes: ``BAD_PAYLOAD``, ``NOT_FOUND``, ``ALREADY_EXISTS``,
``KEY_IN_USE`` (a key is bound to at most one org/entity, ever),
``FORBIDDEN`` (the submitter lacks authority; an org admin acting on another
org's entities always gets this), ``REVOKED`` (the target is revoked),
``ORG_REVOKED`` (the org is revoked, so its admin and entities are powerless).

State: ``reg/ent/<id>`` -> the entity record (`entity_json` shows it),
``reg/key/<did>`` -> the id the key is bound to (orgs and entities; the
consortium key is not indexed, so it may also administer one org);
``reg/enc/<id>`` -> a recipient record (`enc_key_json`), ``reg/enckey/<hex>`` ->
the recipient id an encryption key is bound to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from trust.identity import public_key_from_did

from ._app import (
    ContractsGenesis,
    ContractState,
    Refused,
    TxContext,
    check_did,
    check_fields,
    check_id,
    check_text,
)

__all__ = [
    "METHODS",
    "ENTITY_TYPES",
    "CONSORTIUM",
    "Resolution",
    "genesis_writes",
    "get_entity",
    "resolve",
    "resolve_key",
    "entities",
    "entity_json",
    "registry_closure",
    "EncKeyResolution",
    "get_enc_key",
    "resolve_enc_key",
    "enc_keys",
    "enc_key_json",
]

CONSORTIUM = "consortium"
#: Types an org admin registers.
ENTITY_TYPES = ("node", "device", "gateway")
_END = 1 << 63  # a position after every tx of a block


def ent_key(entity_id: str) -> str:
    return "reg/ent/" + entity_id


def did_key(did: str) -> str:
    return "reg/key/" + did


def _record(type_: str, org: str, name: str, key: str, pos: list[int]) -> dict:
    return {"type": type_, "org": org, "name": name, "keys": [[key, pos[0], pos[1]]],
            "registered": pos, "revoked": None, "reason": ""}


def genesis_writes(g: ContractsGenesis) -> Iterator[tuple[str, Any]]:
    """The height-0 state: the consortium, the genesis orgs and entities."""
    at = [0, 0]
    yield ent_key(CONSORTIUM), _record(CONSORTIUM, "", "consortium", g.admin, at)
    for o in g.orgs:
        yield ent_key(o.id), _record("org", o.id, o.name, o.admin, at)
        yield did_key(o.admin), o.id
    for e in g.entities:
        yield ent_key(e.id), _record(e.type, e.org, "", e.key, at)
        yield did_key(e.key), e.id


# ---------------------------------------------------------------- queries


def get_entity(reader: Any, entity_id: str) -> dict | None:
    """The record of `entity_id` (``reader``: a `ContractState` or a tx view); a fresh copy."""
    return reader.get(ent_key(entity_id)) if isinstance(entity_id, str) else None


def _peek_entity(reader: Any, entity_id: str) -> dict | None:
    """Like `get_entity` but possibly shared (read-only use)."""
    peek = getattr(reader, "peek", reader.get)
    return peek(ent_key(entity_id)) if isinstance(entity_id, str) else None


def _key_at(rec: dict, pos: tuple[int, int]) -> str | None:
    key = None
    for did, h, i in rec["keys"]:
        if (h, i) < pos:
            key = did
    return key


def _pos_json(p: Any) -> dict | None:
    """A ``[height, index]`` position as JSON (None stays None)."""
    return None if p is None else {"height": p[0], "index": p[1]}


def _revoked_at(reader: Any, rec: dict) -> tuple[int, int] | None:
    """Where `rec` became revoked: its own revocation or its org's, the earlier (an entity's or a
    recipient's record: both belong to an org; an org's or the consortium's record does not)."""
    marks = []
    if rec["revoked"] is not None:
        marks.append(tuple(rec["revoked"]))
    if rec.get("type") in ENTITY_TYPES or "type" not in rec:  # no type: a recipient record
        org = _peek_entity(reader, rec["org"])
        if org is not None and org["revoked"] is not None:
            marks.append(tuple(org["revoked"]))
    return min(marks) if marks else None


@dataclass(frozen=True)
class Resolution:
    """An entity's key and status as of a position in the chain.

    ``status`` is ``active``, ``revoked`` (from the revocation of the entity or
    of its org on; `key` is still the key it had then), ``unregistered``
    (before its registration) or ``unknown`` (no such entity); `resolve_key`
    adds ``not_current``."""

    id: str
    type: str | None
    org: str | None
    key: str | None
    status: str
    height: int
    index: int | None
    registered: tuple[int, int] | None
    revoked: tuple[int, int] | None

    @property
    def valid(self) -> bool:
        return self.status == "active"

    @property
    def public_key(self) -> bytes | None:
        return None if self.key is None else public_key_from_did(self.key)

    def to_json(self) -> dict:
        return {"id": self.id, "type": self.type, "org": self.org, "key": self.key,
                "public_key": None if (pk := self.public_key) is None else pk.hex(),
                "status": self.status, "valid": self.valid, "height": self.height, "index": self.index,
                "registered": _pos_json(self.registered), "revoked": _pos_json(self.revoked)}


def resolve(reader: Any, entity_id: str, height: int, index: int | None = None) -> Resolution:
    """`entity_id`'s key and status after block `height` (or, with `index`, as
    tx `index` of that block saw it: after txs 0..index-1), from the stored
    key history.

    A revocation at height r makes the entity resolve as revoked at every
    height >= r; heights before r still resolve to the key in force then."""
    pos = (height, _END if index is None else index)
    rec = _peek_entity(reader, entity_id)
    if rec is None:
        return Resolution(entity_id, None, None, None, "unknown", height, index, None, None)
    reg = tuple(rec["registered"])
    revoked = _revoked_at(reader, rec)
    if pos <= reg:
        status, key = "unregistered", None
    else:
        key = _key_at(rec, pos)
        status = "revoked" if revoked is not None and revoked < pos else "active"
    return Resolution(entity_id, rec["type"], rec["org"] or None, key, status, height, index, reg, revoked)


def resolve_key(reader: Any, did: str, height: int, index: int | None = None) -> Resolution | None:
    """Resolution of the entity `did` is bound to, as of `height`; None if the
    key was never bound. ``valid`` is True only if `did` was that entity's key
    in force at that position and the entity was active; an active entity
    whose key then was another one (`did` rotated away, or not yet rotated
    in) resolves with status ``not_current`` and the key of the time."""
    if not isinstance(did, str):
        return None
    entity_id = reader.get(did_key(did))
    if entity_id is None:
        return None
    r = resolve(reader, entity_id, height, index)
    if r.status == "active" and r.key != did:
        return Resolution(r.id, r.type, r.org, r.key, "not_current", r.height, r.index, r.registered, r.revoked)
    return r


def registry_closure(reader: Any, did: str) -> list[str]:
    """The state keys that resolve `did` (`resolve_key`): its key index, the entity it is bound
    to and that entity's org; what a verifier must hold, proven at one height, to resolve it."""
    keys = [did_key(did)]
    entity_id = reader.get(did_key(did))
    if isinstance(entity_id, str):
        keys.append(ent_key(entity_id))
        rec = _peek_entity(reader, entity_id)
        if isinstance(rec, dict) and isinstance(rec.get("org"), str) and rec["org"] and rec["org"] != entity_id:
            keys.append(ent_key(rec["org"]))
    return keys


def entities(state: ContractState, org: str | None = None, type: str | None = None) -> list[tuple[str, dict]]:
    """(id, record) of every entity, optionally of one org and/or type (a scan)."""
    out = []
    for k, rec in state.items("reg/ent/"):
        if (org is None or rec["org"] == org) and (type is None or rec["type"] == type):
            out.append((k[len("reg/ent/"):], rec))
    return out


def entity_json(entity_id: str, rec: dict) -> dict:
    """HTTP-friendly view of a record."""
    return {"id": entity_id, "type": rec["type"], "org": rec["org"] or None, "name": rec["name"],
            "key": rec["keys"][-1][0],
            "keys": [{"key": d, "height": h, "index": i} for d, h, i in rec["keys"]],
            "registered": _pos_json(rec["registered"]), "revoked": _pos_json(rec["revoked"]), "reason": rec["reason"]}


# ---------------------------------------------------------------- transactions


def _current_key(rec: dict) -> str:
    return rec["keys"][-1][0]


def _need_entity(tc: TxContext, entity_id: str) -> dict:
    rec = get_entity(tc.state, entity_id)
    if rec is None:
        raise Refused("NOT_FOUND", f"no entity {entity_id!r}")
    return rec


def _consortium_key(tc: TxContext) -> str:
    consortium = _peek_entity(tc.state, CONSORTIUM)
    assert consortium is not None  # written at genesis
    return _current_key(consortium)


def _active_org(tc: TxContext, org_id: str) -> dict:
    org = _peek_entity(tc.state, org_id)  # read only
    if org is None or org["type"] != "org":
        raise Refused("NOT_FOUND", f"no organisation {org_id!r}")
    return org


def _bind_key(tc: TxContext, did: str, entity_id: str) -> None:
    if did_key(did) in tc.state or did == _consortium_key(tc):
        raise Refused("KEY_IN_USE", "this key is already bound to an entity")
    tc.state.put(did_key(did), entity_id)


def _pos(tc: TxContext) -> list[int]:
    return [tc.height, tc.index]


def register_org(tc: TxContext, p: dict) -> dict:
    check_fields(p, ("id", "name", "admin"))
    oid, name, admin = check_id(p["id"], "id"), check_text(p["name"], "name"), check_did(p["admin"], "admin")
    if tc.submitter != _consortium_key(tc):
        raise Refused("FORBIDDEN", "only the consortium admin registers organisations")
    if ent_key(oid) in tc.state:
        raise Refused("ALREADY_EXISTS", f"entity {oid!r} exists")
    if did_key(admin) in tc.state:
        raise Refused("KEY_IN_USE", "this key is already bound to an entity")
    tc.state.put(did_key(admin), oid)
    tc.state.put(ent_key(oid), _record("org", oid, name, admin, _pos(tc)))
    return {"id": oid, "type": "org"}


def _register(type_: str):
    def register(tc: TxContext, p: dict) -> dict:
        check_fields(p, ("id", "org", "key"), ("name",))
        eid, org_id, key = check_id(p["id"], "id"), check_id(p["org"], "org"), check_did(p["key"], "key")
        name = check_text(p.get("name", ""), "name")
        org = _active_org(tc, org_id)
        if tc.submitter != _current_key(org):
            raise Refused("FORBIDDEN", f"only the admin of {org_id!r} registers its {type_}s")
        if org["revoked"] is not None:
            raise Refused("ORG_REVOKED", f"organisation {org_id!r} is revoked")
        if ent_key(eid) in tc.state:
            raise Refused("ALREADY_EXISTS", f"entity {eid!r} exists")
        _bind_key(tc, key, eid)
        tc.state.put(ent_key(eid), _record(type_, org_id, name, key, _pos(tc)))
        return {"id": eid, "type": type_}

    register.__name__ = f"register_{type_}"
    return register


def _authority(tc: TxContext, rec: dict, for_revoke: bool) -> None:
    """Refuse with FORBIDDEN / ORG_REVOKED unless the submitter may manage `rec`."""
    me = tc.submitter
    t = rec["type"]
    consortium = _consortium_key(tc)
    if t == CONSORTIUM:
        if for_revoke:
            raise Refused("FORBIDDEN", "the consortium cannot be revoked")
        if me != consortium:
            raise Refused("FORBIDDEN", "only the consortium admin manages the consortium key")
        return
    if t == "org":
        allowed = {consortium} if for_revoke else {consortium, _current_key(rec)}
        if me not in allowed:
            raise Refused("FORBIDDEN", "only the consortium admin" + ("" if for_revoke else " or the org's admin")
                          + " may do this to an organisation")
        return
    org = _active_org(tc, rec["org"])
    allowed = {_current_key(org), _current_key(rec)} | ({consortium} if for_revoke else set())
    if me not in allowed:
        raise Refused("FORBIDDEN", f"not an admin of {rec['org']!r} nor the entity itself")
    if org["revoked"] is not None and me != consortium:
        raise Refused("ORG_REVOKED", f"organisation {rec['org']!r} is revoked")


def rotate_key(tc: TxContext, p: dict) -> dict:
    check_fields(p, ("id", "key"))
    eid, key = check_id(p["id"], "id"), check_did(p["key"], "key")
    rec = _need_entity(tc, eid)
    _authority(tc, rec, for_revoke=False)
    if rec["revoked"] is not None:
        raise Refused("REVOKED", f"entity {eid!r} is revoked")
    if rec["type"] == CONSORTIUM:
        if did_key(key) in tc.state or key == _current_key(rec):
            raise Refused("KEY_IN_USE", "this key is already bound to an entity")
    else:
        _bind_key(tc, key, eid)
    rec["keys"] = rec["keys"] + [[key, tc.height, tc.index]]
    tc.state.put(ent_key(eid), rec)
    return {"id": eid, "key": key}


def revoke(tc: TxContext, p: dict) -> dict:
    check_fields(p, ("id",), ("reason",))
    eid = check_id(p["id"], "id")
    reason = check_text(p.get("reason", ""), "reason", 256)
    rec = _need_entity(tc, eid)
    _authority(tc, rec, for_revoke=True)
    if rec["revoked"] is not None:
        raise Refused("REVOKED", f"entity {eid!r} is already revoked")
    _mark_revoked(tc, ent_key(eid), rec, reason)
    return {"id": eid}


def _mark_revoked(tc: TxContext, key: str, rec: dict, reason: str) -> None:
    """Record `rec` (stored at state `key`) as revoked by this transaction, with its reason."""
    rec["revoked"] = _pos(tc)
    rec["reason"] = reason
    tc.state.put(key, rec)


# ---------------------------------------------------------------- recipients' encryption keys (issue 18)


def enc_key(recipient_id: str) -> str:
    return "reg/enc/" + recipient_id


def enc_index_key(key_hex: str) -> str:
    return "reg/enckey/" + key_hex


def _check_x25519(value: Any, field: str) -> str:
    """A 32-byte X25519 public key as 64 lowercase hex digits (not all zero)."""
    if (not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdef" for c in value)
            or value == "0" * 64):
        raise Refused("BAD_PAYLOAD", f"{field} must be an X25519 public key: 64 lowercase hex digits, not zero")
    return value


def get_enc_key(reader: Any, recipient_id: str) -> dict | None:
    """The recipient record of `recipient_id`, or None."""
    return reader.get(enc_key(recipient_id)) if isinstance(recipient_id, str) else None


@dataclass(frozen=True)
class EncKeyResolution:
    """A recipient's X25519 key and status as of a position (statuses as `Resolution`)."""

    id: str
    org: str | None
    key: bytes | None
    status: str
    height: int
    index: int | None
    registered: tuple[int, int] | None
    revoked: tuple[int, int] | None

    @property
    def valid(self) -> bool:
        return self.status == "active"

    def to_json(self) -> dict:
        return {"id": self.id, "org": self.org, "key": None if self.key is None else self.key.hex(),
                "status": self.status, "valid": self.valid, "height": self.height, "index": self.index,
                "registered": _pos_json(self.registered), "revoked": _pos_json(self.revoked)}


def resolve_enc_key(reader: Any, recipient_id: str, height: int, index: int | None = None) -> EncKeyResolution:
    """`recipient_id`'s encryption key and status after block `height` (or as tx `index` of it
    saw it). Revoked from the earlier of its own revocation and its org's."""
    pos = (height, _END if index is None else index)
    peek = getattr(reader, "peek", reader.get)
    rec = peek(enc_key(recipient_id)) if isinstance(recipient_id, str) else None
    if rec is None:
        return EncKeyResolution(recipient_id, None, None, "unknown", height, index, None, None)
    reg = tuple(rec["registered"])
    revoked = _revoked_at(reader, rec)
    if pos <= reg:
        status, key = "unregistered", None
    else:
        hx = _key_at(rec, pos)
        assert hx is not None  # registered before pos: a key was bound
        key = bytes.fromhex(hx)
        status = "revoked" if revoked is not None and revoked < pos else "active"
    return EncKeyResolution(recipient_id, rec["org"], key, status, height, index, reg, revoked)


def enc_keys(state: ContractState, org: str | None = None) -> list[tuple[str, dict]]:
    """(id, record) of every recipient, optionally of one org (a scan)."""
    return [(k[len("reg/enc/"):], rec) for k, rec in state.items("reg/enc/") if org is None or rec["org"] == org]


def enc_key_json(recipient_id: str, rec: dict) -> dict:
    return {"id": recipient_id, "org": rec["org"], "name": rec["name"], "key": rec["keys"][-1][0],
            "keys": [{"key": k, "height": h, "index": i} for k, h, i in rec["keys"]],
            "registered": _pos_json(rec["registered"]), "revoked": _pos_json(rec["revoked"]), "reason": rec["reason"]}


def _bind_enc(tc: TxContext, key_hex: str, recipient_id: str) -> None:
    if enc_index_key(key_hex) in tc.state:
        raise Refused("KEY_IN_USE", "this encryption key is already bound to a recipient")
    tc.state.put(enc_index_key(key_hex), recipient_id)


def _enc_authority(tc: TxContext, rec: dict, for_revoke: bool) -> None:
    org = _active_org(tc, rec["org"])
    allowed = {_current_key(org)} | ({_consortium_key(tc)} if for_revoke else set())
    if tc.submitter not in allowed:
        raise Refused("FORBIDDEN", f"only the admin of {rec['org']!r}" + (" or the consortium admin" if for_revoke
                                                                           else "") + " may do this")
    if org["revoked"] is not None and tc.submitter != _consortium_key(tc):
        raise Refused("ORG_REVOKED", f"organisation {rec['org']!r} is revoked")


def register_enc_key(tc: TxContext, p: dict) -> dict:
    check_fields(p, ("id", "org", "key"), ("name",))
    rid, org_id = check_id(p["id"], "id"), check_id(p["org"], "org")
    key = _check_x25519(p["key"], "key")
    name = check_text(p.get("name", ""), "name")
    org = _active_org(tc, org_id)
    if tc.submitter != _current_key(org):
        raise Refused("FORBIDDEN", f"only the admin of {org_id!r} registers its recipients")
    if org["revoked"] is not None:
        raise Refused("ORG_REVOKED", f"organisation {org_id!r} is revoked")
    if enc_key(rid) in tc.state:
        raise Refused("ALREADY_EXISTS", f"recipient {rid!r} exists")
    _bind_enc(tc, key, rid)
    tc.state.put(enc_key(rid), {"org": org_id, "name": name, "keys": [[key, tc.height, tc.index]],
                                "registered": _pos(tc), "revoked": None, "reason": ""})
    return {"id": rid, "type": "recipient"}


def _need_recipient(tc: TxContext, rid: str) -> dict:
    rec = get_enc_key(tc.state, rid)
    if rec is None:
        raise Refused("NOT_FOUND", f"no recipient {rid!r}")
    return rec


def rotate_enc_key(tc: TxContext, p: dict) -> dict:
    check_fields(p, ("id", "key"))
    rid, key = check_id(p["id"], "id"), _check_x25519(p["key"], "key")
    rec = _need_recipient(tc, rid)
    _enc_authority(tc, rec, for_revoke=False)
    if rec["revoked"] is not None:
        raise Refused("REVOKED", f"recipient {rid!r} is revoked")
    _bind_enc(tc, key, rid)
    rec["keys"] = rec["keys"] + [[key, tc.height, tc.index]]
    tc.state.put(enc_key(rid), rec)
    return {"id": rid, "key": key}


def revoke_enc_key(tc: TxContext, p: dict) -> dict:
    check_fields(p, ("id",), ("reason",))
    rid = check_id(p["id"], "id")
    reason = check_text(p.get("reason", ""), "reason", 256)
    rec = _need_recipient(tc, rid)
    _enc_authority(tc, rec, for_revoke=True)
    if rec["revoked"] is not None:
        raise Refused("REVOKED", f"recipient {rid!r} is already revoked")
    _mark_revoked(tc, enc_key(rid), rec, reason)
    return {"id": rid}


METHODS = {
    "register_org": register_org,
    "register_node": _register("node"),
    "register_device": _register("device"),
    "register_gateway": _register("gateway"),
    "rotate_key": rotate_key,
    "revoke": revoke,
    "register_enc_key": register_enc_key,
    "rotate_enc_key": rotate_enc_key,
    "revoke_enc_key": revoke_enc_key,
}


def kinds() -> Iterable[str]:
    return ("registry." + m for m in METHODS)
