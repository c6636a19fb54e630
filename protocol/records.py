"""RecordBatch v2 (magic 2): a view over batch headers, plus record coding where it is needed.

The produce and fetch paths only touch the 61-byte batch header: validate the CRC (crc32c over
attributes..end), patch the base offset and partition leader epoch in place (both outside the
CRC), and for LogAppendTime the max timestamp (inside the CRC, so it is recomputed). Records are
decoded only by compaction, the coordinators and the tools; a produce reads its records' timestamp
deltas only when the topic sets a lower timestamp limit (message.timestamp.before.max.ms), which
the header alone cannot check.

Legacy message sets (magic 0 and 1) are rejected with UNSUPPORTED_FOR_MESSAGE_FORMAT: every
client we serve (Produce v3+) writes magic 2.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from crc32c import crc32c

from . import compression
from .errors import ErrorCode, KafkaError

HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = HEADER.size  # 61
LOG_OVERHEAD = 12  # base offset + batch length: the bytes outside batch_length
CRC_START = 21
MAGIC_OFFSET = 16
LENGTH_OFFSET = 8
ATTRIBUTES_OFFSET = 21
MAX_TIMESTAMP_OFFSET = 35

_BASE_OFFSET = struct.Struct(">q")
_INT32 = struct.Struct(">i")
_UINT32 = struct.Struct(">I")
_LENGTH_AND_EPOCH_AND_MAGIC = struct.Struct(">iib")

COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_MASK = 0x08  # 1 = LogAppendTime
TRANSACTIONAL_MASK = 0x10
CONTROL_MASK = 0x20
DELETE_HORIZON_MASK = 0x40

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1
NO_TIMESTAMP = -1
LONG_MAX = (1 << 63) - 1


@dataclass(slots=True)
class BatchHeader:
    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        """Bytes the batch occupies in a log: its length plus the 12-byte log overhead."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> int:
        return self.attributes & COMPRESSION_MASK

    @property
    def is_log_append_time(self) -> bool:
        return bool(self.attributes & TIMESTAMP_TYPE_MASK)

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_MASK)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_MASK)

    @property
    def has_producer_id(self) -> bool:
        return self.producer_id >= 0

    @property
    def last_sequence(self) -> int:
        if self.base_sequence < 0:
            return NO_SEQUENCE
        return (self.base_sequence + self.last_offset_delta) % (1 << 31)


def read_header(buf, pos: int = 0) -> BatchHeader:
    return BatchHeader(*HEADER.unpack_from(buf, pos))


def peek_size(buf, pos: int) -> int:
    """The batch length field plus log overhead, from just the first 12 bytes."""
    return _INT32.unpack_from(buf, pos + LENGTH_OFFSET)[0] + LOG_OVERHEAD


def validate_batches(buf, max_batch_bytes: int | None = None) -> list[tuple[int, BatchHeader]]:
    """Split a produce request's records into batches, checking framing, magic and CRC.

    Raises KafkaError with CORRUPT_MESSAGE (bad framing or CRC), UNSUPPORTED_FOR_MESSAGE_FORMAT
    (magic 0/1), INVALID_RECORD (a header that contradicts itself) or MESSAGE_TOO_LARGE.
    """
    end = len(buf)
    if end == 0:
        raise KafkaError(
            ErrorCode.INVALID_RECORD, "Produce requests must have at least one record batch"
        )
    pos = 0
    batches = []
    while pos < end:
        if end - pos < 17:
            raise KafkaError(ErrorCode.CORRUPT_MESSAGE, "truncated record batch")
        length, _epoch, magic = _LENGTH_AND_EPOCH_AND_MAGIC.unpack_from(buf, pos + LENGTH_OFFSET)
        if magic != 2:
            if magic in (0, 1):
                raise KafkaError(
                    ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT,
                    f"message format magic {magic} is not supported; use magic 2 (Kafka 0.11+ clients)",
                )
            raise KafkaError(ErrorCode.CORRUPT_MESSAGE, f"invalid magic {magic} in record batch")
        size = length + LOG_OVERHEAD
        if length < HEADER_SIZE - LOG_OVERHEAD or pos + size > end:
            raise KafkaError(ErrorCode.CORRUPT_MESSAGE, f"record batch length {length} is invalid")
        if max_batch_bytes is not None and size > max_batch_bytes:
            raise KafkaError(
                ErrorCode.MESSAGE_TOO_LARGE,
                f"record batch of {size} bytes exceeds the maximum of {max_batch_bytes}",
            )
        header = read_header(buf, pos)
        if crc32c(buf[pos + CRC_START : pos + size]) != header.crc:
            raise KafkaError(ErrorCode.CORRUPT_MESSAGE, "record batch CRC mismatch")
        if header.attributes & COMPRESSION_MASK > compression.ZSTD:
            raise KafkaError(
                ErrorCode.CORRUPT_MESSAGE,
                f"unknown compression type id {header.attributes & COMPRESSION_MASK}",
            )
        if header.record_count <= 0 or header.last_offset_delta != header.record_count - 1:
            raise KafkaError(
                ErrorCode.INVALID_RECORD, "record count and last offset delta disagree"
            )
        batches.append((pos, header))
        pos += size
    return batches


