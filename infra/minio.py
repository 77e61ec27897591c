"""MinIO object store, built from source with ``go install`` (the binary is cached)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

from ._errors import MissingToolError
from ._process import spawn
from ._service import Health, Service, http_get
from ._tools import require_tool, run_checked, tool_version

__all__ = ["MinIO", "MINIO_MODULE", "MINIO_VERSION"]

log = logging.getLogger("sealstream.stack")

MINIO_MODULE = "github.com/minio/minio"
#: The community edition ships as source only; this is the pinned module version.
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
#: minio's go.mod asks for this Go version or newer.
MIN_GO = (1, 24)


class MinIO(Service):
    name = "minio"

    def __init__(self, settings, home):
        super().__init__(settings, home)
        self.binary = self.cache / "minio" / MINIO_VERSION / "minio"

    def ports(self) -> list[tuple[int, str]]:
        return [
            (self.settings.minio_port, "SEALSTREAM_MINIO_PORT"),
            (self.settings.minio_console_port, "SEALSTREAM_MINIO_CONSOLE_PORT"),
        ]

    def address(self) -> str:
        return self.settings.minio_address

    def version(self) -> str:
        return MINIO_VERSION

    def describe(self) -> str:
        return f"bucket {self.settings.minio_bucket}"

    def install(self) -> None:
        if self.binary.exists():
            return
        go = require_tool("go", service=self.name, package=None,
                          hint="install Go 1.24 or newer (go.dev/dl) to build MinIO from source",
                          auto_install=self.settings.auto_install)
        found = tool_version([go, "env", "GOVERSION"], r"go(\d+\.\d+)")
        if found is None or tuple(int(p) for p in found.split(".")) < MIN_GO:
            raise MissingToolError(
                f"Building MinIO needs Go {MIN_GO[0]}.{MIN_GO[1]} or newer but `go` is {found or 'unknown'}; "
                "install a newer Go and put it first on PATH.",
                service=self.name,
            )
        log.info("building MinIO %s with go install (a few minutes, once)", MINIO_VERSION,
                 extra={"service": self.name})
        self.binary.parent.mkdir(parents=True, exist_ok=True)
        staging = tempfile.mkdtemp(prefix="gobin-", dir=self.binary.parent)
        env = dict(os.environ, GOBIN=staging, GOTOOLCHAIN="local", CGO_ENABLED="0")
        try:
            run_checked(
                [go, "install", "-trimpath", f"{MINIO_MODULE}@{MINIO_VERSION}"],
                service=self.name,
                what=f"Building MinIO ({MINIO_MODULE}@{MINIO_VERSION}) with go install",
                fix="check access to the Go module proxy (GOPROXY) and run `sealstream stack up` again",
                log_path=self.home / "logs" / "install.log",
                env=env,
            )
            os.replace(os.path.join(staging, "minio"), self.binary)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def launch(self) -> None:
        s = self.settings
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(
            os.environ,
            MINIO_ROOT_USER=s.minio_root_user,
            MINIO_ROOT_PASSWORD=s.minio_root_password,
            MINIO_PROMETHEUS_AUTH_TYPE="public",
            MINIO_UPDATE="off",
            MINIO_CALLHOME_ENABLE="off",
        )
        proc = spawn(
            [str(self.binary), "server", "--quiet", "--anonymous",
             "--address", f"{s.host}:{s.minio_port}",
             "--console-address", f"{s.host}:{s.minio_console_port}",
             str(self.data_dir)],
            log_path=self.log_path,
            env=env,
        )
        self.pidfile.write(proc.pid)

    def health(self) -> Health:
        status, _ = http_get(f"http://{self.settings.minio_address}/minio/health/ready")
        return Health(status == 200, "" if status == 200 else f"health endpoint answered {status}")

    def client(self):
        from minio import Minio

        s = self.settings
        return Minio(s.minio_address, access_key=s.minio_root_user, secret_key=s.minio_root_password,
                     secure=s.minio_secure)

    def provision(self) -> None:
        client = self.client()
        bucket = self.settings.minio_bucket
        if not client.bucket_exists(bucket):
            log.info("creating bucket %s", bucket, extra={"service": self.name})
            client.make_bucket(bucket)
