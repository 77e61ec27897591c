"""audit: operations recorded on chain, the three rule kinds matching and not,
versioning and retirement, org isolation for rules and operations, every
refusal code, events stored with stable ids, fees, and determinism."""

from __future__ import annotations

import random

import pytest

from ledger import SealerSet
from ledger.contracts import ContractApp, audit, recompute_root
from ledger.contracts.audit import event_count, event_json, events, get_rule, rule_versions, rules
from ledger.contracts.tokens import balance
from ledger.executor import BlockContext

from test_contracts_helpers import ACME, ADMIN, BETA, NODE0, Chain, code, default_genesis, key

GW = key("aud-gw")
GW_B = key("aud-gw-b")
DEV = key("aud-dev")
H = 3_600_000
DAY = 24 * H
#: 2026-11-16 00:00 UTC, a Monday (weekday 0)
MONDAY = 1_794_787_200_000


class Clock(Chain):
    """A chain whose next block time is `now` (ms), moved by the test."""

    def __init__(self, app: ContractApp | None = None) -> None:
        super().__init__(app)
        self.now = MONDAY + 12 * H

    def ctx(self, height: int) -> BlockContext:
        return BlockContext(height, 0, self.now, NODE0.did, False, SealerSet((NODE0.did,)))

    def at(self, ms: int, signer, kind: str, payload: dict) -> dict:
        self.now = ms
        return self.one(signer, kind, payload)


def setup(c: Clock) -> Clock:
    assert code(c.one(ACME, "registry.register_gateway", {"id": "gw", "org": "acme", "key": GW.did})) is None
    assert code(c.one(BETA, "registry.register_gateway", {"id": "gw-b", "org": "beta", "key": GW_B.did})) is None
    assert code(c.one(ACME, "registry.register_device", {"id": "dev", "org": "acme", "key": DEV.did})) is None
    return c


@pytest.fixture
def chain() -> Clock:
    return setup(Clock())


def op(org: str = "acme", op_type: str = "command", system: str = "press-1", operator: str = "alice",
       **kw) -> dict:
    return {"org": org, "operator": operator, "system": system, "op": op_type, **kw}


def window_rule(rule_id: str = "night", org: str = "acme", **kw) -> dict:
    return {"id": rule_id, "org": org, "kind": "window", "start": "06:00", "end": "22:00",
            "match": {"op": "command"}, **kw}


def rate_rule(rule_id: str = "cfg-rate", org: str = "acme", **kw) -> dict:
    return {"id": rule_id, "org": org, "kind": "rate", "max": 3, "match": {"op": "config"}, **kw}


def range_rule(rule_id: str = "sp", org: str = "acme", **kw) -> dict:
    return {"id": rule_id, "org": org, "kind": "range", "param": "setpoint", "min": 10, "max": "90.5",
            "match": {"op": "config", "system": ["oven-1", "oven-2"]}, "severity": "critical", **kw}


def deploy(c: Chain, rule: dict, signer=ACME) -> dict:
    r = c.one(signer, "audit.deploy_rule", rule)
    assert code(r) is None, r
    return r


def raised(result: dict) -> list[str]:
    assert code(result) is None, result
    return [e["rule"] for e in result["events"]]


# ---------------------------------------------------------------- rule kinds


def test_window_rule(chain: Clock) -> None:
    deploy(chain, window_rule())
    day = MONDAY + 3 * DAY
    assert raised(chain.at(day + 6 * H, GW, "audit.record", op())) == []                  # 06:00 is inside
    assert raised(chain.at(day + 22 * H - 1, GW, "audit.record", op())) == []             # 21:59:59.999
    assert raised(chain.at(day + 22 * H, GW, "audit.record", op())) == ["night"]          # 22:00 is outside
    r = chain.at(day + 2 * H + 5 * 60_000, GW, "audit.record", op())
    assert raised(r) == ["night"]
    ev = events(chain.app.state, chain.height)[0]
    assert ev["detail"] == "at 02:05 UTC outside 06:00-22:00 UTC" and ev["message"] == ev["detail"]
    # a login or config at night does not match this command rule
    assert raised(chain.at(day + 23 * H, GW, "audit.record", op(op_type="login"))) == []


