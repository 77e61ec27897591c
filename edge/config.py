"""`edge.toml`: the edge agent's configuration, parsed and validated strictly (every problem named by its path).

    [edge]
    factory = "plant-a"                 # names the edge (metrics, logs, ledger device ids "<factory>-<device>")
    metrics_port = 9420                 # /metrics (0 = none)
    kafka_bootstrap = "10.0.0.5:9092"   # optional: default SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS
    kafka_ca = "tls/ca.crt"             # optional TLS files of the factory's Kafka principal (factory-<factory>):
    kafka_cert = "tls/factory.crt"      #   the cluster's CA, the certificate and its key; default
    kafka_key = "tls/factory.key"       #   SEALSTREAM_KAFKA_{CA,CERT,KEY}_FILE, else the stack's <home>/pki
    [edge.spool]
    path = "spool"                      # directory of spool.db (relative paths: to this file's folder)
    max_bytes = 1_073_741_824           # full at this many payload+header bytes ...
    max_age_s = 86400                   # ... or when the oldest message waited this long
    pending_key = "spool/pending.key"   # optional: the AES-256-GCM key (0600, made on first use) sealing the
                                        #   open windows of confidential devices; default <path>/pending.key
    [edge.group]
    readings = 200                      # a time-series payload is cut at N readings of a device ...
    seconds = 1.0                       # ... or T seconds after its first reading, whichever comes first

    [devices.press-1]
    kind = "timeseries"                 # timeseries | image | video
    key = { file = "keys/press-1.key" } # a trust.identity key file (mode 0600), or
    # key = { pkcs11 = { module = "/usr/lib/softhsm/libsofthsm2.so", token = "edge", label = "press-1",
    #                    pin_file = "/etc/sealstream/pin" } }
    sensors = ["temperature", "pressure"]   # the sensor names its readings may carry (empty: any)
    # confidential = { stream = "line-3", recipients = "recipients/line-3.json" }   # issue 18: sealed for
    #   the stream's recipients, from a recipients file (`sealstream data recipients --stream S --out F`,
    #   re-read when it changes) or a list of recipient public key files ["keys/qa.pub", ...]

    [sources.line-1]
    type = "opcua"                      # mqtt | sparkplug | opcua | modbus | files | python
    ...                                 # the rest goes to edge.sources.<type>.from_config(name, table)

``type = "python"`` with ``module = "pkg.mod"`` loads a source of your own (its ``from_config``).
`load_config` raises `ConfigError` listing every problem; `check_config` returns them.
"""

from __future__ import annotations

import importlib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from trust.statement import KINDS

__all__ = ["ConfidentialConfig", "ConfigError", "Problem", "EdgeConfig", "SpoolConfig", "GroupConfig",
           "DeviceConfig", "SourceConfig", "SOURCE_TYPES", "load_config", "check_config", "source_factory"]

SOURCE_TYPES = ("mqtt", "sparkplug", "opcua", "modbus", "files", "python")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SENSOR = re.compile(r"^[^\x00-\x1f]{1,128}$")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the config: where (``devices.cam-1.key.file``) and what to do."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    def to_json(self) -> dict:
        return {"path": self.path, "message": self.message}


class ConfigError(Exception):
    """The config cannot be used; `problems` lists every reason with its path."""

    def __init__(self, file: Path, problems: list[Problem]) -> None:
        self.file, self.problems = file, problems
        super().__init__(f"{file} has {len(problems)} problem(s): " + "; ".join(map(str, problems))
                         + f"; fix them (see `sealstream edge check-config --config {file}`)")


@dataclass(frozen=True)
class SpoolConfig:
    path: Path
    max_bytes: int = 1 << 30
    max_age_s: float = 86400.0
    #: the spool key of sealed open windows (`edge.pending_seal`); None: ``<path>/pending.key``
    pending_key: Optional[Path] = None

    @property
    def pending_key_path(self) -> Path:
        return self.pending_key if self.pending_key is not None else self.path / "pending.key"


@dataclass(frozen=True)
class GroupConfig:
    readings: int = 200
    seconds: float = 1.0


@dataclass(frozen=True)
class DeviceConfig:
    name: str
    kind: str
    key: dict  # {"file": Path} or {"pkcs11": {...}}
    sensors: tuple[str, ...] = ()
    #: the config file's folder: a relative PKCS#11 ``pin_file`` is resolved against it
    base_dir: Optional[Path] = None
    #: a confidential stream (issue 18): every payload sealed for its recipients before the spool
    confidential: Optional["ConfidentialConfig"] = None


