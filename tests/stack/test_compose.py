"""infra/compose.yaml carries the same TLS, principals and secrets as `sealstream stack up` (issue
17): no plaintext listener, no password in the file, every mounted certificate and secret one that
`sealstream stack certs` makes, PostgreSQL TLS-only, Grafana on its read-only role over verify-full.
There is no Docker engine here: this checks the file against the code that makes its inputs."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from infra import Stack
from sealstream.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "infra" / "compose.yaml"


def _doc() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_kafka_has_no_plaintext_listener_and_authorizes_by_principal() -> None:
    env = _doc()["services"]["kafka"]["environment"]
    protocols = [pair.split(":")[1] for pair in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")]
    assert protocols and set(protocols) == {"SSL"}
    assert env["KAFKA_SSL_CLIENT_AUTH"] == "required"
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    from infra.kafka import SUPER_USERS

    assert set(env["KAFKA_SUPER_USERS"].split(";")) == {f"User:{u}" for u in SUPER_USERS}


def test_no_password_is_written_in_the_file() -> None:
    for name, svc in _doc()["services"].items():
        for key in svc.get("environment") or {}:
            if re.search("PASSWORD|SECRET|TOKEN", key):
                assert key.endswith(("_FILE", "__FILE")), f"{name}: {key} holds a value, not a file"


def test_every_mounted_certificate_and_secret_is_made_by_stack_certs(tmp_path: Path) -> None:
    home = tmp_path / ".sealstream"
    made = Stack(load_settings(home=home)).ensure_certs()
    made_paths = {p.relative_to(home).as_posix() for p in made.values()}
    made_paths |= {p.removesuffix(".crt") + ".key" for p in made_paths if p.endswith(".crt") and p != "pki/ca.crt"}
    doc = _doc()
    mounted: set[str] = set()
    for svc in doc["services"].values():
        for vol in svc.get("volumes") or ():
            src = vol.split(":")[0]
            if src.startswith("../.sealstream/"):
                mounted.add(src.removeprefix("../.sealstream/"))
    for secret in doc["secrets"].values():
        mounted.add(secret["file"].removeprefix("../.sealstream/"))
    for path in mounted:
        if path == "pki":
            continue
        assert path in made_paths, f"compose mounts {path}, which `stack certs` does not make"
    # and the files a container reads inside the pki mount exist
    env = doc["services"]["kafka"]["environment"]
    for key in ("KAFKA_SSL_KEYSTORE_LOCATION", "KAFKA_SSL_TRUSTSTORE_LOCATION"):
        rel = env[key].removeprefix("/etc/sealstream/")
        assert (home / rel).is_file(), key


def test_postgres_is_tls_only_and_grafana_reads_as_its_role() -> None:
    pg = _doc()["services"]["postgres"]
    assert "ssl=on" in pg["command"]
    hba = (ROOT / "infra" / "compose-pg_hba.conf").read_text().splitlines()
    rules = [ln.split() for ln in hba if ln.strip() and not ln.startswith("#")]
    assert all(r[0] in ("hostssl", "local") and r[-1] == "scram-sha-256" for r in rules), rules
    ds = yaml.safe_load((ROOT / "dashboards" / "provisioning" / "datasources" / "sealstream.yaml").read_text())
    pgds = next(d for d in ds["datasources"] if d["uid"] == "sealstream-postgres")
    from sealstream.settings import PG_ROLES

    assert pgds["user"] == PG_ROLES["grafana"]
    assert pgds["jsonData"]["sslmode"] == "verify-full"
    assert pgds["secureJsonData"]["password"] == "$__file{/run/secrets/pg_grafana_password}"


def test_each_server_certificate_carries_its_compose_service_name(tmp_path: Path) -> None:
    from cryptography import x509

    home = tmp_path / ".sealstream"
    made = Stack(load_settings(home=home)).ensure_certs()
    for cert_name, service in (("kafka-broker", "kafka"), ("server-postgres", "postgres"), ("server-minio", "minio")):
        cert = x509.load_pem_x509_certificate(made[cert_name].read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert service in names.get_values_for_type(x509.DNSName), cert_name
        assert service in _doc()["services"]
