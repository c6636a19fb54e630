"""SIGKILL in the middle of a log cleaning: the log restarts readable and correct."""

from __future__ import annotations

import os
import signal

from helpers import BrokerProcess
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from storage_helpers import wait_for

from pykbroker.storage.cleaner import CHECKPOINT_FILE, read_checkpoint

TOPIC = "crashy"
KEYS = 20


def produce(bootstrap, n):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(TOPIC, 1, 1, topic_configs={
        "cleanup.policy": "compact", "segment.bytes": str(128 * 1024),
        "min.cleanable.dirty.ratio": "0.01",
    })])  # fmt: skip
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=32 * 1024)
    pairs = [(b"key-%d" % (i % KEYS), b"%d:" % i + b"x" * 1000) for i in range(n)]
    futures = [producer.send(TOPIC, key=k, value=v) for k, v in pairs]
    producer.flush()
    sent = {f.get(10).offset: pair for f, pair in zip(futures, pairs, strict=True)}
    producer.close()
    return sent


def read_all(bootstrap):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=10000)
    tp = TopicPartition(TOPIC, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    end = consumer.end_offsets([tp])[tp]
    got = []
    while consumer.position(tp) < end:
        for msgs in consumer.poll(timeout_ms=500, max_records=5000).values():
            got.extend((m.offset, m.key, m.value) for m in msgs)
    consumer.close()
    return got, end


def check_readable(bootstrap, sent):
    """Every record read was written, at its offset, in order, once; no newest value lost."""
    got, end = read_all(bootstrap)
    assert end == max(sent) + 1
    assert [o for o, _, _ in got] == sorted({o for o, _, _ in got})
    assert all(sent[o] == (k, v) for o, k, v in got)
    newest = {}
    for off in sorted(sent):
        newest[sent[off][0]] = off
    assert set(newest.values()) <= {o for o, _, _ in got}
    return got


def cleaner_workers(broker_pid: int) -> list[int]:
    """Pids of cleaner worker processes started by the broker `broker_pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    args = f.read().split(b"\0")
            except OSError:
                continue
            if b"pykbroker.storage.cleaner" in args and str(broker_pid).encode() in args:
                found.append(int(entry))
    return found


def files(part_dir, *suffixes):
    return [n for n in os.listdir(part_dir) if n.endswith(suffixes)]


SLOW = {
    "log.cleaner.backoff.ms": "50",
    "log.cleaner.io.max.bytes.per.second": str(1024 * 1024),  # a cleaning takes seconds
}


def test_sigkill_during_cleaning_leaves_a_correct_log(tmp_path):
    data = str(tmp_path / "data")
    part_dir = os.path.join(data, f"{TOPIC}-0")
    sent = None
    # First kill: while the first cleaned segment is being written. Second kill: after a swap
    # (old segments wait as `.deleted` for file.delete.delay.ms), during the next cleaning.
    for moment in ((".cleaned", ".swap"), (".deleted",)):
        slow = BrokerProcess(data, SLOW).start()
        try:
            if sent is None:
                sent = produce(slow.bootstrap_servers, 2000)
            else:
                check_readable(slow.bootstrap_servers, sent)
            wait_for(lambda moment=moment: files(part_dir, *moment), what=f"{moment} files")
            slow.proc.send_signal(signal.SIGKILL)
            slow.proc.wait(10)
            wait_for(lambda pid=slow.proc.pid: not cleaner_workers(pid), what="the worker to die")
        finally:
            slow.kill()

    again = BrokerProcess(data, {"log.cleaner.backoff.ms": "50"}).start()
    try:
        check_readable(again.bootstrap_servers, sent)

        # The restarted broker finishes the job: exactly the newest value per key below the
        # active segment (the cleaner never touches it), everything from it on.
        def cleaned_to():
            active = max(int(n[:-4]) for n in files(part_dir, ".log"))
            done = read_checkpoint(os.path.join(data, CHECKPOINT_FILE)).get((TOPIC, 0))
            return active if done == active else None

        active = wait_for(cleaned_to, what="the cleaning to complete after restart")
        got = check_readable(again.bootstrap_servers, sent)
        newest_below = {}
        for off in sorted(o for o in sent if o < active):
            newest_below[sent[off][0]] = off
        assert {o for o, _, _ in got if o < active} == set(newest_below.values())
        assert [o for o, _, _ in got if o >= active] == [o for o in sorted(sent) if o >= active]
        assert not files(part_dir, ".cleaned", ".swap")
    finally:
        again.terminate()