@dataclass(frozen=True)
class ConfidentialConfig:
    """``confidential = { stream, recipients }`` of a device: `recipients` is one recipients file (a
    `Path`, re-read when it changes) or a tuple of recipient public key files."""

    stream: str
    recipients: "Path | tuple[Path, ...]"


@dataclass(frozen=True)
class SourceConfig:
    name: str
    type: str
    section: dict  # the whole table, as given (paths resolved for "files")


@dataclass(frozen=True)
class EdgeConfig:
    file: Path
    factory: str
    spool: SpoolConfig
    group: GroupConfig
    devices: dict[str, DeviceConfig]
    sources: dict[str, SourceConfig]
    kafka_bootstrap: Optional[str] = None
    metrics_port: int = 9420
    #: TLS files of the factory's Kafka principal (None: from the settings / the stack's pki)
    kafka_ca: Optional[Path] = None
    kafka_cert: Optional[Path] = None
    kafka_key: Optional[Path] = None
    extra: dict = field(default_factory=dict)

    def ledger_id(self, device: str) -> str:
        """The device's id in the ledger's registry: ``<factory>-<device>``."""
        return f"{self.factory}-{device}"


def source_factory(type_: str, section: dict) -> Callable[[str, dict], Any]:
    """The ``from_config`` of a source type (imported lazily: a source module that is not installed
    is a config problem, not an import error of the agent)."""
    if type_ == "python":
        module = section.get("module")
        if not isinstance(module, str) or not module:
            raise ValueError('a "python" source needs module = "package.module" (exposing from_config)')
        mod = importlib.import_module(module)
    else:
        mod = importlib.import_module(f"edge.sources.{type_}")
    fn = getattr(mod, "from_config", None)
    if not callable(fn):
        raise ValueError(f"module {mod.__name__} has no from_config(name, section)")
    return fn


