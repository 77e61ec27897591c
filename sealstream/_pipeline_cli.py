"""``sealstream pipeline ...``: the pipeline worker (ingest -> store -> seal).

Exit codes: 0 on a clean stop (SIGTERM/Ctrl-C), 1 on a start-up error (one
sentence naming the fix).
"""

from __future__ import annotations


import click

from ._output import fail
from ._output import settings_of as _settings
from ._kafka_config import kafka_endpoint

__all__ = ["pipeline"]



@click.group()
def pipeline() -> None:
    """The pipeline worker: verify, store and seal device telemetry from Kafka.

    \b
    sealstream pipeline worker                                   devices resolved on the ledger
    sealstream pipeline worker --directory manifest --factory plant-a   demo/tests: no ledger

    Any number of workers share the consumer group $SEALSTREAM_PIPELINE_APP_ID.
    Rejected records go to iiot.deadletter (original bytes + ss-dlq-reason);
    stored ones are sealed to iiot.sealed. Metrics on /metrics
    ($SEALSTREAM_PIPELINE_METRICS_PORT). See docs/pipeline.md.
    """


@pipeline.command("worker")
@click.option("--app-id", default=None, help="Faust app id = consumer group [SEALSTREAM_PIPELINE_APP_ID]")
@click.option("--directory", type=click.Choice(["ledger", "manifest"]), default=None,
              help="where device keys come from [SEALSTREAM_PIPELINE_DIRECTORY; default ledger]")
@click.option("--factory", "factories", multiple=True,
              help="with --directory manifest: a simulator factory whose devices.json to trust (repeatable)")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="/metrics port, 0 = none [SEALSTREAM_PIPELINE_METRICS_PORT]")
@click.option("--offset-reset", type=click.Choice(["earliest", "latest"]), default=None,
              help="where a new consumer group starts [SEALSTREAM_PIPELINE_OFFSET_RESET]")
@click.option("--loglevel", type=click.Choice(["crit", "error", "warn", "info", "debug"]), default="warn",
              show_default=True, help="Faust's log level")
@click.option("--anchor/--no-anchor", default=True, show_default=True,
              help="also anchor sealed statements on the ledger (needs `sealstream ledger up` and a registered "
                   "gateway: `sealstream pipeline register-gateway`)")
@click.option("--anchor-only", is_flag=True,
              help="run only the anchor agent (in its own consumer group, beside --no-anchor workers)")
@click.pass_context
def pipeline_worker(ctx: click.Context, app_id: str | None, directory: str | None, factories: tuple[str, ...],
                    metrics_port: int | None, offset_reset: str | None, loglevel: str, anchor: bool,
                    anchor_only: bool) -> None:
    """Run one worker until stopped (SIGTERM or Ctrl-C).

    \b
    Ingest -> store -> seal, and (unless --no-anchor) the anchor agent: windows of
    iiot.sealed (SEALSTREAM_PIPELINE_ANCHOR_MAX_LEAVES / _WINDOW_S) become RFC 9162
    batches anchored on the ledger with the gateway key, reported on iiot.anchors.

    \b
    Under load, run the anchor agent in its own process so it does not share
    the ingest agents' event loop (docs/pipeline.md, "Anchoring in its own process"):
      sealstream pipeline worker --no-anchor
      sealstream pipeline worker --anchor-only --app-id sealstream-anchor --metrics-port 9411
    """
    from pipelines.app import make_directory, run_worker
    from pipelines.devices import FactoryError

    s = _settings(ctx)
    if anchor_only and not anchor:
        fail({"error": "usage", "message": "--anchor-only and --no-anchor exclude each other"}, False)
    d = None
    if not anchor_only:
        try:
            d = make_directory(s, directory or ("manifest" if factories else None), factories)
        except (ValueError, FactoryError, OSError) as exc:
            fail({"error": type(exc).__name__, "message": str(exc)}, False)
    run_worker(s, d, app_id=app_id, metrics_port=metrics_port, offset_reset=offset_reset, loglevel=loglevel,
               anchor=anchor, ingest=not anchor_only)