def test_window_wrapping_midnight_and_weekdays(chain: Clock) -> None:
    deploy(chain, window_rule("night-shift", start="22:00", end="06:00", days=[0, 1, 2, 3, 4],
                              message="command outside the night shift"))
    assert raised(chain.at(MONDAY + 23 * H, GW, "audit.record", op())) == []
    assert raised(chain.at(MONDAY + DAY + 5 * H, GW, "audit.record", op())) == []
    assert raised(chain.at(MONDAY + 12 * H, GW, "audit.record", op())) == ["night-shift"]
    saturday = MONDAY + 5 * DAY + 23 * H
    r = chain.at(saturday, GW, "audit.record", op())
    assert raised(r) == ["night-shift"]
    ev = events(chain.app.state, chain.height)[0]
    assert ev["message"] == "command outside the night shift" and "weekday 5" in ev["detail"]


def test_rate_rule_sliding_window(chain: Clock) -> None:
    deploy(chain, rate_rule())
    t0 = MONDAY + 8 * H
    got = [raised(chain.at(t0 + i * 60_000, GW, "audit.record", op(op_type="config"))) for i in range(5)]
    assert got == [[], [], [], ["cfg-rate"], ["cfg-rate"]]                  # the 4th and 5th within the hour
    assert "4 config operations within 3600 s (at most 3 allowed)" in events(chain.app.state)[0]["detail"]
    key_ = audit.rate_key("cfg-rate", 1, "acme")
    assert chain.app.state.get(key_) == [t0 + i * 60_000 for i in (2, 3, 4)]     # bounded: the last `max` times
    # commands do not count; an hour after the 2nd change only 3 remain in the window
    assert raised(chain.at(t0 + 10 * 60_000, GW, "audit.record", op())) == []
    assert raised(chain.at(t0 + H + 60_000, GW, "audit.record", op(op_type="config"))) == ["cfg-rate"]
    assert raised(chain.at(t0 + H + 4 * 60_000 + 1, GW, "audit.record", op(op_type="config"))) == []
    assert chain.app.state.get(key_) == [t0 + H + 60_000, t0 + H + 4 * 60_000 + 1]   # older ones expired


def test_rate_rule_per_system_and_within_one_block(chain: Clock) -> None:
    deploy(chain, rate_rule(max=1, per="system", period_s=60))
    chain.now = MONDAY + 9 * H
    res = chain.block(*(chain.tx(GW, "audit.record", op(op_type="config", system=s))
                        for s in ("a", "b", "a", "a", "b")))
    assert [raised(r) for r in res] == [[], [], ["cfg-rate"], ["cfg-rate"], ["cfg-rate"]]
    assert [e["id"] for e in events(chain.app.state, chain.height)] == [[chain.height, i, 0] for i in (2, 3, 4)]
    assert "by system 'a'" in events(chain.app.state, chain.height)[0]["detail"]


def test_rate_zero_flags_every_match(chain: Clock) -> None:
    deploy(chain, rate_rule("no-logins", max=0, match={"op": "login", "system": "scada"}))
    assert raised(chain.one(GW, "audit.record", op(op_type="login", system="scada"))) == ["no-logins"]
    assert raised(chain.one(GW, "audit.record", op(op_type="login", system="hmi"))) == []
    assert audit.rate_key("no-logins", 1, "acme") not in chain.app.state


def test_range_rule(chain: Clock) -> None:
    deploy(chain, range_rule())

    def sp(value, system="oven-1", **kw):
        return raised(chain.one(GW, "audit.record", op(op_type="config", system=system,
                                                      params={"setpoint": value, **kw})))

    assert sp(10) == [] and sp("90.5") == [] and sp("55.25") == []
    assert sp(9) == ["sp"] and sp("90.51") == ["sp"] and sp("-3") == ["sp"]
    assert sp("hot") == ["sp"]                                               # not a number: fail closed
    assert sp(500, system="oven-9") == []                                    # another system
    assert raised(chain.one(GW, "audit.record", op(op_type="config", system="oven-1", params={"speed": 1}))) == []
    evs = events(chain.app.state, limit=1000)
    assert [e["detail"] for e in evs][:2] == ["setpoint=9 outside [10, 90.5]", "setpoint=90.51 outside [10, 90.5]"]
    assert all(e["severity"] == "critical" and e["kind"] == "range" for e in evs)