class _V:
    """Collects problems while reading tables."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def bad(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def table(self, doc: dict, key: str, path: str, required: bool = False) -> dict:
        v = doc.get(key)
        if v is None:
            if required:
                self.bad(path, f"missing table [{path}]; add it")
            return {}
        if not isinstance(v, dict):
            self.bad(path, "must be a table")
            return {}
        return v

    def unknown(self, doc: dict, allowed: set[str], path: str) -> None:
        for k in sorted(set(doc) - allowed):
            self.bad(f"{path}.{k}" if path else k, f"unknown key; use one of {', '.join(sorted(allowed))}")

    def num(self, doc: dict, key: str, path: str, default: Any, *, kind: type = int, minimum: float = 0,
            strict_min: bool = False) -> Any:
        v = doc.get(key, default)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (kind is float or isinstance(v, int))
        if ok:
            ok = v > minimum if strict_min else v >= minimum
        if not ok:
            what = "an integer" if kind is int else "a number"
            self.bad(f"{path}.{key}", f"must be {what} {'>' if strict_min else '>='} {minimum:g}, got {v!r}")
            return default
        return kind(v)


def _resolve(base: Path, p: str) -> Path:
    q = Path(p).expanduser()
    return q if q.is_absolute() else (base / q)


def _parse(file: Path, doc: dict, *, check_sources: bool) -> tuple[Optional[EdgeConfig], list[Problem]]:
    v = _V()
    base = file.resolve().parent
    v.unknown(doc, {"edge", "devices", "sources"}, "")
    edge = v.table(doc, "edge", "edge", required=True)
    v.unknown(edge, {"factory", "spool", "group", "kafka_bootstrap", "metrics_port", "kafka_ca", "kafka_cert",
                     "kafka_key"}, "edge")
    factory = edge.get("factory")
    if not isinstance(factory, str) or not _NAME.match(factory):
        v.bad("edge.factory", f"must name the factory (letters, digits, '.', '_', '-'), got {factory!r}")
        factory = "invalid"
    kafka = edge.get("kafka_bootstrap")
    if kafka is not None and (not isinstance(kafka, str) or not kafka.strip()):
        v.bad("edge.kafka_bootstrap", 'must be "host:port[,host:port...]" or left out')
        kafka = None
    metrics_port = v.num(edge, "metrics_port", "edge", 9420)
    tls: dict[str, Optional[Path]] = {}
    for name in ("kafka_ca", "kafka_cert", "kafka_key"):
        value = edge.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            v.bad(f"edge.{name}", "must be a PEM file path or left out")
            value = None
        tls[name] = _resolve(base, value) if value else None
    if tls["kafka_key"] is not None and tls["kafka_cert"] is None:
        v.bad("edge.kafka_key", "needs edge.kafka_cert (the certificate of that key)")
    if metrics_port > 65535:
        v.bad("edge.metrics_port", f"must be a TCP port (0..65535), got {metrics_port}")
    sp = v.table(edge, "spool", "edge.spool")
    v.unknown(sp, {"path", "max_bytes", "max_age_s", "pending_key"}, "edge.spool")
    sp_path = sp.get("path", "spool")
    if not isinstance(sp_path, str) or not sp_path:
        v.bad("edge.spool.path", "must be a directory path")
        sp_path = "spool"
    pk = sp.get("pending_key")
    if pk is not None and (not isinstance(pk, str) or not pk):
        v.bad("edge.spool.pending_key", "must be a file path")
        pk = None
    spool = SpoolConfig(_resolve(base, sp_path), v.num(sp, "max_bytes", "edge.spool", 1 << 30, minimum=1024),
                        v.num(sp, "max_age_s", "edge.spool", 86400.0, kind=float, minimum=0, strict_min=True),
                        None if pk is None else _resolve(base, pk))
    gr = v.table(edge, "group", "edge.group")
    v.unknown(gr, {"readings", "seconds"}, "edge.group")
    group = GroupConfig(v.num(gr, "readings", "edge.group", 200, minimum=1),
                        v.num(gr, "seconds", "edge.group", 1.0, kind=float, minimum=0, strict_min=True))

    devices: dict[str, DeviceConfig] = {}
    for name, d in v.table(doc, "devices", "devices", required=True).items():
        path = f"devices.{name}"
        if not _NAME.match(name):
            v.bad(path, "a device name uses letters, digits, '.', '_' or '-' (at most 64)")
        if not isinstance(d, dict):
            v.bad(path, "must be a table")
            continue
        v.unknown(d, {"kind", "key", "sensors", "confidential"}, path)
        kind = d.get("kind")
        if kind not in KINDS:
            v.bad(f"{path}.kind", f"must be one of {', '.join(sorted(KINDS))}, got {kind!r}")
        key = d.get("key")
        parsed_key: dict = {}
        if not isinstance(key, dict) or len(key) != 1 or next(iter(key)) not in ("file", "pkcs11"):
            v.bad(f"{path}.key", 'must be { file = "keys/<name>.key" } or { pkcs11 = { ... } }')
        elif "file" in key:
            if not isinstance(key["file"], str) or not key["file"]:
                v.bad(f"{path}.key.file", "must be a path to a key file")
            else:
                parsed_key = {"file": _resolve(base, key["file"])}
        else:
            if not isinstance(key["pkcs11"], dict):
                v.bad(f"{path}.key.pkcs11", "must be a table (module, token, label, pin_file ...)")
            else:
                parsed_key = {"pkcs11": dict(key["pkcs11"])}
        sensors = d.get("sensors", [])
        if not isinstance(sensors, list) or not all(isinstance(s, str) and _SENSOR.match(s) for s in sensors):
            v.bad(f"{path}.sensors", "must be a list of sensor names (1..128 printable characters)")
            sensors = []
        elif len(set(sensors)) != len(sensors):
            v.bad(f"{path}.sensors", "lists a sensor twice")
        if kind != "timeseries" and sensors:
            v.bad(f"{path}.sensors", f"only timeseries devices have sensors (this one is {kind!r})")
        conf = _confidential(v, d.get("confidential"), f"{path}.confidential", base) \
            if "confidential" in d else None
        devices[name] = DeviceConfig(name, kind if kind in KINDS else "timeseries", parsed_key, tuple(sensors), base,
                                     conf)
    if not devices and not any(p.path == "devices" for p in v.problems):
        v.bad("devices", "no device configured; add a [devices.<name>] table")

    sources: dict[str, SourceConfig] = {}
    for name, s in v.table(doc, "sources", "sources").items():
        path = f"sources.{name}"
        if not _NAME.match(name):
            v.bad(path, "a source name uses letters, digits, '.', '_' or '-' (at most 64)")
        if not isinstance(s, dict):
            v.bad(path, "must be a table")
            continue
        type_ = s.get("type")
        if type_ not in SOURCE_TYPES:
            v.bad(f"{path}.type", f"must be one of {', '.join(SOURCE_TYPES)}, got {type_!r}")
            continue
        section = dict(s)
        if type_ == "files":  # it resolves its relative folder against the config's folder
            section.setdefault("base_dir", str(base))
        for ref in _device_refs(section):
            if ref not in devices:
                v.bad(f"{path}.device", f"names device {ref!r}, which is not configured; add [devices.{ref}]")
        sources[name] = SourceConfig(name, type_, section)
        if check_sources:
            try:
                source_factory(type_, section)(name, section)
            except ModuleNotFoundError as exc:
                v.bad(path, f"source type {type_!r} is not available here ({exc}); install it or remove the source")
            except Exception as exc:  # noqa: BLE001 - each source module validates its own table
                v.bad(path, f"{exc}")
    if v.problems:
        return None, v.problems
    return EdgeConfig(file, factory, spool, group, devices, sources, kafka, metrics_port,
                      kafka_ca=tls["kafka_ca"], kafka_cert=tls["kafka_cert"], kafka_key=tls["kafka_key"]), []


def _confidential(v: _V, c: Any, path: str, base: Path) -> Optional[ConfidentialConfig]:
    if not isinstance(c, dict):
        v.bad(path, 'must be a table: { stream = "...", recipients = "recipients.json" | ["keys/qa.pub"] }')
        return None
    v.unknown(c, {"stream", "recipients"}, path)
    stream, rc = c.get("stream"), c.get("recipients")
    ok = True
    if not isinstance(stream, str) or not _NAME.match(stream) and not stream.startswith("did:"):
        v.bad(f"{path}.stream", "must name the stream (a device's ledger id or a named stream)")
        ok = False
    if rc == "ledger":
        v.bad(f"{path}.recipients", "the edge does not read the ledger: export the recipients in force with "
              "`sealstream data recipients --stream S --out FILE` and give that FILE (re-read when it changes)")
        return None
    if isinstance(rc, str) and rc:
        recipients: Path | tuple[Path, ...] = _resolve(base, rc)
    elif isinstance(rc, list) and rc and all(isinstance(x, str) and x for x in rc):
        recipients = tuple(_resolve(base, x) for x in rc)
    else:
        v.bad(f"{path}.recipients", "must be a recipients file or a non-empty list of recipient public key files")
        return None
    return ConfidentialConfig(str(stream), recipients) if ok else None


def _device_refs(section: dict) -> list[str]:
    """Device names a source table refers to: ``device = "x"`` and ``device`` keys of nested tables/lists."""
    refs: list[str] = []

    def walk(obj: Any, depth: int = 0) -> None:
        if depth > 6:
            return
        if isinstance(obj, dict):
            for k, val in obj.items():
                if k == "device" and isinstance(val, str):
                    refs.append(val)
                else:
                    walk(val, depth + 1)
        elif isinstance(obj, list):
            for val in obj:
                walk(val, depth + 1)

    walk(section)
    return refs


def _read(file: Path) -> tuple[Optional[dict], list[Problem]]:
    try:
        return tomllib.loads(file.read_text("utf-8")), []
    except FileNotFoundError:
        return None, [Problem(str(file), "no such file; write an edge.toml (see docs/edge.md)")]
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        return None, [Problem(str(file), f"not valid TOML ({exc}); fix the syntax")]


def check_config(file: Path | str, *, check_sources: bool = True) -> list[Problem]:
    """Every problem of the config at `file` (empty: it is usable). Key files are checked too."""
    file = Path(file)
    doc, problems = _read(file)
    if doc is None:
        return problems
    cfg, problems = _parse(file, doc, check_sources=check_sources)
    if cfg is None:
        return problems
    from .signing import key_problems

    for dev in cfg.devices.values():
        problems += key_problems(dev)
        if dev.confidential is not None:
            from confidential.device import RecipientsFileError, load_recipients

            try:
                load_recipients(dev.confidential.recipients, dev.confidential.stream)
            except RecipientsFileError as exc:
                problems.append(Problem(f"devices.{dev.name}.confidential.recipients", str(exc)))
    return problems


def load_config(file: Path | str, *, check_sources: bool = True) -> EdgeConfig:
    """The parsed config; `ConfigError` with every problem otherwise (key files are checked when loaded)."""
    file = Path(file)
    doc, problems = _read(file)
    if doc is None:
        raise ConfigError(file, problems)
    cfg, problems = _parse(file, doc, check_sources=check_sources)
    if cfg is None:
        raise ConfigError(file, problems)
    return cfg