@pipeline.command("register-gateway")
@click.option("--gateway", default=None, help="gateway id = key name [SEALSTREAM_PIPELINE_GATEWAY]")
@click.option("--org", default="operator", show_default=True, help="the org the gateway belongs to")
@click.option("--fund", type=click.IntRange(1), default=1_000_000, show_default=True,
              help="top the gateway's token balance up to this when it is below half of it")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.pass_context
def pipeline_register_gateway(ctx: click.Context, gateway: str | None, org: str, fund: int, as_json: bool) -> None:
    """Register this worker's gateway key on the local ledger and fund it (idempotent).

    \b
    sealstream pipeline register-gateway                     gateway $SEALSTREAM_PIPELINE_GATEWAY
    sealstream pipeline register-gateway --gateway gw-2 --json

    Signs with the ledger's consortium admin key (<ledger home>/keys/admin.key), which
    on a `sealstream ledger init` ledger also administers the org "operator". Each
    ANCHOR costs the gateway tokens (docs/contracts.md); the admin mints them.
    """
    from pathlib import Path

    from ledger.client import LedgerClient
    from ledger.layout import LedgerLayout
    from pipelines._anchor_ledger import GatewayError, ensure_gateway
    from pipelines.worker import gateway_key

    from ._output import emit_json, out

    s = _settings(ctx)
    name = gateway or s.pipeline_gateway
    layout = LedgerLayout(s.ledger_home)
    if not layout.exists():
        fail({"error": "no-ledger", "message": f"no ledger in {s.ledger_home}: run `sealstream ledger up` first"},
             as_json)
    try:
        did = gateway_key(Path(s.home), name).did
        with LedgerClient.from_layout(s.ledger_home, key=layout.admin_key()) as admin:
            reg = ensure_gateway(admin, name, did, org=org, fund=fund)
    except GatewayError as exc:
        fail({"error": exc.code, "message": str(exc)}, as_json)
        return
    except Exception as exc:  # noqa: BLE001 - layout missing, ledger down: one sentence for the operator
        fail({"error": type(exc).__name__, "message": str(exc)}, as_json)
        return
    if as_json:
        emit_json(reg.to_json())
        return
    out.print(f"gateway {reg.gateway} ({reg.did}) in org {reg.org}: "
        f"{'registered now' if reg.registered_now else 'already registered'}; "
        f"minted {reg.minted}, balance {reg.balance}", highlight=False)


# -- dead letters: inspect and prune the `dead_letters` table ------------------------------------
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


class _Duration(click.ParamType):
    """A positive whole number with a unit: 7d, 12h, 30m, 90s."""

    name = "duration"

    def convert(self, value, param, ctx):  # click's signature
        from datetime import timedelta

        if isinstance(value, timedelta):
            return value
        text = str(value).strip().lower()
        if len(text) < 2 or text[-1] not in _UNITS or not text[:-1].isdigit() or int(text[:-1]) == 0:
            self.fail(f"{value!r} is not a duration: a positive whole number and a unit d, h, m or s "
                      "(7d, 12h, 30m, 90s)", param, ctx)
        return timedelta(**{_UNITS[text[-1]]: int(text[:-1])})


def _dead_letter_log(ctx: click.Context, as_json: bool, work):
    """Run ``work(DeadLetterLog)`` on the stack's PostgreSQL; a storage error is one sentence, exit 1."""
    import psycopg

    from storage import StorageError
    from storage.db import open_pool
    from storage.deadletters import DeadLetterLog

    s = _settings(ctx)
    try:
        with open_pool(s.postgres_dsn, max_size=1, timeout=10.0) as pool:
            return work(DeadLetterLog(pool))
    except StorageError as exc:
        hint = (" (run `sealstream db migrate`)" if isinstance(exc.__cause__, psycopg.errors.UndefinedTable)
                else "")
        fail({"error": type(exc).__name__, "service": "postgres", "message": f"{exc}{hint}"}, as_json)


