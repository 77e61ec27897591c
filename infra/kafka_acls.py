"""Kafka ACLs of the stack's principals, by job (issue 17): the plan (pure) and applying it.

Every principal is ``User:<name>`` (the CN of its certificate, see `infra.kafka`); the admin
principal and the broker are super users and get no ACL. `plan` is the whole list; `apply`
creates what is missing and deletes what a managed principal holds beyond it, so running it again
(`stack up`, `stack provision`) changes nothing, and a renamed group prefix leaves no old right.

Kafka's model names are used throughout: resource types ``TOPIC``, ``GROUP``, ``CLUSTER``,
``TRANSACTIONAL_ID``; pattern types ``LITERAL``, ``PREFIXED``; operations ``READ``, ``WRITE``,
``CREATE``, ``DESCRIBE``, ``IDEMPOTENT_WRITE``. docs/pipeline.md has the table.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sealstream._kafka_config import KafkaEndpoint, factory_principal
from sealstream._security import pki_dir
from sealstream.topics import ALERTS, ANCHORS, DEADLETTER, RAW as RAW_TOPICS, SEALED

__all__ = ["Acl", "plan", "apply", "known_factories", "revoked_factories", "record_revocation",
           "VERIFIER_GROUP_PREFIX", "MANAGED"]

log = logging.getLogger("sealstream.stack")

#: Faust app id (= consumer group) prefix of the verifier agent (`sealstream pipeline verifier --app-id`)
VERIFIER_GROUP_PREFIX = "sealstream-verifier"
#: principals whose ACLs `apply` owns (factories too); admin is a super user
MANAGED = ("pipeline", "verifier", "alerts", "analyst", "grafana")

RAW = RAW_TOPICS


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW entry: `principal` (without ``User:``) may `operation` on `resource` `name`
    matched `pattern` (``LITERAL`` or ``PREFIXED``), from any host."""

    principal: str
    resource: str
    name: str
    pattern: str
    operation: str


def _topic(p: str, name: str, *ops: str, pattern: str = "LITERAL") -> list[Acl]:
    return [Acl(p, "TOPIC", name, pattern, op) for op in ops]


def _group(p: str, prefix: str) -> list[Acl]:
    return [Acl(p, "GROUP", prefix, "PREFIXED", "READ")]  # READ implies DESCRIBE


def _txid(p: str, prefix: str) -> list[Acl]:
    return [Acl(p, "TRANSACTIONAL_ID", prefix, "PREFIXED", op) for op in ("WRITE", "DESCRIBE")]


def _idempotent(p: str) -> list[Acl]:
    return [Acl(p, "CLUSTER", "kafka-cluster", "LITERAL", "IDEMPOTENT_WRITE")]


def plan(pipeline_app_id: str, factories: Iterable[str] = ()) -> list[Acl]:
    """Every ACL of the stack: by job, for the pipeline group prefix `pipeline_app_id` and
    the `factories` (names, principal ``factory-<name>``)."""
    out: list[Acl] = []
    # pipeline workers: read raw, write sealed/deadletter/anchors; read sealed (the anchor agent)
    # and deadletter (the dead-letter gate's look-up); their groups, Faust's own topics
    # (<app id>-__assignor-__leader, changelogs), transactional ids (Faust exactly-once).
    p = "pipeline"
    for t in RAW:
        out += _topic(p, t, "READ", "DESCRIBE")
    out += _topic(p, SEALED, "READ", "WRITE", "DESCRIBE")
    out += _topic(p, DEADLETTER, "READ", "WRITE", "DESCRIBE")
    out += _topic(p, ANCHORS, "WRITE", "DESCRIBE")
    out += _topic(p, pipeline_app_id, "CREATE", "READ", "WRITE", "DESCRIBE", pattern="PREFIXED")
    out += _group(p, pipeline_app_id) + _group(p, "sealstream-dlq-lookup-")
    out += _txid(p, pipeline_app_id) + _idempotent(p)
    # the verifier agent: read anchors, write (and look up) alerts through its outbox relay
    v = "verifier"
    out += _topic(v, ANCHORS, "READ", "DESCRIBE")
    out += _topic(v, ALERTS, "READ", "WRITE", "DESCRIBE")
    out += _topic(v, VERIFIER_GROUP_PREFIX, "CREATE", "READ", "WRITE", "DESCRIBE", pattern="PREFIXED")
    out += _group(v, VERIFIER_GROUP_PREFIX) + _group(v, "sealstream-outbox-lookup-")
    out += _txid(v, "sealstream-outbox-") + _idempotent(v)
    # the alerts bridge: write iiot.alerts in transactions; read it back to resume after its last seq
    a = "alerts"
    out += _topic(a, ALERTS, "READ", "WRITE", "DESCRIBE")
    out += _group(a, "sealstream-alerts-resume-")
    out += _txid(a, "sealstream-alerts-") + _idempotent(a)
    # a factory: produce to the raw topics, nothing else (no READ of any topic, no group)
    for name in sorted(set(factories)):
        f = factory_principal(name)
        for t in RAW:
            out += _topic(f, t, "WRITE", "DESCRIBE")
        out += _idempotent(f)
    return sorted(set(out))