# --- LogValidator's record walk --------------------------------------------------------------

# How much a batch's records may take decompressed, as a multiple of the topic's
# max.message.bytes (which Kafka applies to the batch as sent, compressed). Kafka streams the
# records and sets no such bound; we decompress a batch whole, so we need one: a batch that
# inflates past it is refused with MESSAGE_TOO_LARGE (on which the Java producer splits the batch
# and retries) after at most that much output. 8 leaves room for producers whose batch size is
# counted compressed (the Java client's batch.size) or raised above the broker's limit
# (librdkafka's batch.size) with data that compresses several times, and bounds the record walk
# of an adversarial batch of minimal records (8 MiB of 7-byte records: about a second of loop
# time here, at ~1 us a record).
DECOMPRESSION_FACTOR = 8


def max_decompressed_bytes(max_message_bytes: int) -> int:
    return DECOMPRESSION_FACTOR * max(max_message_bytes, 1)


def decompress_records(buf, pos: int, header: BatchHeader, limit: int):
    """The records section of a batch, decompressed (bounded by `limit`) if need be.

    Raises KafkaError: CORRUPT_MESSAGE when the payload is not valid for its codec,
    MESSAGE_TOO_LARGE when it inflates past the limit."""
    body = memoryview(buf)[pos + HEADER_SIZE : pos + header.size]
    if not header.compression:
        return body
    try:
        return compression.decompress(header.compression, body, limit)
    except compression.DecompressionError as e:
        if e.too_large:
            raise KafkaError(
                ErrorCode.MESSAGE_TOO_LARGE,
                f"Record batch of {header.size} bytes decompresses to more than {limit} bytes "
                f"({DECOMPRESSION_FACTOR} x max.message.bytes)",
            ) from None
        raise KafkaError(
            ErrorCode.CORRUPT_MESSAGE, f"Failed to decompress record stream: {e}"
        ) from None


class _RecordEnd(Exception):
    """The records ran out before the batch's record count (Kafka's premature EOF)."""


def _varint_slow(body, p: int, max_shift: int = 35) -> tuple[int, int]:
    """A zigzag varint of any length Kafka reads: 5 bytes for an int, 10 (max_shift 70) for a
    long."""
    result = shift = 0
    while True:
        b = body[p]
        p += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), p
        shift += 7
        if shift >= max_shift:
            raise ValueError("Varint is too long")