def test_several_rules_one_operation_and_consortium_rules(chain: Clock) -> None:
    deploy(chain, window_rule("a-window"))
    deploy(chain, rate_rule("b-rate", max=0, match={}))
    deploy(chain, rate_rule("all-rate", org="*", max=0, match={"op": "command"}), signer=ADMIN)
    r = chain.at(MONDAY + 23 * H, GW, "audit.record", op())
    assert raised(r) == ["a-window", "b-rate", "all-rate"]                   # org's rules by id, then '*'
    assert [e["id"] for e in r["events"]] == [f"{chain.height}-0-{n}" for n in range(3)]
    assert [e["seq"] for e in r["events"]] == [0, 1, 2]
    # beta's operations meet only the consortium-wide rule
    assert raised(chain.at(MONDAY + 23 * H, GW_B, "audit.record", op(org="beta"))) == ["all-rate"]


# ---------------------------------------------------------------- events


def test_events_are_stored_with_their_operation(chain: Clock) -> None:
    deploy(chain, range_rule())
    p = op(op_type="config", system="oven-2", operator="bob", action="set", params={"setpoint": 120, "unit": "C"},
           at=123)
    r = chain.one(DEV, "audit.record", p)
    h = chain.height
    assert r["events"] == [{"id": f"{h}-0-0", "seq": 0, "rule": "sp", "version": 1, "severity": "critical"}]
    ev = audit.get_event(chain.app.state, 0)
    j = event_json(ev)
    assert j["id"] == f"{h}-0-0" and (j["height"], j["index"], j["n"]) == (h, 0, 0)
    assert j["key"] == audit.event_key(0) == "aud/ev/0000000000000000"
    assert j["operation"] == {"org": "acme", "operator": "bob", "system": "oven-2", "op": "config",
                              "action": "set", "params": {"setpoint": 120, "unit": "C"}, "at": 123}
    assert j["submitter"] == DEV.did and j["time"] == chain.now and len(j["tx_id"]) == 64
    assert j["rule_org"] == "acme" and j["version"] == 1
    assert chain.app.state.get(audit.META_KEY) == {"ops": 1, "events": 1}


def test_event_paging_by_height_and_seq(chain: Clock) -> None:
    deploy(chain, rate_rule("every", max=0, match={}))
    heights = []
    for _ in range(5):
        chain.block(*(chain.tx(GW, "audit.record", op()) for _ in range(3)))
        heights.append(chain.height)
    st = chain.app.state
    assert event_count(st) == 15
    assert [e["seq"] for e in events(st, heights[2])] == list(range(6, 15))
    assert [e["seq"] for e in events(st, heights[2], limit=2)] == [6, 7]
    assert [e["seq"] for e in events(st, after=12)] == [13, 14]
    assert events(st, heights[-1] + 1) == [] and events(st, after=14) == []
    assert [e["id"][0] for e in events(st, 0, limit=1000)] == sorted(e["id"][0] for e in events(st, 0, limit=1000))


# ---------------------------------------------------------------- versions and retirement


