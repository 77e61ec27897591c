"""The one settings object every sealstream component reads.

Values come, highest priority first, from environment variables
``SEALSTREAM_<FIELD>`` (for example ``SEALSTREAM_KAFKA_PORT=19092``), then from
an optional TOML file (``$SEALSTREAM_CONFIG``, else ``./sealstream.toml`` when
present), then from the local defaults below, which match ``sealstream stack up``.
The same code runs against remote clusters: set the ``*_url``/``*_bootstrap``
fields instead of the local ports.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from . import topics

__all__ = ["Settings", "load_settings", "TOPICS", "PG_ROLES", "mask_dsn"]

#: The project's Kafka topics (`sealstream.topics`; see DESIGN.md, "One message, end to end").
TOPICS = topics.TOPICS


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sealstream"

#: The PostgreSQL role of each principal that uses the database (issue 17; `postgres_dsn_for`).
#: ``admin`` is `Settings.pg_user` (the owner: migrations, provisioning); the others are made
#: NOLOGIN by migration 0009 (which grants their rights) and given LOGIN and their password by
#: `sealstream stack up` when security is on. The names are also in that migration's SQL.
PG_ROLES: dict[str, str] = {
    "admin": "",
    "pipeline": "sealstream_pipeline",
    "verifier": "sealstream_verifier",
    "analyst": "sealstream_analyst",
    "grafana": "sealstream_grafana",
    "erasure": "sealstream_erasure",  # `sealstream data erase` (migration 0010): destroys key records only
}


def _config_file() -> Path | None:
    explicit = os.environ.get("SEALSTREAM_CONFIG")
    if explicit:
        return Path(explicit)
    local = Path("sealstream.toml")
    return local if local.exists() else None


def _default_home() -> Path:
    """The state directory when ``SEALSTREAM_HOME`` is not set: the nearest ``.sealstream``
    directory from the working directory upward (like git finds ``.git``), so commands work from
    any sub-directory of a stack's checkout; else ``./.sealstream`` (where `stack up` makes one)."""
    here = Path.cwd()
    for d in (here, *here.parents):
        if (d / ".sealstream").is_dir():
            return d / ".sealstream"
    return Path(".sealstream")


def home_search() -> str:
    """Where the state directory is looked for, in one clause (for messages that found none)."""
    return (f"$SEALSTREAM_HOME if set, else the nearest .sealstream from {Path.cwd()} upward, "
            "else ./.sealstream")