def scan_records(body, count: int, want_keys: bool) -> tuple[list[int], int, bool]:
    """Walk `count` records of a batch body the way Kafka's record iterator reads them, checking
    their structure (each record's fields fill exactly its stated size, no bytes left after the
    last one). Returns (indexes of records without a key -- only if want_keys --, the smallest
    timestamp delta or 0, whether the offset deltas are 0, 1, 2 ... as they must be for the
    batch to be kept as sent). Raises KafkaError INVALID_RECORD with Kafka's messages.

    Every varint has a one-byte fast path: almost all fields of real records fit one byte
    (attributes, deltas below 64, key sizes, header counts), so the walk costs a few
    microseconds per record and nothing per byte of key or value."""
    n = len(body)
    p = 0
    keyless: list[int] = []
    smallest = 0
    in_order = True
    i = -1
    try:
        for i in range(count):
            if p >= n:
                raise _RecordEnd
            b = body[p]
            if b < 0x80:
                size, p = (b >> 1) ^ -(b & 1), p + 1
            elif body[p + 1] < 0x80:
                v = (b & 0x7F) | (body[p + 1] << 7)
                size, p = (v >> 1) ^ -(v & 1), p + 2
            else:
                size, p = _varint_slow(body, p)
            end = p + size
            if end > n:
                raise _RecordEnd
            # attributes (unused in v2), then the timestamp delta
            b = body[p + 1]
            if b < 0x80:
                p += 2
                if b & 1:
                    delta = (b >> 1) ^ -1
                    if delta < smallest:
                        smallest = delta
            else:
                delta, p = _varint_slow(body, p + 1, 70)
                if delta < smallest:
                    smallest = delta
            b = body[p]  # offset delta: i, zigzag-coded as 2i, in one or two bytes
            if b < 0x80:
                p += 1
                if b != i << 1:
                    in_order = False
            elif body[p + 1] < 0x80:
                if (b & 0x7F) | (body[p + 1] << 7) != i << 1:
                    in_order = False
                p += 2
            else:
                off, p = _varint_slow(body, p)
                if off != i:
                    in_order = False
            b = body[p]  # key size, -1 for none
            if b < 0x80:
                p += 1
                klen = (b >> 1) ^ -(b & 1)
            else:
                klen, p = _varint_slow(body, p)
            if klen >= 0:
                p += klen
            elif want_keys:
                keyless.append(i)
            b = body[p]  # value size
            if b < 0x80:
                p += 1 if b & 1 else 1 + (b >> 1)  # odd: negative, no value
            elif body[p + 1] < 0x80:
                v = (b & 0x7F) | (body[p + 1] << 7)
                p += 2 if v & 1 else 2 + (v >> 1)
            else:
                vlen, p = _varint_slow(body, p)
                if vlen > 0:
                    p += vlen
            b = body[p]  # header count
            if b == 0:
                p += 1
            else:
                p = _skip_headers(body, p)
            if p != end:
                raise KafkaError(
                    ErrorCode.INVALID_RECORD,
                    f"Invalid record size: expected to read {size} bytes in record payload, "
                    f"but instead read {p - (end - size)}",
                )
    except _RecordEnd:
        raise KafkaError(
            ErrorCode.INVALID_RECORD, "Incorrect declared batch size, premature EOF reached"
        ) from None
    except (IndexError, ValueError):
        raise KafkaError(ErrorCode.INVALID_RECORD, "Found invalid record structure") from None
    if p != n:
        raise KafkaError(
            ErrorCode.INVALID_RECORD,
            "Incorrect declared batch size, records still remaining in file",
        )
    return keyless, smallest, in_order


def _skip_headers(body, p: int) -> int:
    count, p = _varint_slow(body, p)
    if count < 0:
        raise KafkaError(
            ErrorCode.INVALID_RECORD, f"Found invalid number of record headers {count}"
        )
    for _ in range(count):
        klen, p = _varint_slow(body, p)
        if klen < 0:
            raise KafkaError(ErrorCode.INVALID_RECORD, f"Invalid negative header key size {klen}")
        p += klen
        vlen, p = _varint_slow(body, p)
        if vlen > 0:
            p += vlen
    return p


# --- timestamp limits (KIP-937) -----------------------------------------------------------

INVALID_TIMESTAMP_MESSAGE = "One or more records have been rejected due to invalid timestamp"


class RecordValidationError(KafkaError):
    """Records of a batch refused one by one (Kafka's RecordValidationException): besides the
    partition's error, Produce v8+ answers each refused record's index in its batch and why
    (record_errors), and the partition's log start offset."""

    def __init__(
        self, code: ErrorCode, message: str, record_errors: list[tuple[int, str]],
        log_start_offset: int = -1,
    ):  # fmt: skip
        super().__init__(code, message)
        self.record_errors = record_errors
        self.log_start_offset = log_start_offset


def _java_long(value: int) -> int:
    """value as Java's long arithmetic leaves it (wrapped to 64 bits)."""
    return ((value + (1 << 63)) & ((1 << 64) - 1)) - (1 << 63)


