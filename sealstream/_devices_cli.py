"""``sealstream devices ...``: the device/edge simulator (run a factory, list its devices).

Devices, keys and seqs live in ``$SEALSTREAM_HOME/devices/<factory>/`` (see
`pipelines.devices`). Exit codes: 0 ok, 1 error (one sentence naming the fix),
4 when a run finished but some records were not delivered.
"""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ._output import emit_json as _emit
from ._output import settings_of as _settings
from ._output import err as _err
from ._output import fail
from ._output import out as _out

__all__ = ["devices"]



def _fail(exc: BaseException, as_json: bool) -> None:
    fail({"error": type(exc).__name__, "message": str(exc)}, as_json)


@click.group()
def devices() -> None:
    """Simulated factories: signed devices producing telemetry to Kafka.

    \b
    sealstream devices run --factory plant-a --devices 3 --rate 2 --duration 30
    sealstream devices run --factory plant-a --count 100 --fault bad-signature:0.01 --fault replay:5
    sealstream devices list --factory plant-a

    Each device has its own Ed25519 key (0600) and a strictly increasing seq kept
    across runs, in $SEALSTREAM_HOME/devices/<factory>/ (devices.json is the
    manifest; sent.jsonl logs every record sent with its partition and offset).
    """


def _progress_bar(total: float, by_count: bool) -> Progress:
    return Progress(
        TextColumn("[bold]devices[/]"), BarColumn(),
        TextColumn("{task.fields[msgs]} msgs  {task.fields[rate]:.0f} msg/s  {task.fields[mbps]:.1f} MB/s"
                   "  {task.fields[errors]} errors"),
        TimeElapsedColumn(), console=_err, transient=False)


def _enrol(s: Any, factory: str) -> None:
    """On a local stack (its CA key at hand) the simulated factory gets its Kafka principal: a
    certificate and its produce-only ACLs (what `sealstream stack factory add` does)."""
    from sealstream._security import pki_dir

    if (pki_dir(s.home) / "ca.key").exists() and not (pki_dir(s.home) / f"client-factory-{factory}.crt").exists():
        from infra import Stack

        Stack(s).ensure_factory(factory)


@devices.command("run")
@click.option("--factory", required=True, help="factory name (created on first use)")
@click.option("--devices", "n_devices", type=click.IntRange(1), default=2, show_default=True,
              help="devices per kind (more are added to the factory when needed)")
@click.option("--rate", type=click.FloatRange(0), default=1.0, show_default=True,
              help="messages per second per device; 0 = as fast as possible")
@click.option("--duration", type=click.FloatRange(0, min_open=True), default=None, help="stop after S seconds")
@click.option("--count", type=click.IntRange(1), default=None, help="stop after N messages (faults included)")
@click.option("--kinds", default="timeseries,image,video", show_default=True,
              help="comma-separated payload kinds")
@click.option("--fault", "faults", multiple=True, metavar="NAME:AMOUNT",
              help="inject a fault: NAME:0.01 (per-message rate) or NAME:5 (count); repeatable. NAME is one of "
                   "bad-signature, unknown-device, replay, corrupted-payload, oversized, clock-skew, "
                   "malformed-headers")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of payloads and fault choices")
@click.option("--client", type=click.Choice(["confluent", "kafka-python"]), default=None,
              help="Kafka producer [SEALSTREAM_DEVICES_KAFKA_CLIENT; default confluent if installed]")
@click.option("--confidential", "confidential", metavar="STREAM", default=None,
              help="seal every payload for STREAM's recipients in force (issue 18; the policy and the "
                   "recipients' keys proven from the ledger)")
@click.option("--recipients-refresh", type=click.FloatRange(0, min_open=True), default=30.0, show_default=True,
              metavar="SECONDS", help="with --confidential: re-read the recipients in force this often")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@click.pass_context