def test_versions_and_retirement(chain: Clock) -> None:
    night = MONDAY + 23 * H
    assert deploy(chain, window_rule()) == {"ok": True, "id": "night", "version": 1}
    assert raised(chain.at(night, GW, "audit.record", op())) == ["night"]
    # version 2 widens the window: the same operation no longer matches
    assert deploy(chain, window_rule(end="23:30", version=2))["version"] == 2
    assert raised(chain.at(night, GW, "audit.record", op())) == []
    assert code(chain.one(ACME, "audit.deploy_rule", window_rule(version=2))) == "VERSION_CONFLICT"
    assert [v["end"] for v in rule_versions(chain.app.state, "night")] == ["22:00", "23:30"]
    # retired: no more events, and retiring twice is refused
    assert code(chain.one(ACME, "audit.retire_rule", {"id": "night", "reason": "moved to 24/7"})) is None
    assert raised(chain.at(night + 40 * 60_000, GW, "audit.record", op())) == []
    assert code(chain.one(ACME, "audit.retire_rule", {"id": "night"})) == "RETIRED"
    cur = get_rule(chain.app.state, "night")
    assert cur["status"] == "retired" and cur["reason"] == "moved to 24/7" and cur["retired"][0] == chain.height - 2
    assert rules(chain.app.state, "acme", active_only=True) == []
    # redeploying a retired rule makes version 3, active again, with fresh rate state
    assert deploy(chain, window_rule())["version"] == 3
    assert raised(chain.at(night + 40 * 60_000, GW, "audit.record", op())) == ["night"]
    ev = events(chain.app.state, chain.height)[0]
    assert ev["version"] == 3
    assert chain.app.state.get(audit.active_key("acme")) == ["night"]


def test_new_version_resets_the_rate_window(chain: Clock) -> None:
    deploy(chain, rate_rule(max=1))
    assert [raised(chain.one(GW, "audit.record", op(op_type="config"))) for _ in range(2)] == [[], ["cfg-rate"]]
    deploy(chain, rate_rule(max=1))
    assert raised(chain.one(GW, "audit.record", op(op_type="config"))) == []


def test_too_many_rules() -> None:
    c = setup(Clock())
    for i in range(audit.MAX_RULES):
        deploy(c, rate_rule(f"r{i:02d}"))
    assert code(c.one(ACME, "audit.deploy_rule", rate_rule("one-more"))) == "TOO_MANY_RULES"
    assert code(c.one(ACME, "audit.deploy_rule", rate_rule("r05", max=7))) is None     # a new version is fine
    assert code(c.one(ACME, "audit.retire_rule", {"id": "r05"})) is None
    assert code(c.one(ACME, "audit.deploy_rule", rate_rule("one-more"))) is None


# ---------------------------------------------------------------- authority


def test_org_isolation_for_rules(chain: Clock) -> None:
    deploy(chain, window_rule())
    assert code(chain.one(BETA, "audit.deploy_rule", window_rule("b-night"))) == "FORBIDDEN"   # org acme
    assert code(chain.one(BETA, "audit.retire_rule", {"id": "night"})) == "FORBIDDEN"
    assert code(chain.one(BETA, "audit.deploy_rule", window_rule(org="beta"))) == "FORBIDDEN"  # acme's id
    assert code(chain.one(GW, "audit.deploy_rule", window_rule("gw-rule"))) == "FORBIDDEN"     # not an admin
    assert code(chain.one(ACME, "audit.deploy_rule", window_rule("all", org="*"))) == "FORBIDDEN"
    assert code(chain.one(ACME, "audit.deploy_rule", window_rule(org="beta"))) == "FORBIDDEN"
    assert get_rule(chain.app.state, "night")["version"] == 1 and get_rule(chain.app.state, "b-night") is None
    # the consortium admin manages any org's rules and the consortium-wide ones
    assert deploy(chain, window_rule(end="21:00"), signer=ADMIN)["version"] == 2
    assert code(chain.one(ADMIN, "audit.deploy_rule", window_rule(org="beta"))) == "BAD_RULE"   # never moves org
    deploy(chain, window_rule("all", org="*"), signer=ADMIN)
    assert code(chain.one(ADMIN, "audit.retire_rule", {"id": "night"})) is None
    assert code(chain.one(ACME, "audit.retire_rule", {"id": "all"})) == "FORBIDDEN"


