"""Apache Kafka in KRaft combined mode (broker + controller), from its jars on Maven Central."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import shutil
import socket
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from sealstream._kafka_config import KafkaEndpoint, factory_principal, kafka_endpoint, kafka_secured
from sealstream._security import TLSFiles, pki_dir, write_private

from ._errors import MissingToolError
from .process import spawn
from ._service import Health, Service
from ._tools import require_tool, run_checked, tool_version

__all__ = ["Kafka", "KAFKA_POM", "BROKER_CERT", "SUPER_USERS", "broker_hosts"]

log = logging.getLogger("sealstream.stack")

KAFKA_DIR = Path(__file__).parent / "kafka"
KAFKA_POM = KAFKA_DIR / "pom.xml"

#: the broker's own certificate (server and client: it dials its controller listener too), CN = its principal
BROKER_CERT = "kafka-broker"


def broker_hosts(host: str) -> tuple[str, ...]:
    """The names the broker's certificate is valid for: the stack's host, loopback, and ``kafka``
    (its service name in infra/compose.yaml, where it dials its own listeners by that name)."""
    return tuple(dict.fromkeys([host, "127.0.0.1", "localhost", "kafka"]))
#: principals the authorizer lets do anything: the stack's admin and the broker itself
SUPER_USERS = ("admin", BROKER_CERT)
_FACTORY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _check_factory_name(factory: str) -> None:
    """ValueError unless `factory` is a valid factory name (it becomes a principal and file names)."""
    if not _FACTORY.match(factory):
        raise ValueError(f"bad factory name {factory!r}")


def _pinned(prop: str) -> str:
    match = re.search(rf"<{re.escape(prop)}>([^<]+)</", KAFKA_POM.read_text())
    if not match:  # pragma: no cover - the pom ships with the package
        raise RuntimeError(f"{prop} missing from {KAFKA_POM}")
    return match.group(1)


def new_cluster_id(random_uuid: Callable[[], uuid.UUID] = uuid.uuid4) -> str:
    """A KRaft cluster id: 16 random bytes in URL-safe base64 without padding.

    Like Kafka's own ``Uuid.randomUuid``, an id starting with ``-`` is drawn again:
    the storage tool's argument parser would read it as an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(random_uuid().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class Kafka(Service):
    name = "kafka"
    start_timeout = 120.0

    def __init__(self, settings, home):
        super().__init__(settings, home)
        self.kafka_version = _pinned("kafka.version")
        self.runtime_dir = self.cache / f"kafka-{self.kafka_version}"
        self.libs = self.runtime_dir / "libs"
        self.stdout_log = home / "logs" / "kafka.stdout.log"
        #: whose pki/ the broker's certificates and factories' principals live in (`stack_home`:
        #: a private broker of the tests shares the stack's CA)
        self.pki_home = Path(settings.stack_home).expanduser().resolve() if settings.stack_home else home

    def ports(self) -> list[tuple[int, str]]:
        s = self.settings
        return [
            (s.kafka_port, "SEALSTREAM_KAFKA_PORT"),
            (s.kafka_controller_port, "SEALSTREAM_KAFKA_CONTROLLER_PORT"),
            (s.kafka_metrics_port, "SEALSTREAM_KAFKA_METRICS_PORT"),
        ]

    def address(self) -> str:
        return self.settings.kafka_bootstrap

    def version(self) -> str:
        return self.kafka_version

    def describe(self) -> str:
        return f"KRaft combined mode, {len(self.settings_topics())} topics"

    def settings_topics(self) -> list[str]:
        from sealstream.settings import TOPICS

        return list(TOPICS)

    # -- install ----------------------------------------------------------------------
    def install(self) -> None:
        java = require_tool("java", service=self.name, package="openjdk-17-jre-headless",
                            hint="install OpenJDK 17 or newer (Debian: openjdk-17-jre-headless)",
                            auto_install=self.settings.auto_install)
        major = tool_version([java, "-version"], r'version "(\d+)')
        if major is not None and int(major) < 17:
            raise MissingToolError(
                f"Kafka {self.kafka_version} needs Java 17 or newer but `java` is Java {major}; "
                "install OpenJDK 17 (Debian: openjdk-17-jre-headless) and put it first on PATH.",
                service=self.name,
            )
        stamp = self.runtime_dir / "pom.sha256"
        pom_digest = hashlib.sha256(KAFKA_POM.read_bytes()).hexdigest()
        if self.libs.is_dir() and stamp.exists() and stamp.read_text().strip() == pom_digest:
            return
        mvn = require_tool("mvn", service=self.name, package="maven",
                           hint="install Apache Maven (Debian: maven) so the Kafka jars can be resolved",
                           auto_install=self.settings.auto_install)
        log.info("resolving Kafka %s from Maven Central", self.kafka_version, extra={"service": self.name})
        staging = self.runtime_dir.with_name(self.runtime_dir.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        run_checked(
            [mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(KAFKA_POM),
             "dependency:copy-dependencies", f"-DoutputDirectory={staging / 'libs'}"],
            service=self.name,
            what=f"Resolving Kafka {self.kafka_version} from Maven Central",
            fix="check access to Maven Central (or a mirror in ~/.m2/settings.xml) and run `sealstream stack up` again",
            log_path=self.home / "logs" / "install.log",
        )
        (staging / "pom.sha256").write_text(pom_digest + "\n")
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
        os.replace(staging, self.runtime_dir)

    # -- run ----------------------------------------------------------------------------
    def _listener_properties(self) -> list[str]:
        """Listeners: PLAINTEXT with security off; with it on, TLS only, every connection
        authenticated by its certificate (mutual TLS), the client listener and the controller's
        alike, the broker itself presenting `BROKER_CERT` (a super user) to its controller."""
        s = self.settings
        h = s.host
        if not kafka_secured(s):
            return [
                f"controller.quorum.voters=1@{h}:{s.kafka_controller_port}",
                f"listeners=PLAINTEXT://{h}:{s.kafka_port},CONTROLLER://{h}:{s.kafka_controller_port}",
                f"advertised.listeners=PLAINTEXT://{h}:{s.kafka_port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
            ]
        pki = pki_dir(self.pki_home)
        return [
            f"controller.quorum.voters=1@{h}:{s.kafka_controller_port}",
            f"listeners=SSL://{h}:{s.kafka_port},CONTROLLER://{h}:{s.kafka_controller_port}",
            f"advertised.listeners=SSL://{h}:{s.kafka_port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=SSL:SSL,CONTROLLER:SSL",
            "inter.broker.listener.name=SSL",
            # PEM key store (key + certificate, written by `launch`) and trust store (the stack CA)
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={self.conf_dir / 'broker-keystore.pem'}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={pki / 'ca.crt'}",
            "ssl.client.auth=required",
            "ssl.enabled.protocols=TLSv1.3,TLSv1.2",
            "ssl.endpoint.identification.algorithm=https",
            # subject "CN=<principal>,O=sealstream" -> User:<principal>; anything else keeps its DN
            "ssl.principal.mapping.rules=RULE:^CN=([^,]+),O=sealstream$/$1/,DEFAULT",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found=false",
            f"super.users={';'.join(f'User:{u}' for u in SUPER_USERS)}",
        ]

    def _server_properties(self) -> str:
        s = self.settings
        return "\n".join([
            "# generated by `sealstream stack up`; edit settings, not this file",
            "process.roles=broker,controller",
            "node.id=1",
            *self._listener_properties(),
            f"log.dirs={self.data_dir}",
            "auto.create.topics.enable=false",
            f"num.partitions={s.kafka_partitions}",
            f"message.max.bytes={s.kafka_max_message_bytes}",
            f"replica.fetch.max.bytes={max(s.kafka_video_max_message_bytes, s.kafka_max_message_bytes)}",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=10",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "log.retention.hours=168",
            "",
        ])

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            "java",
            "-Xms256m",
            f"-Xmx{self.settings.kafka_heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dkafka.log.dir={self.home / 'logs'}",
            f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.yaml'}",
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    def _ensure_broker_cert(self) -> None:
        """The broker's certificate (`Stack.ensure_pki` makes it at `stack up`; a private broker
        of the tests, started without `up`, makes it here)."""
        from .pki import CertSpec, StackPKI

        hosts = broker_hosts(self.settings.host)
        StackPKI(self.pki_home).ensure([CertSpec(name=BROKER_CERT, common_name=BROKER_CERT, hosts=hosts,
                                                 server=True, client=True)])

    def _write_keystore(self) -> None:
        """The broker's PEM key store: its key and certificate (`BROKER_CERT`) in one 0600 file."""
        pki = pki_dir(self.pki_home)
        data = (pki / f"{BROKER_CERT}.key").read_bytes() + (pki / f"{BROKER_CERT}.crt").read_bytes()
        path = self.conf_dir / "broker-keystore.pem"
        if not path.exists() or path.read_bytes() != data:
            write_private(path, data)

    def launch(self) -> None:
        props = self.conf_dir / "server.properties"
        if kafka_secured(self.settings):
            self._ensure_broker_cert()
            self._write_keystore()
        self.write_if_changed(props, self._server_properties())
        if not (self.data_dir / "meta.properties").exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            cluster_id = new_cluster_id()
            run_checked(
                self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)),
                service=self.name,
                what="Formatting Kafka's KRaft storage",
                fix=f"remove {self.data_dir} if it holds a broken earlier attempt and run `sealstream stack up` again",
                log_path=self.stdout_log,
                timeout=120,
            )
        agent = next(self.libs.glob("jmx_prometheus_javaagent-*.jar"))
        argv = self._java("kafka.Kafka", str(props))
        argv.insert(1, f"-javaagent:{agent}={self.settings.host}:{self.settings.kafka_metrics_port}:"
                       f"{KAFKA_DIR / 'jmx-exporter.yaml'}")
        # The data dir in argv is the pid file's marker (see PidFile).
        argv.insert(1, f"-Dsealstream.data={self.data_dir}")
        proc = spawn(argv, log_path=self.stdout_log)
        self.pidfile.write(proc.pid)

    def _exited_message(self) -> str:
        return (f"kafka exited right after starting; see `sealstream stack logs kafka` "
                f"and {self.stdout_log} for why.")

    def health(self) -> Health:
        s = self.settings
        try:
            with socket.create_connection((s.host, s.kafka_port), timeout=1.0):
                pass
        except OSError as exc:
            return Health(False, f"broker port closed ({exc.strerror or exc})")
        admin = self._admin()
        try:
            cluster = admin.describe_cluster()
            return Health(True, f"cluster {cluster.get('cluster_id')}")
        finally:
            admin.close()

    def security(self) -> str:
        if not kafka_secured(self.settings):
            return super().security()
        return "TLS (mutual), certificate principals, ACLs"

    def endpoint(self, principal: str = "admin") -> KafkaEndpoint:
        """How `principal` reaches this broker (the stack itself is ``admin``)."""
        return kafka_endpoint(self.settings, principal)

    def _admin(self):
        from kafka.admin import KafkaAdminClient

        return KafkaAdminClient(**self.endpoint().kafka_python(client_id="sealstream-stack",
                                                                request_timeout_ms=10_000))

    def provision(self) -> None:
        """Create the project's topics (auto-create is off) and keep their size limits current."""
        from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

        s = self.settings
        admin = self._admin()
        try:
            existing = set(admin.list_topics())
            missing = [
                NewTopic(t, num_partitions=s.topic_partitions(t), replication_factor=1,
                         topic_configs=s.topic_configs(t))
                for t in self.settings_topics() if t not in existing
            ]
            if missing:
                log.info("creating topics %s", [t.name for t in missing], extra={"service": self.name})
                admin.create_topics(missing, timeout_ms=30_000)
            present = [t for t in self.settings_topics() if t in existing]
            if present:
                admin.alter_configs([
                    ConfigResource(ConfigResourceType.TOPIC, t, configs=s.topic_configs(t)) for t in present
                ])
        finally:
            admin.close()
        if kafka_secured(s):
            self.provision_acls()

    # -- principals and ACLs (security on) -----------------------------------------------
    def provision_acls(self, factories: list[str] | None = None) -> None:
        """The ACLs of every job (`infra.kafka_acls.plan`) for the pipeline group prefix and the
        factories the stack issued certificates for (plus `factories`), idempotently; a revoked
        factory's principal is managed too, so whatever ACL it still holds is deleted."""
        from .kafka_acls import MANAGED, apply, known_factories, plan, revoked_factories

        revoked = revoked_factories(self.pki_home)
        names = sorted({*known_factories(self.pki_home), *(factories or [])} - set(revoked))
        wanted = plan(self.settings.pipeline_app_id, names)
        apply(self.endpoint(), wanted, [*MANAGED, *(factory_principal(n) for n in [*names, *revoked])])

    def ensure_factory(self, factory: str) -> TLSFiles:
        """A factory's Kafka principal ``factory-<name>``: its client certificate (made once, under
        <home>/pki) and, with security on, its ACLs (produce to the raw topics only)."""
        from .kafka_acls import revoked_factories
        from .pki import StackPKI, client_spec

        _check_factory_name(factory)
        gone = revoked_factories(self.pki_home).get(factory)
        if gone is not None:
            raise ValueError(f"factory {factory!r} was revoked at {gone['revoked_at']}: a revoked principal is not "
                             "enrolled again; enrol the factory under a new name")
        files = StackPKI(self.pki_home).ensure([client_spec(factory_principal(factory))])
        if kafka_secured(self.settings):
            self.provision_acls([factory])
        return next(iter(files.values()))

    def revoke_factory(self, factory: str) -> dict:
        """Revoke factory `factory`'s Kafka principal: recorded as revoked (never enrolled again under
        that name), its certificate and key moved to ``<pki>/revoked/``, and, with security on, every
        ACL of ``User:factory-<name>`` deleted at once. The broker still completes a TLS handshake
        with the old certificate (no CRL: issue 17's note), but the authorizer refuses each of its
        requests, on open connections too, since every request is authorised against the ACLs.
        Returns what was done."""
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        from .kafka_acls import record_revocation, revoked_factories

        _check_factory_name(factory)
        principal = factory_principal(factory)
        d = pki_dir(self.pki_home)
        cert = d / f"client-{principal}.crt"
        if factory in revoked_factories(self.pki_home):
            raise ValueError(f"factory {factory!r} is already revoked")
        if not cert.exists():
            raise ValueError(f"factory {factory!r} was never enrolled here (no {cert.name} under {d})")
        der = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(Encoding.DER)
        fingerprint = hashlib.sha256(der).hexdigest()
        when = datetime.now(timezone.utc).isoformat(timespec="seconds")
        record_revocation(self.pki_home, factory, fingerprint, when)
        (d / "revoked").mkdir(mode=0o700, exist_ok=True)
        for f in (cert, cert.with_suffix(".key")):
            if f.exists():
                f.replace(d / "revoked" / f"{f.stem}-{when.replace(':', '')}{f.suffix}")
        acls = kafka_secured(self.settings)
        if acls:
            self.provision_acls()
        log.warning("factory %s revoked: principal User:%s has no ACL", factory, principal,
                    extra={"service": self.name})
        return {"factory": factory, "principal": principal, "revoked_at": when, "cert_sha256": fingerprint,
                "acls_deleted": acls}

    def factories(self) -> dict[str, list]:
        """Enrolled and revoked factories of this stack."""
        from .kafka_acls import known_factories, revoked_factories

        return {"enrolled": known_factories(self.pki_home),
                "revoked": [{"factory": n, **v} for n, v in sorted(revoked_factories(self.pki_home).items())]}