def timestamp_errors(
    buf, pos: int, header: BatchHeader, now: int, before_max_ms: int, after_max_ms: int,
    scanned: tuple | None = None,
) -> list[tuple[int, str]]:  # fmt: skip
    """(index in the batch, message) of each record whose CreateTime lies more than
    before_max_ms behind `now` or after_max_ms ahead of it (Kafka's LogValidator; Long.MAX
    means no limit that way, and a record without a timestamp, -1, is not checked).

    The header decides without touching the records when it can: its max timestamp bounds
    every record from above, and its base timestamp is the first record's. A v2 record carries
    a signed delta from the base timestamp, so a later record may be older than the first: with
    a lower limit and more than one record, a header in range proves nothing, and a quick pass
    finds the smallest timestamp delta (decompressing the batch if need be). Only a batch found
    out of range is read again, for each offending record's index and offset, as Kafka names
    them. `scanned`: (records section, smallest delta) when the validator has walked the
    records already. The header's max timestamp is trusted for the upper limit, as everywhere in the
    broker (time index, retention, ListOffsets; Kafka recomputes it from the records).
    """
    lower = before_max_ms != LONG_MAX
    upper = after_max_ms != LONG_MAX
    low, high = now - before_max_ms, now + after_max_ms
    if header.is_log_append_time:
        # A client batch marked LogAppendTime: Kafka reads every record's timestamp as the
        # batch's max timestamp.
        timestamps = [header.max_timestamp] * header.record_count
        offsets = range(header.base_offset, header.base_offset + header.record_count)
    else:
        first, last = header.base_timestamp, header.max_timestamp
        header_inside = (not upper or last <= high) and (
            not lower or first == NO_TIMESTAMP or first >= low
        )
        if header_inside:
            if not lower or header.record_count == 1:
                return []
            smallest = scanned[1] if scanned else _smallest_timestamp_delta(buf, pos, header)
            if first + smallest >= low:
                return []
        offsets, timestamps = record_timestamps(buf, pos, header, scanned and scanned[0])
    errors = []
    for index, ts in enumerate(timestamps):
        if ts != NO_TIMESTAMP and ((lower and ts < low) or (upper and ts > high)):
            # Kafka's message, its range as Java's longs print it (a Long.MAX limit wraps).
            errors.append((index, f"Timestamp {ts} of message with offset {offsets[index]} is "
                           f"out of range. The timestamp should be within "
                           f"[{_java_long(low)}, {_java_long(high)}]"))  # fmt: skip
    return errors


def _records_body(buf, pos: int, header: BatchHeader, body=None):
    if body is not None:
        return body
    return decompress_records(buf, pos, header, compression.DEFAULT_LIMIT)


def _uvarint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise KafkaError(ErrorCode.CORRUPT_MESSAGE, "varint too long")


def _smallest_timestamp_delta(buf, pos: int, header: BatchHeader) -> int:
    """The smallest timestamp delta of the batch's records, or 0 if none is negative: the quick
    pass over the records (about 0.25 us a record here). Per record it reads the length varint
    (one or two bytes, most of the time, decoded inline) and the low bit of the timestamp
    delta's first byte, which in zigzag coding is its sign; only a negative delta is decoded."""
    try:
        body = _records_body(buf, pos, header)
        smallest = p = 0
        for _ in range(header.record_count):
            b = body[p]
            if b < 0x80:
                p += 1
                end = p + ((b >> 1) ^ -(b & 1))
            else:
                c = body[p + 1]
                if c < 0x80:
                    v = (b & 0x7F) | (c << 7)
                    p += 2
                else:
                    v, p = _uvarint(body, p)
                end = p + ((v >> 1) ^ -(v & 1))
            if body[p + 1] & 1:  # past the record attributes: a negative timestamp delta
                delta = _zigzag_decode(body, p + 1)[0]
                if delta < smallest:
                    smallest = delta
            p = end
    except KafkaError:
        raise
    except Exception as e:  # a truncated record
        raise KafkaError(ErrorCode.CORRUPT_MESSAGE, f"invalid record batch: {e}") from None
    if p != len(body):
        raise KafkaError(ErrorCode.CORRUPT_MESSAGE, "record lengths disagree with the batch")
    return smallest


def record_timestamps(buf, pos: int, header: BatchHeader, body=None) -> tuple[list[int], list[int]]:
    """(offsets, timestamps) of the records of a CreateTime batch, reading only each record's
    length, timestamp delta and offset delta (the rest is skipped, never copied). `body`: the
    records section, if already decompressed."""
    try:
        body = _records_body(buf, pos, header, body)
        base_ts, base_offset = header.base_timestamp, header.base_offset
        offsets, timestamps = [], []
        p = 0
        for _ in range(header.record_count):
            length, p = _zigzag_decode(body, p)
            end = p + length
            ts_delta, p = _zigzag_decode(body, p + 1)  # past the record attributes
            off_delta, p = _zigzag_decode(body, p)
            if length < 3 or end > len(body):
                raise KafkaError(ErrorCode.CORRUPT_MESSAGE, "record length mismatch")
            timestamps.append(base_ts + ts_delta)
            offsets.append(base_offset + off_delta)
            p = end
    except KafkaError:
        raise
    except Exception as e:  # a truncated record or a codec's complaint
        raise KafkaError(ErrorCode.CORRUPT_MESSAGE, f"invalid record batch: {e}") from None
    return offsets, timestamps


