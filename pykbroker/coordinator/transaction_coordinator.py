"""The transaction coordinator (Kafka's TransactionCoordinator and TransactionStateManager).

Each transactional id belongs to one partition of `__transaction_state` (Java String.hashCode,
like groups), and the broker leading that partition coordinates it; its coordinator epoch is the
partition's leader epoch. State lives in memory, one TransactionMetadata per id, and every change
is first written to the log (TransactionStateLog); only once the write is replicated does the
in-memory state move (a change in flight is `pending`, and other requests for the id get
CONCURRENT_TRANSACTIONS meanwhile). All of it runs on the broker's event loop, so there are no
locks: each request validates and starts its transition synchronously.

A transaction's life, as in Kafka:

    Empty/Complete* --AddPartitionsToTxn--> Ongoing --EndTxn--> PrepareCommit|PrepareAbort
        --markers written to every partition--> CompleteCommit|CompleteAbort

EndTxn is answered once the Prepare state is replicated; the markers are then written (locally
for partitions this broker leads, with WriteTxnMarkers to the other leaders, retried until every
partition has one) and the Complete state is logged. InitProducerId bumps the epoch, which fences
older producers with the same transactional id (PRODUCER_FENCED); an Ongoing transaction is first
aborted with a bumped epoch (the caller gets CONCURRENT_TRANSACTIONS and retries). KIP-360: a
producer that passes its id and epoch gets the next epoch of the same id. Transactions running
past their timeout are aborted the same way, and ids idle past transactional.id.expiration.ms
are removed (a tombstone in the log).

In a cluster, leadership of `__transaction_state` partitions moves: on election the coordinator
loads the partition (finishing any Prepare* transaction by writing its markers again), on
resignation it forgets it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import structlog

from protocol.apis import ApiKey
from protocol.errors import ErrorCode, KafkaError

from .broker_channel import BrokerChannels
from .offsets_log import GROUP_METADATA_TOPIC
from .txn_log import TRANSACTION_STATE_TOPIC, TransactionStateLog, TxnRecord, TxnState
from .txn_markers import write_markers

if TYPE_CHECKING:
    from pykbroker.broker import Broker

log = structlog.get_logger(__name__)

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
MAX_EPOCH = (1 << 15) - 1
WRITE_TXN_MARKERS_VERSION = 1
ADD_PARTITIONS_VERIFY_VERSION = 4
ADD_PARTITIONS_ADD_VERSION = 5  # transactions v2: a partition leader adds for the producer

EMPTY = TxnState.EMPTY
ONGOING = TxnState.ONGOING
PREPARE_COMMIT = TxnState.PREPARE_COMMIT
PREPARE_ABORT = TxnState.PREPARE_ABORT
COMPLETE_COMMIT = TxnState.COMPLETE_COMMIT
COMPLETE_ABORT = TxnState.COMPLETE_ABORT
DEAD = TxnState.DEAD

TopicPartition = tuple[str, int]

# Kafka's TransactionStateManager maps failed log appends to coordinator errors.
_APPEND_ERRORS = {
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION: ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.NOT_ENOUGH_REPLICAS: ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND: ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.REQUEST_TIMED_OUT: ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.NOT_LEADER_OR_FOLLOWER: ErrorCode.NOT_COORDINATOR,
    ErrorCode.KAFKA_STORAGE_ERROR: ErrorCode.NOT_COORDINATOR,
    ErrorCode.NOT_COORDINATOR: ErrorCode.NOT_COORDINATOR,
    ErrorCode.COORDINATOR_NOT_AVAILABLE: ErrorCode.COORDINATOR_NOT_AVAILABLE,
}
# Marker errors worth retrying (the leader moved, or is catching up).
_MARKER_RETRIABLE = {
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, ErrorCode.NOT_LEADER_OR_FOLLOWER,
    ErrorCode.NOT_ENOUGH_REPLICAS, ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    ErrorCode.REQUEST_TIMED_OUT, ErrorCode.KAFKA_STORAGE_ERROR, ErrorCode.FENCED_LEADER_EPOCH,
    ErrorCode.UNKNOWN_LEADER_EPOCH, ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
    ErrorCode.NETWORK_EXCEPTION,
}  # fmt: skip


def now_ms() -> int:
    return int(time.time() * 1000)


def epoch_exhausted(epoch: int) -> bool:
    return epoch >= MAX_EPOCH - 1


@dataclass(eq=False, slots=True)
class TransactionMetadata:
    transactional_id: str
    producer_id: int
    last_producer_id: int
    producer_epoch: int
    last_producer_epoch: int
    txn_timeout_ms: int
    state: TxnState
    partitions: set[TopicPartition] = field(default_factory=set)
    txn_start_timestamp: int = -1
    txn_last_update_timestamp: int = -1
    pending: TxnRecord | None = None  # a transition being written to the log
    has_failed_epoch_fence: bool = False
    completing: asyncio.Task | None = None  # markers being written
    next_producer_id: int = NO_PRODUCER_ID  # transactions v2: taken at Complete* (epoch overflow)
    client_tv: int = 0  # the transaction version of the client's last transaction (KIP-890)

    def record(self, **changes) -> TxnRecord:
        """This state as a log record, with `changes` (Kafka's prepareTransitionTo)."""
        rec = TxnRecord(
            self.producer_id, self.producer_epoch, self.txn_timeout_ms, self.state,
            frozenset(self.partitions), self.txn_last_update_timestamp, self.txn_start_timestamp,
            self.last_producer_id, self.last_producer_epoch, self.next_producer_id, self.client_tv,
        )  # fmt: skip
        return replace(rec, **changes)

    def apply(self, rec: TxnRecord) -> None:
        self.producer_id = rec.producer_id
        self.last_producer_id = rec.last_producer_id
        self.producer_epoch = rec.producer_epoch
        self.last_producer_epoch = rec.last_producer_epoch
        self.txn_timeout_ms = rec.txn_timeout_ms
        self.state = rec.state
        self.partitions = set(rec.partitions)
        self.txn_start_timestamp = rec.txn_start_timestamp
        self.txn_last_update_timestamp = rec.txn_last_update_timestamp
        self.next_producer_id = rec.next_producer_id
        self.client_tv = rec.client_tv

    @classmethod
    def from_record(cls, transactional_id: str, rec: TxnRecord) -> TransactionMetadata:
        md = cls(transactional_id, rec.producer_id, NO_PRODUCER_ID, rec.producer_epoch,
                 NO_PRODUCER_EPOCH, rec.txn_timeout_ms, rec.state)  # fmt: skip
        md.apply(rec)
        return md


class TransactionCoordinator:
    def __init__(self, broker: Broker):
        self.broker = broker
        config = broker.config
        self.loop = asyncio.get_running_loop()
        self.store = TransactionStateLog(broker)
        self.txns: dict[str, TransactionMetadata] = {}
        self.owned: dict[int, int] = {}  # __transaction_state partition -> coordinator epoch
        self.max_timeout_ms = config.get("transaction.max.timeout.ms")
        self.id_expiration_ms = config.get("transactional.id.expiration.ms")
        self.abort_interval_ms = config.get("transaction.abort.timed.out.transaction.cleanup.interval.ms")  # fmt: skip
        self.expire_interval_ms = config.get("transaction.remove.expired.transaction.cleanup.interval.ms")  # fmt: skip
        self.request_timeout_s = config.get("request.timeout.ms") / 1000
        self.channels = BrokerChannels(broker, f"broker-{broker.node_id}-txn-coordinator")
        self.active = False
        self._tasks: set[asyncio.Task] = set()

    # --- lifecycle ----------------------------------------------------------------------------

    def startup(self) -> None:
        """Load the __transaction_state partitions this broker leads (if the topic exists yet),
        follow leadership changes, and start the timeout and expiration tasks."""
        info = self.store.topic(create=False)
        if info is not None:
            rm = self.broker.replica_manager
            for index in range(len(info.partitions)):
                part = rm.partitions.get((TRANSACTION_STATE_TOPIC, index))
                if part is not None and part.is_leader:
                    self._load_partition(index, part.leader_epoch)
        self.active = True
        self.broker.replica_manager.add_leadership_listener(self._on_leadership_change)
        self._spawn(self._periodic(self.abort_interval_ms, self.abort_timed_out_transactions))
        self._spawn(self._periodic(self.expire_interval_ms, self.expire_transactional_ids))

    def shutdown(self) -> None:
        self.active = False
        for t in list(self._tasks):
            t.cancel()
        for md in self.txns.values():
            if md.completing is not None:
                md.completing.cancel()
        self.channels.close()

    def _spawn(self, coro) -> asyncio.Task:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("transaction_coordinator_task_failed", error=repr(task.exception()))

    async def _periodic(self, interval_ms: int, fn) -> None:
        while True:
            await asyncio.sleep(interval_ms / 1000)
            try:
                fn()
            except Exception:
                log.exception("transaction_coordinator_periodic_failed", task=fn.__name__)

    # --- ownership ----------------------------------------------------------------------------

    def _on_leadership_change(self, topic: str, index: int, is_leader: bool, epoch: int) -> None:
        if topic != TRANSACTION_STATE_TOPIC or not self.active:
            return
        if is_leader:
            if self.owned.get(index) != epoch:
                self._load_partition(index, epoch)
        else:
            self._unload_partition(index)

    def _load_partition(self, index: int, coordinator_epoch: int) -> None:
        self._unload_partition(index)
        loaded = self.store.load(index)
        self.owned[index] = coordinator_epoch
        resumed = 0
        for txn_id, rec in loaded.items():
            md = TransactionMetadata.from_record(txn_id, rec)
            self.txns[txn_id] = md
            if md.state in (PREPARE_COMMIT, PREPARE_ABORT):
                # The markers may not all be written: write them (again) and complete.
                self._start_markers(md, md.state == PREPARE_COMMIT, coordinator_epoch)
                resumed += 1
        log.info(
            "transactions_loaded", partition=index, coordinator_epoch=coordinator_epoch,
            transactional_ids=len(loaded), completing=resumed,
        )  # fmt: skip

    def _unload_partition(self, index: int) -> None:
        if self.owned.pop(index, None) is None:
            return
        count = self.store.partition_count()
        doomed = [t for t in self.txns if self.store.partition_for(t) == index] if count else []
        for txn_id in doomed:
            md = self.txns.pop(txn_id)
            if md.completing is not None:
                md.completing.cancel()
        log.info("transactions_unloaded", partition=index, transactional_ids=len(doomed))

    def partition_for(self, transactional_id: str) -> int:
        return self.store.partition_for(transactional_id)

    def coordinator_error(self, transactional_id: str) -> ErrorCode | None:
        """None if this broker coordinates the id, else the error to answer."""
        if not self.active:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        try:
            self.store.topic()
        except KafkaError as e:
            log.warning("transaction_topic_unavailable", error=e.code.name, message=e.message)
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        index = self.partition_for(transactional_id)
        if index not in self.owned:
            part = self.broker.replica_manager.partitions.get((TRANSACTION_STATE_TOPIC, index))
            if part is not None and part.is_leader:
                # Created after start-up on this (single) broker: a new, empty partition.
                self._load_partition(index, part.leader_epoch)
                return None
            return ErrorCode.NOT_COORDINATOR
        return None

    def coordinator_node(self, transactional_id: str):
        """(error, BrokerInfo of the coordinator) for FindCoordinator."""
        try:
            info = self.store.topic()
        except KafkaError:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE, None
        from .schema import partition_for

        state = info.partitions[partition_for(transactional_id, len(info.partitions))]
        for node in self.broker.metadata.brokers():
            if node.node_id == state.leader:
                return ErrorCode.NONE, node
        return ErrorCode.COORDINATOR_NOT_AVAILABLE, None

    # --- writing state ------------------------------------------------------------------------

    async def _write(self, md: TransactionMetadata, rec: TxnRecord) -> int:
        """Log a transition and, once replicated, apply it. Returns the error code."""
        txn_id = md.transactional_id
        index = self.partition_for(txn_id)
        epoch = self.owned.get(index)
        if epoch is None:
            return ErrorCode.NOT_COORDINATOR
        code = await self._append(md, index, rec, rec)
        if self.owned.get(index) != epoch or self.txns.get(txn_id) is not md:
            return ErrorCode.NOT_COORDINATOR  # leadership moved while writing
        if code != ErrorCode.NONE:
            log.warning("transaction_state_write_failed", transactional_id=txn_id,
                        state=rec.state.kafka_name, error=ErrorCode(code).name)  # fmt: skip
            return _APPEND_ERRORS.get(code, ErrorCode.UNKNOWN_SERVER_ERROR)
        md.apply(rec)
        return ErrorCode.NONE

    async def _append(
        self, md: TransactionMetadata, index: int, rec: TxnRecord | None, pending: TxnRecord
    ) -> int:
        """Append `rec` (None: a tombstone) to the transaction log and wait until it is
        replicated; `md.pending` shows the transition meanwhile. Returns the error code."""
        md.pending = pending
        try:
            waiting = self.store.append(index, md.transactional_id, rec)
            return ErrorCode.NONE if waiting is None else await waiting
        except KafkaError as e:
            return e.code
        finally:
            md.pending = None

    # --- InitProducerId -----------------------------------------------------------------------

    async def init_producer_id(
        self, txn_id: str, timeout_ms: int, expected_pid: int = NO_PRODUCER_ID,
        expected_epoch: int = NO_PRODUCER_EPOCH,
    ) -> tuple[int, int, int]:  # fmt: skip
        """(error, producer id, epoch)."""
        fail = (NO_PRODUCER_ID, NO_PRODUCER_EPOCH)
        if not txn_id:
            return (ErrorCode.INVALID_REQUEST, *fail)
        if not 0 < timeout_ms <= self.max_timeout_ms:
            return (ErrorCode.INVALID_TRANSACTION_TIMEOUT, *fail)
        error = self.coordinator_error(txn_id)
        if error is not None:
            return (error, *fail)
        md = self.txns.get(txn_id)
        if md is None:
            try:
                pid = self.broker.metadata.next_producer_id()
            except KafkaError as e:
                return (e.code, *fail)
            md = TransactionMetadata(txn_id, pid, NO_PRODUCER_ID, NO_PRODUCER_EPOCH,
                                     NO_PRODUCER_EPOCH, timeout_ms, EMPTY,
                                     txn_last_update_timestamp=now_ms())  # fmt: skip
            self.txns[txn_id] = md
        expected = expected_pid != NO_PRODUCER_ID
        if md.pending is not None:
            return (ErrorCode.CONCURRENT_TRANSACTIONS, *fail)
        if expected and not (
            md.producer_epoch == NO_PRODUCER_EPOCH
            or expected_pid == md.producer_id
            or (expected_pid == md.last_producer_id and epoch_exhausted(expected_epoch))
        ):
            return (ErrorCode.PRODUCER_FENCED, *fail)
        if md.state in (PREPARE_COMMIT, PREPARE_ABORT):
            return (ErrorCode.CONCURRENT_TRANSACTIONS, *fail)
        if md.state == ONGOING:
            # Abort the open transaction with a bumped epoch (never handed out) and let the
            # caller retry: its retry bumps the epoch again.
            error = await self._fence_and_abort(md)
            return (error or ErrorCode.CONCURRENT_TRANSACTIONS, *fail)
        now = now_ms()
        if epoch_exhausted(md.producer_epoch) and (
            not expected or expected_epoch == md.producer_epoch
        ):
            try:
                new_pid = self.broker.metadata.next_producer_id()
            except KafkaError as e:
                return (e.code, *fail)
            rec = md.record(
                producer_id=new_pid, last_producer_id=md.producer_id, producer_epoch=0,
                last_producer_epoch=md.producer_epoch if expected else NO_PRODUCER_EPOCH,
                txn_timeout_ms=timeout_ms, state=EMPTY, partitions=frozenset(),
                txn_start_timestamp=-1, txn_last_update_timestamp=now,
            )  # fmt: skip
        else:
            bumped = md.producer_epoch + 1
            if not expected:
                epoch, last_epoch = bumped, NO_PRODUCER_EPOCH
            elif md.producer_epoch == NO_PRODUCER_EPOCH or expected_epoch == md.producer_epoch:
                epoch, last_epoch = bumped, md.producer_epoch
            elif expected_epoch == md.last_producer_epoch:
                epoch, last_epoch = md.producer_epoch, md.last_producer_epoch  # a retry
            else:
                return (ErrorCode.PRODUCER_FENCED, *fail)
            rec = md.record(
                producer_epoch=epoch, last_producer_epoch=last_epoch, txn_timeout_ms=timeout_ms,
                state=EMPTY, partitions=frozenset(), txn_start_timestamp=-1,
                txn_last_update_timestamp=now,
            )  # fmt: skip
        error = await self._write(md, rec)
        if error:
            return (error, *fail)
        log.info("producer_initialized", transactional_id=txn_id, producer_id=rec.producer_id,
                 producer_epoch=rec.producer_epoch, partition=self.partition_for(txn_id))  # fmt: skip
        return ErrorCode.NONE, rec.producer_id, rec.producer_epoch

    # --- AddPartitionsToTxn / AddOffsetsToTxn -----------------------------------------------

    def _check_producer(self, txn_id: str, producer_id: int, producer_epoch: int):
        """(error, metadata): the coordinator owns the id and the producer is its current one."""
        error = self.coordinator_error(txn_id)
        if error is not None:
            return error, None
        md = self.txns.get(txn_id)
        if md is None or md.producer_id != producer_id:
            return ErrorCode.INVALID_PRODUCER_ID_MAPPING, None
        if md.producer_epoch != producer_epoch:
            return ErrorCode.PRODUCER_FENCED, None
        return None, md

    async def add_partitions(
        self, txn_id: str, producer_id: int, producer_epoch: int,
        partitions: set[TopicPartition], client_tv: int = 0,
    ) -> int:  # fmt: skip
        """AddPartitionsToTxn/AddOffsetsToTxn from a client, or (transactions v2, client_tv 2)
        from the leader of a partition a Produce v12 or TxnOffsetCommit v5 writes to."""
        if not txn_id:
            return ErrorCode.INVALID_REQUEST
        error, md = self._check_producer(txn_id, producer_id, producer_epoch)
        if error is not None:
            return error
        if md.pending is not None or md.state in (PREPARE_COMMIT, PREPARE_ABORT):
            return ErrorCode.CONCURRENT_TRANSACTIONS
        if md.state == ONGOING and partitions <= md.partitions:
            return ErrorCode.NONE
        now = now_ms()
        start = md.txn_start_timestamp if md.state == ONGOING else now
        rec = md.record(state=ONGOING, partitions=frozenset(md.partitions | partitions),
                        txn_start_timestamp=start, txn_last_update_timestamp=now,
                        client_tv=client_tv)  # fmt: skip
        return await self._write(md, rec)

    def verify_partitions(
        self, txn_id: str, producer_id: int, producer_epoch: int, partitions: set[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """AddPartitionsToTxn v4 verify_only, and the local check of a produce (Kafka's
        handleVerifyPartitionsInTransaction): CONCURRENT_TRANSACTIONS while the last transaction
        completes, else TRANSACTION_ABORTABLE for each partition not in it (older clients see
        INVALID_TXN_STATE: `abortable_for`)."""
        error, md = self._check_producer(txn_id, producer_id, producer_epoch)
        if error is None and md.state in (PREPARE_COMMIT, PREPARE_ABORT):
            error = ErrorCode.CONCURRENT_TRANSACTIONS
        if error is not None:
            return dict.fromkeys(partitions, error)
        return {
            tp: ErrorCode.NONE if tp in md.partitions else ErrorCode.TRANSACTION_ABORTABLE
            for tp in partitions
        }

    # --- EndTxn -------------------------------------------------------------------------------

    async def end_txn(
        self, txn_id: str, producer_id: int, producer_epoch: int, commit: bool, tv2: bool = False
    ) -> tuple[int, int, int]:
        """(error, producer id, epoch). With transactions v2 (EndTxn v5) every commit and abort
        bumps the epoch and the answer carries it (a new producer id at epoch 0 once the epoch
        is exhausted); older versions answer NO_PRODUCER_ID/-1 and keep the epoch."""
        fail = (NO_PRODUCER_ID, NO_PRODUCER_EPOCH)
        if not txn_id:
            return (ErrorCode.INVALID_REQUEST, *fail)
        if tv2:
            return await self._end_txn_v2(txn_id, producer_id, producer_epoch, commit)
        error, md = self._check_producer(txn_id, producer_id, producer_epoch)
        if error is not None:
            return (error, *fail)
        if md.pending is not None:
            return (ErrorCode.CONCURRENT_TRANSACTIONS, *fail)
        state = md.state
        if state == ONGOING:
            error = await self._prepare(md, commit, client_tv=0)
        elif state in (COMPLETE_COMMIT, COMPLETE_ABORT):
            error = ErrorCode.NONE if (state == COMPLETE_COMMIT) == commit else ErrorCode.INVALID_TXN_STATE  # fmt: skip
        elif state in (PREPARE_COMMIT, PREPARE_ABORT):
            error = ErrorCode.CONCURRENT_TRANSACTIONS if (state == PREPARE_COMMIT) == commit else ErrorCode.INVALID_TXN_STATE  # fmt: skip
        else:
            error = ErrorCode.INVALID_TXN_STATE  # Empty: no transaction to end
        return (error, *fail)

    async def _end_txn_v2(
        self, txn_id: str, producer_id: int, producer_epoch: int, commit: bool
    ) -> tuple[int, int, int]:
        """Kafka's endTransaction for clients of transaction version 2. The epoch alone tells a
        retry (the client's epoch + 1 is the coordinator's: its EndTxn went through) from the
        next EndTxn; an abort needs no partitions (Empty/Complete* -> PrepareAbort)."""
        fail = (NO_PRODUCER_ID, NO_PRODUCER_EPOCH)
        error = self.coordinator_error(txn_id)
        if error is not None:
            return (error, *fail)
        md = self.txns.get(txn_id)
        if md is None:
            return (ErrorCode.INVALID_PRODUCER_ID_MAPPING, *fail)
        state = md.state
        retry_on_overflow = (
            md.last_producer_id == producer_id
            and producer_epoch == MAX_EPOCH - 1
            and md.producer_epoch == 0
        )
        retry_on_bump = md.producer_epoch == producer_epoch + 1
        if state in (PREPARE_COMMIT, PREPARE_ABORT):
            valid = retry_on_bump
        elif state in (COMPLETE_COMMIT, COMPLETE_ABORT):
            valid = retry_on_bump or retry_on_overflow or producer_epoch == md.producer_epoch
        else:
            valid = producer_epoch == md.producer_epoch
        if md.producer_id != producer_id and not retry_on_overflow:
            return (ErrorCode.INVALID_PRODUCER_ID_MAPPING, *fail)
        if not valid:
            return (ErrorCode.PRODUCER_FENCED, *fail)
        if md.pending is not None:
            return (ErrorCode.CONCURRENT_TRANSACTIONS, *fail)
        retry = retry_on_bump or retry_on_overflow
        if state == ONGOING:
            error = await self._prepare(md, commit, client_tv=2)
        elif state in (PREPARE_COMMIT, PREPARE_ABORT):
            same = (state == PREPARE_COMMIT) == commit
            return (
                ErrorCode.CONCURRENT_TRANSACTIONS if same else ErrorCode.INVALID_TXN_STATE,
                *fail,
            )
        elif state in (COMPLETE_COMMIT, COMPLETE_ABORT) and retry:
            if (state == COMPLETE_COMMIT) != commit:
                return (ErrorCode.INVALID_TXN_STATE, *fail)
            return ErrorCode.NONE, md.producer_id, md.producer_epoch
        elif commit:
            return (ErrorCode.INVALID_TXN_STATE, *fail)  # nothing to commit
        else:
            error = await self._prepare(md, False, client_tv=2, empty=True)
        if error:
            return (error, *fail)
        if md.next_producer_id != NO_PRODUCER_ID:
            return ErrorCode.NONE, md.next_producer_id, 0  # the epoch overflowed: a new id
        return ErrorCode.NONE, md.producer_id, md.producer_epoch

    async def _prepare(
        self, md: TransactionMetadata, commit: bool, client_tv: int, empty: bool = False,
        fence: bool = False,
    ) -> int:  # fmt: skip
        """Log PrepareCommit/PrepareAbort and start writing the markers. A transactions-v2
        client's epoch goes up by one here (the markers carry it, fencing anything the producer
        still sends with the old one); past the last usable epoch a new producer id is taken,
        which the Complete* state moves to."""
        index = self.partition_for(md.transactional_id)
        coordinator_epoch = self.owned.get(index)
        now = now_ms()
        changes: dict = {"state": PREPARE_COMMIT if commit else PREPARE_ABORT,
                         "txn_last_update_timestamp": now, "client_tv": client_tv}  # fmt: skip
        if empty:  # v2 abort without partitions: no start time yet, as Kafka, use now
            changes["txn_start_timestamp"] = now
        if client_tv >= 2 and md.producer_epoch < MAX_EPOCH:
            next_pid = NO_PRODUCER_ID
            if epoch_exhausted(md.producer_epoch) and not fence:
                try:
                    next_pid = self.broker.metadata.next_producer_id()
                except KafkaError as e:
                    return e.code
            changes.update(producer_epoch=md.producer_epoch + 1,
                           last_producer_epoch=md.producer_epoch, next_producer_id=next_pid)  # fmt: skip
        error = await self._write(md, md.record(**changes))
        if error:
            return error
        md.has_failed_epoch_fence = False
        self._start_markers(md, commit, coordinator_epoch)
        return ErrorCode.NONE

    async def _fence_and_abort(self, md: TransactionMetadata) -> int:
        """Abort an ongoing transaction with the epoch bumped, so its producer is fenced
        (InitProducerId from another instance; the transaction timeout)."""
        if md.producer_epoch >= MAX_EPOCH:
            return ErrorCode.PRODUCER_FENCED
        if not md.has_failed_epoch_fence:
            md.producer_epoch += 1  # never returned to a client
        md.last_producer_epoch = NO_PRODUCER_EPOCH
        # A transactions-v2 transaction's abort bumps the epoch once more, as Kafka's does.
        error = await self._prepare(md, commit=False, client_tv=md.client_tv, fence=True)
        if error:
            md.has_failed_epoch_fence = True
        return error

    # --- markers ------------------------------------------------------------------------------

    def _start_markers(self, md: TransactionMetadata, commit: bool, coordinator_epoch: int) -> None:
        if md.completing is not None and not md.completing.done():
            return
        md.completing = self._spawn(self._complete(md, commit, coordinator_epoch))

    def _owns(self, md: TransactionMetadata, coordinator_epoch: int) -> bool:
        return (
            self.active
            and self.owned.get(self.partition_for(md.transactional_id)) == coordinator_epoch
            and self.txns.get(md.transactional_id) is md
        )

    async def _complete(
        self, md: TransactionMetadata, commit: bool, coordinator_epoch: int
    ) -> None:
        """Write the markers to every partition of the transaction, then log Complete*."""
        pending = set(md.partitions)
        pid, epoch = md.producer_id, md.producer_epoch
        backoff = 0.02
        while pending:
            if not self._owns(md, coordinator_epoch):
                return
            results = await self._send_markers(pid, epoch, commit, coordinator_epoch, pending)
            for tp, code in results.items():
                if code == ErrorCode.NONE:
                    pending.discard(tp)
                elif code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION and not self._exists(tp):
                    log.info("transaction_marker_skipped_deleted_partition",
                             transactional_id=md.transactional_id, topic=tp[0], partition=tp[1])  # fmt: skip
                    pending.discard(tp)
                elif code in (
                    ErrorCode.INVALID_PRODUCER_EPOCH,
                    ErrorCode.TRANSACTION_COORDINATOR_FENCED,
                ):
                    log.warning("transaction_markers_abandoned", transactional_id=md.transactional_id,
                                topic=tp[0], partition=tp[1], error=ErrorCode(code).name)  # fmt: skip
                    return
                elif code not in _MARKER_RETRIABLE:
                    log.error("transaction_marker_failed", transactional_id=md.transactional_id,
                              topic=tp[0], partition=tp[1], error=ErrorCode(code).name)  # fmt: skip
            if pending:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
        backoff = 0.02
        while self._owns(md, coordinator_epoch):
            if md.pending is not None:
                await asyncio.sleep(backoff)
                continue
            rec = md.record(
                state=COMPLETE_COMMIT if commit else COMPLETE_ABORT, partitions=frozenset(),
                txn_last_update_timestamp=now_ms(),
            )  # fmt: skip
            if md.next_producer_id != NO_PRODUCER_ID:
                # The epoch overflowed (transactions v2): the producer goes on with the new id.
                rec = replace(rec, producer_id=md.next_producer_id, producer_epoch=0,
                              last_producer_id=md.producer_id, next_producer_id=NO_PRODUCER_ID)  # fmt: skip
            error = await self._write(md, rec)
            if error == ErrorCode.NONE:
                log.debug("transaction_completed", transactional_id=md.transactional_id,
                          result="commit" if commit else "abort")  # fmt: skip
                return
            if error == ErrorCode.NOT_COORDINATOR:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    def _exists(self, tp: TopicPartition) -> bool:
        info = self.broker.metadata.topic(tp[0])
        return info is not None and 0 <= tp[1] < len(info.partitions)

    async def _send_markers(
        self, pid: int, epoch: int, commit: bool, coordinator_epoch: int, partitions: set
    ) -> dict[TopicPartition, int]:
        """One round: local partitions directly, the others by leader with WriteTxnMarkers."""
        node_id = self.broker.node_id
        local: list[TopicPartition] = []
        remote: dict[int, list[TopicPartition]] = {}
        results: dict[TopicPartition, int] = {}
        for tp in partitions:
            info = self.broker.metadata.topic(tp[0])
            if info is None or not 0 <= tp[1] < len(info.partitions):
                results[tp] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                continue
            leader = info.partitions[tp[1]].leader
            if leader == node_id:
                local.append(tp)
            elif leader >= 0:
                remote.setdefault(leader, []).append(tp)
            else:
                results[tp] = ErrorCode.NOT_LEADER_OR_FOLLOWER
        calls = [self._remote_markers(n, pid, epoch, commit, coordinator_epoch, tps)
                 for n, tps in remote.items()]  # fmt: skip
        if local:
            written = write_markers(self.broker, pid, epoch, commit, coordinator_epoch, local)
            if not isinstance(written, dict):
                written = await written
            results.update(written)
        for found in await asyncio.gather(*calls):
            results.update(found)
        return results

    async def _remote_markers(
        self, node: int, pid: int, epoch: int, commit: bool, coordinator_epoch: int, tps: list
    ) -> dict[TopicPartition, int]:
        by_topic: dict[str, list[int]] = {}
        for topic, p in tps:
            by_topic.setdefault(topic, []).append(p)
        body = {"markers": [{
            "producer_id": pid, "producer_epoch": epoch, "transaction_result": commit,
            "topics": [{"name": t, "partition_indexes": ps} for t, ps in by_topic.items()],
            "coordinator_epoch": coordinator_epoch,
        }]}  # fmt: skip
        try:
            response = await self.channels.get(node).request(
                ApiKey.WRITE_TXN_MARKERS, WRITE_TXN_MARKERS_VERSION, body, self.request_timeout_s
            )
        except (ConnectionError, OSError) as e:
            log.debug("transaction_markers_send_failed", node=node, error=repr(e))
            return dict.fromkeys(tps, ErrorCode.NETWORK_EXCEPTION)
        out: dict[TopicPartition, int] = dict.fromkeys(tps, ErrorCode.UNKNOWN_SERVER_ERROR)
        for marker in response.markers:
            for t in marker.topics:
                for p in t.partitions:
                    out[(t.name, p.partition_index)] = p.error_code
        return out

    # --- timeouts and expiration --------------------------------------------------------------

    def abort_timed_out_transactions(self, now: int | None = None) -> int:
        """Abort (fencing the producer) every Ongoing transaction past its timeout."""
        now = now_ms() if now is None else now
        doomed = [
            md for md in self.txns.values()
            if md.state == ONGOING and md.pending is None
            and md.txn_start_timestamp + md.txn_timeout_ms < now
        ]  # fmt: skip
        for md in doomed:
            log.info("transaction_timed_out", transactional_id=md.transactional_id,
                     producer_id=md.producer_id, producer_epoch=md.producer_epoch,
                     timeout_ms=md.txn_timeout_ms)  # fmt: skip
            self._spawn(self._abort_if_ongoing(md))
        return len(doomed)

    async def _abort_if_ongoing(self, md: TransactionMetadata) -> None:
        if md.state == ONGOING and md.pending is None and self.txns.get(md.transactional_id) is md:
            await self._fence_and_abort(md)

    def expire_transactional_ids(self, now: int | None = None) -> int:
        """Remove ids idle for transactional.id.expiration.ms with no transaction in progress."""
        now = now_ms() if now is None else now
        doomed = [
            md for md in self.txns.values()
            if md.state in (EMPTY, COMPLETE_COMMIT, COMPLETE_ABORT) and md.pending is None
            and md.txn_last_update_timestamp + self.id_expiration_ms <= now
        ]  # fmt: skip
        for md in doomed:
            self._spawn(self._expire(md))
        return len(doomed)

    async def _expire(self, md: TransactionMetadata) -> None:
        txn_id = md.transactional_id
        index = self.partition_for(txn_id)
        if index not in self.owned:
            return
        code = await self._append(md, index, None, md.record(state=DEAD))
        if code == ErrorCode.NONE and self.txns.get(txn_id) is md and md.state != ONGOING:
            md.state = DEAD
            del self.txns[txn_id]
            log.info("transactional_id_expired", transactional_id=txn_id)

    # --- describe / list ----------------------------------------------------------------------

    def describe(self, txn_id: str) -> dict:
        entry = {"error_code": ErrorCode.NONE, "transactional_id": txn_id, "transaction_state": "",
                 "transaction_timeout_ms": 0, "transaction_start_time_ms": -1,
                 "producer_id": NO_PRODUCER_ID, "producer_epoch": NO_PRODUCER_EPOCH, "topics": []}  # fmt: skip
        if not txn_id:
            entry["error_code"] = ErrorCode.INVALID_REQUEST
            return entry
        error = self.coordinator_error(txn_id)
        md = self.txns.get(txn_id) if error is None else None
        if error is None and (md is None or md.state == DEAD):
            error = ErrorCode.TRANSACTIONAL_ID_NOT_FOUND
        if error is not None:
            entry["error_code"] = error
            return entry
        by_topic: dict[str, list[int]] = {}
        for topic, p in sorted(md.partitions):
            by_topic.setdefault(topic, []).append(p)
        entry.update(
            transaction_state=md.state.kafka_name, transaction_timeout_ms=md.txn_timeout_ms,
            transaction_start_time_ms=md.txn_start_timestamp, producer_id=md.producer_id,
            producer_epoch=md.producer_epoch,
            topics=[{"topic": t, "partitions": ps} for t, ps in by_topic.items()],
        )  # fmt: skip
        return entry

    def list_transactions(self, states: set[str], producer_ids: set[int], min_duration_ms: int):
        now = now_ms()
        out = []
        for md in self.txns.values():
            if md.state == DEAD:
                continue
            if states and md.state.kafka_name not in states:
                continue
            if producer_ids and md.producer_id not in producer_ids:
                continue
            if min_duration_ms >= 0 and (
                md.state != ONGOING or now - md.txn_start_timestamp < min_duration_ms
            ):
                continue
            out.append({"transactional_id": md.transactional_id, "producer_id": md.producer_id,
                        "transaction_state": md.state.kafka_name})  # fmt: skip
        return out

    # --- verification from partition leaders --------------------------------------------------

    async def verify_remote(
        self, txn_id: str, producer_id: int, producer_epoch: int, partitions: set[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """Ask the coordinator of `txn_id` on another broker (AddPartitionsToTxn v4 verify_only)."""
        return await self.ask_remote(txn_id, producer_id, producer_epoch, partitions, True)

    async def add_remote(
        self, txn_id: str, producer_id: int, producer_epoch: int, partitions: set[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """Transactions v2: have the coordinator on another broker add the partitions
        (AddPartitionsToTxn v5, not verify_only), as a partition leader does for Produce v12."""
        return await self.ask_remote(txn_id, producer_id, producer_epoch, partitions, False)

    async def ask_remote(
        self, txn_id: str, producer_id: int, producer_epoch: int,
        partitions: set[TopicPartition], verify_only: bool,
    ) -> dict[TopicPartition, int]:  # fmt: skip
        info = self.store.topic(create=False)
        if info is None:
            return dict.fromkeys(partitions, ErrorCode.COORDINATOR_NOT_AVAILABLE)
        from .schema import partition_for

        leader = info.partitions[partition_for(txn_id, len(info.partitions))].leader
        if leader < 0:
            return dict.fromkeys(partitions, ErrorCode.COORDINATOR_NOT_AVAILABLE)
        by_topic: dict[str, list[int]] = {}
        for topic, p in partitions:
            by_topic.setdefault(topic, []).append(p)
        body = {"transactions": [{
            "transactional_id": txn_id, "producer_id": producer_id,
            "producer_epoch": producer_epoch, "verify_only": verify_only,
            "topics": [{"name": t, "partitions": ps} for t, ps in by_topic.items()],
        }]}  # fmt: skip
        version = ADD_PARTITIONS_VERIFY_VERSION if verify_only else ADD_PARTITIONS_ADD_VERSION
        try:
            response = await self.channels.get(leader).request(
                ApiKey.ADD_PARTITIONS_TO_TXN, version, body, self.request_timeout_s
            )
        except (ConnectionError, OSError):
            return dict.fromkeys(partitions, ErrorCode.NETWORK_EXCEPTION)
        if response.error_code:
            return dict.fromkeys(partitions, response.error_code)
        out = dict.fromkeys(partitions, ErrorCode.UNKNOWN_SERVER_ERROR)
        for result in response.results_by_transaction:
            for t in result.topic_results:
                for p in t.results_by_partition:
                    out[(t.name, p.partition_index)] = p.partition_error_code
        return out


def offsets_partition(broker: Broker, group_id: str) -> TopicPartition:
    """The __consumer_offsets partition of a group (AddOffsetsToTxn adds it to a transaction)."""
    gc = broker.group_coordinator
    gc.store.topic()
    return GROUP_METADATA_TOPIC, gc.store.partition_for(group_id)


def abortable_for(code: int, supports_abortable: bool) -> int:
    """TRANSACTION_ABORTABLE (KIP-890) reaches only clients whose request version knows it
    (Produce 11+, TxnOffsetCommit 4+, AddPartitionsToTxn 5+); others get INVALID_TXN_STATE,
    as Kafka's AddPartitionsToTxnManager converts it."""
    if code == ErrorCode.TRANSACTION_ABORTABLE and not supports_abortable:
        return ErrorCode.INVALID_TXN_STATE
    return code
