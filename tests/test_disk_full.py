"""A full disk (issue 11 items 6 and 7): produce answers KAFKA_STORAGE_ERROR instead of closing
connections, nothing half-appended becomes visible, every acknowledged record reads back byte
for byte, produce resumes once space is freed, and the broker restarts on the full disk.

The broker's log dir is a small tmpfs the test mounts itself (CI runs as root)."""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import subprocess
import time

import pytest
from cluster_helpers import Cluster, wait_until
from confluent_kafka import KafkaError as CKError
from confluent_kafka import Producer as CKProducer
from helpers import BrokerProcess, RawClient
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaStorageError
from wire import fetch, produce_body, values_batch, wait_for
from zookeeper_server import zookeeper_missing

from protocol.apis import ApiKey
from protocol.errors import ErrorCode

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")

TOPIC = "full"
FS_SIZE = "10m"
OVERRIDES = {
    "log.segment.bytes": str(128 * 1024),  # many rolls: snapshots and new index files too
    "num.partitions": "1",
    "offsets.topic.num.partitions": "1",
    "transaction.state.log.num.partitions": "1",
    "log.retention.check.interval.ms": "3600000",
}
CHUNK = 256 * 1024  # the filler is made of chunks, so a test can free a little at a time


@pytest.fixture
def small_fs(tmp_path):
    """A 10 MiB tmpfs, and the brokers started on it; brokers die and it is unmounted at the
    end whatever happens."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE}", "tmpfs", str(mnt)], check=True)
    brokers: list[BrokerProcess] = []

    def start() -> BrokerProcess:
        b = BrokerProcess(str(mnt / "data"), OVERRIDES).start()
        brokers.append(b)
        return b

    try:
        yield mnt, start
    finally:
        for b in brokers:
            b.kill()
        subprocess.run(["umount", str(mnt)], check=False)
        if os.path.ismount(mnt):
            subprocess.run(["umount", "-l", str(mnt)], check=True)


@pytest.fixture
def ext4_fs(tmp_path):
    """A loop-mounted 32 MiB ext4 (whose I/O can be made to fail), and brokers on it."""
    image, mnt = tmp_path / "ext4.img", tmp_path / "ext4"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(32 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    mount = ["mount", "-o", "loop", str(image), str(mnt)]
    subprocess.run(mount, check=True)
    brokers: list[BrokerProcess] = []

    def start() -> BrokerProcess:
        b = BrokerProcess(str(mnt / "data"), OVERRIDES).start()
        brokers.append(b)
        return b

    def remount() -> None:
        subprocess.run(["umount", str(mnt)], check=True)
        subprocess.run(mount, check=True)

    try:
        yield mnt, start, remount
    finally:
        for b in brokers:
            b.kill()
        subprocess.run(["umount", str(mnt)], check=False)
        if os.path.ismount(mnt):
            subprocess.run(["umount", "-l", str(mnt)], check=True)


def shut_down_fs(mnt) -> None:
    """EXT4_IOC_SHUTDOWN (default flags: sync, then fail): from here every read and write on
    the file system fails with EIO, as on a dying disk."""
    fd = os.open(mnt, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, 0x8004587D, struct.pack("I", 0))
    finally:
        os.close(fd)


def fill(mnt, prefix: str, max_chunks: int = 1 << 20) -> None:
    """Write CHUNK-sized files `<prefix>-<n>` until the file system is full to its last byte
    (or max_chunks are written)."""
    block = b"\xa5" * 4096
    for n in range(max_chunks):
        try:
            with open(mnt / f"{prefix}-{n:04d}", "wb", buffering=0) as f:
                for _ in range(CHUNK // len(block)):
                    f.write(block)
        except OSError as e:
            assert e.errno == errno.ENOSPC
            return


def free(mnt, count: int, prefix: str) -> None:
    for name in sorted(p for p in os.listdir(mnt) if p.startswith(prefix + "-"))[:count]:
        os.unlink(mnt / name)


def damage_tail(partition_dir) -> int:
    """What a SIGKILL can leave: a torn batch at the end of the newest segment, and empty
    index files (a segment rolled, its first entry not yet written) on the newest segment
    holding records. Recovery rebuilds them, here on a full disk. Returns the torn bytes."""
    logs = sorted(n for n in os.listdir(partition_dir) if n.endswith(".log"))
    with_records = [n for n in logs if os.path.getsize(partition_dir / n)]
    stem = str(partition_dir / with_records[-1][: -len(".log")])
    for ext in (".index", ".timeindex"):
        os.truncate(stem + ext, 0)
    newest = partition_dir / logs[-1]
    room = -os.path.getsize(newest) % 4096
    if room < 13:
        return 0  # a torn tail here would need a page of its own, which cutting it frees
    # A batch header promising more than follows, inside the file's last page: cutting it
    # frees no space the indexes could use.
    torn = b"\0\0\0\0\0\0\x10\0\0\0\x03\xe8" + os.urandom(room - 13)
    with open(newest, "ab") as f:
        f.write(torn)
    return len(torn)


def produce_until_full(bootstrap: str, acked: dict[int, bytes], limit: int = 20000) -> set[int]:
    """acks=all with confluent-kafka (no retries, so errors surface) until a produce fails;
    adds what was acknowledged to `acked` (offset -> value) and returns the error codes."""
    errors: set[int] = set()
    p = CKProducer({
        "bootstrap.servers": bootstrap, "acks": "all", "retries": 0, "linger.ms": 2,
        "message.timeout.ms": 15000,
    })  # fmt: skip

    def delivered(err, msg):
        if err is not None:
            errors.add(err.code())
        else:
            acked[msg.offset()] = msg.value()

    sent = 0
    while not errors and sent < limit:
        for _ in range(200):
            p.produce(TOPIC, os.urandom(1000), on_delivery=delivered)
            sent += 1
        assert p.flush(20) == 0
    return errors


def read_all(bootstrap: str) -> dict[int, bytes]:
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                      fetch_max_bytes=1 << 20)  # fmt: skip
    try:
        tp = TopicPartition(TOPIC, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        end = c.end_offsets([tp])[tp]
        got: dict[int, bytes] = {}
        deadline = time.monotonic() + 20
        while c.position(tp) < end:
            assert time.monotonic() < deadline, f"read {len(got)} of {end} records"
            for rec in c.poll(500).get(tp, []):
                got[rec.offset] = rec.value
        return got
    finally:
        c.close()


def check_acked(bootstrap: str, acked: dict[int, bytes]) -> dict[int, bytes]:
    got = read_all(bootstrap)
    missing = [o for o in acked if got.get(o) != acked[o]]
    assert not missing, f"{len(missing)} acknowledged records lost or changed, first {missing[:5]}"
    assert sorted(got) == list(range(len(got))), "offsets must be contiguous from 0"
    return got


def no_tracebacks(b: BrokerProcess, allowed: tuple[str, ...] = ()) -> None:
    bad = [
        e for e in b.lines
        if (e.get("level") in ("error", "critical") or "exception" in e)
        and e.get("event") not in allowed
    ]  # fmt: skip
    assert not bad, bad[:3]


def kafka_python_send(bootstrap: str, value: bytes):
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", retries=0)
    try:
        return p.send(TOPIC, value).get(timeout=15)
    finally:
        p.close()


def resume(bootstrap: str, acked: dict[int, bytes]) -> None:
    """Space was freed: retry (as clients do) until an append goes through."""
    deadline = time.monotonic() + 15
    while True:
        try:
            meta = kafka_python_send(bootstrap, b"after-free")
            break
        except KafkaStorageError:
            assert time.monotonic() < deadline, "produce did not resume after space was freed"
    acked[meta.offset] = b"after-free"


def init_transactional(client: RawClient, txn_id: str) -> int:
    r = client.request(ApiKey.INIT_PRODUCER_ID, 4, {
        "transactional_id": txn_id, "transaction_timeout_ms": 60000, "producer_id": -1,
        "producer_epoch": -1,
    })  # fmt: skip
    return r.error_code


def offset_commit(client: RawClient, group: str, offset: int) -> int:
    r = client.request(ApiKey.OFFSET_COMMIT, 2, {
        "group_id": group, "generation_id_or_member_epoch": -1, "member_id": "",
        "retention_time_ms": -1,
        "topics": [{"name": TOPIC, "partitions": [
            {"partition_index": 0, "committed_offset": offset, "committed_metadata": ""}]}],
    })  # fmt: skip
    return r.topics[0].partitions[0].error_code


def test_full_disk_answers_storage_error_then_resumes(small_fs):
    mnt, start = small_fs
    (mnt / "ballast").write_bytes(b"\0" * (6 << 20))  # freed later, as an operator would
    b = start()
    acked: dict[int, bytes] = {}
    meta = kafka_python_send(b.bootstrap_servers, b"first")
    acked[meta.offset] = b"first"
    raw = RawClient(b.port)
    raw.request(ApiKey.FIND_COORDINATOR, 1, {"key": "g", "key_type": 0})
    wait_for(lambda: offset_commit(raw, "g", 1) == ErrorCode.NONE, what="a first offset commit")
    raw.request(ApiKey.FIND_COORDINATOR, 1, {"key": "tx", "key_type": 1})
    wait_for(lambda: init_transactional(raw, "tx") == ErrorCode.NONE, what="InitProducerId")

    errors = produce_until_full(b.bootstrap_servers, acked)
    assert errors == {CKError.KAFKA_STORAGE_ERROR}, errors
    assert len(acked) > 1000
    with pytest.raises(KafkaStorageError) as e:
        kafka_python_send(b.bootstrap_servers, b"refused")
    assert e.value.errno == ErrorCode.KAFKA_STORAGE_ERROR == 56

    # The broker answers on the same connection: produce, then the group coordinator's write
    # (Kafka's GroupMetadataManager answers NOT_COORDINATOR for a storage error), then Metadata.
    r = raw.request(ApiKey.PRODUCE, 9, produce_body(TOPIC, bytes(values_batch([b"x"]))))
    assert r.responses[0].partition_responses[0].error_code == ErrorCode.KAFKA_STORAGE_ERROR
    assert offset_commit(raw, "g", 2) == ErrorCode.NOT_COORDINATOR
    assert init_transactional(raw, "tx-2") == ErrorCode.NOT_COORDINATOR  # the transaction log's
    r = raw.request(ApiKey.METADATA, 9, {"topics": [{"name": TOPIC}]})
    assert r.topics[0].partitions[0].error_code == ErrorCode.NONE

    # Every batch was acknowledged or refused whole: the log ends where the acks do.
    got = check_acked(b.bootstrap_servers, acked)
    assert len(got) == len(acked)

    # Not a byte left: a topic can't be created (auto-creation answers KAFKA_STORAGE_ERROR),
    # and isn't half there afterwards.
    fill(mnt, "top")
    new = {"name": "born-on-a-full-disk"}
    r = raw.request(ApiKey.METADATA, 9, {"topics": [new], "allow_auto_topic_creation": True})
    assert r.topics[0].error_code == ErrorCode.KAFKA_STORAGE_ERROR
    r = raw.request(ApiKey.METADATA, 9, {"topics": [new], "allow_auto_topic_creation": False})
    assert r.topics[0].error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION

    free(mnt, 1 << 20, "top")
    os.unlink(mnt / "ballast")
    resume(b.bootstrap_servers, acked)
    more: dict[int, bytes] = {}
    p = CKProducer({"bootstrap.servers": b.bootstrap_servers, "acks": "all", "retries": 0})
    for i in range(300):
        p.produce(TOPIC, b"resumed-%d" % i,
                  on_delivery=lambda err, msg: more.__setitem__(msg.offset(), (err, msg.value())))  # fmt: skip
    assert p.flush(20) == 0
    assert all(err is None for err, _ in more.values())
    acked.update({o: v for o, (_, v) in more.items()})
    assert offset_commit(raw, "g", 3) == ErrorCode.NONE
    wait_for(lambda: init_transactional(raw, "tx-2") == ErrorCode.NONE, what="InitProducerId")
    check_acked(b.bootstrap_servers, acked)
    raw.close()
    no_tracebacks(b)


def test_restart_on_full_disk_five_times(small_fs):
    mnt, start = small_fs
    fill(mnt, "ballast", max_chunks=28)  # 7 MiB, given back a little in each cycle
    b = start()
    acked: dict[int, bytes] = {}
    assert produce_until_full(b.bootstrap_servers, acked) == {CKError.KAFKA_STORAGE_ERROR}
    for cycle in range(5):
        b.kill()
        torn = damage_tail(mnt / "data" / f"{TOPIC}-0")
        fill(mnt, f"top-{cycle}")  # not a byte left
        b = start()  # recovery must not need space
        # The cut-back indexes are rebuilt: found on load, or with every segment above the
        # recovery point (all of them: none checkpointed yet) recovered from the log itself.
        assert b.events("index_corrupt") or b.events("log_segments_recovered")
        assert [e["truncated_bytes"] for e in b.events("log_recovered")] == ([torn] if torn else [])
        check_acked(b.bootstrap_servers, acked)
        # Appends are refused (after a batch or two if recovery freed a little)...
        assert produce_until_full(b.bootstrap_servers, acked) == {CKError.KAFKA_STORAGE_ERROR}
        with pytest.raises(KafkaStorageError):
            kafka_python_send(b.bootstrap_servers, b"refused")
        no_tracebacks(b)
        # ...until space comes back: then the appends (rolls, index entries, producer snapshots)
        # fill it, so that the next SIGKILL hits a freshly written tail on a full disk.
        free(mnt, 5, "ballast")
        resume(b.bootstrap_servers, acked)
        before = len(acked)
        assert produce_until_full(b.bootstrap_servers, acked) == {CKError.KAFKA_STORAGE_ERROR}
        assert len(acked) > before + 500
    b.kill()
    for name in os.listdir(mnt):
        if name != "data":
            os.unlink(mnt / name)
    b = start()
    meta = kafka_python_send(b.bootstrap_servers, b"space is back")
    acked[meta.offset] = b"space is back"
    check_acked(b.bootstrap_servers, acked)
    no_tracebacks(b)


def test_io_error_takes_the_log_dir_offline(ext4_fs):
    mnt, start, remount = ext4_fs
    b = start()
    acked: dict[int, bytes] = {}
    meta = kafka_python_send(b.bootstrap_servers, b"before")
    acked[meta.offset] = b"before"
    p = CKProducer({"bootstrap.servers": b.bootstrap_servers, "acks": "all", "retries": 0})
    for i in range(300):
        p.produce(TOPIC, b"rec-%d" % i,
                  on_delivery=lambda err, msg: acked.__setitem__(msg.offset(), msg.value()))  # fmt: skip
    assert p.flush(20) == 0 and len(acked) == 301
    del p
    check_acked(b.bootstrap_servers, acked)

    shut_down_fs(mnt)
    with pytest.raises(KafkaStorageError):  # the append that meets EIO
        kafka_python_send(b.bootstrap_servers, b"refused")
    raw = RawClient(b.port)
    r = raw.request(ApiKey.PRODUCE, 9, produce_body(TOPIC, bytes(values_batch([b"x"]))))
    assert r.responses[0].partition_responses[0].error_code == ErrorCode.KAFKA_STORAGE_ERROR
    r = fetch(raw, [(TOPIC, 0, 0)])
    assert r.responses[0].partitions[0].error_code == ErrorCode.KAFKA_STORAGE_ERROR
    r = raw.request(ApiKey.METADATA, 9, {"topics": [{"name": TOPIC}]})
    node = r.brokers[0].node_id
    part = r.topics[0].partitions[0]
    assert (part.error_code, part.leader_id, part.offline_replicas) == (
        ErrorCode.LEADER_NOT_AVAILABLE, -1, [node],
    )  # fmt: skip
    r = raw.request(ApiKey.DESCRIBE_LOG_DIRS, 1, {"topics": None})
    assert [d.error_code for d in r.results] == [ErrorCode.KAFKA_STORAGE_ERROR]
    assert raw.request(ApiKey.API_VERSIONS, 0, {}).error_code == ErrorCode.NONE
    raw.close()
    assert len(b.events("log_dir_offline")) == 1
    no_tracebacks(b, allowed=("log_dir_offline",))
    assert b.terminate() == 0  # a clean stop, without the clean-shutdown marker

    remount()  # the disk is back (a replaced one would be empty: then replication refills it)
    b = start()
    check_acked(b.bootstrap_servers, acked)
    no_tracebacks(b)


@pytest.mark.skipif(zookeeper_missing() is not None, reason=zookeeper_missing() or "")
def test_full_log_dir_moves_leadership_in_a_cluster(tmp_path):
    """Broker 1's log dir fills up: its partitions' leadership goes to in-sync brokers 2/3,
    producers carry on there, and broker 1 catches up again once space is freed."""
    mnt = tmp_path / "broker1"  # the Cluster helper's data dir for node 1
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
    cluster = Cluster(str(tmp_path))
    try:
        cluster.start()
        admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap())
        admin.create_topics([NewTopic(TOPIC, replica_assignments={0: [1, 2, 3]})])
        admin.close()
        wait_until(lambda: (parts := cluster.agreed_partitions(TOPIC)) and parts[0][0] == 1
                   and len(parts[0][3]) == 3, what="broker 1 leading with a full ISR")  # fmt: skip
        acked: dict[int, bytes] = {}
        p = CKProducer({"bootstrap.servers": cluster.bootstrap(), "acks": "all",
                        "message.timeout.ms": 60000})  # fmt: skip

        def send(n: int) -> None:
            for _ in range(n):
                p.produce(TOPIC, os.urandom(1000),
                          on_delivery=lambda err, msg: err or acked.__setitem__(msg.offset(), msg.value()))  # fmt: skip
            assert p.flush(60) == 0

        send(300)
        assert len(acked) == 300
        fill(mnt, "filler")
        send(300)  # refused by broker 1 with KAFKA_STORAGE_ERROR, then acknowledged elsewhere
        assert len(acked) == 600
        leader = cluster.partitions(TOPIC, 2)[0][0]
        assert leader in (2, 3)
        assert cluster.brokers[1].events("leadership_given_up")
        check_acked(cluster.bootstrap(1), acked)

        free(mnt, 1 << 20, "filler")
        send(100)
        wait_until(lambda: 1 in cluster.partitions(TOPIC, leader)[0][3],
                   what="broker 1 back in the ISR once space is freed")  # fmt: skip
        for b in cluster.brokers.values():
            no_tracebacks(b)
    finally:
        cluster.stop()
        subprocess.run(["umount", str(mnt)], check=False)
        if os.path.ismount(mnt):
            subprocess.run(["umount", "-l", str(mnt)], check=True)
