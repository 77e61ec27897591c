"""`audit`: operator operations on factory systems, declarative rules, and the events they raise.

An *operation* (a command, a configuration change, a login on a factory
system) is recorded by ``audit.record``, submitted by the org's admin or by
one of its registered nodes/devices/gateways (typically the gateway that
logs the factory systems' operator actions). Its time is the **block time**
(``BlockContext.time``, ms since the epoch; the header carries it and the
core keeps it non-decreasing), never a clock of the executing node; the
client's own timestamp ``at`` is stored but no rule reads it.

*Rules* are data: a small validated schema (no code), deployed, versioned and
retired by admin transactions. An org's admin manages its org's rules, the
consortium admin those of any org and the consortium-wide ones (``org: "*"``,
checked against every org's operations). Kinds:

========= ======================================== ===========================================
kind      fields                                   raises an event when a matching operation
========= ======================================== ===========================================
window    start, end ("HH:MM" UTC), days?          happens outside [start, end) UTC (a window
          (weekdays allowed, 0 = Monday)           with start > end wraps midnight) or on a
                                                   weekday not in ``days``
rate      max (0..1000), period_s (60..86400,      is the (max+1)-th or later within the last
          default 3600), per? (org|system|         ``period_s`` of block time (a sliding window)
          operator, default org)                   in its group
range     param, min?, max? (int or decimal text)  has ``params[param]`` outside [min, max], or
                                                   not a number (a missing param: no event)
========= ======================================== ===========================================

Every rule also has ``id``, ``org`` (an org id or ``*``), ``severity``
(``info``, ``warning`` default, ``critical``), ``message?`` and ``match?``
``{op?, system?, action?}`` (each a name or a list of names; empty: every
operation). Numbers are ints or decimal text (``"72.5"``): the ledger's
canonical encoding has no floats, and decimals compare exactly.

An event is stored on chain at ``aud/ev/<seq>`` (`event_key`; ``seq``
counts every event from 0, so heights never decrease along it): its id
``(height, tx index, n)`` (n-th event of that tx), rule id and version, the
operation (org, operator, system, op, action, params, at, tx id, submitter),
severity, message and block time. Rules are evaluated in a fixed order (the
operation's org's rules by id, then the consortium-wide ones by id), so
every node raises the same events with the same ids.

Transactions:

==================== ================================================ ==============================
kind                 payload                                          who may submit
==================== ================================================ ==============================
audit.record         org, operator, system, op (command|config|login), the org's admin or one of its
                     action?, params?, at?                            active nodes/devices/gateways
audit.deploy_rule    id, org, kind, severity?, message?, match?,      the org's admin (its org);
                     version? + the kind's fields                     the consortium admin (any, *)
audit.retire_rule    id, reason?                                      same, for the rule's org
==================== ================================================ ==============================

``version`` (optional) is the version the deploy must create (current + 1,
1 for a new id): a stale deploy is refused with ``VERSION_CONFLICT``.
Redeploying a rule (active or retired) makes version + 1 and resets its rate
state; a rule keeps its org forever.

Refusal codes: ``BAD_PAYLOAD`` (shape), ``BAD_RULE`` (a well-formed rule
that cannot work: min > max, start == end, empty days, ...), ``NOT_FOUND``
(no such org or rule), ``FORBIDDEN``, ``ORG_REVOKED``, ``REVOKED`` (the
submitting entity is revoked), ``RETIRED`` (retiring a retired rule),
``VERSION_CONFLICT``, ``TOO_MANY_RULES`` (more than `MAX_RULES` active rules
in one org), plus ``INSUFFICIENT_QUOTA`` from the fee hook (``audit.*`` pays
the ``*`` fee of the schedule, 1 by default).

State: ``aud/rule/<id>`` -> the current version; ``aud/rulev/<id>/<version
as 8 hex digits>`` -> every version ever deployed (immutable);
``aud/active/<org>`` -> sorted ids of the org's active rules (``*`` for the
consortium-wide ones); ``aud/rate/<id>/<version>/<group>`` -> the block times
of the last ``max`` matching operations of that group (at most ``max``
entries); ``aud/meta`` -> ``{ops, events}`` counters; ``aud/ev/<seq as 16 hex
digits>`` -> an event.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Iterable, Mapping

from ._app import ContractState, Refused, TxContext, check_fields, check_id, check_int, check_text

__all__ = [
    "METHODS",
    "OP_TYPES",
    "RULE_KINDS",
    "SEVERITIES",
    "MAX_RULES",
    "ALL_ORGS",
    "event_key",
    "event_count",
    "events",
    "first_seq",
    "get_event",
    "get_rule",
    "rule_versions",
    "rules",
    "event_json",
    "rule_json",
    "record",
    "deploy_rule",
    "retire_rule",
    "raise_event",
]

OP_TYPES = ("command", "config", "login")
RULE_KINDS = ("window", "rate", "range")
SEVERITIES = ("info", "warning", "critical")
#: The `org` of a consortium-wide rule (only the consortium admin deploys these).
ALL_ORGS = "*"
#: Active rules per org (and consortium-wide): bounds the work of one `audit.record`.
MAX_RULES = 64
MAX_PARAMS = 32
MAX_RATE = 1000
MAX_EVENTS_PAGE = 1000
_MATCH_NAMES = 16

META_KEY = "aud/meta"
_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_NUMBER = re.compile(r"-?[0-9]{1,18}(\.[0-9]{1,9})?")
_PARAM = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")
_DAY_MS = 86_400_000


def rule_key(rule_id: str) -> str:
    return "aud/rule/" + rule_id


def version_key(rule_id: str, version: int) -> str:
    return f"aud/rulev/{rule_id}/{version:08x}"


def active_key(org: str) -> str:
    return "aud/active/" + org


def rate_key(rule_id: str, version: int, group: str) -> str:
    return f"aud/rate/{rule_id}/{version}/{group}"


def event_key(seq: int) -> str:
    """The state key of event number `seq` (what ``/state/proof`` proves)."""
    return f"aud/ev/{seq:016x}"


def _peek(reader: Any, key: str, default: Any = None) -> Any:
    return getattr(reader, "peek", reader.get)(key, default)


def _meta(reader: Any) -> dict:
    return dict(_peek(reader, META_KEY, {"ops": 0, "events": 0}))


# ---------------------------------------------------------------- payload checks


def _names(value: Any, field: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    """A name or a list of names -> a sorted list of distinct names."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not 1 <= len(items) <= _MATCH_NAMES:
        raise Refused("BAD_PAYLOAD", f"match.{field} must be a name or a list of 1..{_MATCH_NAMES} names")
    for v in items:
        if allowed is not None:
            if v not in allowed:
                raise Refused("BAD_PAYLOAD", f"match.{field} must be among {', '.join(allowed)}")
        else:
            check_id(v, f"match.{field}")
    return sorted(set(items))