def devices_run(ctx: click.Context, factory: str, n_devices: int, rate: float, duration: float | None,
                count: int | None, kinds: str, faults: tuple[str, ...], seed: int, client: str | None,
                confidential: str | None, recipients_refresh: float, as_json: bool) -> None:
    """Produce signed telemetry from every device of a factory for a bounded time or count."""
    from pipelines.devices import FactoryError, FaultPlan, ProducerError, RunConfig, Simulator, parse_kinds

    s = _settings(ctx)
    try:
        if duration is None and count is None:
            raise ValueError("a run needs a bound: give --duration SECONDS or --count MESSAGES")
        config = RunConfig(factory, n_devices, rate, duration, count, parse_kinds(kinds), FaultPlan.parse(faults),
                           seed, client, confidential=confidential, recipients_refresh=recipients_refresh)
    except ValueError as exc:
        _fail(ValueError(f"{exc} (see `sealstream devices run --help`)"), as_json)
        return
    from sealstream._kafka_config import kafka_secured

    if kafka_secured(s):
        _enrol(s, factory)
    sim = Simulator(s, config)
    by_count = count is not None and (duration is None or (rate > 0 and count < duration * rate))
    total = float(count) if by_count and count is not None else float(duration or 1)
    bar = _progress_bar(total, by_count) if (_err.is_terminal and not as_json) else None
    last_line = [0.0]

    def on_progress(st: Any) -> None:
        rate_now = st.sent / st.elapsed if st.elapsed > 0 else 0.0
        mbps = st.bytes / st.elapsed / 1e6 if st.elapsed > 0 else 0.0
        if bar is not None:
            done = st.sent if by_count else min(st.elapsed, total)
            bar.update(task, completed=done, msgs=st.sent, rate=rate_now, mbps=mbps, errors=st.errors)
        elif not as_json and st.elapsed - last_line[0] >= 5:
            last_line[0] = st.elapsed
            _err.print(f"- {st.sent} msgs, {rate_now:.0f} msg/s, {mbps:.1f} MB/s, {st.errors} errors",
                       highlight=False)

    try:
        if bar is not None:
            with bar:
                task = bar.add_task("run", total=total, msgs=0, rate=0.0, mbps=0.0, errors=0)
                summary = sim.run(on_progress)
        else:
            summary = sim.run(on_progress)
    except (FactoryError, ProducerError, ValueError) as exc:
        _fail(exc, as_json)
        return
    if as_json:
        _emit(summary.to_json())
    else:
        _print_summary(summary)
    if summary.errors:
        sys.exit(4)


def _print_summary(sm: Any) -> None:
    table = Table("kind", "messages", "MB", title=f"factory {sm.factory}, run {sm.run_id} ({sm.client})")
    for kind, n in sm.by_kind.items():
        table.add_row(kind, str(n), f"{sm.bytes_by_kind.get(kind, 0) / 1e6:.2f}")
    table.add_row("[bold]total[/]", str(sm.messages), f"{sm.bytes / 1e6:.2f}")
    _out.print(table)
    secs = max(sm.seconds, 1e-9)
    faults = ", ".join(f"{k} {v}" for k, v in sm.faults.items()) or "none"
    _out.print(f"{sm.devices} devices, {sm.seconds:.1f} s, {sm.messages / secs:.0f} msg/s, "
               f"{sm.bytes / secs / 1e6:.1f} MB/s; delivered {sm.delivered}/{sm.messages}; faults: {faults}; "
               f"errors: {sm.errors}{' (' + sm.first_error + ')' if sm.first_error else ''}"
               f"{'; interrupted' if sm.interrupted else ''}", highlight=False)
    _out.print(f"sent-log: {sm.sent_log}", highlight=False)


@devices.command("list")
@click.option("--factory", required=True, help="factory name")
@click.option("--json", "as_json", is_flag=True, help="print as JSON")
@click.pass_context
def devices_list(ctx: click.Context, factory: str, as_json: bool) -> None:
    """The devices of a factory: name, kind, did, sensors and next seq."""
    import json

    from pipelines.devices import Factory, FactoryError
    from trust.errors import TrustError

    s = _settings(ctx)
    try:
        f = Factory.load(s, factory)
    except (FactoryError, TrustError) as exc:
        _fail(exc, as_json)
        return
    seq_file = f.path / "seq.json"
    seqs = json.loads(seq_file.read_text("utf-8")) if seq_file.exists() else {}
    rows = [spec.to_json() | {"next_seq": seqs.get(spec.did, 0)} for spec in f.specs()]
    if as_json:
        _emit({"factory": factory, "path": str(f.path), "devices": rows})
        return
    table = Table("name", "kind", "did", "sensors", "next seq", title=f"factory {factory} ({f.path})")
    for r in rows:
        table.add_row(r["name"], r["kind"], Text(r["did"]), ",".join(r["sensors"]), str(r["next_seq"]))
    _out.print(table)