@pipeline.group("deadletters")
def pipeline_deadletters() -> None:
    """Inspect, prune and replay the pipeline's dead letters (dead_letters table in PostgreSQL).

    \b
    sealstream pipeline deadletters summary                         every group, per reason
    sealstream pipeline deadletters prune --older-than 15d --dry-run     count what would go
    sealstream pipeline deadletters prune --older-than 15d --group sealstream-pipeline
    sealstream pipeline deadletters prune --older-than 2d --force   source topics known gone
    sealstream pipeline deadletters replay --reason unknown-device  re-inject once fixed

    The worker records every source position it dead-letters (consumer group, topic,
    partition, offset, reason) in PostgreSQL before producing it to iiot.deadletter, and
    marks the row "produced" once the broker acked it, so a record re-read after a crash
    is dead-lettered once per group. Rows never expire by themselves. See docs/pipeline.md,
    "Dead letters: inspect and prune".
    """


@pipeline_deadletters.command("summary")
@click.option("--group", default=None, help="only this consumer group (default: every group)")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@click.pass_context
def deadletters_summary(ctx: click.Context, group: str | None, as_json: bool) -> None:
    """Dead letters per consumer group and reason: rows, produced, unmarked, oldest/newest.

    \b
    sealstream pipeline deadletters summary
    sealstream pipeline deadletters summary --group sealstream-pipeline --json

    "unmarked" rows were recorded but their produce was never confirmed (a worker
    crashed in between); the worker resolves them by looking in iiot.deadletter when
    it re-reads the position. They are never pruned. Exit 1 when PostgreSQL fails.
    """
    from datetime import timezone

    from rich.table import Table

    from ._output import emit_json, out

    rows = _dead_letter_log(ctx, as_json, lambda log: log.summary(group))
    if as_json:
        emit_json({"group": group, "rows": [r.to_json() for r in rows],
                   "total": sum(r.count for r in rows), "unmarked": sum(r.unmarked for r in rows)})
        return
    if not rows:
        out.print(f"no dead letters{f' for group {group}' if group else ''}", highlight=False)
        return
    table = Table("group", "reason", "rows", "produced", "unmarked", "oldest", "newest")
    for r in rows:
        table.add_row(r.group, r.reason, str(r.count), str(r.produced), str(r.unmarked),
                      f"{r.oldest.astimezone(timezone.utc):%Y-%m-%d %H:%M:%SZ}",
                      f"{r.newest.astimezone(timezone.utc):%Y-%m-%d %H:%M:%SZ}")
    out.print(table)


@pipeline_deadletters.command("prune")
@click.option("--older-than", "older_than", type=_Duration(), required=True,
              help="delete produced rows recorded longer ago than this: 7d, 12h, 30m, 90s. At least the "
                   "source topics' retention.ms + segment.ms (checked, see above)")
@click.option("--group", default=None, help="only this consumer group (default: every group)")
@click.option("--dry-run", is_flag=True, help="count the rows that would be deleted; delete nothing. Runs the "
              "retention check too and exits as the real run would")
@click.option("--force", is_flag=True,
              help="skip the retention check (no Kafka needed). Risk: a pruned row whose source record is still "
                   "in Kafka is dead-lettered a second time when that record is re-read (a crash before the "
                   "offset commit, a group reset). Only when the source topics' records are known to be gone")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.pass_context
