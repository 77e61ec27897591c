"""Registering and funding a gateway on the ledger, so its ANCHOR txs are accepted (and devices, for demos).

docs/contracts.md: a gateway is ``registry.register_gateway {id, org, key}``
submitted by its org's admin, and every paid tx (``anchors.anchor`` costs 1 by
default) is charged to the gateway's own token account, which starts empty:
the consortium admin mints (``tokens.mint``, free for the admin).  On a
local ledger made by ``sealstream ledger init`` the consortium admin
(``keys/admin.key``) also administers the org ``operator``, so one key does
both.  `ensure_gateway` is idempotent: it registers only if missing (refusing
a name bound to another key) and tops the balance up to `fund` only when it
is below `fund // 2`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from trust import canonical

__all__ = ["GatewayRegistration", "GatewayError", "ensure_gateway", "ensure_devices", "token_balance"]


class GatewayError(Exception):
    """The gateway could not be registered or funded; `code` is the ledger's refusal code (or a local one)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(f"{code}: {message}")


@dataclass(frozen=True)
class GatewayRegistration:
    gateway: str
    did: str
    org: str
    registered_now: bool
    minted: int
    balance: int

    def to_json(self) -> dict[str, Any]:
        return {"gateway": self.gateway, "did": self.did, "org": self.org, "registered_now": self.registered_now,
                "minted": self.minted, "balance": self.balance}


def token_balance(client: Any, account: str) -> int:
    """The token balance of `account` (0 if it has no account), from the node's state."""
    value = client.get_state_proof(f"tok/acct/{account}").value
    return 0 if value is None else int(canonical.decode(value)["balance"])


def _ok(receipt: Any, what: str) -> Any:
    if receipt.refusal is not None:
        raise GatewayError(receipt.refusal[0], f"{what}: {receipt.refusal[1]}")
    return receipt.result


def ensure_gateway(admin: Any, gateway: str, did: str, *, org: str = "operator", fund: int = 1_000_000
                   ) -> GatewayRegistration:
    """Register `gateway` with key `did` in `org` (if missing) and fund it; `admin` is a
    `LedgerClient` whose key is the consortium admin (and `org`'s admin)."""
    found = admin.resolve(gateway)
    registered_now = False
    if found is None:
        _ok(admin.submit("registry.register_gateway", {"id": gateway, "org": org, "key": did}),
            f"register gateway {gateway}")
        registered_now = True
    else:
        entity = found.get("entity") or {}
        res = found.get("resolution") or {}
        if entity.get("type") != "gateway":
            raise GatewayError("NOT_A_GATEWAY", f"{gateway!r} is registered as a {entity.get('type')}")
        if res.get("key") != did:
            raise GatewayError("KEY_MISMATCH", f"gateway {gateway!r} is registered with key {res.get('key')}, "
                                               f"not this worker's {did}")
        if res.get("status") != "active":
            raise GatewayError("REVOKED", f"gateway {gateway!r} is {res.get('status')}")
        org = entity.get("org", org)
    balance = token_balance(admin, gateway)
    minted = 0
    if balance < fund // 2:
        minted = fund - balance
        result = _ok(admin.submit("tokens.mint", {"account": gateway, "amount": minted}), f"fund {gateway}")
        balance = int(result.get("balance", balance + minted))
    return GatewayRegistration(gateway, did, org, registered_now, minted, balance)


def ensure_devices(admin: Any, devices: Iterable[tuple[str, str]], *, org: str = "operator") -> int:
    """Register each ``(id, did)`` device in `org` unless the id is already registered with that key
    (another key is a `GatewayError` KEY_MISMATCH); the number registered now."""
    n = 0
    for dev_id, did in devices:
        found = admin.resolve(dev_id)
        if found is not None:
            key = (found.get("resolution") or {}).get("key")
            if key != did:
                raise GatewayError("KEY_MISMATCH", f"device {dev_id!r} is registered with key {key}, not {did}")
            continue
        _ok(admin.submit("registry.register_device", {"id": dev_id, "org": org, "key": did}),
            f"register device {dev_id}")
        n += 1
    return n
