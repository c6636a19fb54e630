"""kafka-transactions: analyze transactional state and recover from hanging transactions
(Apache Kafka's TransactionsCommand, KIP-664).

    kafka-transactions --bootstrap-server localhost:9092 list
    kafka-transactions --bootstrap-server localhost:9092 describe --transactional-id my-txn
    kafka-transactions --bootstrap-server localhost:9092 describe-producers --topic t --partition 0
    kafka-transactions --bootstrap-server localhost:9092 find-hanging --broker-id 1
    kafka-transactions --bootstrap-server localhost:9092 abort --topic t --partition 0 --start-offset 42

Output is Kafka's: tables whose columns are padded to their widest cell, each cell followed by a
tab (ToolsUtils.prettyPrintTable); failures print `<what failed>: <reason>. Enable debug logging
for additional detail.` on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import sys
import time

from . import common
from .common import ExecutionError, UsageError

DESCRIPTION = (
    "This tool is used to analyze the transactional state of producers in the cluster. "
    "It can be used to detect and recover from hanging transactions."
)
LIST_HEADERS = ["TransactionalId", "Coordinator", "ProducerId", "TransactionState"]
DESCRIBE_HEADERS = ["CoordinatorId", "TransactionalId", "ProducerId", "ProducerEpoch",
                    "TransactionState", "TransactionTimeoutMs", "CurrentTransactionStartTimeMs",
                    "TransactionDurationMs", "TopicPartitions"]  # fmt: skip
PRODUCER_HEADERS = ["ProducerId", "ProducerEpoch", "LatestCoordinatorEpoch", "LastSequence",
                    "LastTimestamp", "CurrentTransactionStartOffset"]  # fmt: skip
HANGING_HEADERS = ["Topic", "Partition", "ProducerId", "ProducerEpoch", "CoordinatorEpoch",
                   "StartOffset", "LastTimestamp", "Duration(min)"]  # fmt: skip
MAX_BATCH_SIZE = 500  # partitions per DescribeProducers, topics per Metadata (Kafka's)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(f"{self.prog}: error: {message}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="kafka-transactions.sh", description=DESCRIPTION)
    p.add_argument("--command-config", metavar="FILE",
                   help="property file containing configs to be passed to admin client")  # fmt: skip
    p.add_argument("--bootstrap-server", metavar="host:port", required=True,
                   help="hostname and port for the broker to connect to, in the form `host:port`  "
                   "(multiple comma-separated entries can be given)")  # fmt: skip
    sub = p.add_subparsers(dest="command", title="commands", metavar="COMMAND", required=True,
                           parser_class=_Parser)  # fmt: skip
    ls = sub.add_parser("list", help="list transactions")
    ls.add_argument("--duration-filter", type=int,
                    help="Duration (in millis) to filter by: if < 0, all transactions will be "
                    "returned; otherwise, only transactions running longer than this duration "
                    "will be returned")  # fmt: skip
    ls.add_argument("--transactional-id-pattern",
                    help="Transactional id regular expression pattern to filter by")  # fmt: skip
    d = sub.add_parser("describe", help="describe the state of an active transactional-id",
                       description="Describe the state of an active transactional-id.")  # fmt: skip
    d.add_argument("--transactional-id", required=True, help="transactional id")
    dp = sub.add_parser("describe-producers",
                        help="describe the states of active producers for a topic partition")  # fmt: skip
    dp.add_argument("--broker-id", type=int,
                    help="optional broker id to describe the producer state on a specific replica")  # fmt: skip
    dp.add_argument("--topic", required=True, help="topic name")
    dp.add_argument("--partition", type=int, required=True, help="partition number")
    ab = sub.add_parser(
        "abort", help="abort a hanging transaction (requires administrative privileges)"
    )
    ab.add_argument("--topic", required=True, help="topic name")
    ab.add_argument("--partition", type=int, required=True, help="partition number")
    ab.add_argument("--start-offset", type=int, help="start offset of the transaction to abort")
    ab.add_argument("--producer-id", type=int, help="producer id")
    ab.add_argument("--producer-epoch", type=int, help="producer epoch")
    ab.add_argument("--coordinator-epoch", type=int, help="coordinator epoch")
    fh = sub.add_parser("find-hanging", help="find hanging transactions")
    fh.add_argument("--broker-id", type=int, help="broker id to search for hanging transactions")
    fh.add_argument("--max-transaction-timeout", type=int, default=15,
                    help="maximum transaction timeout in minutes to limit the scope of the search "
                    "(15 minutes by default)")  # fmt: skip
    fh.add_argument(
        "--topic", help="topic name to limit search to (required if --partition is specified)"
    )
    fh.add_argument("--partition", type=int, help="partition number")
    return p


def pretty_print_table(headers: list[str], rows: list[list[str]]) -> None:
    """Kafka's ToolsUtils.prettyPrintTable: each cell padded to its column's width, then a tab."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        print("".join(cell.ljust(w) + "\t" for cell, w in zip(row, widths, strict=True)))