class Settings(BaseSettings):
    """Every knob of the local stack and of the components that talk to it."""

    model_config = SettingsConfigDict(env_prefix="SEALSTREAM_", frozen=True, extra="ignore")

    # Where things live.
    home: Path = Field(default_factory=_default_home,
                       description="state directory: data, logs, pid files (default: the nearest .sealstream "
                                   "upward from the working directory, else ./.sealstream)")
    cache_dir: Path = Field(default_factory=_default_cache_dir, description="downloads and builds shared by stacks")
    host: str = Field("127.0.0.1", description="address every local service binds to")
    auto_install: bool = Field(True, description="let `stack up` apt-get install missing Debian packages (as root)")
    stack_home: Path | None = Field(None, description="the stack home whose pki/ and secrets/ hold the CA, the "
                                                      "principals' certificates and the Kafka, PostgreSQL and MinIO "
                                                      "secrets (default: home; a process with a throwaway home on "
                                                      "the same stack, e.g. a test or a benchmark, points it at the "
                                                      "stack's)")

    # Security (issue 17): TLS and an authenticated principal per job on Kafka, MinIO and PostgreSQL,
    # certificates from the stack CA (`infra.pki`), secrets resolved by `sealstream._security`.
    security: bool = Field(True, description="TLS and authentication on every service of the stack; 0 = "
                                             "plaintext and one root principal (for overhead measurements)")

    # Kafka (KRaft, combined broker + controller).
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    kafka_metrics_port: int = 9404
    kafka_bootstrap_servers: str | None = Field(None, description="defaults to host:kafka_port")
    kafka_heap: str = "1g"
    kafka_partitions: int = Field(3, ge=1, description="partitions of the raw ingest topics")
    kafka_internal_partitions: int = Field(1, ge=1, description="partitions of deadletter/sealed/anchors/alerts")
    kafka_max_message_bytes: int = 1_048_588
    kafka_video_max_message_bytes: int = Field(16 * 1024 * 1024, description="max message size of iiot.video.raw")
    # Kafka with security on (issue 17, docs/pipeline.md "Kafka: TLS, principals and ACLs"): TLS
    # listeners, every client authenticated by its certificate (CN = principal), ACLs per job.
    kafka_security: bool | None = Field(None, description="TLS, certificate principals and ACLs on Kafka; default: "
                                                          "`security` (0/1 to set Kafka alone, e.g. to measure it)")

    # MinIO.
    minio_port: int = 9000
    minio_console_port: int = 9001
    minio_endpoint: str | None = Field(None, description="defaults to host:minio_port")
    minio_root_user: str = "sealstream"
    minio_root_password: str = Field("sealstream-dev-secret",
                                     description="with security on: never this default, but $SEALSTREAM_MINIO_ROOT_"
                                                 "PASSWORD(_FILE) or the stack's generated secret")
    minio_secure: bool | None = Field(None, description="TLS to MinIO; default: on with security (`minio_tls`)")
    minio_bucket: str = Field("sealstream", description="bucket for raw/<sha256> and manifests/<batch_id>")
    # MinIO with security on (issue 17, docs/storage.md "Users, policies, TLS and WORM"): TLS against
    # the stack CA, a user and policy per job (`minio_credentials`), object lock on the bucket.
    minio_object_lock: bool | None = Field(None, description="make the bucket with object lock (WORM) and a default "
                                                             "retention; default: on with security")
    minio_retention_mode: str = Field("GOVERNANCE", pattern="^(GOVERNANCE|COMPLIANCE)$",
                                      description="default retention of the locked bucket: GOVERNANCE (only the "
                                                  "root user, with the bypass header, may shorten it) or "
                                                  "COMPLIANCE (no one)")
    minio_retention_days: int = Field(3650, ge=1, le=36500, description="default retention period (days)")
    minio_user_prefix: str = Field("", pattern=r"^[A-Za-z0-9._-]{0,40}$",
                                   description="prefix of the jobs' MinIO user names (a benchmark's own users "
                                               "for its own buckets on a shared stack); the secret stays "
                                               "minio_<principal>_secret")

    # PostgreSQL (+ TimescaleDB when the extension is available).
    pg_port: int = 5433
    pg_user: str = "sealstream"
    pg_password: str = "sealstream"
    pg_database: str = "sealstream"
    pg_dsn: str | None = Field(None, description="defaults to the local cluster's DSN")
    pg_os_user: str = Field("postgres", description="OS user that runs the local cluster when started as root")
    # PostgreSQL with security on (issue 17): TLS verified against the stack CA (or
    # SEALSTREAM_PG_CA_FILE), scram-sha-256, a role per principal (`PG_ROLES`), each with its password
    # from the secret pg_<principal>_password (SEALSTREAM_PG_<PRINCIPAL>_PASSWORD[_FILE], else the
    # stack's generated <home>/secrets file); pg_password is then unused.
    pg_sslmode: str = Field("verify-full", pattern="^(verify-full|verify-ca|require)$",
                            description="libpq sslmode of every client when security is on")

    # Prometheus.
    prometheus_port: int = 9090
    prometheus_url: str | None = None
    prometheus_scrape_interval: str = "5s"

    # Ledger (local cluster of `sealstream ledger up`; state in <home>/ledger).
    ledger_base_port: int = Field(7100, ge=0, le=65534,
                                  description="node i of n listens on base+2i (p2p), base+2i+1 (HTTP(S)), "
                                              "base+2n+i (clients) and base+3n+i (metrics); read by "
                                              "`ledger init`")
    ledger_nodes: int = Field(4, ge=1, description="nodes created by `ledger init`")
    ledger_sealers: int = Field(4, ge=1, description="of which the first K are sealers")
    ledger_max_block_txs: int = Field(256, ge=1, description="a block is cut when this many requests wait")
    ledger_block_time_ms: int = Field(50, ge=1, description="... or when the oldest has waited this long")
    ledger_checkpoint_interval: int = Field(10, ge=1, description="PBFT checkpoint every K blocks")
    ledger_view_change_timeout_ms: int = Field(1000, ge=10, description="first view-change timeout (doubles)")
    # Limits of a node's listener (`ledger.transport.Limits`; nodes read SEALSTREAM_LEDGER_* themselves,
    # `ledger` does not import `sealstream`; keep the defaults equal to Limits').
    ledger_max_frame: int = Field(16 * 1024 * 1024, ge=1024, description="largest frame from a peer (bytes)")
    ledger_client_max_frame: int = Field(1024 * 1024, ge=1024, description="largest frame from a client (bytes)")
    ledger_hello_max_frame: int = Field(4096, ge=64, description="largest HELLO frame (bytes)")
    ledger_read_timeout_s: float = Field(10.0, gt=0, description="longest a node waits for one frame or a HELLO")
    ledger_idle_timeout_s: float = Field(120.0, gt=0, description="an inbound connection silent this long is closed")
    ledger_max_connections: int = Field(512, ge=1, description="inbound connections a node keeps open")
    ledger_max_connections_per_address: int = Field(64, ge=1, description="... of which from one address")
    ledger_tls: bool = Field(True, description="`ledger init`: TLS 1.3 links bound to the genesis keys, a TLS "
                                               "client port and an HTTPS API pinned to them; 0 = the plaintext "
                                               "transport and plain HTTP (bench comparison)")
    ledger_metrics_host: str = Field("127.0.0.1", description="`ledger init`: where each node's plain-HTTP "
                                                              "/metrics listener (for Prometheus) binds")

    # Device payload limits (bytes, per kind): the simulator's `oversized` fault exceeds them and the
    # ingest agent dead-letters payloads above them. Each stays below its topic's max.message.bytes.
    max_timeseries_bytes: int = Field(512 * 1024, ge=1, description="largest accepted time-series payload")
    max_image_bytes: int = Field(1_000_000, ge=1, description="largest accepted image payload")
    max_video_bytes: int = Field(8 * 1024 * 1024, ge=1, description="largest accepted video chunk")
    max_clock_skew_ms: int = Field(300_000, ge=0, description="largest accepted |statement ts - ingest time|")

    # Evidence bundles (`sealstream evidence verify`): checked on the zip directory before inflating.
    bundle_max_members: int = Field(250_000, ge=1, description="most members an evidence bundle may hold")
    bundle_max_member_bytes: int = Field(1 << 30, ge=1, description="largest uncompressed member of a bundle")
    bundle_max_total_bytes: int = Field(4 << 30, ge=1, description="largest total uncompressed size of a bundle")

    # Pipeline worker (`sealstream pipeline worker`, pipelines/app.py).
    pipeline_app_id: str = Field("sealstream-pipeline",
                                 description="Faust app id = Kafka consumer group of the workers")
    pipeline_gateway: str = Field("gateway-0", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                                  description="gateway key name: <home>/gateway/<name>.key (created on first start)")
    pipeline_metrics_port: int = Field(9410, ge=0, le=65535, description="worker /metrics port (0 = none)")
    pipeline_directory: str = Field("ledger", pattern="^(ledger|manifest)$",
                                    description="device directory: the ledger registry, or factory manifests (demo)")
    pipeline_factories: str = Field("", description="comma-separated factories for pipeline_directory=manifest")
    pipeline_directory_ttl_s: float = Field(30.0, ge=0, description="cache time of a ledger key resolution")
    pipeline_anchor_sweep_grace_s: float = Field(60.0, ge=0, description="a sealed statement in no batch this long "
                                                 "is batched by the anchor agent's sweep")
    pipeline_anchor_sweep_interval_s: float = Field(15.0, ge=0, description="seconds between sweeps (0 = off: "
                                                    "deferred seals then wait forever)")
    pipeline_offset_reset: str = Field("earliest", pattern="^(earliest|latest)$",
                                       description="where a new consumer group starts")
    pipeline_session_timeout_s: float = Field(10.0, ge=6, description="Kafka group session timeout of a worker")
    pipeline_max_poll_records: int = Field(50, ge=1, description="records per poll (video chunks are MBs)")
    pipeline_batch_max_records: int = Field(50, ge=1, description="most records of one raw topic stored in one "
                                            "transaction (and the baseline's batch in bench/pipeline.py)")
    pipeline_batch_window_s: float = Field(0.02, gt=0,
                                           description="a batch of raw records waits at most this long to fill")
    pipeline_archive_parallel: int = Field(8, ge=1, le=64, description="MinIO PUTs of one batch at once")
    pipeline_anchor_max_leaves: int = Field(512, ge=1, le=100_000, description="most statements in one anchored batch")
    pipeline_anchor_window_s: float = Field(2.0, gt=0, description="a batch is cut at least this often (seconds)")
    pipeline_anchor_adopt_after_s: float = Field(60.0, ge=0, description="anchor other gateways' batches left "
                                                 "unchanged this long (their worker is gone); 0 = never")

    devices_kafka_client: str = Field("auto", pattern="^(auto|confluent|kafka-python)$",
                                      description="producer of `devices run`: auto = confluent-kafka if installed")

    # Metrics (ledger nodes read SEALSTREAM_METRICS themselves: `ledger` does not import `sealstream`).
    metrics: bool = Field(True, description="Prometheus metrics of ledger nodes and pipeline workers; 0 = off "
                                            "(no registry updates, no /metrics server; for overhead measurements)")

    # Logging.
    log_format: str = Field("text", pattern="^(text|json)$")
    log_level: str = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    # Derived addresses: one place that knows how the local defaults combine.
    @cached_property
    def kafka_bootstrap(self) -> str:
        return self.kafka_bootstrap_servers or f"{self.host}:{self.kafka_port}"

    @cached_property
    def minio_address(self) -> str:
        return self.minio_endpoint or f"{self.host}:{self.minio_port}"

    @cached_property
    def minio_tls(self) -> bool:
        """Whether clients speak TLS to MinIO (`minio_secure`, else `security`)."""
        return self.security if self.minio_secure is None else self.minio_secure

    @cached_property
    def minio_worm(self) -> bool:
        """Whether the bucket is made with object lock (`minio_object_lock`, else `security`)."""
        return self.security if self.minio_object_lock is None else self.minio_object_lock

    @cached_property
    def minio_ca_file(self) -> Path | None:
        """The CA MinIO clients verify the server against: ``SEALSTREAM_MINIO_CA_FILE``, else the stack
        CA with security on; None: the system's trust store (a remote MinIO with a public certificate)."""
        from ._security import tls_files

        if not self.minio_tls:
            return None
        if os.environ.get("SEALSTREAM_MINIO_CA_FILE") or self.security:
            return tls_files(self.stack_dir, "minio").ca
        return None

    @property
    def stack_dir(self) -> Path:
        """Where the stack's CA, certificates and secrets are: `stack_home`, else `home`."""
        return Path(self.stack_home or self.home).expanduser()

    def minio_credentials(self, principal: str) -> tuple[str, str]:
        """(access key, secret key) MinIO user `principal` signs with.

        Security off: the root user for every principal (as before issue 17). On: ``admin`` is the
        root user, for `stack up` and `stack provision` only (and tests that play an attacker), with
        its secret ``minio_root_password``; every other job is its own user ``<principal>`` (policy
        in `infra.minio.POLICIES`) with the secret ``minio_<principal>_secret``; both resolved by
        `sealstream._security.read_secret` (env, ``..._FILE``, or the stack's generated file).
        """
        from ._security import read_secret

        if not self.security:
            return self.minio_root_user, self.minio_root_password
        if principal == "admin":
            if "minio_root_password" in self.model_fields_set:
                return self.minio_root_user, self.minio_root_password
            return self.minio_root_user, read_secret(self.stack_dir, "minio_root_password")
        return self.minio_user_prefix + principal, read_secret(self.stack_dir, f"minio_{principal}_secret")

    @cached_property
    def postgres_dsn(self) -> str:
        """The owner's (admin's) DSN: migrations, provisioning, operator commands. With security on,
        its password is the secret pg_admin_password and it carries the TLS parameters (a given
        `pg_dsn` keeps its own and gets them only where it has none). Components take their own
        role's: `postgres_dsn_for`."""
        if not self.security:
            if self.pg_dsn:
                return self.pg_dsn
            return (
                f"postgresql://{self.pg_user}:{self.pg_password}@{self.host}:{self.pg_port}/{self.pg_database}"
            )
        tls = self._pg_tls()
        if self.pg_dsn:
            from psycopg.conninfo import conninfo_to_dict, make_conninfo

            given = conninfo_to_dict(self.pg_dsn)
            return make_conninfo(self.pg_dsn, **{k: v for k, v in tls.items() if k not in given})
        from urllib.parse import quote, urlencode

        password = quote(self.pg_password_for("admin"), safe="")
        return (f"postgresql://{quote(self.pg_user, safe='')}:{password}@{self.host}:{self.pg_port}/"
                f"{quote(self.pg_database, safe='')}?{urlencode(tls, safe='/')}")

    def postgres_dsn_for(self, principal: str) -> str:
        """The DSN of `principal`'s PostgreSQL role (`PG_ROLES`): with security off, `postgres_dsn`
        (one role for everything, as before); with it on, that principal's role and password (a
        secret: `sealstream._security.read_secret`) over TLS verified against the stack CA.
        ``admin`` is the owner that runs migrations; `postgres_dsn` is its DSN."""
        if principal not in PG_ROLES:
            raise ValueError(f"no PostgreSQL role for principal {principal!r}; one of {', '.join(PG_ROLES)}")
        if not self.security or principal == "admin":
            return self.postgres_dsn
        from psycopg.conninfo import make_conninfo

        return make_conninfo(self.postgres_dsn, user=self.pg_role(principal), password=self.pg_password_for(principal))

    def pg_role(self, principal: str) -> str:
        """The PostgreSQL role name of `principal` (the admin's is `pg_user`)."""
        return self.pg_user if principal == "admin" else PG_ROLES[principal]

    def pg_password_for(self, principal: str) -> str:
        """`principal`'s PostgreSQL password: `pg_password` with security off (one role); else the
        secret ``pg_<principal>_password`` (SecretError when none was given nor generated)."""
        if not self.security:
            return self.pg_password
        from ._security import read_secret

        return read_secret(self.stack_dir, f"pg_{principal}_password")

    def _pg_tls(self) -> dict[str, str]:
        """libpq TLS parameters of every client (security on): `pg_sslmode` against the CA of
        `sealstream._security.tls_files` (the stack CA, or SEALSTREAM_PG_CA_FILE)."""
        from ._security import tls_files

        ca = Path(tls_files(self.stack_dir, "pg").ca).expanduser().resolve()
        return {"sslmode": self.pg_sslmode, "sslrootcert": str(ca)}

    @cached_property
    def prometheus_base_url(self) -> str:
        return (self.prometheus_url or f"http://{self.host}:{self.prometheus_port}").rstrip("/")

    @cached_property
    def ledger_home(self) -> Path:
        """State directory of the local ledger cluster (see `ledger.layout`)."""
        return self.home / "ledger"

    def topic_partitions(self, topic: str) -> int:
        return self.kafka_partitions if topic.endswith(".raw") else self.kafka_internal_partitions

    def topic_configs(self, topic: str) -> dict[str, str]:
        # The dead-letter topic keeps rejected video chunks with their original bytes, so it needs the video size.
        large = topic in (topics.RAW_OF_KIND["video"], topics.DEADLETTER)
        size = self.kafka_video_max_message_bytes if large else self.kafka_max_message_bytes
        return {"max.message.bytes": str(size)}

    def public_dict(self) -> dict[str, Any]:
        """Settings as JSON-friendly values, secrets masked."""
        data = self.model_dump(mode="json")
        for key, value in data.items():  # every password, secret and token field, whatever its service
            if value and any(w in key for w in ("password", "secret", "token")) and not key.endswith("_file"):
                data[key] = "***"
        if data.get("pg_dsn"):
            data["pg_dsn"] = _mask_dsn(data["pg_dsn"])
        return data


def mask_dsn(text: str) -> str:
    """`text` (a DSN, or a message that may quote one) with every password replaced by ``***``:
    URI ``user:pw@``, conninfo or URI-query ``password=...`` (also ``sslpassword``)."""
    import re

    text = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&']+)", r"\1***", text)


_mask_dsn = mask_dsn


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (and file), with explicit overrides on top."""
    return Settings(**overrides)