def _number(value: Any, field: str) -> Decimal:
    """An int, or decimal text like ``"-12.5"``, as an exact Decimal."""
    if type(value) is int and -(10 ** 18) < value < 10 ** 18:
        return Decimal(value)
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        return Decimal(value)
    raise Refused("BAD_PAYLOAD", f"{field} must be an integer or decimal text like \"72.5\" (|x| < 1e18)")


def _as_number(value: Any) -> Decimal | None:
    """An operation's parameter as a number, or None when it is not one."""
    if type(value) is int and -(10 ** 18) < value < 10 ** 18:
        return Decimal(value)
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        return Decimal(value)
    return None


def _minute(value: Any, field: str) -> int:
    if not isinstance(value, str) or not _HHMM.fullmatch(value):
        raise Refused("BAD_PAYLOAD", f"{field} must be \"HH:MM\" (UTC, 00:00..23:59)")
    return int(value[:2]) * 60 + int(value[3:])


_KIND_FIELDS = {
    "window": (("start", "end"), ("days",)),
    "rate": (("max",), ("period_s", "per")),
    "range": (("param",), ("min", "max")),
}
_COMMON = ("id", "org", "kind")
_COMMON_OPTIONAL = ("severity", "message", "match", "version")


def _check_rule(p: dict) -> dict:
    """The payload of ``audit.deploy_rule`` as the stored rule body (without version/positions)."""
    kind = p.get("kind")
    if kind not in RULE_KINDS:
        raise Refused("BAD_PAYLOAD", f"kind must be one of {', '.join(RULE_KINDS)}")
    req, opt = _KIND_FIELDS[kind]
    check_fields(p, _COMMON + req, _COMMON_OPTIONAL + opt)
    rule_id = check_id(p["id"], "id")
    org = p["org"] if p["org"] == ALL_ORGS else check_id(p["org"], "org")
    severity = p.get("severity", "warning")
    if severity not in SEVERITIES:
        raise Refused("BAD_PAYLOAD", f"severity must be one of {', '.join(SEVERITIES)}")
    message = check_text(p.get("message", ""), "message", 256)
    match = p.get("match", {})
    if not isinstance(match, dict) or not set(match) <= {"op", "system", "action"}:
        raise Refused("BAD_PAYLOAD", "match must be a map with op?, system?, action?")
    sel = {}
    if "op" in match:
        sel["op"] = _names(match["op"], "op", OP_TYPES)
    for f in ("system", "action"):
        if f in match:
            sel[f] = _names(match[f], f)
    body: dict[str, Any] = {"id": rule_id, "org": org, "kind": kind, "severity": severity,
                            "message": message, "match": sel}
    if kind == "window":
        start, end = _minute(p["start"], "start"), _minute(p["end"], "end")
        if start == end:
            raise Refused("BAD_RULE", "an empty window (start == end) would flag every operation; "
                                      "use a rate rule with max 0 for that")
        body.update(start=p["start"], end=p["end"])
        if "days" in p:
            days = p["days"]
            if not isinstance(days, list) or not all(type(d) is int and 0 <= d <= 6 for d in days):
                raise Refused("BAD_PAYLOAD", "days must be a list of weekdays 0..6 (0 = Monday)")
            if not days:
                raise Refused("BAD_RULE", "days is empty: no day would be allowed")
            body["days"] = sorted(set(days))
    elif kind == "rate":
        body["max"] = check_int(p["max"], "max", 0, MAX_RATE)
        body["period_s"] = check_int(p.get("period_s", 3600), "period_s", 60, 86_400)
        per = p.get("per", "org")
        if per not in ("org", "system", "operator"):
            raise Refused("BAD_PAYLOAD", "per must be org, system or operator")
        body["per"] = per
    else:
        body["param"] = p["param"]
        if not isinstance(p["param"], str) or not _PARAM.fullmatch(p["param"]):
            raise Refused("BAD_PAYLOAD", f"param must match {_PARAM.pattern}")
        if "min" not in p and "max" not in p:
            raise Refused("BAD_RULE", "a range rule needs min, max or both")
        lo = _number(p["min"], "min") if "min" in p else None
        hi = _number(p["max"], "max") if "max" in p else None
        if lo is not None and hi is not None and lo > hi:
            raise Refused("BAD_RULE", f"min {p['min']} is above max {p['max']}")
        if lo is not None:
            body["min"] = p["min"]
        if hi is not None:
            body["max"] = p["max"]
    return body