def fail(message: str, error: BaseException | None = None) -> ExecutionError:
    """Kafka's printErrorAndExit, with the cause's message when there is one."""
    if error is not None:
        message = f"{message}: {_reason(error)}. Enable debug logging for additional detail."
    return ExecutionError(message)


# Java's default messages (Errors.java) for the errors these commands meet most.
_JAVA_MESSAGES = {
    3: "This server does not host this topic-partition.",
    6: "For requests intended only for the leader, this error indicates that the broker is not "
    "the current leader. For requests intended for any replica, this error indicates that the "
    "broker is not a replica of the topic partition.",
    15: "The coordinator is not available.",
    16: "This is not the correct coordinator.",
    29: "Topic authorization failed.",
    31: "Cluster authorization failed.",
    53: "Transactional Id authorization failed.",
    105: "The transactionalId could not be found.",
}


def _reason(error: BaseException) -> str:
    """A kafka-python error as Java's exception message (its text for the error code)."""
    from kafka import errors

    if isinstance(error, errors.BrokerResponseError):
        # Kept with its full stop: Kafka's tool adds another (".. Enable debug logging").
        return _JAVA_MESSAGES.get(error.errno) or type(error).description
    return common.describe_client_error(error)


def tp_str(topic: str, partition: int) -> str:
    return f"{topic}-{partition}"  # Java's TopicPartition.toString


def list_transactions(admin, args) -> None:
    try:
        by_broker = admin.list_transactions(
            duration_filter_ms=args.duration_filter,
            transactional_id_pattern=args.transactional_id_pattern,
        )
    except Exception as e:  # noqa: BLE001 - reported as Kafka's tool does
        raise fail("Failed to list transactions", e) from None
    rows = [[t.transactional_id, str(broker), str(t.producer_id), t.state.value]
            for broker, listings in by_broker.items() for t in listings]  # fmt: skip
    pretty_print_table(LIST_HEADERS, rows)


def describe(admin, args) -> None:
    txn_id = args.transactional_id
    try:
        d = admin.describe_transactions([txn_id])[txn_id]
    except Exception as e:  # noqa: BLE001
        raise fail(
            f"Failed to describe transaction state of transactional-id `{txn_id}`", e
        ) from None
    if d.transaction_start_time_ms >= 0:
        start = str(d.transaction_start_time_ms)
        duration = str(int(time.time() * 1000) - d.transaction_start_time_ms)
    else:
        start = duration = "None"
    parts = ",".join(tp_str(tp.topic, tp.partition) for tp in d.topic_partitions)
    pretty_print_table(DESCRIBE_HEADERS, [[
        str(d.coordinator_id), txn_id, str(d.producer_id), str(d.producer_epoch), d.state.value,
        str(d.transaction_timeout_ms), start, duration, parts]])  # fmt: skip


def _producers(admin, partitions, broker_id):
    from kafka import TopicPartition

    return admin.describe_producers([TopicPartition(t, p) for t, p in partitions], broker_id)