def test_who_may_record(chain: Clock) -> None:
    assert code(chain.one(GW, "audit.record", op())) is None
    assert code(chain.one(DEV, "audit.record", op())) is None
    assert code(chain.one(ACME, "audit.record", op())) is None
    assert code(chain.one(NODE0, "audit.record", op())) is None
    assert code(chain.one(GW_B, "audit.record", op())) == "FORBIDDEN"          # beta's gateway for acme
    assert code(chain.one(BETA, "audit.record", op())) == "FORBIDDEN"
    assert code(chain.one(ADMIN, "audit.record", op())) == "FORBIDDEN"
    assert code(chain.one(key("stranger"), "audit.record", op())) == "FORBIDDEN"
    assert code(chain.one(GW, "audit.record", op(org="nope"))) == "NOT_FOUND"
    gw2 = key("aud-gw-rotated")
    assert code(chain.one(GW, "registry.rotate_key", {"id": "gw", "key": gw2.did})) is None
    assert code(chain.one(GW, "audit.record", op())) == "FORBIDDEN"            # the rotated-away key
    assert code(chain.one(gw2, "audit.record", op())) is None
    assert code(chain.one(ACME, "registry.revoke", {"id": "dev"})) is None
    assert code(chain.one(DEV, "audit.record", op())) == "REVOKED"
    assert code(chain.one(ADMIN, "registry.revoke", {"id": "acme"})) is None
    assert code(chain.one(gw2, "audit.record", op())) == "ORG_REVOKED"
    assert code(chain.one(ACME, "audit.deploy_rule", window_rule())) == "ORG_REVOKED"
    assert chain.app.state.get(audit.META_KEY)["ops"] == 5


def test_retire_unknown_rule(chain: Clock) -> None:
    assert code(chain.one(ACME, "audit.retire_rule", {"id": "ghost"})) == "NOT_FOUND"
    assert code(chain.one(ADMIN, "audit.deploy_rule", window_rule(org="nope"))) == "NOT_FOUND"


# ---------------------------------------------------------------- payload checks


@pytest.mark.parametrize("rule, want", [
    ({"kind": "cron"}, "BAD_PAYLOAD"),
    ({"start": "24:00"}, "BAD_PAYLOAD"),
    ({"start": "6:00"}, "BAD_PAYLOAD"),
    ({"end": "06:00"}, "BAD_RULE"),
    ({"days": []}, "BAD_RULE"),
    ({"days": [7]}, "BAD_PAYLOAD"),
    ({"severity": "panic"}, "BAD_PAYLOAD"),
    ({"match": {"op": "reboot"}}, "BAD_PAYLOAD"),
    ({"match": {"who": "x"}}, "BAD_PAYLOAD"),
    ({"match": {"system": ["bad id!"]}}, "BAD_PAYLOAD"),
    ({"match": []}, "BAD_PAYLOAD"),
    ({"max": 3}, "BAD_PAYLOAD"),                               # a rate field on a window rule
    ({"code": "import os"}, "BAD_PAYLOAD"),
    ({"id": "bad id"}, "BAD_PAYLOAD"),
    ({"org": 7}, "BAD_PAYLOAD"),
    ({"message": "x" * 257}, "BAD_PAYLOAD"),
    ({"version": 0}, "BAD_PAYLOAD"),
    ({"version": 2}, "VERSION_CONFLICT"),
])
def test_bad_window_rules(chain: Clock, rule: dict, want: str) -> None:
    assert code(chain.one(ACME, "audit.deploy_rule", {**window_rule(), **rule})) == want
    assert get_rule(chain.app.state, "night") is None


@pytest.mark.parametrize("rule, want", [
    ({"kind": "rate", "max": 1001}, "BAD_PAYLOAD"),
    ({"kind": "rate", "max": -1}, "BAD_PAYLOAD"),
    ({"kind": "rate", "max": 1, "period_s": 59}, "BAD_PAYLOAD"),
    ({"kind": "rate", "max": 1, "per": "shift"}, "BAD_PAYLOAD"),
    ({"kind": "range", "param": "sp"}, "BAD_RULE"),
    ({"kind": "range", "param": "sp", "min": 5, "max": 4}, "BAD_RULE"),
    ({"kind": "range", "param": "sp", "min": "1e3"}, "BAD_PAYLOAD"),
    ({"kind": "range", "param": "sp", "min": True}, "BAD_PAYLOAD"),
    ({"kind": "range", "param": "sp", "min": 10 ** 18}, "BAD_PAYLOAD"),
    ({"kind": "range", "param": "no spaces", "min": 1}, "BAD_PAYLOAD"),
    ({"kind": "range"}, "BAD_PAYLOAD"),
])
def test_bad_rate_and_range_rules(chain: Clock, rule: dict, want: str) -> None:
    assert code(chain.one(ACME, "audit.deploy_rule", {"id": "r", "org": "acme", **rule})) == want


