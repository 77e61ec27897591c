"""MinIO object store, built from source with ``go install`` (the binary is cached).

With security on (issue 17; docs/storage.md "Users, policies, TLS and WORM"):

- MinIO serves TLS only, with the stack CA's ``server-minio`` certificate (``--certs-dir``:
  ``public.crt``, ``private.key``, the CA in ``CAs/``); clients verify it against the stack CA;
- the root password is generated per stack (``<home>/secrets/minio_root_password``, or
  ``SEALSTREAM_MINIO_ROOT_PASSWORD(_FILE)``) and used by `stack up`/`stack provision` alone;
- `provision` makes (idempotently, as root) a user and a policy per job (`POLICIES`), each user's
  secret ``minio_<user>_secret``; and the bucket with object lock and a default retention
  (`Settings.minio_worm`). No user may delete: key records, which erasure destroys, are rows of
  PostgreSQL (`storage.key_records`), not objects.

With it off: plaintext and the root user, exactly as before.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import ssl
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from sealstream._security import SecretError, new_secret, pki_dir, read_secret, write_private

from ._errors import MissingToolError
from .process import spawn
from ._service import Health, Service, http_get
from ._tools import require_tool, run_checked, tool_version

__all__ = ["MinIO", "MINIO_MODULE", "MINIO_VERSION", "MINIO_USERS", "POLICIES", "policy"]

log = logging.getLogger("sealstream.stack")

MINIO_MODULE = "github.com/minio/minio"
#: The community edition ships as source only; this is the pinned module version.
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
#: minio's go.mod asks for this Go version or newer.
MIN_GO = (1, 24)


#: The MinIO users the stack makes with security on, one per job that touches blobs (the
#: `sealstream._security.PRINCIPALS` of the same name). ``admin`` is the root user; alerts and
#: grafana have no MinIO user.
MINIO_USERS = ("pipeline", "verifier", "analyst")

#: Users of earlier stacks that `provision` removes: ``erasure`` deleted key records when they were
#: objects (before migration 0010 made them rows).
_RETIRED_USERS = ("erasure",)

#: What each user may do on the bucket: (actions, prefixes).  No job may delete anything.
POLICIES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "pipeline": (("s3:GetObject", "s3:PutObject"), ("raw/", "manifests/")),
    "verifier": (("s3:GetObject",), ("raw/", "manifests/")),
    "analyst": (("s3:GetObject",), ("raw/", "manifests/")),
}

#: Bucket-level reads every user needs (a `BlobStore` checks the bucket exists): HEAD bucket
#: (``s3:ListBucket``, which also lists names: they are digests and batch ids) and the region.
_BUCKET_READ = ("s3:GetBucketLocation", "s3:ListBucket")


def policy(user: str, bucket: str) -> dict[str, Any]:
    """The IAM policy document of `user` (`POLICIES`) for `bucket`."""
    actions, prefixes = POLICIES[user]
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": list(_BUCKET_READ), "Resource": [f"arn:aws:s3:::{bucket}"]},
        {"Effect": "Allow", "Action": list(actions), "Resource": [f"arn:aws:s3:::{bucket}/{p}*" for p in prefixes]},
    ]}


def _secret(home: Path, name: str) -> str:
    """Secret `name` as given (env, ``..._FILE``, the stack's file), else generated for this stack."""
    try:
        return read_secret(home, name)
    except SecretError:
        return new_secret(home, name)


class MinIO(Service):
    name = "minio"

    def __init__(self, settings, home):
        super().__init__(settings, home)
        self.binary = self.cache / "minio" / MINIO_VERSION / "minio"
        #: whose secrets/ and pki/ the server's certificate, the root password and the users' secrets
        #: come from (`stack_home`: a private MinIO of a test shares the stack's; default: home)
        self.secrets_home = Path(settings.stack_home).expanduser().resolve() if settings.stack_home else home

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
        s = self.settings
        state = self.read_json(self.conf_dir / "provisioned.json")
        parts = [f"bucket {s.minio_bucket}"]
        if state.get("object_lock"):
            parts.append(f"object lock {state['object_lock']}")
        return "; ".join(parts)

    def security(self) -> str:
        s = self.settings
        if not s.security:
            return super().security() if not s.minio_tls else "TLS, root user"
        return ("TLS" if s.minio_tls else "plaintext") + ", a user and policy per job"

    @property
    def certs_dir(self) -> Path:
        return self.conf_dir / "certs"

    def _sync_certs(self) -> bool:
        """Copy the stack CA's server certificate into MinIO's certs directory (MinIO reloads changed
        files by itself); True when something changed."""
        pki = pki_dir(self.secrets_home)  # `Stack.ensure_pki` made them (`infra.pki`)
        wanted = {
            self.certs_dir / "public.crt": pki / "server-minio.crt",
            self.certs_dir / "private.key": pki / "server-minio.key",
            self.certs_dir / "CAs" / "ca.crt": pki / "ca.crt",
        }
        changed = False
        for dest, src in wanted.items():
            data = src.read_bytes()
            if not dest.exists() or dest.read_bytes() != data:
                write_private(dest, data)
                changed = True
        return changed

    def root_credentials(self) -> tuple[str, str]:
        """The root user and password (generated per stack with security on)."""
        s = self.settings
        if not s.security:
            return s.minio_root_user, s.minio_root_password
        if "minio_root_password" in s.model_fields_set:
            return s.minio_root_user, s.minio_root_password
        return s.minio_root_user, _secret(self.secrets_home, "minio_root_password")

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
        user, password = self.root_credentials()
        env = dict(
            os.environ,
            MINIO_ROOT_USER=user,
            MINIO_ROOT_PASSWORD=password,
            MINIO_PROMETHEUS_AUTH_TYPE="public",
            MINIO_UPDATE="off",
            MINIO_CALLHOME_ENABLE="off",
        )
        tls: list[str] = []
        if s.minio_tls:
            self._sync_certs()
            tls = ["--certs-dir", str(self.certs_dir)]
        proc = spawn(
            [str(self.binary), "server", "--quiet", "--anonymous",
             "--address", f"{s.host}:{s.minio_port}",
             "--console-address", f"{s.host}:{s.minio_console_port}",
             *tls, str(self.data_dir)],
            log_path=self.log_path,
            env=env,
        )
        self.pidfile.write(proc.pid)

    def _ssl_context(self) -> ssl.SSLContext:
        ca = self.settings.minio_ca_file
        return ssl.create_default_context(cafile=str(ca) if ca is not None else None)

    def health(self) -> Health:
        s = self.settings
        if not s.minio_tls:
            status, _ = http_get(f"http://{s.minio_address}/minio/health/ready")
        else:
            try:
                with urllib.request.urlopen(f"https://{s.minio_address}/minio/health/ready", timeout=2.0,
                                            context=self._ssl_context()) as resp:
                    status = resp.status
            except urllib.error.HTTPError as exc:
                status = exc.code
        return Health(status == 200, "" if status == 200 else f"health endpoint answered {status}")

    def _http(self) -> Any:
        import urllib3

        tls: dict[str, Any] = {}
        if self.settings.minio_tls:
            ca = self.settings.minio_ca_file
            tls = {"cert_reqs": "CERT_REQUIRED", **({"ca_certs": str(ca)} if ca is not None else {})}
        return urllib3.PoolManager(timeout=urllib3.Timeout(connect=5.0, read=60.0),
                                   retries=urllib3.Retry(total=3, backoff_factor=0.2,
                                                         status_forcelist=[500, 502, 503, 504]), **tls)

    def client(self):
        """An SDK client as the root user (the stack itself: provisioning, and tests)."""
        from minio import Minio

        user, password = self.root_credentials()
        return Minio(self.settings.minio_address, access_key=user, secret_key=password,
                     secure=self.settings.minio_tls, http_client=self._http())

    def admin(self):
        """MinIO's admin API (users, policies) as the root user."""
        from minio import MinioAdmin
        from minio.credentials import StaticProvider

        user, password = self.root_credentials()
        return MinioAdmin(endpoint=self.settings.minio_address, credentials=StaticProvider(user, password),
                          secure=self.settings.minio_tls, http_client=self._http())

    def provision(self) -> None:
        s = self.settings
        if s.minio_tls and self.running_pid() is not None and s.minio_endpoint is None:
            self._sync_certs()  # renewed by this `stack up`: MinIO picks the new files up
        client = self.client()
        lock = self._ensure_bucket(client)
        state: dict[str, Any] = {"object_lock": lock}
        self._adopt_key_objects(client)
        if s.security:
            state["users"] = self._ensure_users()
        self.write_if_changed(self.conf_dir / "provisioned.json", json.dumps(state, indent=2) + "\n")

    def _ensure_bucket(self, client: Any) -> str:
        """The data bucket, with object lock when `minio_worm`; what the lock is (for `describe`)."""
        from minio.error import S3Error
        from minio.objectlockconfig import DAYS, ObjectLockConfig

        s = self.settings
        bucket = s.minio_bucket
        if not client.bucket_exists(bucket):
            log.info("creating bucket %s%s", bucket, " with object lock" if s.minio_worm else "",
                     extra={"service": self.name})
            client.make_bucket(bucket, object_lock=s.minio_worm)
        if not s.minio_worm:
            return ""
        try:
            client.get_object_lock_config(bucket)
        except S3Error as exc:
            if exc.code != "ObjectLockConfigurationNotFoundError":
                raise
            log.warning("bucket %s was made without object lock (S3 cannot add it later): payloads and manifests "
                        "are not write-once; a new stack (or bucket) is", bucket, extra={"service": self.name})
            return "off (bucket made without it)"
        wanted = ObjectLockConfig(s.minio_retention_mode, s.minio_retention_days, DAYS)
        if client.get_object_lock_config(bucket) != wanted:
            log.info("object lock of bucket %s: %s, %d days by default", bucket, s.minio_retention_mode,
                     s.minio_retention_days, extra={"service": self.name})
            client.set_object_lock_config(bucket, wanted)
        return f"{s.minio_retention_mode} {s.minio_retention_days} d"

    def _adopt_key_objects(self, client: Any) -> int:
        """Key records a stack made before migration 0010 kept as objects (``keys/<statement hash>``
        in ``<bucket>-keys``, or in the bucket itself without object lock): each is copied into
        PostgreSQL's ``key_records`` (the services are provisioned in order, so it is migrated) if
        its statement is stored there, then removed, so that erasure reaches the only copy. An
        object whose statement is unknown stays, with a warning. Idempotent; the number moved."""
        import psycopg

        s = self.settings
        moved, orphans = 0, 0
        for bucket in (f"{s.minio_bucket}-keys", s.minio_bucket):
            if not client.bucket_exists(bucket):
                continue
            objs = [o.object_name for o in client.list_objects(bucket, prefix="keys/", recursive=True)]
            if not objs:
                continue
            with psycopg.connect(s.postgres_dsn, connect_timeout=10) as conn:
                if conn.execute("SELECT to_regclass('key_records')").fetchone() == (None,):
                    log.warning("%d key record objects in bucket %s wait for PostgreSQL's key_records: run "
                                "`sealstream db migrate`, then `sealstream stack provision`", len(objs), bucket,
                                extra={"service": self.name})
                    continue
                for name in objs:
                    try:
                        h = bytes.fromhex(name.removeprefix("keys/"))
                    except ValueError:
                        continue
                    resp = client.get_object(bucket, name)
                    try:
                        record = resp.read()
                    finally:
                        resp.close()
                        resp.release_conn()
                    if conn.execute("SELECT 1 FROM statements WHERE statement_hash = %s", (h,)).fetchone() is None:
                        orphans += 1
                        continue
                    conn.execute("INSERT INTO key_records (statement_hash, record) VALUES (%s, %s) "
                                 "ON CONFLICT DO NOTHING", (h, record))
                    conn.commit()
                    client.remove_object(bucket, name)
                    moved += 1
        if moved:
            log.info("moved %d key records from MinIO objects into PostgreSQL (key_records)", moved,
                     extra={"service": self.name})
        if orphans:
            log.warning("%d key record objects name no stored statement; left in MinIO", orphans,
                        extra={"service": self.name})
        return moved

    def _ensure_users(self) -> list[str]:
        """A user and a policy per job (idempotent: same secret, policy replaced, attachment set)."""
        s = self.settings
        admin = self.admin()
        for user in MINIO_USERS:
            name = f"sealstream-{user}"
            admin.policy_add(name, policy=policy(user, s.minio_bucket))
            admin.user_add(user, _secret(self.secrets_home, f"minio_{user}_secret"))
            admin.policy_set(name, user=user)
        known = json.loads(admin.user_list())
        for user in _RETIRED_USERS:
            if user in known:
                log.info("removing the MinIO user %s of an earlier stack", user, extra={"service": self.name})
                admin.user_remove(user)
        return list(MINIO_USERS)