def describe_producers(admin, args) -> None:
    try:
        states = _producers(admin, [(args.topic, args.partition)], args.broker_id)
    except Exception as e:  # noqa: BLE001
        where = f"broker {args.broker_id}" if args.broker_id is not None else "leader"
        raise fail(f"Failed to describe producers for partition "
                   f"{tp_str(args.topic, args.partition)} on {where}", e) from None  # fmt: skip
    rows = []
    for state in states.values():
        for p in state.active_producers:
            start = p.current_transaction_start_offset
            rows.append([str(p.producer_id), str(p.producer_epoch), str(p.coordinator_epoch),
                         str(p.last_sequence), str(p.last_timestamp),
                         str(start) if start >= 0 else "None"])  # fmt: skip
    pretty_print_table(PRODUCER_HEADERS, rows)


def abort(admin, args) -> None:
    from kafka import TopicPartition
    from kafka.admin._transactions import AbortTransactionSpec

    tp = TopicPartition(args.topic, args.partition)
    if args.start_offset is None and args.producer_id is None:
        raise fail("The transaction to abort must be identified either with --start-offset (for "
                   "brokers on 3.0 or above) or with --producer-id, --producer-epoch, and "
                   "--coordinator-epoch (for older brokers)")  # fmt: skip
    if args.start_offset is None:
        if args.producer_epoch is None:
            raise fail("Missing required argument --producer-epoch")
        if args.coordinator_epoch is None:
            raise fail("Missing required argument --coordinator-epoch")
        # A transaction that hung before its producer's first marker shows coordinator epoch -1;
        # 0 is at most any real one (Kafka's tool does the same).
        spec = AbortTransactionSpec(tp, args.producer_id, args.producer_epoch,
                                    max(args.coordinator_epoch, 0))  # fmt: skip
    else:
        try:
            state = _producers(admin, [(tp.topic, tp.partition)], None)[tp]
        except Exception as e:  # noqa: BLE001
            raise fail(f"Failed to validate producer state for partition "
                       f"{tp_str(tp.topic, tp.partition)}", e) from None  # fmt: skip
        found = [p for p in state.active_producers
                 if p.current_transaction_start_offset == args.start_offset]  # fmt: skip
        if not found:
            raise fail(f"Could not find any open transactions starting at offset "
                       f"{args.start_offset} on partition {tp_str(tp.topic, tp.partition)}")  # fmt: skip
        p = found[0]
        spec = AbortTransactionSpec(tp, p.producer_id, p.producer_epoch,
                                    p.coordinator_epoch if p.coordinator_epoch >= 0 else 0)  # fmt: skip
    try:
        admin.abort_transaction(spec)
    except Exception as e:  # noqa: BLE001
        raise fail(f"Failed to abort transaction {_spec_str(spec)}", e) from None


def _spec_str(spec) -> str:
    """Java's AbortTransactionSpec.toString."""
    return (f"AbortTransactionSpec(topicPartition={tp_str(*spec.topic_partition)}, "
            f"producerId={spec.producer_id}, producerEpoch={spec.producer_epoch}, "
            f"coordinatorEpoch={spec.coordinator_epoch})")  # fmt: skip


