"""Share groups (KIP-932) end to end: confluent-kafka ShareConsumers, raw ShareFetch frames and
kafka-share-groups against a live broker.

Kafka's rules the tests check: each record is accepted by exactly one member; an acquired
record whose lock runs out (share.record.lock.duration.ms) goes to another member with
delivery count 2; RELEASE makes a record available again, REJECT never delivers it again; a
record delivered group.share.delivery.count.limit times is archived; acknowledgements a client
was told succeeded survive a SIGKILL of the broker, and are not redelivered.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import threading

# confluent-kafka is in the test extra: a broken install must fail here, not skip.
import confluent_kafka
from confluent_kafka import AcknowledgeType, Producer, ShareConsumer
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)
from helpers import BrokerProcess, RawClient
from ports import restartable_port
from wire import wait_for

from protocol.apis import ApiKey

SHARE = {"group.share.enable": "true", "group.share.min.record.lock.duration.ms": "1000"}
ACCEPT, RELEASE, REJECT = 1, 2, 3  # AcknowledgeType on the wire


def setup_topic(bootstrap: str, topic: str, values: list[bytes], group: str, **group_configs):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)
    set_group_configs(bootstrap, group, **{"share.auto.offset.reset": "earliest", **group_configs})
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for v in values:
        producer.produce(topic, v)
        producer.poll(0)
    assert producer.flush(30) == 0


def set_group_configs(bootstrap: str, group: str, **configs) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ConfigResource.Type.GROUP, group, incremental_configs=[
        ConfigEntry(k, str(v), incremental_operation=AlterConfigOpType.SET)
        for k, v in configs.items()
    ])  # fmt: skip
    admin.incremental_alter_configs([resource])[resource].result(timeout=30)


def share_consumer(bootstrap: str, group: str, topic: str, **extra) -> ShareConsumer:
    c = ShareConsumer({"bootstrap.servers": bootstrap, "group.id": group,
                       "share.acknowledgement.mode": "explicit", **extra})  # fmt: skip
    c.subscribe([topic])
    return c


class AckLog:
    """Offsets the broker confirmed as acknowledged, from the acknowledgement commit callback."""

    def __init__(self) -> None:
        self.acked: list[int] = []
        self.failed: list[int] = []
        self.lock = threading.Lock()

    def callback(self, offsets, exception) -> None:
        with self.lock:
            for tp, acked in offsets.items():
                (self.failed if exception is not None or tp.error else self.acked).extend(acked)


def test_three_share_consumers_accept_each_record_exactly_once(make_broker):
    """3 ShareConsumers on a 1-partition topic: every record accepted once overall. CI runs
    20,000 records; bench/share_groups.py runs 100,000 (the issue's count)."""
    n = 20_000
    b = make_broker(SHARE)
    setup_topic(b.bootstrap_servers, "work", [b"%d" % i for i in range(n)], "workers")
    ack_log = AckLog()
    received = [[] for _ in range(3)]
    done = threading.Event()

    def member(i: int) -> None:
        c = share_consumer(b.bootstrap_servers, "workers", "work", **{"client.id": f"w{i}"})
        c.set_acknowledgement_commit_callback(ack_log.callback)
        try:
            while not done.is_set():
                msgs = c.poll(0.5)
                for m in msgs:
                    assert m.error() is None, m.error()
                    received[i].append(m.offset())
                    c.acknowledge(m)
                if msgs:
                    c.commit_sync()
                if len(set(ack_log.acked)) >= n:
                    done.set()
        finally:
            c.close()

    threads = [threading.Thread(target=member, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    done.wait(120)
    done.set()
    for t in threads:
        t.join(60)
    assert sorted(ack_log.acked) == list(range(n)), "each record accepted exactly once"
    assert not ack_log.failed
    # No record was given to two members (no lock expired, nobody released).
    assert sum(len(r) for r in received) == n


def _join(client: RawClient, group: str, member: str, topic: str):
    r = client.request(ApiKey.SHARE_GROUP_HEARTBEAT, 1, {"group_id": group, "member_id": member,
                       "member_epoch": 0, "rack_id": None, "subscribed_topic_names": [topic]})  # fmt: skip
    assert r.error_code == 0, r
    return r.assignment.topic_partitions[0].topic_id


def _share_fetch(client, group, member, epoch, topic_id, acks=(), max_wait_ms=0, max_records=500):
    body = {"group_id": group, "member_id": member, "share_session_epoch": epoch,
            "max_wait_ms": max_wait_ms, "min_bytes": 1, "max_bytes": 1 << 20,
            "max_records": max_records, "batch_size": max_records,
            "topics": [{"topic_id": topic_id, "partitions": [{"partition_index": 0,
                        "acknowledgement_batches": [{"first_offset": f, "last_offset": la,
                                                     "acknowledge_types": [t]}
                                                    for f, la, t in acks]}]}],
            "forgotten_topics_data": []}  # fmt: skip
    return client.request(ApiKey.SHARE_FETCH, 1, body)


def _acquired(response) -> list[tuple[int, int, int]]:
    return [(a.first_offset, a.last_offset, a.delivery_count)
            for t in response.responses for p in t.partitions for a in p.acquired_records]  # fmt: skip


def test_lock_expiry_redelivers_to_another_member_with_delivery_count_2(make_broker):
    """A member that goes silent holding records (its connection stays open, so nothing
    releases them) loses them when the 2 s lock runs out; the next member gets them with
    delivery count 2."""
    b = make_broker(SHARE)
    setup_topic(b.bootstrap_servers, "locks", [b"%d" % i for i in range(10)], "lg",
                **{"share.record.lock.duration.ms": 2000})  # fmt: skip
    silent, other = RawClient(b.port), RawClient(b.port)
    try:
        topic_id = _join(silent, "lg", "silent-member", "locks")
        _join(other, "lg", "other-member", "locks")
        first = _share_fetch(silent, "lg", "silent-member", 0, topic_id, max_wait_ms=5000)
        assert first.acquisition_lock_timeout_ms == 2000
        assert _acquired(first) == [(0, 9, 1)]
        # Locked: the other member gets nothing yet.
        assert _acquired(_share_fetch(other, "lg", "other-member", 0, topic_id)) == []
        epoch = [1]

        def redelivered():
            r = _share_fetch(other, "lg", "other-member", epoch[0], topic_id, max_wait_ms=500)
            epoch[0] += 1
            assert r.error_code == 0
            return _acquired(r) or None

        assert wait_for(redelivered, timeout=15) == [(0, 9, 2)]
        # The silent member's late acknowledgement is refused: it holds nothing now.
        late = _share_fetch(silent, "lg", "silent-member", 1, topic_id, acks=[(0, 9, ACCEPT)])
        assert late.responses[0].partitions[0].acknowledge_error_code == 121  # INVALID_RECORD_STATE
        ok = _share_fetch(other, "lg", "other-member", epoch[0], topic_id, acks=[(0, 9, ACCEPT)])
        assert ok.responses[0].partitions[0].acknowledge_error_code == 0
    finally:
        silent.close()
        other.close()


def test_share_sessions_check_epochs(make_broker):
    b = make_broker(SHARE)
    setup_topic(b.bootstrap_servers, "sess", [b"x"], "sg")
    c = RawClient(b.port)
    try:
        topic_id = _join(c, "sg", "m1", "sess")
        r = _share_fetch(c, "sg", "m1", 3, topic_id)
        assert r.error_code == 122  # SHARE_SESSION_NOT_FOUND
        assert _acquired(_share_fetch(c, "sg", "m1", 0, topic_id, max_wait_ms=5000)) == [(0, 0, 1)]
        assert (
            _share_fetch(c, "sg", "m1", 5, topic_id).error_code == 123
        )  # INVALID_SHARE_SESSION_EPOCH
        # Acknowledgements on a session's first request are refused (INVALID_REQUEST).
        assert _share_fetch(c, "sg", "m1", 0, topic_id, acks=[(0, 0, ACCEPT)]).error_code == 42
        # Epoch 0 again replaces the session and releases what it held: delivered again.
        assert _acquired(_share_fetch(c, "sg", "m1", 0, topic_id, max_wait_ms=5000)) == [(0, 0, 2)]
        close = _share_fetch(c, "sg", "m1", -1, topic_id, acks=[(0, 0, ACCEPT)])
        assert close.error_code == 0
        assert close.responses[0].partitions[0].acknowledge_error_code == 0
    finally:
        c.close()


def test_release_and_reject(make_broker):
    b = make_broker(SHARE)
    setup_topic(b.bootstrap_servers, "rr", [b"a", b"b", b"c"], "rrg")
    c = share_consumer(b.bootstrap_servers, "rrg", "rr")
    seen: list[tuple[int, int]] = []  # (offset, delivery count)
    try:

        def poll_some():
            msgs = [m for m in c.poll(1.0) if m.error() is None]
            for m in msgs:
                seen.append((m.offset(), m.delivery_count()))
                kind = {0: AcknowledgeType.RELEASE, 1: AcknowledgeType.REJECT}.get(m.offset())
                if kind is not None and m.delivery_count() == 1:
                    c.acknowledge(m, kind)
                else:
                    c.acknowledge(m)
            if msgs:
                c.commit_sync()
            return (0, 2) in seen or None

        wait_for(poll_some, timeout=30)
    finally:
        c.close()
    # Released offset 0 came back with delivery count 2; rejected offset 1 never did.
    assert sorted(seen) == [(0, 1), (0, 2), (1, 1), (2, 1)]
    out = _tool(b.bootstrap_servers, "--describe", "--group", "rrg", "--offsets")
    assert out.split("\n")[2].split() == ["rrg", "rr", "0", "3"]  # everything finished


def test_delivery_count_limit_archives_a_poison_record(make_broker):
    """group.share.delivery.count.limit=2: a record released twice is archived."""
    b = make_broker({**SHARE, "group.share.delivery.count.limit": "2"})
    setup_topic(b.bootstrap_servers, "poison", [b"bad", b"good"], "pg")
    c = share_consumer(b.bootstrap_servers, "pg", "poison")
    deliveries: list[tuple[int, int]] = []
    try:

        def poll_some():
            msgs = [m for m in c.poll(1.0) if m.error() is None]
            for m in msgs:
                deliveries.append((m.offset(), m.delivery_count()))
                c.acknowledge(
                    m, AcknowledgeType.RELEASE if m.value() == b"bad" else AcknowledgeType.ACCEPT
                )
            if msgs:
                c.commit_sync()
            start = _start_offset(b.bootstrap_servers, "pg")
            return start == 2 or None

        wait_for(poll_some, timeout=30)
    finally:
        c.close()
    assert sorted(deliveries) == [(0, 1), (0, 2), (1, 1)]


def _tool(bootstrap: str, *args: str) -> str:
    """kafka-share-groups, run in this process (its main, as the console script calls it)."""
    from pykbroker.cli import share_groups

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = share_groups.main(["--bootstrap-server", bootstrap, *args])
    assert code == 0, err.getvalue()
    return out.getvalue()


def _start_offset(bootstrap: str, group: str) -> int | None:
    lines = _tool(bootstrap, "--describe", "--group", group, "--offsets").split("\n")
    rows = [line.split() for line in lines if line.startswith(group + " ")]
    return int(rows[0][3]) if rows and rows[0][3] != "-" else None


def test_reset_offsets_with_the_tool(make_broker):
    b = make_broker(SHARE)
    setup_topic(b.bootstrap_servers, "again", [b"%d" % i for i in range(5)], "rg")

    def consume_all() -> list[int]:
        got: list[int] = []
        c = share_consumer(b.bootstrap_servers, "rg", "again")
        try:

            def poll_some():
                msgs = [m for m in c.poll(1.0) if m.error() is None]
                for m in msgs:
                    got.append(m.offset())
                    c.acknowledge(m)
                if msgs:
                    c.commit_sync()
                return len(got) >= 5 or None

            wait_for(poll_some, timeout=30)
        finally:
            c.close()
        return sorted(got)

    assert consume_all() == [0, 1, 2, 3, 4]
    assert _start_offset(b.bootstrap_servers, "rg") == 5
    assert "rg" in _tool(b.bootstrap_servers, "--list").split()
    dry = _tool(b.bootstrap_servers, "--reset-offsets", "--group", "rg", "--topic", "again",
                "--to-earliest", "--dry-run")  # fmt: skip
    assert dry.split("\n")[1:3] == ["GROUP TOPIC PARTITION NEW-OFFSET", "rg    again 0         0"]
    assert _start_offset(b.bootstrap_servers, "rg") == 5  # a dry run changes nothing
    wait_for(lambda: "Empty" in _tool(b.bootstrap_servers, "--list", "--state") or None, 60)
    _tool(b.bootstrap_servers, "--reset-offsets", "--group", "rg", "--topic", "again",
          "--to-earliest", "--execute")  # fmt: skip
    assert _start_offset(b.bootstrap_servers, "rg") == 0
    assert consume_all() == [0, 1, 2, 3, 4]
    out = _tool(b.bootstrap_servers, "--delete", "--group", "rg")
    assert out.strip() == "Deletion of requested share groups ('rg') was successful."


def test_broker_sigkill_loses_no_acknowledgement(tmp_path):
    """A broker SIGKILLed while a consumer acknowledges: after the restart every record the
    broker confirmed as accepted stays accepted (never delivered again), and all are accepted
    in the end."""
    n = 3000
    data = str(tmp_path / "data")
    proc = BrokerProcess(data, overrides=SHARE, port=restartable_port()).start()
    setup_topic(proc.bootstrap_servers, "crash", [b"%d" % i for i in range(n)], "cg")
    ack_log = AckLog()
    after_restart: list[int] = []
    killed = threading.Event()
    c = share_consumer(proc.bootstrap_servers, "cg", "crash",
                       **{"share.acknowledgement.mode": "explicit", "max.poll.records": 100})  # fmt: skip
    c.set_acknowledgement_commit_callback(ack_log.callback)
    try:

        def consume():
            msgs = [m for m in c.poll(0.5) if m.error() is None]
            for m in msgs:
                if killed.is_set():
                    after_restart.append(m.offset())
                c.acknowledge(m)
            if msgs:
                try:
                    c.commit_sync(10)
                except confluent_kafka.KafkaException:
                    pass  # the broker died under this commit: its records come back
            return msgs

        wait_for(lambda: len(ack_log.acked) >= n // 3 or consume() and None, timeout=60)
        port = proc.port
        proc.kill()  # SIGKILL: no shutdown, no flush
        killed.set()
        confirmed_before = set(ack_log.acked)
        proc = BrokerProcess(data, overrides=SHARE, port=port).start()
        wait_for(lambda: len(set(ack_log.acked)) >= n or consume() and None, timeout=90)
    finally:
        c.close()
        proc.kill()
    assert set(ack_log.acked) == set(range(n))
    assert not confirmed_before & set(after_restart), "an accepted record was delivered again"
    assert len(ack_log.acked) == len(set(ack_log.acked))


def test_console_share_consumer(make_broker):
    b = make_broker(SHARE)
    setup_topic(
        b.bootstrap_servers, "lines", [b"v%d" % i for i in range(5)], "console-share-consumer"
    )

    def console(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "pykbroker.cli.console_share_consumer", "--bootstrap-server",
             b.bootstrap_servers, "--topic", "lines", *args],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    first = console("--max-messages", "3", "--property", "print.offset=true")
    assert first.stdout == "Offset:0\tv0\nOffset:1\tv1\nOffset:2\tv2\n"
    assert first.stderr.strip().endswith("Processed a total of 3 messages")
    # --reject: shown once, never again; the rest were accepted by the first run.
    second = console("--timeout-ms", "1500", "--reject")
    assert second.stdout == "v3\nv4\n"
    third = console("--timeout-ms", "1000")
    assert third.stdout == "" and "Processed a total of 0 messages" in third.stderr
    assert _start_offset(b.bootstrap_servers, "console-share-consumer") == 5


def test_group_configs_with_kafka_configs(make_broker):
    b = make_broker(SHARE)

    def configs(*args: str) -> subprocess.CompletedProcess:
        """kafka-configs in this process: (exit code, stdout, stderr)."""
        from pykbroker.cli import configs as tool

        out, err = io.StringIO(), io.StringIO()
        argv = ["--bootstrap-server", b.bootstrap_servers, "--entity-type", "groups",
                "--entity-name", "cg1", *args]  # fmt: skip
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = tool.main(argv)
        return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())

    r = configs("--alter", "--add-config", "share.auto.offset.reset=earliest")
    assert r.stdout.strip() == "Completed updating config for group cg1."
    r = configs("--describe")
    assert r.stdout.splitlines() == [
        "Dynamic configs for group cg1 are:",
        "  share.auto.offset.reset=earliest sensitive=false synonyms={}",
    ]
    # The broker's group.share.record.lock.duration.ms (Kafka's 30000) is the group's default.
    assert (
        "  share.record.lock.duration.ms=30000 sensitive=false synonyms={}"
        in configs("--describe", "--all").stdout.splitlines()
    )
    bad = configs("--alter", "--add-config", "share.auto.offset.reset=sideways")
    assert bad.returncode == 1
    assert "InvalidConfigurationException" in bad.stderr


def test_read_committed_share_group_never_delivers_aborted_records(make_broker):
    """share.isolation.level=read_committed: records of an aborted transaction and the
    transaction markers are archived, never delivered; the start offset passes them all."""
    b = make_broker(SHARE)
    setup_topic(b.bootstrap_servers, "txn", [], "tg", **{"share.isolation.level": "read_committed"})
    producer = Producer({"bootstrap.servers": b.bootstrap_servers, "transactional.id": "share-tx"})
    producer.init_transactions(30)
    for values, commit in (([b"a", b"b"], True), ([b"x", b"y"], False), ([b"c"], True)):
        producer.begin_transaction()
        for v in values:
            producer.produce("txn", v)
        producer.flush(30)
        (producer.commit_transaction if commit else producer.abort_transaction)(30)
    c = share_consumer(b.bootstrap_servers, "tg", "txn")
    got: list[bytes] = []
    try:

        def poll_some():
            msgs = [m for m in c.poll(1.0) if m.error() is None]
            for m in msgs:
                got.append(m.value())
                c.acknowledge(m)
            if msgs:
                c.commit_sync()
            return len(got) >= 3 or None

        wait_for(poll_some, timeout=30)
        assert not [m for m in c.poll(0.5) if m.error() is None]  # x and y never come
    finally:
        c.close()
    assert got == [b"a", b"b", b"c"]
    # a, b, marker, x, y, marker, c, marker: the start offset has passed all 8.
    assert _start_offset(b.bootstrap_servers, "tg") == 8


def test_share_version_feature_turns_share_groups_on(make_broker):
    """Kafka 4.1: off until `kafka-features upgrade --feature share.version=1`; the share APIs
    are not advertised meanwhile and answer UNSUPPORTED_VERSION (35)."""
    b = make_broker()
    c = RawClient(b.port)
    try:

        def advertised():
            r = c.request(ApiKey.API_VERSIONS, 3, {"client_software_name": "t",
                                                   "client_software_version": "1"})  # fmt: skip
            return {k.api_key: (k.min_version, k.max_version) for k in r.api_keys}

        assert ApiKey.SHARE_FETCH not in advertised()
        hb = {"group_id": "fg", "member_id": "m", "member_epoch": 0, "rack_id": None,
              "subscribed_topic_names": ["t"]}  # fmt: skip
        assert c.request(ApiKey.SHARE_GROUP_HEARTBEAT, 1, hb).error_code == 35
        r = subprocess.run([sys.executable, "-m", "pykbroker.cli.features", "--bootstrap-server",
                            b.bootstrap_servers, "upgrade", "--feature", "share.version=1"],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
        assert r.returncode == 0, r.stderr
        versions = advertised()
        assert versions[ApiKey.SHARE_GROUP_HEARTBEAT] == (1, 1)
        assert versions[ApiKey.SHARE_FETCH] == (1, 1)
        assert versions[ApiKey.SHARE_ACKNOWLEDGE] == (1, 1)
        assert c.request(ApiKey.SHARE_GROUP_HEARTBEAT, 1, hb).error_code == 0
    finally:
        c.close()