def set_base_offset(buf, pos: int, base_offset: int) -> None:
    _BASE_OFFSET.pack_into(buf, pos, base_offset)


def set_partition_leader_epoch(buf, pos: int, epoch: int) -> None:
    _INT32.pack_into(buf, pos + 12, epoch)


def set_log_append_time(buf, pos: int, timestamp: int) -> None:
    """Mark the batch LogAppendTime with max timestamp `timestamp`; recompute its CRC."""
    size = peek_size(buf, pos)
    attributes = struct.unpack_from(">h", buf, pos + ATTRIBUTES_OFFSET)[0] | TIMESTAMP_TYPE_MASK
    struct.pack_into(">h", buf, pos + ATTRIBUTES_OFFSET, attributes)
    struct.pack_into(">q", buf, pos + MAX_TIMESTAMP_OFFSET, timestamp)
    _UINT32.pack_into(buf, pos + 17, crc32c(buf[pos + CRC_START : pos + size]))


def scan_batches(buf, pos: int = 0, end: int | None = None) -> Iterator[tuple[int, BatchHeader]]:
    """Yield (position, header) of each whole batch in buf[pos:end]; stop at a partial one."""
    end = len(buf) if end is None else end
    while end - pos >= HEADER_SIZE:
        size = peek_size(buf, pos)
        if size < HEADER_SIZE or pos + size > end:
            return
        yield pos, read_header(buf, pos)
        pos += size


# --- records (inside a batch) -------------------------------------------------------------


def _zigzag_decode(buf, pos: int) -> tuple[int, int]:
    result, pos = _uvarint(buf, pos)
    return (result >> 1) ^ -(result & 1), pos


def _zigzag_encode(value: int, out: bytearray) -> None:
    v = (value << 1) ^ (value >> 63)
    v &= (1 << 64) - 1
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


@dataclass(slots=True)
class Record:
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)


def _read_bytes(buf, pos: int) -> tuple[bytes | None, int]:
    n, pos = _zigzag_decode(buf, pos)
    if n < 0:
        return None, pos
    return bytes(buf[pos : pos + n]), pos + n


def decode_records(buf, pos: int = 0, limit: int = compression.DEFAULT_LIMIT) -> list[Record]:
    """Decode the records of the batch at buf[pos:], decompressing (at most `limit` bytes) if
    needed. A batch that cannot be read raises KafkaError (CORRUPT_MESSAGE, or
    MESSAGE_TOO_LARGE past the limit)."""
    header = read_header(buf, pos)
    body = memoryview(decompress_records(buf, pos, header, limit))
    try:
        return decode_body(header, body)
    except KafkaError:
        raise
    except Exception as e:  # a truncated or garbled record
        raise KafkaError(ErrorCode.CORRUPT_MESSAGE, f"invalid record batch: {e}") from None


def decode_body(header: BatchHeader, body) -> list[Record]:
    records = []
    p = 0
    for _ in range(header.record_count):
        length, p = _zigzag_decode(body, p)
        end = p + length
        p += 1  # record attributes, unused
        ts_delta, p = _zigzag_decode(body, p)
        off_delta, p = _zigzag_decode(body, p)
        key, p = _read_bytes(body, p)
        value, p = _read_bytes(body, p)
        n_headers, p = _zigzag_decode(body, p)
        headers = []
        for _ in range(n_headers):
            hkey, p = _read_bytes(body, p)
            hval, p = _read_bytes(body, p)
            headers.append(((hkey or b"").decode("utf-8", "replace"), hval))
        if p != end:
            raise KafkaError(ErrorCode.CORRUPT_MESSAGE, "record length mismatch")
        ts = header.max_timestamp if header.is_log_append_time else header.base_timestamp + ts_delta
        records.append(Record(header.base_offset + off_delta, ts, key, value, headers))
    return records