def find_hanging(admin, args) -> None:
    if args.topic is None and args.broker_id is None:
        raise fail("The `find-hanging` command requires either --topic or --broker-id to limit "
                   "the scope of the search")  # fmt: skip
    if args.partition is not None and args.topic is None:
        raise fail("The --partition argument requires --topic to be provided")
    max_timeout_ms = args.max_transaction_timeout * 60_000
    partitions = _partitions_to_search(admin, args)
    now = int(time.time() * 1000)
    candidates = []  # (topic, partition, producer state): open for longer than any timeout
    for i in range(0, len(partitions), MAX_BATCH_SIZE):
        batch = partitions[i : i + MAX_BATCH_SIZE]
        try:
            states = _producers(admin, batch, args.broker_id)
        except Exception as e:  # noqa: BLE001
            raise fail(f"Failed to describe producers for {len(batch)} partitions on broker "
                       f"{_optional(args.broker_id)}", e) from None  # fmt: skip
        for tp, state in states.items():
            for p in state.active_producers:
                if (
                    p.current_transaction_start_offset >= 0
                    and now - p.last_timestamp > max_timeout_ms
                ):
                    candidates.append((tp.topic, tp.partition, p))
    hanging = _hanging(admin, candidates) if candidates else []
    now = int(time.time() * 1000)
    pretty_print_table(HANGING_HEADERS, [
        [t, str(part), str(p.producer_id), str(p.producer_epoch), str(p.coordinator_epoch),
         str(p.current_transaction_start_offset), str(p.last_timestamp),
         str((now - p.last_timestamp) // 60_000)]
        for t, part, p in hanging])  # fmt: skip


def _optional(value) -> str:
    return f"Optional[{value}]" if value is not None else "Optional.empty"  # Java's Optional


def _partitions_to_search(admin, args) -> list[tuple[str, int]]:
    if args.topic is not None and args.partition is not None:
        return [(args.topic, args.partition)]
    if args.topic is not None:
        topics = [args.topic]
    else:
        try:
            topics = sorted(admin.list_topics())
        except Exception as e:  # noqa: BLE001
            raise fail("Failed to list topics", e) from None
    out = []
    for i in range(0, len(topics), MAX_BATCH_SIZE):
        batch = topics[i : i + MAX_BATCH_SIZE]
        try:
            described = admin.describe_topics(batch)
        except Exception as e:  # noqa: BLE001
            raise fail(f"Failed to describe {len(batch)} topics", e) from None
        for t in described:
            if t.get("error_code"):
                raise fail(f"Failed to describe {len(batch)} topics",
                           _error(t["error_code"]))  # fmt: skip
            for p in t["partitions"]:
                if args.broker_id is None or args.broker_id in p["replica_nodes"]:
                    out.append((t["name"], p["partition_index"]))
    return out


def _error(code: int) -> BaseException:
    from kafka import errors

    return errors.for_code(code)()


def _hanging(admin, candidates) -> list:
    """Kafka's filterHangingTransactions: an open transaction is hanging when no transactional
    id has its producer id, or the id's transaction doesn't include that partition."""
    producer_ids = {p.producer_id for _, _, p in candidates}
    try:
        listings = admin.list_transactions(producer_id_filters=sorted(producer_ids))
    except Exception as e:  # noqa: BLE001
        raise fail(f"Failed to list transactions for {len(producer_ids)} producers", e) from None
    txn_ids = {t.producer_id: t.transactional_id for ls in listings.values() for t in ls
               if t.producer_id in producer_ids}  # fmt: skip
    descriptions = {}
    for txn_id in set(txn_ids.values()):
        try:
            descriptions[txn_id] = admin.describe_transactions([txn_id])[txn_id]
        except Exception as e:  # noqa: BLE001
            if type(e).__name__ == "TransactionalIdNotFoundError":
                descriptions[txn_id] = None
            else:
                raise fail(f"Failed to describe {len(txn_ids)} transactions", e) from None
    out = []
    for topic, partition, p in candidates:
        txn_id = txn_ids.get(p.producer_id)
        d = descriptions.get(txn_id) if txn_id is not None else None
        if d is None or not any(
            (tp.topic, tp.partition) == (topic, partition) for tp in d.topic_partitions
        ):
            out.append((topic, partition, p))
    return out


COMMANDS = {
    "list": list_transactions,
    "describe": describe,
    "describe-producers": describe_producers,
    "abort": abort,
    "find-hanging": find_hanging,
}


def run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    bootstrap = common.bootstrap_servers(args.bootstrap_server)
    admin = common.admin_client(bootstrap, common.client_properties(args.command_config))
    try:
        COMMANDS[args.command](admin, args)
    finally:
        admin.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    return common.run_tool(run, argv)  # failures: their message on stderr, exit 1


if __name__ == "__main__":
    sys.exit(main())
