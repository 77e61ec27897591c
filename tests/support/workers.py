"""`WorkerProc`: one ``sealstream pipeline worker`` subprocess on the services of a `Settings`.

Built on `infra.process.Child` (the harness the demo and the benchmarks use too): its own
session, output appended to ``log``, ``stop`` is SIGTERM (a clean group leave) then SIGKILL,
``kill`` is the crash, ``check`` raises with the log's tail once the worker is gone.

Two directories of keys, two constructors:

- `WorkerProc.manifest` trusts the factory manifests given (``--directory manifest``); anchoring on
  unless ``args`` say ``--no-anchor``.
- `WorkerProc.ledger` resolves devices and gateways on the ledger in the worker's home
  (``--directory ledger``), with a one-second directory cache so revocations show quickly.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterable, Mapping

from infra.process import Child, free_ports, sealstream_command

__all__ = ["WorkerProc", "metric_total"]

#: the gateway a worker seals as when a test does not name one
GATEWAY = "gw-resilience"


def metric_total(text: str, name: str) -> float:
    """Sum of every sample of metric `name` (all label sets) in a /metrics page."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


class WorkerProc(Child):
    """``sealstream pipeline worker --app-id APP_ID`` with a free metrics port (see module doc)."""

    def __init__(self, settings, app_id: str, log: Path, *, directory: str, env: Mapping[str, str],
                 args: Iterable[str] = ()) -> None:
        port = free_ports(1)[0]
        full = {"SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap,
                "SEALSTREAM_PIPELINE_SESSION_TIMEOUT_S": "6", **env}
        argv = ["pipeline", "worker", "--app-id", app_id, "--directory", directory,
                "--loglevel", os.environ.get("SS_TEST_WORKER_LOGLEVEL", "warn"), *args]
        argv, full = sealstream_command(argv, home=settings.home, env=full, metrics_port=port)
        super().__init__("pipeline worker", argv, log_path=log, env=full, metrics_port=port)

    @classmethod
    def manifest(cls, settings, app_id: str, factories: str | Iterable[str], log: Path,
                 gateway: str = GATEWAY, *, env: Mapping[str, str] | None = None,
                 args: Iterable[str] = ()) -> WorkerProc:
        """A worker trusting the manifests of ``factories`` (one name or several)."""
        names = [factories] if isinstance(factories, str) else list(factories)
        flags = [a for f in names for a in ("--factory", f)]
        full = {"SEALSTREAM_MINIO_ENDPOINT": settings.minio_address, "SEALSTREAM_PG_DSN": settings.postgres_dsn,
                "SEALSTREAM_PIPELINE_GATEWAY": gateway, "SEALSTREAM_PIPELINE_ANCHOR_WINDOW_S": "1", **(env or {})}
        return cls(settings, app_id, log, directory="manifest", env=full, args=[*flags, *args])

    @classmethod
    def ledger(cls, settings, app_id: str, gateway: str, log: Path, *, extra_env: Mapping[str, str] | None = None,
               args: Iterable[str] = ()) -> WorkerProc:
        """A worker resolving keys on the ledger in ``settings.home`` (anchoring on unless ``args`` say not)."""
        full = {"SEALSTREAM_PIPELINE_GATEWAY": gateway, "SEALSTREAM_PIPELINE_DIRECTORY_TTL_S": "1",
                "SEALSTREAM_PIPELINE_ANCHOR_WINDOW_S": "1", **(extra_env or {})}
        return cls(settings, app_id, log, directory="ledger", env=full, args=args)

    @property
    def port(self) -> int:
        assert self.metrics_port is not None
        return self.metrics_port

    def check(self) -> None:
        """AssertionError with the log's tail when the worker exited."""
        if not self.alive():
            raise AssertionError(f"worker exited {self.returncode}:\n{self.tail(4000)}")

    def metric(self, name: str) -> float:
        """The value of an unlabelled sample `name` (0 if absent)."""
        for line in self.metrics().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0

    def ingested(self) -> float:
        """Records this worker stored and sealed so far (0 while its /metrics is not up yet)."""
        try:
            return metric_total(self.metrics(), "sealstream_pipeline_ingested_total")
        except OSError:
            return 0.0

    def wait_ingesting(self, timeout: float = 90.0) -> float:
        """Until this worker has stored a record (it joined the group and got partitions)."""
        deadline = time.monotonic() + timeout
        while (n := self.ingested()) == 0:
            if not self.alive() or time.monotonic() > deadline:
                raise AssertionError(f"worker stored nothing (alive: {self.alive()}):\n{self.tail()}")
            time.sleep(0.5)
        return n