def _check_params(value: Any) -> dict:
    if not isinstance(value, dict) or len(value) > MAX_PARAMS:
        raise Refused("BAD_PAYLOAD", f"params must be a map of at most {MAX_PARAMS} entries")
    for k, v in value.items():
        if not isinstance(k, str) or not _PARAM.fullmatch(k):
            raise Refused("BAD_PAYLOAD", f"params names must match {_PARAM.pattern}")
        if not (v is None or type(v) in (bool, int) or (isinstance(v, str) and len(v) <= 256)):
            raise Refused("BAD_PAYLOAD", f"params.{k} must be null, a bool, an int or text of at most "
                                         "256 characters (decimals as text, e.g. \"72.5\")")
        if type(v) is int and not -(1 << 63) <= v < (1 << 63):
            raise Refused("BAD_PAYLOAD", f"params.{k} is out of the 64-bit range")
    return value


# ---------------------------------------------------------------- authority


def _consortium_key(reader: Any) -> str:
    return _peek(reader, "reg/ent/consortium")["keys"][-1][0]


def _org_record(tc: TxContext, org: str) -> dict:
    rec = _peek(tc.state, "reg/ent/" + org)
    if rec is None or rec["type"] != "org":
        raise Refused("NOT_FOUND", f"no organisation {org!r}")
    return rec


