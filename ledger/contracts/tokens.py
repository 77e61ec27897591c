"""`tokens`: accounts, balances, fees by kind, and the history of every charge.

Accounts are keyed by registry entity id (``consortium``, orgs, nodes,
devices, gateways). Every transaction pays a fee, looked up by its kind in
the fee schedule held in state, from its submitter's account *before* its
contract method runs (`charge`, the `ContractApp` fee hook):

* the payer is the ``consortium`` account when the submitter is the
  consortium admin's current key, otherwise the entity whose *current* key
  the submitter is (``reg/key/<did>``); a rotated-away or never-registered
  key has no account;
* a fee of 0 is never refused and leaves no trace; otherwise a submitter
  without an account or with a balance below the fee is refused with
  ``INSUFFICIENT_QUOTA`` and nothing changes;
* the consortium admin's own ``tokens.*`` transactions are always free, so no
  schedule can lock the admin out of minting or fixing the schedule;
* the charge is written into the tx's own buffer, like the contract's
  writes: a tx its contract refuses (or that crashes) is *not* charged, and
  a successful tx commits its fee and its effect together. Its result carries
  ``charged: fee`` when the fee is > 0.

Fee lookup: the exact kind, else ``<contract>.*``, else ``*``, else 0.
`DEFAULT_FEES` (used when the contracts genesis gives no schedule):
``anchors.anchor`` 1, ``registry.*`` 1, ``tokens.*`` 0, ``*`` 1. Fees are
burnt: they leave the supply, so at every height
``minted == sum(balances) + consumed`` and ``consumed`` is the sum of the
charge history.

Transactions (the consortium admin is the current key of ``consortium``):

==================== ====================== =============================================
kind                 payload                who may submit
==================== ====================== =============================================
tokens.mint          account, amount        the consortium admin
tokens.allocate      from, to, amount       the consortium admin (any accounts); an org's
                                            admin from its org to that org's own
                                            nodes/devices/gateways
tokens.set_fee       kind, fee (int|null)   the consortium admin; null removes the entry
==================== ====================== =============================================

Amounts are ints in [1, 2**63-1], fees in [0, 2**63-1]; `kind` is ``*``,
``<contract>.*`` or ``<contract>.<method>`` (lowercase names). Total minted
supply never exceeds 2**63-1, so no balance can overflow.

Refusal codes: ``INSUFFICIENT_QUOTA`` (the fee hook), ``BAD_PAYLOAD``,
``NOT_FOUND`` (no such entity), ``FORBIDDEN``, ``ORG_REVOKED`` (an org admin
whose org is revoked), ``REVOKED`` (minting or allocating to a revoked
entity), ``INSUFFICIENT_BALANCE`` (allocating more than ``from`` holds),
``OVERFLOW`` (minting past the supply cap).

State: ``tok/fees`` -> ``{kind pattern: fee}``; ``tok/supply`` ->
``{minted, consumed}``; ``tok/acct/<id>`` -> ``{balance, charges, spent}``;
``tok/use/<id>/<seq as 16 hex digits>`` -> ``[kind, fee, height, index,
tx_id, time]`` (a list: one of these is written per charged tx), seq
counting the account's charges from 0, so `consumption` reads a range by
binary search on height, no scan. Who signed is not stored: it is the
account's key as of ``(height, index)``, which `consumption` resolves.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Iterator, Mapping

from ._app import (
    ContractsGenesis,
    ContractState,
    Refused,
    TxContext,
    check_fields,
    check_id,
    check_int,
)
from .registry import resolve

__all__ = [
    "METHODS",
    "DEFAULT_FEES",
    "MAX_AMOUNT",
    "charge",
    "fee_for",
    "fee_schedule",
    "payer",
    "balance",
    "account",
    "accounts",
    "consumption",
    "supply",
    "genesis_writes",
    "account_json",
    "charge_json",
    "tokens_json",
    "fees_json",
]

CONSORTIUM = "consortium"
MAX_AMOUNT = (1 << 63) - 1
#: The fee schedule when the contracts genesis names none.
DEFAULT_FEES: dict[str, int] = {"*": 1, "anchors.anchor": 1, "registry.*": 1, "tokens.*": 0}
#: Largest page `consumption` returns.
MAX_LIMIT = 1000

_NAME = r"[a-z][a-z0-9_]{0,31}"
_KIND = re.compile(rf"\*|{_NAME}\.\*|{_NAME}\.{_NAME}")
_ENTITY_TYPES = ("node", "device", "gateway")

FEES_KEY = "tok/fees"
SUPPLY_KEY = "tok/supply"


def acct_key(account_id: str) -> str:
    return "tok/acct/" + account_id


def use_key(account_id: str, seq: int) -> str:
    return f"tok/use/{account_id}/{seq:016x}"


def _empty() -> dict:
    return {"balance": 0, "charges": 0, "spent": 0}


def valid_kind_pattern(kind: Any) -> bool:
    return isinstance(kind, str) and _KIND.fullmatch(kind) is not None


def genesis_writes(g: ContractsGenesis) -> Iterator[tuple[str, Any]]:
    """Height-0 state: the fee schedule, the initial balances, the supply."""
    fees = DEFAULT_FEES if g.fees is None else dict(g.fees)
    yield FEES_KEY, dict(fees)
    minted = 0
    for acct, amount in g.balances:
        minted += amount
        yield acct_key(acct), {**_empty(), "balance": amount}
    yield SUPPLY_KEY, {"minted": minted, "consumed": 0}


# ---------------------------------------------------------------- lookups


def _peek(reader: Any, key: str, default: Any = None) -> Any:
    return getattr(reader, "peek", reader.get)(key, default)


def fee_schedule(reader: Any) -> dict:
    """The fee schedule ``{kind pattern: fee}`` (a fresh copy)."""
    return dict(_peek(reader, FEES_KEY, {}))


def fee_for(reader: Any, kind: str) -> int:
    """The fee of `kind`: exact kind, else ``<contract>.*``, else ``*``, else 0."""
    fees = _peek(reader, FEES_KEY, {})
    fee = fees.get(kind)
    if fee is None:
        fee = fees.get(kind.partition(".")[0] + ".*")
        if fee is None:
            fee = fees.get("*", 0)
    return fee


def _consortium_key(reader: Any) -> str:
    return _peek(reader, "reg/ent/" + CONSORTIUM)["keys"][-1][0]


def payer(reader: Any, did: str) -> str | None:
    """The account that pays for `did`'s transactions, or None (no account).

    The consortium admin's current key pays from ``consortium`` (even when
    that key also administers an org); any other key pays from the entity
    it is the current key of. Rotated-away and unregistered keys pay nothing."""
    if did == _consortium_key(reader):
        return CONSORTIUM
    eid = _peek(reader, "reg/key/" + did)
    if eid is None:
        return None
    rec = _peek(reader, "reg/ent/" + eid)
    if rec is None or rec["keys"][-1][0] != did:
        return None
    return eid


def account(reader: Any, account_id: str) -> dict | None:
    """``{balance, charges, spent}`` of an account that ever held tokens, else None."""
    return reader.get(acct_key(account_id)) if isinstance(account_id, str) else None


def balance(reader: Any, account_id: str) -> int:
    """The balance of `account_id` (0 when it has none)."""
    rec = _peek(reader, acct_key(account_id)) if isinstance(account_id, str) else None
    return 0 if rec is None else rec["balance"]


def supply(reader: Any) -> dict:
    """``{minted, consumed}``: ``minted == sum of balances + consumed``."""
    return dict(_peek(reader, SUPPLY_KEY, {"minted": 0, "consumed": 0}))


def accounts(state: ContractState) -> list[tuple[str, dict]]:
    """(id, record) of every account, in id order (a scan)."""
    return [(k[len("tok/acct/"):], rec) for k, rec in state.items("tok/acct/")]


def consumption(reader: Any, account_id: str, since_height: int | None = None, limit: int = 100,
                after: int | None = None) -> list[dict]:
    """The charges of `account_id` in commit order, oldest first: each
    ``{account, seq, kind, fee, height, index, tx_id, time, submitter}``
    (`submitter`: the account's key as tx `index` of block `height` saw it).

    `since_height` keeps charges made at that height or later; `after` (a
    ``seq`` from an earlier page) continues a listing; at most `limit`
    (1..1000) entries. Reads O(log n + limit) keys, no scan."""
    if not isinstance(account_id, str):
        return []
    limit = max(1, min(int(limit), MAX_LIMIT))
    rec = _peek(reader, acct_key(account_id))
    n = 0 if rec is None else rec["charges"]
    lo = 0 if after is None else max(0, after + 1)
    if since_height is not None:
        hi = n
        while lo < hi:  # first seq whose height >= since_height (heights never decrease)
            mid = (lo + hi) // 2
            if _peek(reader, use_key(account_id, mid))[2] < since_height:
                lo = mid + 1
            else:
                hi = mid
    out = []
    for seq in range(lo, min(n, lo + limit)):
        kind, fee, height, index, tx_id, time = _peek(reader, use_key(account_id, seq))
        out.append({"account": account_id, "seq": seq, "kind": kind, "fee": fee, "height": height,
                    "index": index, "tx_id": tx_id, "time": time,
                    "submitter": resolve(reader, account_id, height, index).key})
    return out


# ---------------------------------------------------------------- the fee hook


def charge(tc: TxContext) -> int:
    """`ContractApp`'s pre-dispatch hook: charge tx's fee to its submitter's
    account in the tx's buffer; returns the fee charged (0: nothing written).
    Raises ``Refused("INSUFFICIENT_QUOTA")`` when the account cannot pay."""
    kind = tc.tx.kind
    st = tc.state
    fee = fee_for(st, kind)
    if fee == 0:
        return 0
    did = tc.submitter
    if kind.startswith("tokens.") and did == _consortium_key(st):
        return 0
    who = payer(st, did)
    if who is None:
        raise Refused("INSUFFICIENT_QUOTA", f"{kind} costs {fee}; the submitter has no account "
                                            "(not the current key of a registered entity)")
    rec = _peek(st, acct_key(who))
    have = 0 if rec is None else rec["balance"]
    if have < fee:
        raise Refused("INSUFFICIENT_QUOTA", f"{kind} costs {fee}; account {who!r} holds {have}")
    rec = _empty() if rec is None else rec
    seq = rec["charges"]
    st.put(acct_key(who), {"balance": have - fee, "charges": seq + 1, "spent": rec["spent"] + fee})
    st.put(use_key(who, seq), [kind, fee, tc.height, tc.index, tc.tx.tx_id, tc.block.time])
    sup = _peek(st, SUPPLY_KEY)
    st.put(SUPPLY_KEY, {"minted": sup["minted"], "consumed": sup["consumed"] + fee})
    return fee


# ---------------------------------------------------------------- transactions


def _is_admin(tc: TxContext) -> bool:
    return tc.submitter == _consortium_key(tc.state)


def _entity(tc: TxContext, eid: str) -> dict:
    rec = _peek(tc.state, "reg/ent/" + eid)
    if rec is None:
        raise Refused("NOT_FOUND", f"no entity {eid!r}")
    return rec


def _revoked(tc: TxContext, rec: dict) -> bool:
    if rec["revoked"] is not None:
        return True
    if rec["type"] in _ENTITY_TYPES:
        org = _peek(tc.state, "reg/ent/" + rec["org"])
        return org is not None and org["revoked"] is not None
    return False


def _amount(p: dict) -> int:
    return check_int(p["amount"], "amount", 1, MAX_AMOUNT)


def _credit(tc: TxContext, eid: str, amount: int) -> int:
    rec = tc.state.get(acct_key(eid)) or _empty()
    if rec["balance"] > MAX_AMOUNT - amount:  # unreachable while supply <= MAX_AMOUNT; kept as a guard
        raise Refused("OVERFLOW", f"account {eid!r} would exceed {MAX_AMOUNT}")
    rec["balance"] += amount
    tc.state.put(acct_key(eid), rec)
    return rec["balance"]


def mint(tc: TxContext, p: dict) -> dict:
    check_fields(p, ("account", "amount"))
    eid, amount = check_id(p["account"], "account"), _amount(p)
    if not _is_admin(tc):
        raise Refused("FORBIDDEN", "only the consortium admin mints")
    rec = _entity(tc, eid)
    if _revoked(tc, rec):
        raise Refused("REVOKED", f"entity {eid!r} is revoked")
    sup = tc.state.get(SUPPLY_KEY)
    if sup["minted"] > MAX_AMOUNT - amount:
        raise Refused("OVERFLOW", f"minting {amount} would take the supply past {MAX_AMOUNT}")
    sup["minted"] += amount
    tc.state.put(SUPPLY_KEY, sup)
    return {"account": eid, "balance": _credit(tc, eid, amount)}


def allocate(tc: TxContext, p: dict) -> dict:
    check_fields(p, ("from", "to", "amount"))
    src, dst, amount = check_id(p["from"], "from"), check_id(p["to"], "to"), _amount(p)
    if src == dst:
        raise Refused("BAD_PAYLOAD", "from and to must differ")
    src_rec, dst_rec = _entity(tc, src), _entity(tc, dst)
    if not _is_admin(tc):
        if src_rec["type"] != "org" or tc.submitter != src_rec["keys"][-1][0]:
            raise Refused("FORBIDDEN", "only the consortium admin, or an org's admin from its org's account, allocates")
        if dst_rec["type"] not in _ENTITY_TYPES or dst_rec["org"] != src:
            raise Refused("FORBIDDEN", f"the admin of {src!r} allocates only to {src!r}'s own entities")
        if src_rec["revoked"] is not None:
            raise Refused("ORG_REVOKED", f"organisation {src!r} is revoked")
    if _revoked(tc, dst_rec):
        raise Refused("REVOKED", f"entity {dst!r} is revoked")
    rec = tc.state.get(acct_key(src)) or _empty()
    if rec["balance"] < amount:
        raise Refused("INSUFFICIENT_BALANCE", f"account {src!r} holds {rec['balance']}, not {amount}")
    rec["balance"] -= amount
    tc.state.put(acct_key(src), rec)
    return {"from": src, "to": dst, "amount": amount, "balance": _credit(tc, dst, amount)}


def set_fee(tc: TxContext, p: dict) -> dict:
    check_fields(p, ("kind", "fee"))
    kind, fee = p["kind"], p["fee"]
    if not valid_kind_pattern(kind):
        raise Refused("BAD_PAYLOAD", "kind must be '*', '<contract>.*' or '<contract>.<method>'")
    if fee is not None:
        check_int(fee, "fee", 0, MAX_AMOUNT)
    if not _is_admin(tc):
        raise Refused("FORBIDDEN", "only the consortium admin sets fees")
    fees = tc.state.get(FEES_KEY, {})
    if fee is None:
        fees.pop(kind, None)
    else:
        fees[kind] = fee
    tc.state.put(FEES_KEY, fees)
    return {"kind": kind, "fee": fee}


METHODS = {"mint": mint, "allocate": allocate, "set_fee": set_fee}


def kinds() -> Iterable[str]:
    return ("tokens." + m for m in METHODS)


# ---------------------------------------------------------------- JSON (HTTP)


def account_json(account_id: str, rec: Mapping | None) -> dict:
    rec = rec or _empty()
    return {"account": account_id, "balance": rec["balance"], "charges": rec["charges"], "spent": rec["spent"]}


def charge_json(entry: Mapping) -> dict:
    """One `consumption` entry, bytes as hex."""
    return {**entry, "tx_id": entry["tx_id"].hex()}


def tokens_json(state: Any, account_id: str, since_height: int | None = None, limit: int = 100,
                after: int | None = None) -> dict:
    """An account with a page of its charges: what ``GET /tokens/accounts/{id}`` would serve.

    ``next`` is the ``after`` of the following page (None at the end)."""
    rec = account(state, account_id)
    page = consumption(state, account_id, since_height, limit, after)
    n = 0 if rec is None else rec["charges"]
    nxt = page[-1]["seq"] if page and page[-1]["seq"] + 1 < n else None
    return {**account_json(account_id, rec), "height": getattr(state, "height", None),
            "consumption": [charge_json(e) for e in page], "next": nxt}


def fees_json(state: Any) -> dict:
    """``{fees: {pattern: fee}, supply: {minted, consumed}}``."""
    return {"fees": fee_schedule(state), "supply": supply(state)}