def _encode_record(rec: Record, base_offset: int, base_ts: int) -> bytes:
    body = bytearray(b"\x00")
    _zigzag_encode(rec.timestamp - base_ts, body)
    _zigzag_encode(rec.offset - base_offset, body)
    for part in (rec.key, rec.value):
        if part is None:
            _zigzag_encode(-1, body)
        else:
            _zigzag_encode(len(part), body)
            body += part
    _zigzag_encode(len(rec.headers), body)
    for hkey, hval in rec.headers:
        k = hkey.encode()
        _zigzag_encode(len(k), body)
        body += k
        if hval is None:
            _zigzag_encode(-1, body)
        else:
            _zigzag_encode(len(hval), body)
            body += hval
    out = bytearray()
    _zigzag_encode(len(body), out)
    return bytes(out + body)


def build_batch(
    records: list[Record],
    *,
    compression_type: int = 0,
    producer_id: int = NO_PRODUCER_ID,
    producer_epoch: int = NO_PRODUCER_EPOCH,
    base_sequence: int = NO_SEQUENCE,
    transactional: bool = False,
    control: bool = False,
    log_append_time: bool = False,
    partition_leader_epoch: int = -1,
    last_offset_delta: int | None = None,
    base_timestamp: int | None = None,
) -> bytearray:
    """Encode records (whose offsets are absolute) as one batch; base offset = first record's.

    last_offset_delta may be given to keep an offset range wider than the records (compaction
    keeps the original last offset of a batch so producer state survives cleaning). The base
    timestamp is the smallest record timestamp unless given (producers write the first
    record's, so later records may have negative deltas).
    """
    if not records and last_offset_delta is None:
        raise ValueError("a batch needs records or an explicit last_offset_delta")
    base_offset = records[0].offset if records else 0
    base_ts = min((r.timestamp for r in records), default=NO_TIMESTAMP)
    if base_timestamp is not None:
        base_ts = base_timestamp
    max_ts = max((r.timestamp for r in records), default=NO_TIMESTAMP)
    body = b"".join(_encode_record(r, base_offset, base_ts) for r in records)
    if compression_type:
        body = compression.compress(compression_type, body)
    if last_offset_delta is None:
        last_offset_delta = records[-1].offset - base_offset
    attributes = compression_type
    if log_append_time:
        attributes |= TIMESTAMP_TYPE_MASK
    if transactional:
        attributes |= TRANSACTIONAL_MASK
    if control:
        attributes |= CONTROL_MASK
    buf = bytearray(HEADER_SIZE + len(body))
    HEADER.pack_into(
        buf, 0, base_offset, HEADER_SIZE - LOG_OVERHEAD + len(body), partition_leader_epoch, 2, 0,
        attributes, last_offset_delta, base_ts, max_ts, producer_id, producer_epoch,
        base_sequence, len(records),
    )  # fmt: skip
    buf[HEADER_SIZE:] = body
    _UINT32.pack_into(buf, 17, crc32c(memoryview(buf)[CRC_START:]))
    return buf


# --- control records: transaction markers -------------------------------------------------

CONTROL_ABORT, CONTROL_COMMIT = 0, 1
_CONTROL_KEY = struct.Struct(">hh")  # version 0, type
_MARKER_VALUE = struct.Struct(">hi")  # Kafka's EndTransactionMarker: version 0, coordinator epoch


def build_marker(
    producer_id: int, producer_epoch: int, commit: bool, coordinator_epoch: int, timestamp: int
) -> bytearray:
    """A COMMIT or ABORT marker: a transactional control batch of one record."""
    key = _CONTROL_KEY.pack(0, CONTROL_COMMIT if commit else CONTROL_ABORT)
    value = _MARKER_VALUE.pack(0, coordinator_epoch)
    return build_batch(
        [Record(0, timestamp, key, value)],
        producer_id=producer_id, producer_epoch=producer_epoch, transactional=True, control=True,
    )  # fmt: skip


def parse_marker(record: Record) -> tuple[int, int]:
    """(type, coordinator epoch) of a control batch's record; -1 for a part it lacks."""
    key, value = record.key, record.value
    kind = _CONTROL_KEY.unpack_from(key)[1] if key is not None and len(key) >= 4 else -1
    epoch = _MARKER_VALUE.unpack_from(value)[1] if value is not None and len(value) >= 6 else -1
    return kind, epoch