def _may_manage(tc: TxContext, org: str) -> None:
    """Refuse unless the submitter may deploy/retire rules of `org` (``*``: consortium-wide)."""
    me = tc.submitter
    if me == _consortium_key(tc.state):
        if org != ALL_ORGS:
            _org_record(tc, org)
        return
    if org == ALL_ORGS:
        raise Refused("FORBIDDEN", "only the consortium admin manages consortium-wide rules")
    rec = _org_record(tc, org)
    if me != rec["keys"][-1][0]:
        raise Refused("FORBIDDEN", f"only the admin of {org!r} (or the consortium admin) manages its rules")
    if rec["revoked"] is not None:
        raise Refused("ORG_REVOKED", f"organisation {org!r} is revoked")


def _may_record(tc: TxContext, org: str) -> None:
    """Refuse unless the submitter is the current key of `org`'s admin or of one of its active entities."""
    rec = _org_record(tc, org)
    me = tc.submitter
    if me != rec["keys"][-1][0]:
        eid = _peek(tc.state, "reg/key/" + me)
        who = None if eid is None else _peek(tc.state, "reg/ent/" + eid)
        if who is None or who["type"] == "org" or who["org"] != org or who["keys"][-1][0] != me:
            raise Refused("FORBIDDEN", f"only {org!r}'s admin or its registered nodes, devices and "
                                       "gateways (by their current key) record its operations")
        if who["revoked"] is not None:
            raise Refused("REVOKED", f"entity {eid!r} is revoked")
    if rec["revoked"] is not None:
        raise Refused("ORG_REVOKED", f"organisation {org!r} is revoked")


# ---------------------------------------------------------------- transactions


def deploy_rule(tc: TxContext, p: dict) -> dict:
    body = _check_rule(p)
    want = check_int(p["version"], "version", 1) if "version" in p else None
    rule_id, org = body["id"], body["org"]
    st = tc.state
    _may_manage(tc, org)
    cur = st.get(rule_key(rule_id))
    if cur is not None and cur["org"] != org:
        _may_manage(tc, cur["org"])  # FORBIDDEN first: another org's rule shows only to those who manage it
        raise Refused("BAD_RULE", f"rule {rule_id!r} belongs to {cur['org']!r}; a rule never changes org")
    version = 1 if cur is None else cur["version"] + 1
    if want is not None and want != version:
        raise Refused("VERSION_CONFLICT", f"rule {rule_id!r} would become version {version}, not {want}")
    ids = st.get(active_key(org), [])
    if rule_id not in ids:
        if len(ids) >= MAX_RULES:
            raise Refused("TOO_MANY_RULES", f"{org!r} has {MAX_RULES} active rules; retire one first")
        ids = sorted(ids + [rule_id])
        st.put(active_key(org), ids)
    rec = {**body, "version": version, "status": "active", "deployed": [tc.height, tc.index],
           "by": tc.submitter, "retired": None, "reason": ""}
    st.put(rule_key(rule_id), rec)
    st.put(version_key(rule_id, version), rec)
    return {"id": rule_id, "version": version}


def retire_rule(tc: TxContext, p: dict) -> dict:
    check_fields(p, ("id",), ("reason",))
    rule_id = check_id(p["id"], "id")
    reason = check_text(p.get("reason", ""), "reason", 256)
    st = tc.state
    cur = st.get(rule_key(rule_id))
    if cur is None:
        raise Refused("NOT_FOUND", f"no rule {rule_id!r}")
    _may_manage(tc, cur["org"])
    if cur["status"] != "active":
        raise Refused("RETIRED", f"rule {rule_id!r} version {cur['version']} is already retired")
    cur.update(status="retired", retired=[tc.height, tc.index], reason=reason)
    st.put(rule_key(rule_id), cur)
    st.put(version_key(rule_id, cur["version"]), cur)
    st.put(active_key(cur["org"]), [i for i in st.get(active_key(cur["org"]), []) if i != rule_id])
    return {"id": rule_id, "version": cur["version"]}