def deadletters_prune(ctx: click.Context, older_than, group: str | None, dry_run: bool,
                      force: bool, as_json: bool) -> None:
    """Delete dead_letters rows that are produced and older than --older-than.

    \b
    sealstream pipeline deadletters prune --older-than 15d --dry-run
    sealstream pipeline deadletters prune --older-than 15d --group sealstream-pipeline --json
    sealstream pipeline deadletters prune --older-than 2d --force

    \b
    The retention rule (enforced: checked on Kafka unless --force):
    - only rows marked produced go; unmarked rows (a crash between the produce and the
      mark) are kept whatever their age: the worker needs them to decide whether the
      dead letter reached iiot.deadletter.
    - --older-than must exceed the retention of the source topics (iiot.*.raw), with a
      margin: Kafka deletes whole segments, so a record can outlive retention.ms by up
      to segment.ms. A position re-read after its row was pruned (a crash before the
      offset commit, a consumer group reset to earliest) is dead-lettered a second
      time; once Kafka deleted the record it cannot be re-read. The local stack keeps
      168 h with 7-day segments: the minimum there is 14d; 15d leaves a day of margin.

    \b
    Before deleting, prune reads retention.ms, segment.ms and cleanup.policy of every
    source topic of the rows it would delete from Kafka ($SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS)
    and refuses (exit 1, deletes nothing; --json gives the reason) when:
    - cutoff-inside-retention: --older-than < retention.ms + segment.ms (says the minimum)
    - source-retained-forever: retention.ms -1 or cleanup.policy compact
    - source-topic-unknown: the topic is not on that cluster
    - kafka-unavailable: Kafka did not answer within 10 s

    Ages are measured on PostgreSQL's clock (recorded_at). Exit 0 (also when nothing
    matched), 1 when refused or PostgreSQL fails, 2 on a bad option.
    """
    from pipelines.retention import prune_refusal

    from ._output import emit_json, out

    seconds = int(older_than.total_seconds())
    scope_json = {"group": group, "older_than_s": seconds, "dry_run": dry_run}

    def work(log):
        topics = log.prunable_topics(older_than, group=group)
        refusal = None if force or not topics else prune_refusal(kafka_endpoint(_settings(ctx), "admin"), topics,
                                                                 older_than)
        if refusal is not None:  # a dry run still counts what the real run would not delete
            return refusal, log.prune(older_than, group=group, dry_run=True, topics=topics) if dry_run else None
        return None, log.prune(older_than, group=group, dry_run=dry_run, topics=topics)

    refusal, n = _dead_letter_log(ctx, as_json, work)
    if refusal is not None:
        if dry_run:
            refusal["message"] += f" (dry run: {n} produced row(s) match)"
        fail({**refusal, **scope_json, "deleted": 0, "would_delete": n}, as_json)
    if as_json:
        emit_json({**scope_json, "forced": force, "deleted": 0 if dry_run else n,
                   "would_delete": n if dry_run else None})
        return
    scope = f"group {group}" if group else "every group"
    verb = "would delete" if dry_run else "deleted"
    out.print(f"{verb} {n} produced dead-letter row(s) older than {older_than} ({scope})", highlight=False)


@pipeline_deadletters.command("replay")
@click.option("--reason", required=True,
              help="replay the dead letters of this reason, e.g. unknown-device (an unknown one is refused "
                   "with the list of known reasons)")