@pytest.mark.parametrize("over", [
    {"op": "reboot"}, {"operator": ""}, {"system": "a b"}, {"org": None}, {"params": []},
    {"params": {"bad name": 1}}, {"params": {f"p{i}": i for i in range(33)}},
    {"params": {"x": {"nested": 1}}}, {"params": {"x": 1 << 63}}, {"at": -1}, {"action": "x" * 129},
    {"extra": 1},
])
def test_bad_record_payloads(chain: Clock, over: dict) -> None:
    assert code(chain.one(GW, "audit.record", {**op(), **over})) == "BAD_PAYLOAD"
    assert chain.app.state.get(audit.META_KEY) is None


# ---------------------------------------------------------------- fees and determinism


def test_audit_txs_pay_the_default_fee() -> None:
    c = setup(Clock(ContractApp(default_genesis(fees=None, balances={"consortium": 100, "acme": 10, "beta": 1}))))
    # registering two entities cost acme 2; beta spent its one token on its gateway
    assert balance(c.app.state, "acme") == 8
    assert code(c.one(BETA, "audit.deploy_rule", window_rule(org="beta"))) == "INSUFFICIENT_QUOTA"
    assert c.one(ACME, "audit.deploy_rule", window_rule())["charged"] == 1
    assert code(c.one(GW, "audit.record", op())) == "INSUFFICIENT_QUOTA"       # the gateway holds nothing
    assert code(c.one(ACME, "tokens.allocate", {"from": "acme", "to": "gw", "amount": 1})) is None
    assert c.one(GW, "audit.record", op())["charged"] == 1
    assert code(c.one(GW, "audit.record", op())) == "INSUFFICIENT_QUOTA"       # exhausted
    assert balance(c.app.state, "gw") == 0 and balance(c.app.state, "acme") == 6


def _workload(seed: int, c: Clock) -> list[list]:
    r = random.Random(seed)
    signers = [GW, DEV, ACME, GW_B, BETA, ADMIN]
    blocks = []
    for _ in range(30):
        txs = []
        for _ in range(r.randint(1, 6)):
            s = r.choice(signers)
            x = r.random()
            org = "beta" if s in (GW_B, BETA) else "acme"
            if x < 0.15:
                rule = r.choice([window_rule(r.choice(["w1", "w2"]), org=org, start=f"{r.randint(0, 11):02d}:00"),
                                 rate_rule(r.choice(["q1", "q2"]), org=org, max=r.randint(0, 3), per="system"),
                                 range_rule(r.choice(["s1", "s2"]), org=r.choice([org, "*"]))])
                txs.append((s, "audit.deploy_rule", rule))
            elif x < 0.2:
                txs.append((s, "audit.retire_rule", {"id": r.choice(["w1", "w2", "q1", "q2", "s1", "s2"])}))
            else:
                txs.append((s, "audit.record", op(org=org, op_type=r.choice(audit.OP_TYPES),
                                                  system=r.choice(["oven-1", "oven-2", "press"]),
                                                  params={"setpoint": r.randint(0, 100)})))
        blocks.append((r.randint(0, 3 * H), txs))
    return blocks


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_two_apps_agree_and_root_equals_recomputation(seed: int) -> None:
    a, b = setup(Clock()), setup(Clock())
    for step, txs in _workload(seed, a):
        for c in (a, b):
            c.now += step
            c.block(*(c.tx(s, k, p) for s, k, p in txs))
    assert a.results == b.results and a.roots == b.roots
    assert a.app.snapshot() == b.app.snapshot()
    assert recompute_root(a.app.snapshot()) == a.app.state_root()
    assert event_count(a.app.state) > 0
    assert [e["seq"] for e in events(a.app.state, limit=1000)] == list(range(event_count(a.app.state)))


def test_methods() -> None:
    assert set(audit.METHODS) == {"record", "deploy_rule", "retire_rule"}
    assert "audit" in ContractApp(default_genesis()).contracts
