"""How every Kafka client of the project connects, as which principal (part of the config module).

One place turns ``(settings, principal)`` into the configuration of each Kafka library the project
uses, so a client never spells ``security.protocol`` or a certificate path itself:

- `KafkaEndpoint.confluent` -- a confluent-kafka (librdkafka) config dict,
- `KafkaEndpoint.kafka_python` -- kafka-python keyword arguments,
- `KafkaEndpoint.aiokafka` -- aiokafka keyword arguments,
- `KafkaEndpoint.ssl_context` / `KafkaEndpoint.faust_broker` -- Faust's ``broker`` and
  ``broker_credentials`` (an `ssl.SSLContext`, which Faust wraps in its ``SSLCredentials``).

With ``Settings.security`` on, the stack's broker listens TLS only and authenticates clients by
their certificate (mutual TLS; the certificate's CN is the Kafka principal ``User:<CN>``, see
docs/pipeline.md "Kafka: TLS, principals and ACLs"): a client presents the certificate of its
principal, ``<home>/pki/client-<principal>.crt``/``.key`` issued by ``sealstream stack up``, or
the files of ``SEALSTREAM_KAFKA_{CA,CERT,KEY}_FILE`` (a remote cluster with its own CA).
With security off the endpoint is PLAINTEXT and the principal only documents who the client is.

The principals (`sealstream._security.PRINCIPALS`, factories ``factory-<name>``):
pipeline workers ``pipeline``, the verifier agent ``verifier``, the alerts bridge ``alerts``,
device producers ``factory-<factory>``, the CLI's admin operations and the stack ``admin``.

No network I/O here, and no Kafka library is imported: every layer may read this module.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from sealstream._security import TLSFiles, tls_files

if TYPE_CHECKING:  # pragma: no cover
    from sealstream.settings import Settings

__all__ = ["KafkaEndpoint", "kafka_endpoint", "kafka_secured", "as_endpoint", "factory_principal", "KafkaLike"]


def factory_principal(factory: str) -> str:
    """The Kafka principal (and client certificate name) of a factory's devices and edge agents."""
    return f"factory-{factory}"