def known_factories(home: Path) -> list[str]:
    """Factories the stack issued a Kafka certificate for (``client-factory-<name>.crt``) and has
    not revoked."""
    revoked = revoked_factories(home)
    return sorted(n for n in (c.name[len("client-factory-"):-len(".crt")]
                              for c in pki_dir(home).glob("client-factory-*.crt")) if n not in revoked)


def _revocations_path(home: Path) -> Path:
    return pki_dir(home) / "revoked-factories.json"


def revoked_factories(home: Path) -> dict[str, dict]:
    """Revoked factories: name -> {"revoked_at": ISO time, "cert_sha256": hex of the DER certificate
    that was in force}. Their principals keep no ACL, whatever certificate they still hold."""
    path = _revocations_path(home)
    if not path.exists():
        return {}
    doc = json.loads(path.read_text())
    return dict(doc.get("factories", {}))


def record_revocation(home: Path, name: str, cert_sha256: str, revoked_at: str) -> None:
    """Add `name` to the revoked factories (0600, atomically)."""
    from sealstream._security import write_private

    doc = {"factories": {**revoked_factories(home), name: {"revoked_at": revoked_at, "cert_sha256": cert_sha256}}}
    write_private(_revocations_path(home), (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())


def _binding(acl: Acl):
    from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType

    # confluent-kafka calls Kafka's CLUSTER resource type BROKER
    restype = ResourceType.BROKER if acl.resource == "CLUSTER" else ResourceType[acl.resource]
    return AclBinding(restype, acl.name, ResourcePatternType[acl.pattern], f"User:{acl.principal}",
                      "*", AclOperation[acl.operation], AclPermissionType.ALLOW)


def _from_binding(b) -> Acl | None:
    if b.permission_type.name != "ALLOW" or b.host != "*" or not b.principal.startswith("User:"):
        return None
    restype = "CLUSTER" if b.restype.name == "BROKER" else b.restype.name
    return Acl(b.principal[len("User:"):], restype, b.name, b.resource_pattern_type.name, b.operation.name)


def current(endpoint: KafkaEndpoint, timeout: float = 30.0) -> list:
    """Every ACL binding the cluster holds (confluent-kafka `AclBinding`s)."""
    from confluent_kafka.admin import (AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
                                       ResourcePatternType, ResourceType)

    admin = AdminClient(endpoint.confluent({"log_level": 4}))
    flt = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                           AclPermissionType.ANY)
    return list(admin.describe_acls(flt, request_timeout=timeout).result(timeout))


def apply(endpoint: KafkaEndpoint, wanted: list[Acl], managed: Iterable[str], timeout: float = 30.0
          ) -> tuple[list[Acl], list[Acl]]:
    """Make the ACLs of the `managed` principals exactly `wanted` (as the admin `endpoint`):
    (created, deleted)."""
    from confluent_kafka.admin import AclBindingFilter, AdminClient

    admin = AdminClient(endpoint.confluent({"log_level": 4}))
    have_bindings = current(endpoint, timeout)
    have = {a for a in map(_from_binding, have_bindings) if a is not None}
    managed = set(managed)
    create = sorted(set(wanted) - have)
    delete = sorted(a for a in have - set(wanted) if a.principal in managed)
    if create:
        for fut in admin.create_acls([_binding(a) for a in create], request_timeout=timeout).values():
            fut.result(timeout)
        log.info("kafka ACLs created: %d", len(create), extra={"service": "kafka"})
    if delete:
        filters = []
        for a in delete:
            b = _binding(a)
            filters.append(AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal, b.host,
                                            b.operation, b.permission_type))
        for fut in admin.delete_acls(filters, request_timeout=timeout).values():
            fut.result(timeout)
        log.info("kafka ACLs deleted: %d", len(delete), extra={"service": "kafka"})
    return create, delete
