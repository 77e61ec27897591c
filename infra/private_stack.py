"""A private Kafka, MinIO and/or PostgreSQL beside the stack: for tests that kill, stop or restart
them, and for the benchmarks, whose drains must see only their own records (and whose security
on/off comparison runs every service of each mode privately).

The shared stack (Kafka :9092, MinIO :9000) is used by every other test and
helper, so a test that takes a broker or the object store away starts its own
instance with the project's own service classes (`infra.Kafka`, `infra.MinIO`)
under a private home, on free ports, with its own data directory; PostgreSQL
stays the shared one unless ``postgres=True`` (a private cluster, migrated by
its provisioning; the home must be reachable by PostgreSQL's OS user when we are
root: not under pytest's 0700 tmp_path). The binaries/jars come from the shared
cache, so starting takes seconds. With security on, the private services serve
the CA and secrets of the base's stack (`Settings.stack_dir`), so the stack's
clients reach them as themselves.

    with PrivateStack(tmp_path / "stack", kafka=True, minio=False, base=settings) as ps:
        ps.settings            # Settings pointing at the private Kafka (and shared MinIO/PostgreSQL)
        ps.kill("kafka")       # SIGKILL, like a crash
        ps.start("kafka")      # relaunch on the same data dir and ports, wait healthy, re-provision
        ps.stop("minio")       # graceful stop (SIGTERM)
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from typing import Optional

from sealstream._kafka_config import kafka_endpoint
from sealstream.settings import Settings, load_settings

from ._errors import ServiceFailedError
from ._service import Service
from .process import free_ports, port_is_free, wait_until
from .stack import Stack

__all__ = ["PrivateStack"]


class PrivateStack:
    """Own Kafka, MinIO and/or PostgreSQL on free ports under `home`; the others come from `base`."""

    def __init__(self, home: Path, *, base: Settings, kafka: bool = True, minio: bool = False,
                 postgres: bool = False) -> None:
        self.home = Path(home).resolve()
        ports = free_ports(6)
        overrides: dict = dict(home=self.home, cache_dir=base.cache_dir, pg_dsn=base.postgres_dsn,
                               kafka_bootstrap_servers=base.kafka_bootstrap, minio_endpoint=base.minio_address,
                               kafka_heap="512m", security=base.security, kafka_security=base.kafka_security,
                               stack_home=base.stack_dir.resolve())
        if kafka:
            overrides.update(kafka_port=ports[0], kafka_controller_port=ports[1], kafka_metrics_port=ports[2],
                             kafka_bootstrap_servers=f"{base.host}:{ports[0]}")
        if minio:
            overrides.update(minio_port=ports[3], minio_console_port=ports[4],
                             minio_endpoint=f"{base.host}:{ports[3]}")
        if postgres:  # the DSN from host:pg_port (with security: TLS, the admin's secret of stack_dir)
            overrides.update(pg_port=ports[5], pg_dsn=None)
        self.settings = load_settings(**overrides)
        stack = Stack(self.settings)  # only its service objects: never `up`/`down` (that would start PostgreSQL)
        self.services: dict[str, Service] = {}
        if kafka:
            self.services["kafka"] = stack.kafka
        if minio:
            self.services["minio"] = stack.minio
        if postgres:
            self.services["postgres"] = stack.postgres

    def __enter__(self) -> "PrivateStack":
        try:
            for name in self.services:
                self.start(name)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ensure_factory(self, factory: str) -> None:
        """A factory's Kafka principal on the private broker (certificate from the shared CA, its ACLs)."""
        self.services["kafka"].ensure_factory(factory)  # type: ignore[attr-defined]

    def service(self, name: str) -> Service:
        return self.services[name]

    def pid(self, name: str) -> Optional[int]:
        return self.services[name].running_pid()

    def start(self, name: str) -> None:
        """Launch `name` (same ports and data), wait until healthy, create topics/bucket if missing."""
        svc = self.services[name]
        if svc.running_pid() is None:
            for sub in ("data", "logs", "run", "conf"):
                (self.home / sub).mkdir(parents=True, exist_ok=True)
            svc.check_ports()
            svc.install()
            svc.launch()
        svc.wait_healthy()
        svc.provision()
        if name == "kafka":
            self._wait_leaders()

    def _wait_leaders(self, timeout: float = 60.0) -> None:
        """Until every partition of the project's topics has a leader that answers (fresh or recovering log)."""
        from confluent_kafka import Consumer, TopicPartition

        from sealstream.settings import TOPICS

        c = Consumer(kafka_endpoint(self.settings, "admin").confluent({"group.id": "private-stack-probe"}))

        def ready() -> bool:
            md = c.list_topics(timeout=5)
            for t in TOPICS:
                parts = md.topics[t].partitions
                if md.topics[t].error is not None or not parts:
                    return False
                for p in parts:
                    c.get_watermark_offsets(TopicPartition(t, p), timeout=5)
            return True

        try:
            if not wait_until(ready, timeout, interval=0.5):
                raise ServiceFailedError(f"private Kafka topics have no leaders after {timeout:.0f} s", service="kafka")
        finally:
            c.close()

    def kill(self, name: str) -> None:
        """SIGKILL `name` (a crash: no clean shutdown) and wait until it is gone."""
        svc = self.services[name]
        pid = svc.running_pid()
        if pid is None:
            raise ServiceFailedError(f"private {name} is not running", service=name)
        os.kill(pid, signal.SIGKILL)
        if not wait_until(lambda: svc.running_pid() is None, 30):
            raise ServiceFailedError(f"private {name} (pid {pid}) survived SIGKILL", service=name)
        self._wait_ports_free(svc)

    def stop(self, name: str) -> None:
        """Stop `name` cleanly (SIGTERM, SIGKILL after 30 s)."""
        svc = self.services[name]
        svc.stop()
        self._wait_ports_free(svc)

    @staticmethod
    def _wait_ports_free(svc: Service) -> None:
        host = svc.settings.host
        wait_until(lambda: all(port_is_free(host, p) for p, _ in svc.ports()), 30)

    def close(self) -> None:
        """Stop every private service and remove the private home."""
        for name, svc in self.services.items():
            try:
                if name == "postgres":
                    svc.stop()  # pg_ctl stop -m fast: the postmaster's own pid file
                else:
                    svc.pidfile.stop(timeout=10)
            except Exception:  # noqa: BLE001 - teardown must reach every service
                pid = svc.running_pid()
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.home, ignore_errors=True)