@dataclass(frozen=True)
class KafkaEndpoint:
    """A Kafka cluster and how one principal reaches it.

    ``protocol`` is ``PLAINTEXT`` or ``SSL`` (mutual TLS: ``tls.cert``/``tls.key`` are presented,
    ``tls.ca`` verifies the broker, whose name is checked). ``str(endpoint)`` is the bootstrap list,
    so messages naming "Kafka at ..." read as before.
    """

    bootstrap: str
    principal: str = "admin"
    protocol: str = "PLAINTEXT"
    tls: TLSFiles | None = None
    _ctx: list[ssl.SSLContext] = field(default_factory=list, compare=False, repr=False)

    def __str__(self) -> str:
        return self.bootstrap

    @property
    def secure(self) -> bool:
        return self.protocol != "PLAINTEXT"

    def servers(self) -> list[str]:
        return [b.strip() for b in self.bootstrap.split(",") if b.strip()]

    def _files(self) -> TLSFiles:
        if self.tls is None:  # pragma: no cover - SSL endpoints are made with files
            raise ValueError(f"Kafka endpoint {self.bootstrap} ({self.protocol}) has no TLS files")
        return self.tls

    # -- confluent-kafka --------------------------------------------------------------------
    def confluent(self, extra: Mapping[str, Any] | None = None, **more: Any) -> dict[str, Any]:
        """A confluent-kafka config: ``bootstrap.servers``, the security settings, then `extra`
        (dotted keys; give them as a mapping) and `more` (keyword-friendly keys)."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap}
        if self.secure:
            tls = self._files()
            conf.update({"security.protocol": "ssl", "ssl.ca.location": str(tls.ca),
                         "ssl.endpoint.identification.algorithm": "https"})
            if tls.cert is not None:
                conf["ssl.certificate.location"] = str(tls.cert)
                conf["ssl.key.location"] = str(tls.key or tls.cert)
        conf.update(extra or {})
        conf.update(more)
        return conf

    # -- kafka-python -----------------------------------------------------------------------
    def kafka_python(self, **extra: Any) -> dict[str, Any]:
        """kafka-python keyword arguments (``bootstrap_servers``, ``security_protocol``, ``ssl_*``)."""
        kw: dict[str, Any] = {"bootstrap_servers": self.servers(), "security_protocol": self.protocol}
        if self.secure:
            kw["ssl_context"] = self.ssl_context()
        kw.update(extra)
        return kw

    # -- aiokafka / Faust -------------------------------------------------------------------
    def aiokafka(self, **extra: Any) -> dict[str, Any]:
        """aiokafka keyword arguments (``bootstrap_servers``, ``security_protocol``, ``ssl_context``)."""
        kw: dict[str, Any] = {"bootstrap_servers": self.bootstrap, "security_protocol": self.protocol}
        if self.secure:
            kw["ssl_context"] = self.ssl_context()
        kw.update(extra)
        return kw

    def faust_broker(self) -> list[str]:
        """Faust's ``broker`` (give `ssl_context` as its ``broker_credentials``)."""
        return [f"kafka://{b}" for b in self.servers()]

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client TLS context trusting ``tls.ca`` and presenting the principal's certificate
        (None for PLAINTEXT); made once per endpoint."""
        if not self.secure:
            return None
        if not self._ctx:
            tls = self._files()
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca))
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            if tls.cert is not None:
                ctx.load_cert_chain(str(tls.cert), str(tls.key or tls.cert))
            self._ctx.append(ctx)
        return self._ctx[0]

    def as_principal(self, principal: str, tls: TLSFiles | None = None) -> "KafkaEndpoint":
        """The same cluster reached as another principal (its certificate beside this one's)."""
        if not self.secure:
            return KafkaEndpoint(self.bootstrap, principal)
        if tls is None:
            cur = self._files()
            base = cur.cert.parent if cur.cert is not None else cur.ca.parent
            tls = TLSFiles(ca=cur.ca, cert=base / f"client-{principal}.crt", key=base / f"client-{principal}.key")
        return KafkaEndpoint(self.bootstrap, principal, self.protocol, tls)


#: what functions taking a Kafka cluster accept: an endpoint, or a bare bootstrap (PLAINTEXT)
KafkaLike = Union[KafkaEndpoint, str]


def as_endpoint(kafka: KafkaLike, principal: str = "admin") -> KafkaEndpoint:
    """`kafka` as an endpoint; a bare bootstrap string is a PLAINTEXT endpoint (security off)."""
    return kafka if isinstance(kafka, KafkaEndpoint) else KafkaEndpoint(str(kafka), principal)


def kafka_secured(settings: "Settings") -> bool:
    """Whether the stack's Kafka is secured: ``kafka_security``, else ``security``."""
    own = getattr(settings, "kafka_security", None)
    return bool(settings.security if own is None else own)


def kafka_endpoint(settings: "Settings", principal: str, *, ca: Path | str | None = None,
                   cert: Path | str | None = None, key: Path | str | None = None,
                   bootstrap: str | None = None, env: dict[str, str] | None = None) -> KafkaEndpoint:
    """How `principal` reaches the Kafka cluster of `settings`.

    Security off: PLAINTEXT. On: mutual TLS with the principal's certificate, from (highest first)
    the explicit `ca`/`cert`/`key` (an edge agent's own files from edge.toml), then
    ``SEALSTREAM_KAFKA_{CA,CERT,KEY}_FILE``, then the stack's ``<home>/pki`` (``stack_home``:
    another home's, e.g. a throwaway test home using the stack's certificates). Explicit files mean
    TLS whatever the setting (an edge host talking to a remote, secured cluster).
    """
    servers = bootstrap or settings.kafka_bootstrap
    if not kafka_secured(settings) and not (ca or cert or key):
        return KafkaEndpoint(servers, principal)
    files = tls_files(settings.stack_dir, "kafka", principal, env=env)
    if ca or cert or key:
        cert_path = Path(cert) if cert else files.cert
        files = TLSFiles(ca=Path(ca) if ca else files.ca, cert=cert_path,
                         key=Path(key) if key else (cert_path if cert else files.key))
    return KafkaEndpoint(servers, principal, "SSL", files)
