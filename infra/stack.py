"""The local stack: Kafka, MinIO, PostgreSQL and Prometheus under one state directory."""

from __future__ import annotations

import fcntl
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sealstream._kafka_config import factory_principal
from sealstream._security import PRINCIPALS, TLSFiles, new_secret, secret_path, write_private
from sealstream.settings import Settings, load_settings

from ._errors import ServiceFailedError, StackError
from ._service import Service, ServiceStatus
from .kafka import BROKER_CERT, Kafka, broker_hosts
from .kafka_acls import known_factories
from .minio import MinIO
from .pki import CertSpec, StackPKI, client_spec, server_spec
from .postgres import PostgreSQL
from .prometheus import Prometheus

__all__ = ["Stack"]

log = logging.getLogger("sealstream.stack")

Progress = Callable[[str], None]


class Stack:
    """Install, start, check and stop the stack's services; ``up`` is idempotent."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self.home = self.settings.home.expanduser().resolve()
        self.postgres = PostgreSQL(self.settings, self.home)
        self.minio = MinIO(self.settings, self.home)
        self.kafka = Kafka(self.settings, self.home)
        self.prometheus = Prometheus(self.settings, self.home)
        #: start order; ``down`` stops in reverse
        self.services: list[Service] = [self.postgres, self.minio, self.kafka, self.prometheus]

    def service(self, name: str) -> Service:
        for svc in self.services:
            if svc.name == name:
                return svc
        names = ", ".join(s.name for s in self.services)
        raise StackError(f"There is no service named {name!r}; choose one of {names}.")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        lock_path = self.home / "run" / "stack.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def up(self, progress: Progress | None = None) -> list[ServiceStatus]:
        """Install what is missing, start what is stopped, wait until all are healthy."""
        say = progress or (lambda _msg: None)
        started_at = time.monotonic()
        with self._locked():
            for sub in ("data", "logs", "run", "conf"):
                (self.home / sub).mkdir(parents=True, exist_ok=True)
            say("certificates and secrets (made once, renewed before expiry)")
            self.ensure_pki()
            stopped = [svc for svc in self.services if svc.running_pid() is None]
            # Every problem we can see before touching anything is reported first.
            for svc in stopped:
                svc.check_ports()
            for svc in stopped:
                say(f"installing {svc.name} (cached after the first run)")
                svc.install()
            for svc in stopped:
                say(f"starting {svc.name}")
                svc.launch()
            for svc in self.services:
                say(f"waiting for {svc.name}")
                svc.wait_healthy()
                say(f"provisioning {svc.name}")
                svc.provision()
            if self.prometheus not in stopped:
                self.prometheus.refresh()
            elapsed = time.monotonic() - started_at
            self._record({"up_seconds": round(elapsed, 2), "started": [s.name for s in stopped]})
            log.info("stack up in %.1f s", elapsed, extra={"started": [s.name for s in stopped]})
        return self.status()

    def ensure_pki(self) -> dict[str, TLSFiles]:
        """The stack CA, a server certificate per service (for the names clients dial) and a client
        certificate per principal (`sealstream._security.PRINCIPALS`); see `infra.pki`."""
        hosts = [self.settings.host, "127.0.0.1", "localhost"]
        # each also by its compose service name (infra/compose.yaml); Kafka's is BROKER_CERT below
        specs = [server_spec(name, [*hosts, name]) for name in ("postgres", "minio")]
        specs += [client_spec(p) for p in PRINCIPALS]
        # Kafka (issue 17): the broker's own certificate, server and client (it dials its
        # controller listener with it), and each factory's principal the stack already knows.
        specs.append(CertSpec(name=BROKER_CERT, common_name=BROKER_CERT, hosts=broker_hosts(self.settings.host),
                              server=True, client=True))
        specs += [client_spec(factory_principal(f)) for f in known_factories(self.home)]
        return StackPKI(self.home).ensure(specs)

    #: secrets a containerised stack (infra/compose.yaml) needs before its services start
    COMPOSE_SECRETS = ("pg_admin_password", "pg_grafana_password", "minio_root_password", "grafana_admin_password")

    def ensure_certs(self) -> dict[str, Path]:
        """What services started by others (infra/compose.yaml, a remote cluster) need from this
        state directory before they start: the PKI of `ensure_pki`, the broker's PEM key store
        (``pki/kafka-broker.pem``: key then certificate, the form Kafka's ``ssl.keystore.type=PEM``
        reads) and the secrets of `COMPOSE_SECRETS`. Idempotent; returns the files by name."""
        files = self.ensure_pki()
        out: dict[str, Path] = {"ca": files[BROKER_CERT].ca}
        for name, f in files.items():
            if f.cert is not None:
                out[name] = f.cert
        broker = files[BROKER_CERT]
        assert broker.key is not None and broker.cert is not None
        keystore = broker.cert.with_name(f"{BROKER_CERT}.pem")
        data = broker.key.read_bytes() + broker.cert.read_bytes()
        if not keystore.exists() or keystore.read_bytes() != data:
            write_private(keystore, data)
        out[f"{BROKER_CERT}-keystore"] = keystore
        for name in self.COMPOSE_SECRETS:
            new_secret(self.home, name)
            out[name] = secret_path(self.home, name)
        return out

    def ensure_factory(self, factory: str) -> TLSFiles:
        """A factory's Kafka principal (certificate, and ACLs when security is on); see
        `infra.kafka.Kafka.ensure_factory`."""
        return self.kafka.ensure_factory(factory)

    def revoke_factory(self, factory: str) -> dict:
        """Revoke a factory's Kafka principal (`infra.kafka.Kafka.revoke_factory`)."""
        return self.kafka.revoke_factory(factory)

    def factories(self) -> dict[str, list]:
        """The factories enrolled and revoked on this stack's Kafka."""
        return self.kafka.factories()

    def provision(self, progress: Progress | None = None) -> None:
        """Create topics, bucket and database on already-running services (local or remote)."""
        say = progress or (lambda _msg: None)
        for svc in self.services:
            say(f"provisioning {svc.name} at {svc.address()}")
            health = svc.health()
            if not health.ok:
                raise ServiceFailedError(f"{svc.name} at {svc.address()} is not healthy ({health.detail}); "
                                         "start it, or point the SEALSTREAM_* settings at a running one.",
                                         service=svc.name)
            svc.provision()

    def down(self, progress: Progress | None = None) -> list[str]:
        """Stop, cleanly and in reverse order, only the processes this stack started."""
        say = progress or (lambda _msg: None)
        stopped: list[str] = []
        with self._locked():
            for svc in reversed(self.services):
                if svc.running_pid() is not None:
                    say(f"stopping {svc.name}")
                if svc.stop():
                    stopped.append(svc.name)
        log.info("stack down", extra={"stopped": stopped})
        return stopped

    def status(self) -> list[ServiceStatus]:
        return [svc.status() for svc in self.services]

    def healthy(self) -> bool:
        return all(s.state == "running" for s in self.status())

    def _record(self, facts: dict[str, object]) -> None:
        path = self.home / "stack.json"
        data = {**facts, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "settings": self.settings.public_dict()}
        path.write_text(json.dumps(data, indent=2, default=str))

    def log_path(self, name: str) -> Path:
        return self.service(name).log_path
