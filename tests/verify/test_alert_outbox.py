"""The verifier's alert outbox on the real stack (PostgreSQL in a throwaway database, the
stack's Kafka and MinIO, a private ledger): a failed verdict and its alert commit in one
transaction (a forced rollback leaves neither); a relay whose Kafka is unreachable keeps
the alert in the outbox and, once Kafka is back, commits it to ``iiot.alerts`` exactly once
(by ``ss-alert-id``, read_committed); a crash after the Kafka commit (before the mark) is
resolved by looking in the topic, a crash before the Kafka commit by re-sending (the new
producer's ``init_transactions`` aborted the old transaction)."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from pipelines.outbox import H_ALERT_ID, AlertRelay
from pipelines.verifier import ALERTS_TOPIC, BatchVerifier, VerifyMetrics
from storage.errors import DatabaseError
from storage.outbox import AlertOutbox, OutboxMessage
from storage.verification import BatchVerdict
from verify_helpers import T0
from infra.kafka_acls import VERIFIER_GROUP_PREFIX
from sealstream._kafka_config import kafka_endpoint

pytestmark = pytest.mark.services


class TcpProxy:
    """127.0.0.1:<port> forwarded to `target` while started; connections refused while stopped."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(16)
        self._server = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def stop(self) -> None:
        srv, self._server = self._server, None
        if srv is not None:
            srv.close()
        with self._lock:
            for c in self._conns:
                c.close()
            self._conns.clear()

    def _accept(self, srv: socket.socket) -> None:
        while True:
            try:
                client, _ = srv.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def committed_alerts(settings, alert_id: str, since: datetime, topic: str = ALERTS_TOPIC,
                     isolation: str = "read_committed") -> list:
    """Every committed message of `topic` since `since` whose ``ss-alert-id`` is `alert_id`
    (each partition read to its end offset; `isolation`: the consumer's isolation level)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({**kafka_endpoint(settings, "admin").confluent(), "group.id": f"outbox-test-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "isolation.level": isolation})
    out = []
    try:
        parts = sorted(c.list_topics(topic, timeout=10).topics[topic].partitions)
        starts = c.offsets_for_times([TopicPartition(topic, p, int(since.timestamp() * 1000)) for p in parts],
                                     timeout=10)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1] for p in parts}
        assign = [tp for tp in starts if 0 <= tp.offset < ends[tp.partition]]
        if not assign:
            return out
        c.assign(assign)
        todo = {tp.partition for tp in assign}
        deadline = time.monotonic() + 30
        while todo:
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for m in c.consume(500, 0.5):
                assert m.error() is None, m.error()
                if dict(m.headers() or []).get(H_ALERT_ID) == alert_id.encode():
                    out.append(m)
            for tp in c.position([TopicPartition(topic, p) for p in todo]):
                if tp.offset >= ends[tp.partition]:
                    todo.discard(tp.partition)
        return out
    finally:
        c.close()


def _verifier(dataset) -> BatchVerifier:
    return BatchVerifier(dataset.collector(), dataset.store, dataset.cluster.layout.genesis().genesis_hash(),
                         VerifyMetrics())


def _failed_batch(dataset, minute: int):
    """An anchored batch whose stored reading was changed: it fails at ``row-value``."""
    _, key = dataset.device()
    batch, records = dataset.batch(key, n_ts=1, n_img=0, rows=5, start_seq=100 * minute,
                                   t0=T0 + timedelta(minutes=minute))
    with dataset.pool.connection() as conn:
        conn.execute("UPDATE readings SET value = -1 WHERE statement_hash = %s AND row_index = 1",
                     (records[0].hash,))
    return batch


def _outbox_rows(dataset, batch_id: str) -> list:
    with dataset.pool.connection() as conn:
        return conn.execute("SELECT alert_id, attempts, sent_at FROM alert_outbox WHERE key = %s ORDER BY id",
                            (batch_id.encode(),)).fetchall()


def _sample(metrics: VerifyMetrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


def test_verdict_and_alert_commit_together_or_not_at_all(dataset) -> None:
    v = _verifier(dataset)
    batch = _failed_batch(dataset, 1)
    verdict = v.verify_batch(batch.batch_id)
    assert verdict.verdict == "failed" and verdict.failed_step == "row-value"
    (row,) = _outbox_rows(dataset, batch.batch_id)
    stored = AlertOutbox(dataset.pool).get(row[0])
    doc = json.loads(stored.message.value)
    assert doc["alert_id"] == row[0] and doc["batch_id"] == batch.batch_id and doc["step"] == "row-value"
    assert stored.message.topic == ALERTS_TOPIC and stored.attempts == 0 and stored.sent_at is None
    assert dict(stored.message.headers) == {"ss-rule": "verification", "ss-severity": "critical"}
    with dataset.pool.connection() as conn:  # one transaction wrote both rows
        (xv,) = conn.execute("SELECT xmin::text FROM batch_verdicts WHERE batch_id = %s",
                             (batch.batch_id,)).fetchone()
        (xo,) = conn.execute("SELECT xmin::text FROM alert_outbox WHERE alert_id = %s", (row[0],)).fetchone()
    assert xv == xo

    # a failure at commit (a deferred constraint trigger) rolls back the verdict and the alert
    other = _failed_batch(dataset, 2)
    with dataset.pool.connection() as conn:
        conn.execute(
            "CREATE FUNCTION test_refuse_verdict() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.batch_id = '{other.batch_id}' THEN RAISE EXCEPTION 'forced rollback'; END IF; "
            "RETURN NULL; END $$")
        conn.execute("CREATE CONSTRAINT TRIGGER test_refuse_verdict AFTER INSERT OR UPDATE ON batch_verdicts "
                     "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_refuse_verdict()")
    try:
        with pytest.raises(DatabaseError, match="forced rollback"):
            v.verify_batch(other.batch_id)
    finally:
        with dataset.pool.connection() as conn:
            conn.execute("DROP TRIGGER test_refuse_verdict ON batch_verdicts")
            conn.execute("DROP FUNCTION test_refuse_verdict()")
    assert dataset.store.verdict(other.batch_id) is None and _outbox_rows(dataset, other.batch_id) == []

    # the alert's insert failing (its id taken) rolls back the verdict: the batch's earlier verdict stays
    before = dataset.store.verdict(batch.batch_id)
    failed = BatchVerdict(batch.batch_id, "failed", before.root, before.ledger_height, before.tx_index,
                          before.leaves, before.rows, failed_step="payload-hash", detail="x")
    dup = OutboxMessage(ALERTS_TOPIC, batch.batch_id.encode(), b"{}", (), row[0])
    with pytest.raises(DatabaseError):
        dataset.store.record_verdict(failed, alert=dup)
    after = dataset.store.verdict(batch.batch_id)
    assert after.failed_step == "row-value" and after.checks == before.checks
    assert len(_outbox_rows(dataset, batch.batch_id)) == 1


def test_alert_survives_kafka_outage_and_is_sent_once(dataset, settings) -> None:
    since = datetime.now(timezone.utc) - timedelta(seconds=5)
    metrics = VerifyMetrics()
    v = BatchVerifier(dataset.collector(), dataset.store, dataset.cluster.layout.genesis().genesis_hash(), metrics)
    batch = _failed_batch(dataset, 3)
    assert v.verify_batch(batch.batch_id).verdict == "failed"
    ((alert_id, _, _),) = _outbox_rows(dataset, batch.batch_id)

    host, port = settings.kafka_bootstrap.split(",")[0].rsplit(":", 1)
    proxy = TcpProxy((host, int(port)))  # stopped: Kafka is unreachable for the relay
    outbox = AlertOutbox(dataset.pool)
    relay = AlertRelay(outbox, kafka_endpoint(settings, "verifier", bootstrap=proxy.address), metrics=metrics.outbox,
                       timeout_s=5, backoff_s=600)
    try:
        r = relay.run_once()
        assert r.error is not None and r.sent == 0
        assert _outbox_rows(dataset, batch.batch_id) == [(alert_id, 0, None)]  # never attempted, still there
        assert _sample(metrics, "sealstream_alert_outbox_send_failures_total") == 1
        assert _sample(metrics, "sealstream_alert_outbox_backlog") >= 1
        assert _sample(metrics, "sealstream_alert_outbox_oldest_age_seconds") > 0
        assert relay.run_once().skipped  # backing off
        assert committed_alerts(settings, alert_id, since) == []

        proxy.start()  # Kafka is back
        r = relay.run_once(force=True)
        assert r.error is None and r.sent >= 1, r
        (row,) = _outbox_rows(dataset, batch.batch_id)
        assert row[1] == 1 and row[2] is not None  # one attempt, sent
        (msg,) = committed_alerts(settings, alert_id, since)
        assert msg.key() == batch.batch_id.encode()
        assert json.loads(msg.value())["alert_id"] == alert_id
        assert dict(msg.headers())["ss-rule"] == b"verification"
        assert _sample(metrics, "sealstream_alert_outbox_sent_total") >= 1
        assert _sample(metrics, "sealstream_alert_outbox_backlog") == 0

        # nothing more to send: another round (and another relay) does not send it again
        assert relay.run_once(force=True).sent == 0
        assert AlertRelay(outbox, kafka_endpoint(settings, "verifier"), timeout_s=10).run_once().sent == 0
        assert len(committed_alerts(settings, alert_id, since)) == 1
    finally:
        relay.close()
        proxy.stop()


class Crash(Exception):
    pass


def _crash(rows) -> None:
    raise Crash("simulated crash")


def test_crash_between_kafka_commit_and_mark_is_not_resent(dataset, settings) -> None:
    since = datetime.now(timezone.utc) - timedelta(seconds=5)
    outbox = AlertOutbox(dataset.pool)
    relay = AlertRelay(outbox, kafka_endpoint(settings, "verifier"), timeout_s=10)
    relay.run_once(force=True)  # an empty outbox for this test's rows
    msg = _message("outbox-test")
    outbox.add(msg)
    relay.after_commit = _crash
    r = relay.run_once(force=True)
    assert r.error == "simulated crash"
    row = outbox.get(msg.alert_id)
    assert row.attempts == 1 and row.sent_at is None
    assert len(committed_alerts(settings, msg.alert_id, since)) == 1  # committed, not marked

    # a new relay (the restarted process): the unknown outcome is found in the topic, not re-sent
    again = AlertRelay(outbox, kafka_endpoint(settings, "verifier"), timeout_s=10)
    r = again.run_once()
    assert r.error is None and r.found == 1 and r.sent == 0, r
    assert outbox.get(msg.alert_id).sent_at is not None
    assert again.metrics.registry.get_sample_value("sealstream_alert_outbox_found_in_topic_total") == 1
    assert len(committed_alerts(settings, msg.alert_id, since)) == 1


def test_crash_before_kafka_commit_is_resent_once(dataset, settings) -> None:
    since = datetime.now(timezone.utc) - timedelta(seconds=5)
    outbox = AlertOutbox(dataset.pool)
    relay = AlertRelay(outbox, kafka_endpoint(settings, "verifier"), timeout_s=10)
    relay.run_once(force=True)
    msg = _message("outbox-test")
    outbox.add(msg)
    abandoned = []  # produced in an open transaction, never committed
    relay.before_commit = lambda rows: (abandoned.append(relay._producer), _crash(rows))
    assert relay.run_once(force=True).error == "simulated crash"
    assert outbox.get(msg.alert_id).attempts == 1
    # its message reached the broker, inside the open transaction (which holds read_committed
    # readers at its first offset: the topic is read only after the next relay fenced it)
    assert abandoned[0].flush(10) == 0

    # the next producer's init_transactions aborts that transaction; not found, so sent again
    again = AlertRelay(outbox, kafka_endpoint(settings, "verifier"), timeout_s=10)
    r = again.run_once()
    assert r.error is None and r.found == 0 and r.sent == 1, r
    row = outbox.get(msg.alert_id)
    assert row.attempts == 2 and row.sent_at is not None
    assert len(committed_alerts(settings, msg.alert_id, since)) == 1
    # the aborted copy is in the log: only a read_uncommitted reader sees both (and de-duplicates)
    assert len(committed_alerts(settings, msg.alert_id, since, isolation="read_uncommitted")) == 2
    del abandoned[:]


def test_one_relay_at_a_time_and_prune_keeps_unsent(dataset, settings) -> None:
    outbox = AlertOutbox(dataset.pool)
    relay = AlertRelay(outbox, kafka_endpoint(settings, "verifier"), timeout_s=10)
    with outbox.relay_lock() as held:
        assert held
        r = relay.run_once(force=True)
        assert r.skipped and r.sent == 0
    old_sent = _message("outbox-prune")
    old_unsent = _message("outbox-prune")
    ids = [outbox.add(old_sent), outbox.add(old_unsent)]
    outbox.mark_sent(ids[:1])
    with dataset.pool.connection() as conn:
        conn.execute("UPDATE alert_outbox SET created_at = now() - interval '3 days', "
                     "sent_at = CASE WHEN sent_at IS NULL THEN NULL ELSE now() - interval '2 days' END "
                     "WHERE id = ANY(%s)", (ids,))
    assert outbox.prune(timedelta(days=1)) >= 1
    assert outbox.get(old_sent.alert_id) is None and outbox.get(old_unsent.alert_id) is not None
    with pytest.raises(ValueError):
        outbox.prune(timedelta(0))



def _message(prefix: str) -> OutboxMessage:
    """An alert for the outbox as a writer would add it (a fresh alert id)."""
    key = f"{prefix}-{uuid.uuid4().hex[:8]}"
    return OutboxMessage(ALERTS_TOPIC, key.encode(), json.dumps({"v": 1, "source": "outbox-test", "key": key}).encode(),
                         (("ss-rule", "verification"), ("ss-severity", "critical")))


def test_verifier_agent_relays_its_alerts(dataset, settings, tmp_path) -> None:
    """`sealstream pipeline verifier` (a subprocess on real Kafka): a failed batch's alert goes
    through the outbox (marked sent) to iiot.alerts once, with its ss-alert-id; outbox metrics."""
    from confluent_kafka import Producer

    from infra.process import Child, free_ports

    since = datetime.now(timezone.utc) - timedelta(seconds=5)
    batch = _failed_batch(dataset, 4)
    p = Producer(kafka_endpoint(settings, "admin").confluent())
    p.produce("iiot.anchors", key=batch.batch_id.encode(), value=json.dumps({"v": 1,
                                                                             "batch_id": batch.batch_id}).encode())
    assert p.flush(10) == 0
    proc = Child.sealstream("verifier", ["pipeline", "verifier", "--app-id",
                                         f"{VERIFIER_GROUP_PREFIX}-outbox-test-{uuid.uuid4().hex[:8]}",
                                         "--ledger", str(dataset.cluster.root), "--audit-interval", "0"],
                            log_path=tmp_path / "verifier.log", home=tmp_path / "home",
                            env={"SEALSTREAM_PG_DSN": dataset.pool.conninfo}, metrics_port=free_ports(1)[0])
    try:
        rows: list = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            rows = _outbox_rows(dataset, batch.batch_id)
            if rows and rows[0][2] is not None:
                break
            proc.check()
            time.sleep(0.5)
        assert len(rows) == 1 and rows[0][2] is not None, proc.tail()
        (msg,) = committed_alerts(settings, rows[0][0], since)
        assert msg.key() == batch.batch_id.encode() and json.loads(msg.value())["step"] == "row-value"
        metrics = proc.metrics()
        assert "sealstream_alert_outbox_sent_total" in metrics and "sealstream_alert_outbox_backlog" in metrics
        sent = [ln for ln in metrics.splitlines() if ln.startswith("sealstream_alert_outbox_sent_total ")]
        assert sent and float(sent[0].split()[1]) >= 1
    finally:
        proc.stop(20)
