"""``sealstream edge ...``: the factory edge agent (edge/), its config check, keys, status and registration."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import click

from ._output import emit_json as _emit
from ._output import settings_of as _settings
from ._output import fail
from ._output import out as _out
from .settings import Settings

__all__ = ["edge", "clock_state"]

_CONFIG = click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path),
                       default=Path("edge.toml"), show_default=True, help="the edge's TOML config")
_JSON = click.option("--json", "as_json", is_flag=True, help="print as JSON")



def _load(config: Path, as_json: bool, check_sources: bool = True) -> Any:
    from edge.config import ConfigError, load_config

    try:
        return load_config(config, check_sources=check_sources)
    except ConfigError as exc:
        fail({"error": "ConfigError", "message": str(exc), "problems": [p.to_json() for p in exc.problems]}, as_json)


@click.group()
def edge() -> None:
    """The edge agent in the factory: OPC UA, MQTT/Sparkplug B, Modbus and camera folders ->
    signed payloads -> a durable spool -> Kafka, in the format the pipeline accepts.

    \b
    sealstream edge check-config --config edge.toml          every problem, with its path
    sealstream edge keygen --config edge.toml                missing device key files (0600)
    sealstream edge register --config edge.toml              the devices on the ledger's registry
    sealstream edge run --config edge.toml                   run until SIGTERM (metrics on :9420)
    sealstream edge status --config edge.toml --json         spool depth/age, sources, last send, clock

    The config format, the wire format and the spool's policies are in docs/edge.md.
    """


@edge.command("check-config")
@_CONFIG
@_JSON
def check_config_cmd(config: Path, as_json: bool) -> None:
    """Validate edge.toml: tables, devices, keys (file modes), each source's own table.

    \b
    sealstream edge check-config --config /etc/sealstream/edge.toml
    sealstream edge check-config --config edge.toml --json | jq '.problems[].path'

    Exit 0 when usable, 1 with every problem listed as `path: what to fix`.
    """
    from edge.config import check_config

    problems = check_config(config)
    if as_json:
        _emit({"config": str(config), "ok": not problems, "problems": [p.to_json() for p in problems]})
    else:
        for p in problems:
            _out.print(f"[red]✗[/] {p}", highlight=False)
        if not problems:
            _out.print(f"{config}: ok", highlight=False)
    if problems:
        sys.exit(1)


@edge.command("keygen")
@_CONFIG
@_JSON
def keygen_cmd(config: Path, as_json: bool) -> None:
    """Create the missing key files of the config's devices (Ed25519, mode 0600; never overwritten).

    \b
    sealstream edge keygen --config edge.toml && sealstream edge register --config edge.toml
    """
    from edge.signing import FileSigner, create_key

    cfg = _load(config, as_json, check_sources=False)
    rows = []
    for d in cfg.devices.values():
        if "file" not in d.key:
            rows.append({"device": d.name, "key": "pkcs11", "created": False, "did": None})
            continue
        created = create_key(d)
        did = FileSigner.from_file(Path(d.key["file"])).did
        rows.append({"device": d.name, "key": str(d.key["file"]), "created": created, "did": did})
    if as_json:
        _emit({"devices": rows})
    else:
        for r in rows:
            _out.print(f"{r['device']}: {'created' if r['created'] else 'kept'} {r['key']} {r['did'] or ''}",
                       highlight=False)


@edge.command("register")
@_CONFIG
@click.option("--org", default="operator", show_default=True, help="the registry org the devices belong to")
@_JSON
@click.pass_context
def register_cmd(ctx: click.Context, config: Path, org: str, as_json: bool) -> None:
    """Register the config's devices on the ledger (registry contract), as `<factory>-<device>`.

    Uses the local ledger's admin key ($SEALSTREAM_HOME/ledger, `sealstream ledger init`); a device
    already registered with the same key is kept, with another key it is an error.

    \b
    sealstream edge register --config edge.toml --json
    """
    from edge.signing import SignerError, load_signer

    s = _settings(ctx)
    cfg = _load(config, as_json, check_sources=False)
    try:
        devices = [(cfg.ledger_id(n), load_signer(d).did) for n, d in cfg.devices.items()]
    except SignerError as exc:
        fail({"error": "SignerError", "message": str(exc)}, as_json)
    try:
        n, height = register_devices(s, devices, org)
    except Exception as exc:  # noqa: BLE001 - ledger unreachable, refusals: one sentence
        fail({"error": type(exc).__name__,
              "message": f"registering on the ledger failed ({exc}); start it with `sealstream ledger up`"}, as_json)
    if as_json:
        _emit({"registered": n, "devices": [{"id": i, "did": d} for i, d in devices], "height": height})
    else:
        _out.print(f"{n} device(s) registered, {len(devices) - n} already there; ledger height {height}",
                   highlight=False)
        for i, d in devices:
            _out.print(f"  {i}  {d}", highlight=False)


def register_devices(s: Settings, devices: list[tuple[str, str]], org: str = "operator") -> tuple[int, Any]:
    """Register ``(id, did)`` devices with the ledger admin key of `s`; (number registered now, height)."""
    from ledger.client import LedgerClient
    from ledger.layout import LedgerLayout
    from pipelines._anchor_ledger import ensure_devices

    layout = LedgerLayout(s.ledger_home)
    if not layout.exists():
        raise RuntimeError(f"no ledger in {s.ledger_home}")
    with LedgerClient.from_layout(s.ledger_home, key=layout.admin_key()) as admin:
        n = ensure_devices(admin, devices, org=org)
        return n, admin.get_status().get("height")


@edge.command("run")
@_CONFIG
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="/metrics port (default: [edge] metrics_port, 9420; 0 = none)")
@click.pass_context
def run_cmd(ctx: click.Context, config: Path, metrics_port: Optional[int]) -> None:
    """Run the agent until SIGTERM/SIGINT (then it flushes its groups and drains what is in flight).

    \b
    sealstream edge run --config /etc/sealstream/edge.toml
    SEALSTREAM_LOG_FORMAT=json sealstream edge run --config edge.toml --metrics-port 9421

    Kafka may be down when it starts: everything waits in the spool (docs/edge.md).
    """
    import dataclasses

    from edge.agent import run_agent
    from edge.pending_seal import PendingKeyError
    from sealstream._kafka_config import factory_principal, kafka_endpoint
    from edge.signing import SignerError

    s = _settings(ctx)
    cfg = _load(config, False)
    if metrics_port is not None:
        cfg = dataclasses.replace(cfg, metrics_port=metrics_port)
    endpoint = kafka_endpoint(s, factory_principal(cfg.factory), bootstrap=cfg.kafka_bootstrap,
                              ca=cfg.kafka_ca, cert=cfg.kafka_cert, key=cfg.kafka_key)
    tls = endpoint.tls
    for what, path in (("CA", tls.ca if tls else None), ("certificate", tls.cert if tls else None),
                       ("key", tls.key if tls else None)):
        if path is not None and not Path(path).is_file():
            fail({"error": "KafkaCredentialsMissing",
                  "message": f"the Kafka {what} of {factory_principal(cfg.factory)} ({path}) does not exist: "
                             f"enrol the factory with `sealstream stack factory add {cfg.factory}`, or name "
                             "kafka_ca, kafka_cert and kafka_key in the edge table of the config"}, False)
    try:
        run_agent(cfg, endpoint)
    except SignerError as exc:
        fail({"error": "SignerError", "message": str(exc)}, False)
    except PendingKeyError as exc:
        fail({"error": "PendingKeyError", "reason": exc.reason, "message": str(exc)}, False)
    except OSError as exc:
        fail({"error": type(exc).__name__, "message": f"{exc}; free the port or set --metrics-port"}, False)


def clock_state() -> dict:
    """chrony's tracking when `chronyc` exists, else timedatectl's NTP sync state, else unknown."""
    if shutil.which("chronyc"):
        try:
            p = subprocess.run(["chronyc", "-n", "tracking"], capture_output=True, text=True, timeout=5)
            if p.returncode == 0:
                fields = {}
                for line in p.stdout.splitlines():
                    if ":" in line:
                        k, v = line.split(":", 1)
                        fields[k.strip()] = v.strip()
                offset = None
                m = re.match(r"([0-9.]+) seconds (fast|slow)", fields.get("System time", ""))
                if m:
                    offset = float(m.group(1)) * (1 if m.group(2) == "fast" else -1)
                return {"source": "chrony", "synchronized": fields.get("Leap status") == "Normal",
                        "reference": fields.get("Reference ID"), "stratum": fields.get("Stratum"),
                        "offset_s": offset, "leap_status": fields.get("Leap status")}
            return {"source": "chrony", "synchronized": None, "detail": (p.stderr or p.stdout).strip()[:200]}
        except (OSError, subprocess.TimeoutExpired) as exc:
            return {"source": "chrony", "synchronized": None, "detail": str(exc)}
    if shutil.which("timedatectl"):
        try:
            p = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"], capture_output=True,
                               text=True, timeout=5)
            if p.returncode == 0 and p.stdout.strip() in ("yes", "no"):
                return {"source": "timedatectl", "synchronized": p.stdout.strip() == "yes"}
        except (OSError, subprocess.TimeoutExpired):
            pass
    return {"source": "unknown", "synchronized": None}


@edge.command("status")
@_CONFIG
@_JSON
def status_cmd(config: Path, as_json: bool) -> None:
    """The agent's spool (depth, bytes, oldest age, full?), sources, last send and the clock's sync state.

    \b
    sealstream edge status --config edge.toml
    sealstream edge status --config edge.toml --json | jq .spool

    Reads the spool database and the agent's status file (written every 2 s); exit 3 when the agent
    is not running (its status is stale) or the spool is full.
    """
    from edge.spool import read_meta, read_stats

    cfg = _load(config, as_json, check_sources=False)
    try:
        st = read_stats(cfg.spool.path)
    except FileNotFoundError as exc:
        fail({"error": "FileNotFoundError", "message": str(exc)}, as_json)
    now = int(time.time() * 1000)
    agent: dict = {}
    path = cfg.spool.path / "status.json"
    if path.exists():
        try:
            agent = json.loads(path.read_text())
        except ValueError:
            agent = {}
    running = bool(agent) and now - int(agent.get("updated_ms", 0)) < 10_000 and _alive(agent.get("pid"))
    last_send = read_meta(cfg.spool.path, "last_send_ms")
    full = None
    if running and "full" in agent.get("spool", {}):
        full = agent["spool"]["full"]  # the agent's own state (held until below the resume mark)
    elif st.bytes >= cfg.spool.max_bytes:
        full = "size"
    elif st.oldest_ms is not None and now - st.oldest_ms > cfg.spool.max_age_s * 1000:
        full = "age"
    doc = {"factory": cfg.factory, "running": running, "pid": agent.get("pid") if running else None,
           "spool": {"path": str(cfg.spool.path), "messages": st.messages, "bytes": st.bytes,
                     "max_bytes": cfg.spool.max_bytes, "oldest_age_s": round(st.age_s(now), 3),
                     "max_age_s": cfg.spool.max_age_s, "full": full, "rejected": st.rejected, "devices": st.devices},
           "last_send_ms": int(last_send) if last_send else None,
           "last_send_age_s": round((now - int(last_send)) / 1000, 3) if last_send else None,
           "sources": agent.get("sources", {}) if running else {},
           "clock": clock_state()}
    if as_json:
        _emit(doc)
    else:
        sp = doc["spool"]
        _out.print(f"agent: {'running (pid %s)' % doc['pid'] if running else 'not running'}", highlight=False)
        _out.print(f"spool: {sp['messages']} messages, {sp['bytes']} of {sp['max_bytes']} bytes, oldest "
                   f"{sp['oldest_age_s']} s (max {sp['max_age_s']:g}){'  FULL (' + full + ')' if full else ''}; "
                   f"{sp['rejected']} rejected", highlight=False)
        _out.print(f"last send: {doc['last_send_age_s']} s ago" if last_send else "last send: never", highlight=False)
        for name, src in doc["sources"].items():
            errs = ", ".join(f"{k} {v}" for k, v in src.get("errors", {}).items()) or "no errors"
            _out.print(f"source {name}: {src.get('state')}, {src.get('readings')} readings, {errs}", highlight=False)
        c = doc["clock"]
        _out.print(f"clock: {c['source']}, synchronized: {c.get('synchronized')}"
                   + (f", offset {c['offset_s']} s" if c.get("offset_s") is not None else ""), highlight=False)
    if not running or full:
        sys.exit(3)


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