def _selected(rule: Mapping, op: Mapping) -> bool:
    for f, names in rule["match"].items():  # op always has op, system and action ("" when none)
        if op[f] not in names:
            return False
    return True


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _check_window(rule: Mapping, now: int) -> str | None:
    start, end = _minute(rule["start"], "start"), _minute(rule["end"], "end")
    minute = (now % _DAY_MS) // 60_000
    inside = start <= minute < end if start < end else (minute >= start or minute < end)
    weekday = (now // _DAY_MS + 3) % 7  # 1970-01-01 was a Thursday (3)
    if inside and ("days" not in rule or weekday in rule["days"]):
        return None
    where = "" if inside else f" outside {rule['start']}-{rule['end']} UTC"
    day = "" if "days" not in rule or weekday in rule["days"] else f" on weekday {weekday} (allowed {rule['days']})"
    return f"at {_hhmm(minute)} UTC{where}{day}"


def _check_rate(tc: TxContext, rule: Mapping, op: Mapping) -> str | None:
    per = rule["per"]
    group = op["org"] if per == "org" else op[per]
    key = rate_key(rule["id"], rule["version"], group)
    now, window, n = tc.block.time, rule["period_s"] * 1000, rule["max"]
    times = [t for t in tc.state.get(key, []) if t > now - window]
    seen = len(times)
    if n:
        tc.state.put(key, (times + [now])[-n:])
    if seen < n:
        return None
    return (f"{seen + 1} {_op_words(rule)} within {rule['period_s']} s"
            + ("" if per == "org" else f" by {per} {group!r}") + f" (at most {n} allowed)")


def _op_words(rule: Mapping) -> str:
    ops = rule["match"].get("op")
    return "/".join(ops) + " operations" if ops else "operations"


def _check_range(rule: Mapping, op: Mapping) -> str | None:
    name = rule["param"]
    params = op.get("params") or {}
    if name not in params:
        return None
    value = _as_number(params[name])
    lo = None if "min" not in rule else Decimal(str(rule["min"]))
    hi = None if "max" not in rule else Decimal(str(rule["max"]))
    bounds = f"[{rule.get('min', '-inf')}, {rule.get('max', '+inf')}]"
    if value is None:
        return f"{name}={str(params[name])[:64]!r} is not a number (range {bounds})"
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        return f"{name}={params[name]} outside {bounds}"
    return None


def _evaluate(tc: TxContext, rule: Mapping, op: Mapping) -> str | None:
    """Why `op` raises an event under `rule`, or None. Only `rate` writes (its window)."""
    if not _selected(rule, op):
        return None
    if rule["kind"] == "window":
        return _check_window(rule, tc.block.time)
    if rule["kind"] == "rate":
        return _check_rate(tc, rule, op)
    return _check_range(rule, op)


def record(tc: TxContext, p: dict) -> dict:
    check_fields(p, ("org", "operator", "system", "op"), ("action", "params", "at"))
    org = check_id(p["org"], "org")
    op = {"org": org, "operator": check_id(p["operator"], "operator"), "system": check_id(p["system"], "system"),
          "op": p["op"], "action": check_text(p.get("action", ""), "action", 128),
          "params": _check_params(p.get("params", {})),
          "at": None if p.get("at") is None else check_int(p["at"], "at")}
    if op["op"] not in OP_TYPES:
        raise Refused("BAD_PAYLOAD", f"op must be one of {', '.join(OP_TYPES)}")
    _may_record(tc, org)
    st = tc.state
    meta = _meta(st)
    raised: list[Any] = []
    peek = st.peek
    for scope in (org, ALL_ORGS):
        for rule_id in peek(active_key(scope), ()):
            rule = peek("aud/rule/" + rule_id)
            why = _evaluate(tc, rule, op)
            if why is None:
                continue
            n = len(raised)
            ev = {"id": [tc.height, tc.index, n], "seq": meta["events"] + n, "rule": rule_id,
                  "version": rule["version"], "kind": rule["kind"], "rule_org": rule["org"],
                  "severity": rule["severity"], "message": rule["message"] or why, "detail": why,
                  "time": tc.block.time, "tx_id": tc.tx.tx_id, "submitter": tc.submitter, "operation": op}
            st.put(event_key(ev["seq"]), ev)
            raised.append(ev)
    st.put(META_KEY, {"ops": meta["ops"] + 1, "events": meta["events"] + len(raised)})
    return {"events": [{"id": _id_text(e["id"]), "seq": e["seq"], "rule": e["rule"], "version": e["version"],
                        "severity": e["severity"]} for e in raised]}


def raise_event(tc: TxContext, org: str, rule: str, severity: str, message: str, action: str,
                params: Mapping[str, Any]) -> dict:
    """Raise an event for a change another contract made (no deployed rule: `rule` names the
    built-in source, e.g. ``policy.grant``, version 0, kind ``builtin``); the event is stored and
    streamed like any other, as a ``config`` operation of `org` by the submitter."""
    st = tc.state
    meta = _meta(st)
    op = {"org": org, "operator": "ledger", "system": "ledger", "op": "config", "action": action,
          "params": dict(params), "at": None}
    ev = {"id": [tc.height, tc.index, 0], "seq": meta["events"], "rule": rule, "version": 0, "kind": "builtin",
          "rule_org": org, "severity": severity, "message": message, "detail": message, "time": tc.block.time,
          "tx_id": tc.tx.tx_id, "submitter": tc.submitter, "operation": op}
    st.put(event_key(ev["seq"]), ev)
    st.put(META_KEY, {"ops": meta["ops"], "events": meta["events"] + 1})
    return {"id": _id_text(ev["id"]), "seq": ev["seq"], "rule": rule, "version": 0, "severity": severity}


METHODS = {"record": record, "deploy_rule": deploy_rule, "retire_rule": retire_rule}


def kinds() -> Iterable[str]:
    return ("audit." + m for m in METHODS)


# ---------------------------------------------------------------- queries


def get_rule(reader: Any, rule_id: str) -> dict | None:
    """The current version of a rule (active or retired), or None."""
    return reader.get(rule_key(rule_id)) if isinstance(rule_id, str) else None


def rule_versions(state: ContractState, rule_id: str) -> list[dict]:
    """Every version of a rule, oldest first (point reads, no scan)."""
    cur = get_rule(state, rule_id)
    return [] if cur is None else [state.get(version_key(rule_id, v)) for v in range(1, cur["version"] + 1)]


def rules(state: ContractState, org: str | None = None, active_only: bool = False) -> list[dict]:
    """Current versions of the rules (of one org, ``*`` for consortium-wide), in id order (a scan)."""
    out = []
    for _k, rec in state.items("aud/rule/"):
        if (org is None or rec["org"] == org) and (not active_only or rec["status"] == "active"):
            out.append(rec)
    return out


def event_count(reader: Any) -> int:
    """How many events the chain has raised (the next event's seq)."""
    return _meta(reader)["events"]


def get_event(reader: Any, seq: int) -> dict | None:
    return reader.get(event_key(seq)) if type(seq) is int and seq >= 0 else None


def first_seq(reader: Any, height: int, n: int | None = None) -> int:
    """The smallest seq whose event is at `height` or later (heights never decrease
    along seq); `event_count` when there is none. `n`: the event count, if known."""
    lo, hi = 0, event_count(reader) if n is None else n
    while lo < hi:
        mid = (lo + hi) // 2
        if _peek(reader, event_key(mid))["id"][0] < height:
            lo = mid + 1
        else:
            hi = mid
    return lo


def events(reader: Any, from_height: int = 0, after: int | None = None, limit: int = 100) -> list[dict]:
    """Events oldest first: those at `from_height` or later, or (with `after`, a seq)
    those after that one; at most `limit` (1..1000). A binary search plus point reads."""
    n = event_count(reader)
    start = after + 1 if after is not None else first_seq(reader, from_height, n)
    limit = max(1, min(limit, MAX_EVENTS_PAGE))
    return [reader.get(event_key(s)) for s in range(max(0, start), min(n, start + limit))]


def _id_text(event_id: list[int]) -> str:
    return "{}-{}-{}".format(*event_id)


def event_json(ev: Mapping) -> dict:
    """HTTP/Kafka view of an event: id as ``"height-index-n"``, tx id hex, the state key it is proven by."""
    h, i, n = ev["id"]
    return {"id": _id_text(ev["id"]), "seq": ev["seq"], "key": event_key(ev["seq"]), "height": h, "index": i,
            "n": n, "rule": ev["rule"], "version": ev["version"], "kind": ev["kind"], "rule_org": ev["rule_org"],
            "severity": ev["severity"], "message": ev["message"], "detail": ev["detail"], "time": ev["time"],
            "tx_id": ev["tx_id"].hex(), "submitter": ev["submitter"], "operation": dict(ev["operation"])}


def rule_json(rec: Mapping) -> dict:
    def pos(p: Any) -> dict | None:
        return None if p is None else {"height": p[0], "index": p[1]}

    return {**rec, "deployed": pos(rec["deployed"]), "retired": pos(rec["retired"])}
