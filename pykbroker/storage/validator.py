"""What a leader checks in a client's batch beyond framing and CRC (Kafka's LogValidator).

Uncompressed batches keep the per-batch fast path: their records are read only when a topic
setting needs them (a compacted topic's keys, message.timestamp.before/after.max.ms). A
compressed batch is decompressed, bounded by records.max_decompressed_bytes, and its records
walked as Kafka's record iterator reads them: the codec must accept the payload
(CORRUPT_MESSAGE), the records must fill it exactly and match the header's count
(INVALID_RECORD, Kafka's messages), keys and timestamps are checked as for uncompressed ones.
A compressed batch whose offset deltas are not 0, 1, 2 ... is rewritten with the right ones,
as Kafka does, rather than refused.
"""

from __future__ import annotations

import os

from protocol import records as rb
from protocol.errors import ErrorCode

# For bench/compressed.py only: measures produce without the compressed-batch walk.
_SKIP_COMPRESSED = os.environ.get("PYKBROKER_BENCH_SKIP_COMPRESSED_VALIDATION") == "1"


def validate_records(records, header: rb.BatchHeader, config, topic: str, partition: int,
                     now: int, log_start_offset: int):  # fmt: skip
    """The batch to append (`records` itself unless it had to be rewritten) and its header;
    raises KafkaError / RecordValidationError for a batch Kafka would refuse."""
    limits = config.timestamp_limits
    compacted = config.compact
    if not compacted and (not header.compression or _SKIP_COMPRESSED):
        if limits is not None:  # None by default: nothing to check, nothing spent
            _raise_for(rb.timestamp_errors(records, 0, header, now, *limits), [], topic,
                       partition, log_start_offset)  # fmt: skip
        return records, header
    limit = rb.max_decompressed_bytes(config.max_message_bytes)
    body = rb.decompress_records(records, 0, header, limit)
    keyless, smallest, in_order = rb.scan_records(body, header.record_count, compacted)
    ts_errors = []
    if limits is not None:
        ts_errors = rb.timestamp_errors(records, 0, header, now, *limits, scanned=(body, smallest))
    if keyless or ts_errors:
        _raise_for(ts_errors, keyless, topic, partition, log_start_offset)
    if header.compression and not in_order:
        records = _with_offset_deltas_in_order(header, body)
        header = rb.read_header(records)
    return records, header


def _raise_for(ts_errors, keyless, topic: str, partition: int, log_start_offset: int) -> None:
    """Refuse the batch whole, naming each bad record (Kafka's processRecordErrors): a record
    without a key on a compacted topic is reported as that, before its timestamp."""
    if not ts_errors and not keyless:
        return
    key_message = (
        f"Compacted topic cannot accept message without key in topic partition {topic}-{partition}"
    )
    by_index = dict(ts_errors)
    for i in keyless:
        by_index[i] = key_message
    errors = sorted(by_index.items())
    if any(i not in keyless for i, _ in ts_errors):
        raise rb.RecordValidationError(
            ErrorCode.INVALID_TIMESTAMP, rb.INVALID_TIMESTAMP_MESSAGE, errors, log_start_offset
        )
    shown = ", ".join(f"RecordError(batchIndex={i}, message='{m}')" for i, m in errors[:3])
    raise rb.RecordValidationError(
        ErrorCode.INVALID_RECORD,
        f"One or more records have been rejected due to {len(errors)} record errors in total, "
        f"and only showing the first three errors at most: [{shown}]",
        errors, log_start_offset,
    )  # fmt: skip


def _with_offset_deltas_in_order(header: rb.BatchHeader, body) -> bytearray:
    """The batch rebuilt with offset deltas 0..n-1 and compressed again (Kafka rewrites such a
    batch for old clients instead of refusing it)."""
    recs = rb.decode_body(header, memoryview(body))
    for i, r in enumerate(recs):
        r.offset = i
    return rb.build_batch(
        recs, compression_type=header.compression, producer_id=header.producer_id,
        producer_epoch=header.producer_epoch, base_sequence=header.base_sequence,
        transactional=header.is_transactional, base_timestamp=header.base_timestamp,
    )  # fmt: skip