@click.option("--group", default=None, help="only positions this consumer group dead-lettered (default: every group)")
@click.option("--dry-run", is_flag=True, help="count what would be replayed; change nothing (PostgreSQL only)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.pass_context
def deadletters_replay(ctx: click.Context, reason: str, group: str | None, dry_run: bool, as_json: bool) -> None:
    """Re-inject dead-lettered originals whose cause is fixed, exactly once each.

    \b
    sealstream pipeline deadletters replay --reason unknown-device --dry-run
    sealstream pipeline deadletters replay --reason unknown-device        after registering the devices
    sealstream pipeline deadletters replay --reason bad-signature --group sealstream-pipeline --json

    \b
    Each source position dead-lettered with --reason (and marked produced) is read at
    that position (key, value, headers, timestamp) and produced again to the same topic
    and partition with the headers ss-replay-of: <topic>/<partition>/<offset> and
    ss-replay-nonce, so every worker checks it again from scratch: stored if the cause is
    fixed, else dead-lettered again at its new position with its new reason. Run it only
    once the cause is fixed (e.g. the device registered): a record whose device has
    since sent later seqs becomes a `replay` dead letter.

    \b
    Exactly once per source position, whatever the group (every group reads the copy):
    an intent is committed in PostgreSQL (dead_letter_replays) before the copy is
    produced in a Kafka transaction, and confirmed after the commit. A run killed in
    between is resolved by the next run: it fences the old producer, looks for the
    copy in the partition and confirms or forgets the intent. So after any error:
    fix it and run the same command again. Positions already replayed are skipped;
    unmarked rows (a worker crash) and originals gone from Kafka (retention) are not
    replayed and are counted. See docs/pipeline.md, "Dead letters: replay".

    Exit 0 (also when nothing matched), 1 when Kafka or PostgreSQL fails or another
    replay is running, 2 on an unknown reason.
    """
    import sys

    import psycopg

    from pipelines.replay import ReplayBusy, ReplayError, UnknownReason, check_reason, plan, replay
    from storage import StorageError
    from storage.db import open_pool
    from storage.deadletters import DeadLetterReplays

    from ._output import emit_json, err, out

    try:
        check_reason(reason)
    except UnknownReason as exc:
        if as_json:
            emit_json({"error": exc.code, "reason": reason, "known": exc.known, "message": str(exc)})
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)
    s = _settings(ctx)
    scope = {"reason": reason, "group": group, "dry_run": dry_run}
    try:
        with open_pool(s.postgres_dsn, max_size=2, timeout=10.0) as pool:  # one connection holds the lock
            replays = DeadLetterReplays(pool)
            res = plan(replays, reason, group) if dry_run else replay(
                replays, kafka_endpoint(s, "admin"), reason, group, max_message_bytes=s.kafka_video_max_message_bytes)
    except StorageError as exc:
        hint = (" (run `sealstream db migrate`)" if isinstance(exc.__cause__, psycopg.errors.UndefinedTable)
                else "; fix it and run the replay again (it is safe to rerun)")
        fail({"error": type(exc).__name__, "service": "postgres", **scope, "message": f"{exc}{hint}"}, as_json)
    except ReplayBusy as exc:
        fail({"error": exc.code, **scope, "message": str(exc)}, as_json)
    except ReplayError as exc:
        fail({"error": exc.code, "service": "kafka", "bootstrap": s.kafka_bootstrap, **scope,
              "message": f"replay stopped: {exc}; check Kafka (SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS) and run the "
                         "replay again: it resolves what this run left first, so nothing is injected twice"},
             as_json)
    if as_json:
        emit_json(res.to_json())
        return
    where = f"group {group}" if group else "every group"
    if dry_run:
        out.print(f"would replay {res.would_replay} dead letter(s) with reason {reason} ({where}); "
                  f"{res.already_replayed} already replayed, {res.unmarked} unmarked (not replayed)"
                  + (f", {res.pending} of an interrupted run (resolved by the next run)" if res.pending else ""),
                  highlight=False)
        return
    out.print(f"replayed {res.replayed} dead letter(s) with reason {reason} ({where}) to their source topics; "
              f"{res.already_replayed} already replayed, {res.unmarked} unmarked (not replayed)", highlight=False)
    if res.recovered or res.forgotten:
        out.print(f"an interrupted run was resolved first: {res.recovered} copies found in Kafka (confirmed), "
                  f"{res.forgotten} never produced (replayable)", highlight=False)
    if res.missing:
        out.print(f"{len(res.missing)} original(s) no longer in Kafka (retention), not replayed: "
                  f"{', '.join(res.missing[:5])}{' ...' if len(res.missing) > 5 else ''}", highlight=False)
