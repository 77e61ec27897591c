"""The two datasources every panel names by a fixed uid, and their Grafana definitions.

Panels refer to ``sealstream-prometheus`` and ``sealstream-postgres`` only by
uid, so the same dashboard JSON works wherever the datasources point: the
provisioning YAML points them at the compose services (``prometheus:9090``,
``postgres:5432``); `sealstream dashboards push` points them at the addresses
in the settings (or the ones given on the command line).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.models.dashboard import DataSourceRef

from ._sql import POSTGRES_TYPE

__all__ = ["PROMETHEUS", "POSTGRES", "FOLDER_UID", "FOLDER_TITLE", "Endpoints", "datasource_definitions"]

PROMETHEUS = DataSourceRef(type_val="prometheus", uid="sealstream-prometheus")
POSTGRES = DataSourceRef(type_val=POSTGRES_TYPE, uid="sealstream-postgres")
FOLDER_UID = "sealstream"
FOLDER_TITLE = "sealstream"


@dataclass(frozen=True)
class Endpoints:
    """Where Grafana reaches the data (as seen from the Grafana server)."""

    # The defaults are infra/compose.yaml's: the read-only grafana role, its password read by
    # Grafana from the Docker secret (``$__file{}`` expansion of provisioning files), TLS verified
    # against the stack CA mounted at /etc/sealstream/pki.
    prometheus_url: str = "http://prometheus:9090"
    pg_host: str = "postgres:5432"
    pg_database: str = "sealstream"
    pg_user: str = "sealstream_grafana"
    pg_password: str = "$__file{/run/secrets/pg_grafana_password}"
    scrape_interval: str = "5s"
    #: libpq sslmode Grafana connects with, and the CA it verifies the server against: PEM content
    #: (`dashboards push`: the Grafana server need not have the stack's files) or a path on the
    #: Grafana server (the compose provisioning)
    pg_sslmode: str = "verify-full"
    pg_ca_pem: str | None = None
    pg_ca_file: str | None = "/etc/sealstream/pki/ca.crt"

    @classmethod
    def from_settings(cls, settings: Any, prometheus_url: str | None = None, pg_dsn: str | None = None) -> "Endpoints":
        """The stack's addresses from `sealstream.settings.Settings`, each overridable. PostgreSQL is
        reached as the read-only Grafana role (`Settings.postgres_dsn_for("grafana")`: with security
        on its own login and password, TLS verified against the stack CA)."""
        from psycopg.conninfo import conninfo_to_dict

        pg = conninfo_to_dict(pg_dsn or settings.postgres_dsn_for("grafana"))
        ca = pg.get("sslrootcert")
        return cls(prometheus_url=(prometheus_url or settings.prometheus_base_url).rstrip("/"),
                   pg_host=f"{pg.get('host', settings.host)}:{pg.get('port', settings.pg_port)}",
                   pg_database=str(pg.get("dbname", settings.pg_database)),
                   pg_user=str(pg.get("user", settings.pg_user)),
                   pg_password=str(pg.get("password", settings.pg_password)),
                   scrape_interval=settings.prometheus_scrape_interval,
                   pg_sslmode=str(pg.get("sslmode") or "disable"),
                   pg_ca_pem=Path(str(ca)).read_text("ascii") if ca and str(ca) != "system" else None,
                   pg_ca_file=None)


def _tls_json(ep: Endpoints) -> dict[str, str]:
    if ep.pg_ca_pem:
        return {"tlsConfigurationMethod": "file-content"}
    if ep.pg_ca_file and ep.pg_sslmode != "disable":
        return {"tlsConfigurationMethod": "file-path", "sslRootCertFile": ep.pg_ca_file}
    return {}


def datasource_definitions(ep: Endpoints = Endpoints()) -> list[dict[str, Any]]:
    """Both datasources in the shape of Grafana's API and of its provisioning files."""
    return [
        {"name": "sealstream-prometheus", "uid": PROMETHEUS.uid, "type": PROMETHEUS.type_val, "access": "proxy",
         "url": ep.prometheus_url, "isDefault": True,
         "jsonData": {"timeInterval": ep.scrape_interval, "httpMethod": "POST"}},
        {"name": "sealstream-postgres", "uid": POSTGRES.uid, "type": POSTGRES.type_val, "access": "proxy",
         "url": ep.pg_host, "user": ep.pg_user, "isDefault": False,
         "jsonData": {"database": ep.pg_database, "sslmode": ep.pg_sslmode, "postgresVersion": 1500,
                      "timescaledb": False, **_tls_json(ep)},
         "secureJsonData": {"password": ep.pg_password, **({"tlsCACert": ep.pg_ca_pem} if ep.pg_ca_pem else {})}},
    ]
