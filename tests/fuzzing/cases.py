"""Fuzz cases: one per index, fully determined by (seed, index), so any case replays alone.

A case is the bytes to put on a connection and what the broker may answer. Strategies:
valid frames; one or two numeric fields or length prefixes set to a boundary value (0, -1, 1,
max, min, 2^31-1, a bit flip of the value); a null spliced into a non-nullable string, bytes or
array; random bit flips; truncated bodies; Produce with broken record batches (bad CRC, garbage
or truncated compressed payloads with a recomputed CRC for each codec, header fields at their
boundaries, decompression bombs, keyless records on a compacted topic); broken request
headers; garbage frames; half-written frames and oversize size prefixes held open; bursts of
many connections.
"""

from __future__ import annotations

import random
import re
import struct
import zlib
from dataclasses import dataclass, field
from functools import cache

import crc32c

from protocol import codec
from protocol import compression as comp
from protocol import records as rb
from protocol.apis import ApiKey

from .schema import INTS, Body, Pools, generate, small_batch

CLIENT_ID = b"fuzz"
CODECS = (comp.GZIP, comp.SNAPPY, comp.LZ4, comp.ZSTD)

# APIs whose requests may legitimately wait (long polls, joins, acks=all): no answer within
# the runner's short timeout is not a fault for them; the connection is dropped instead.
LONG_WAIT = {
    ApiKey.PRODUCE, ApiKey.FETCH, ApiKey.JOIN_GROUP, ApiKey.SYNC_GROUP,
    ApiKey.CREATE_TOPICS, ApiKey.DELETE_TOPICS, ApiKey.DELETE_RECORDS,
    ApiKey.CREATE_PARTITIONS, ApiKey.END_TXN, ApiKey.INIT_PRODUCER_ID,
}  # fmt: skip

STRATEGIES = (
    ("valid", 8), ("boundary", 30), ("null", 10), ("bitflip", 14), ("truncate", 8),
    ("records", 14), ("header", 3), ("garbage", 2), ("half", 4), ("oversize", 3), ("burst", 1),
)  # fmt: skip


@dataclass
class Case:
    index: int
    kind: str
    api_key: int = -1
    version: int = -1
    correlation_id: int = 0
    frame: bytes = b""  # whole frame(s) to send, size prefixes included
    sentinel: bool = False  # an ApiVersions v0 follows the frame (for Produce: acks=0 is silent)
    refuse: bool = False  # a Produce whose batch Kafka refuses: a response must not say error 0
    hold: float = 0.0  # half/oversize: keep the connection open this long, then close
    connections: int = 0  # burst: how many connections at once
    detail: str = ""
    tags: set[str] = field(default_factory=set)  # for exclusions: "api:19", "field:...", ...
    fields: frozenset = frozenset()  # the numeric fields and length prefixes of the body
    mutated: tuple = ()  # the ones a boundary case rewrote

    def describe(self) -> str:
        return f"#{self.index} {self.kind} api={self.api_key} v={self.version} {self.detail}"


def header(api_key: int, version: int, correlation_id: int, flexible: bool) -> bytes:
    h = struct.pack(">hhih", api_key, version, correlation_id, len(CLIENT_ID)) + CLIENT_ID
    return h + (b"\x00" if flexible else b"")


def framed(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def sentinel_frame(correlation_id: int) -> bytes:
    return framed(header(ApiKey.API_VERSIONS, 0, correlation_id, False))


# --- boundary values ------------------------------------------------------------------------


def _bitflip(rng: random.Random, value: int, bits: int) -> int:
    return value ^ (1 << rng.randrange(bits))


def boundary_int(rng: random.Random, kind: str, current: int, pick: int | None = None) -> int:
    """A boundary value for a field (the pick-th in turn, else a random one) or a bit flip."""
    fmt, lo, hi = INTS[kind]
    bits = struct.calcsize(fmt) * 8
    choices = [0, -1, hi, lo, (1 << 31) - 1, 1, hi - 1, -(1 << 31), 0x02000001, None]
    choice = rng.choice(choices) if pick is None else choices[pick % len(choices)]
    value = _bitflip(rng, current, bits) if choice is None else choice
    if not lo <= value <= hi:  # wrap into the field's width, as a bit pattern would
        value = (
            (value % (1 << bits)) + lo
            if lo == 0
            else struct.unpack(fmt, (value % (1 << bits)).to_bytes(bits // 8, "big"))[0]
        )
    return value


def boundary_uvarint(rng: random.Random, pick: int | None = None) -> bytes:
    choices = [0, (1 << 31) - 1, 1, (1 << 32) - 1, None, 2, 0x80, 1 << 31, 1 << 35, 100 << 20]
    raw = rng.choice(choices) if pick is None else choices[pick % len(choices)]
    if raw is None:
        return b"\xff" * rng.randint(5, 11)  # a varint that never ends (or overflows)
    out = bytearray()
    while True:
        b = raw & 0x7F
        raw >>= 7
        if raw:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def mutate_slot(rng: random.Random, body: Body, pick: int | None = None) -> tuple[bytearray, str]:
    data = body.data
    slot = rng.choice(body.slots)
    if slot.kind == "uvarint":
        new = boundary_uvarint(rng, pick)
        return data[: slot.start] + new + data[slot.end :], f"{slot.path}={new.hex()}"
    if slot.kind == "float64":
        value = rng.choice((float("nan"), float("inf"), -0.0, 1e308))
        raw = struct.pack(">d", value)
        return data[: slot.start] + raw + data[slot.end :], f"{slot.path}={value}"
    kind = {"len16": "int16", "len32": "int32"}.get(slot.kind, slot.kind)
    fmt = INTS[kind][0]
    current = struct.unpack_from(fmt, data, slot.start)[0]
    value = boundary_int(rng, kind, current, pick)
    out = bytearray(data)
    struct.pack_into(fmt, out, slot.start, value)
    return out, f"{slot.path}={value}"


# --- record batches ---------------------------------------------------------------------------


def _recrc(batch: bytearray) -> bytearray:
    struct.pack_into(">i", batch, rb.LENGTH_OFFSET, len(batch) - rb.LOG_OVERHEAD)
    struct.pack_into(">I", batch, 17, crc32c.crc32c(bytes(batch[rb.CRC_START :])))
    return batch


@cache
def _bomb(codec_id: int, inflated: int) -> bytes:
    """A compressed batch of one record whose value is `inflated` zero bytes."""
    rec = rb.Record(0, 0, b"bomb", bytes(inflated))
    return bytes(rb.build_batch([rec], compression_type=codec_id))


def warm_up() -> None:
    """Build the decompression bombs before a run, not in the middle of one."""
    for codec_id in CODECS:
        _bomb(codec_id, BOMB_SIZE)


BOMB_SIZE = 64 << 20

RECORD_KINDS = (
    "bad_crc", "garbage_compressed", "truncated_compressed", "valid_compressed",
    "keyless_compacted", "header_field", "flip_recrc", "bomb", "trailing_garbage",
    "two_batches", "magic",
)  # fmt: skip


# Batches Kafka refuses at produce time (CORRUPT_MESSAGE, INVALID_RECORD, UNSUPPORTED_...).
MUST_REFUSE = {"bad_crc", "garbage_compressed", "truncated_compressed", "keyless_compacted",
               "magic"}  # fmt: skip


def record_payload(rng: random.Random, pools: Pools) -> tuple[bytes, str, str]:
    """(records bytes, topic, what was done)."""
    kind = rng.choice(RECORD_KINDS)
    topic = rng.choice(pools.topics)
    codec_id = rng.choice(CODECS)
    name = comp.NAMES[codec_id]
    if kind == "bad_crc":
        batch = small_batch(rng, compression=rng.choice((0, *CODECS)))
        batch[17 + rng.randrange(4)] ^= 1 << rng.randrange(8)
        return bytes(batch), topic, kind
    if kind == "garbage_compressed":
        batch = small_batch(rng, compression=codec_id)
        garbage = rng.randbytes(rng.randint(0, 200))
        if codec_id == comp.GZIP and rng.random() < 0.5:
            garbage = b"\x1f\x8b\x08\x00" + garbage  # a gzip magic, then nonsense
        return bytes(_recrc(batch[: rb.HEADER_SIZE] + garbage)), topic, f"{kind}:{name}"
    if kind == "truncated_compressed":
        batch = small_batch(rng, compression=codec_id)
        cut = rng.randint(rb.HEADER_SIZE, len(batch) - 1)
        return bytes(_recrc(batch[:cut])), topic, f"{kind}:{name}"
    if kind == "valid_compressed":
        return bytes(small_batch(rng, compression=codec_id)), topic, f"{kind}:{name}"
    if kind == "keyless_compacted":
        batch = small_batch(rng, compression=rng.choice((0, codec_id)), keyless=True)
        return bytes(batch), pools.compacted, kind
    if kind == "header_field":
        batch = small_batch(rng, compression=rng.choice((0, codec_id)))
        # base offset, partition leader epoch, attributes, last offset delta, timestamps,
        # producer id/epoch, base sequence, record count
        off, kind_ = rng.choice(
            [(0, "int64"), (12, "int32"), (21, "int16"), (23, "int32"), (27, "int64"),
             (35, "int64"), (43, "int64"), (51, "int16"), (53, "int32"), (57, "int32")]
        )  # fmt: skip
        fmt = INTS[kind_][0]
        value = boundary_int(rng, kind_, struct.unpack_from(fmt, batch, off)[0])
        struct.pack_into(fmt, batch, off, value)
        return bytes(_recrc(batch)), topic, f"{kind}@{off}={value}"
    if kind == "flip_recrc":
        batch = small_batch(rng, compression=rng.choice((0, codec_id)))
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(rb.CRC_START, len(batch))
            batch[pos] ^= 1 << rng.randrange(8)
        return bytes(_recrc(batch)), topic, kind
    if kind == "bomb":
        return _bomb(codec_id, BOMB_SIZE), topic, f"{kind}:{name}:{BOMB_SIZE >> 20}MiB"
    if kind == "trailing_garbage":
        batch = small_batch(rng)
        return bytes(batch) + rng.randbytes(rng.randint(1, 70)), topic, kind
    if kind == "two_batches":
        a, b = small_batch(rng), small_batch(rng, compression=codec_id)
        return bytes(a + b), topic, kind
    # magic: a v2 batch whose magic byte says 0, 1 or 3
    batch = small_batch(rng)
    batch[rb.MAGIC_OFFSET] = rng.choice((0, 1, 3, 0xFF))
    return bytes(batch), topic, kind


def legacy_crc(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _field_name(path: str) -> str:
    """A slot's path without array indexes: Topics[1].Index -> Topics[].Index"""
    return re.sub(r"\[\d+\]", "[]", path)


# --- the case factory -------------------------------------------------------------------------


class CaseFactory:
    def __init__(self, seed: int, pools: Pools, apis: dict[int, tuple[int, int]],
                 exclude=None):  # fmt: skip
        self.seed = seed
        self.pools = pools
        self.apis = apis  # advertised: api key -> (min, max)
        self.versions = [(k, v) for k, (lo, hi) in sorted(apis.items()) for v in range(lo, hi + 1)]
        self.exclude = exclude  # callable(Case) -> reason or None
        # Strategies in a fixed cycle (each as often as its weight), so that the boundary cases of
        # each (api, version) can be numbered from the index alone and sweep its fields in turn.
        self._cycle = [name for name, weight in STRATEGIES for _ in range(weight)]
        random.Random(seed).shuffle(self._cycle)
        self._boundary_before = [0]  # boundary entries in cycle[:i]
        for name in self._cycle:
            self._boundary_before.append(self._boundary_before[-1] + (name == "boundary"))
        self._slot_index = 0

    def case(self, index: int) -> Case:
        """The case for `index`; cases an exclusion refuses are redrawn (deterministically)."""
        for attempt in range(50):
            self._slot_index = index + attempt * 7919
            rng = random.Random(f"{self.seed}:{index}:{attempt}")
            c = self._make(rng, index)
            if self.exclude is None or self.exclude(c) is None:
                return c
        return self._valid(random.Random(f"{self.seed}:{index}"), index)

    def _round(self) -> tuple[int, int]:
        """(round, position in the cycle) of the current (api, version) slot."""
        nv = len(self.versions)
        k, vi = divmod(self._slot_index, nv)
        return k, (k + vi * 7) % len(self._cycle)

    def _boundary_number(self) -> int:
        """How many boundary cases this (api, version) had in earlier rounds."""
        k, _pos = self._round()
        vi = self._slot_index % len(self.versions)
        n, per = len(self._cycle), self._boundary_before[-1]
        start = (vi * 7) % n
        full, rest = divmod(k, n)
        end = start + rest
        partial = (self._boundary_before[min(end, n)] - self._boundary_before[start]
                   + (self._boundary_before[end - n] if end > n else 0))  # fmt: skip
        return full * per + partial

    def _make(self, rng: random.Random, index: int) -> Case:
        kind = self._cycle[self._round()[1]]
        return getattr(self, "_" + kind)(rng, index)

    def _corr(self, index: int) -> int:
        return (index * 2) & 0x7FFFFFFF

    def _pick(self, rng: random.Random) -> tuple[int, int]:
        # Cycle through every advertised (api, version) so short runs still cover them all.
        return self.versions[self._slot_index % len(self.versions)]

    def _request(self, rng, index, kind, mutate) -> Case:
        api, ver = self._pick(rng)
        body = generate(rng, self.pools, api, ver, full=kind == "boundary")
        data, detail = mutate(rng, body)
        if data is None:
            return self._valid(rng, index)
        corr = self._corr(index)
        flex = codec.request_is_flexible(api, ver)
        frame = framed(header(api, ver, corr, flex) + bytes(data))
        c = Case(index, kind, api, ver, corr, frame, detail=detail, tags={f"api:{api}"})
        if api == ApiKey.PRODUCE:
            c.frame += sentinel_frame(corr + 1)
            c.sentinel = True
        if detail:
            c.tags.add("field:" + detail.split("=", 1)[0].split("#", 1)[0])
        c.fields = frozenset(_field_name(s.path) for s in body.slots)
        if kind == "boundary":
            c.mutated = tuple(_field_name(d.split("=", 1)[0]) for d in detail.split("; "))
        return c

    def _valid(self, rng, index) -> Case:
        return self._request(rng, index, "valid", lambda rng, body: (body.data, ""))

    def _boundary(self, rng, index) -> Case:
        def mutate(rng, body):
            if not body.slots:
                return None, ""
            # The n-th boundary case of an (api, version) takes its fields in turn, and each
            # field's boundary values in turn.
            n = self._boundary_number()
            names = sorted({_field_name(slot.path) for slot in body.slots})
            name = names[n % len(names)]
            slot = rng.choice([s for s in body.slots if _field_name(s.path) == name])
            data, detail = mutate_slot(rng, Body(body.data, [slot]), pick=n // len(names))
            if rng.random() < 0.3:  # a second field, against the (unchanged) slot positions
                body.data = data
                slot = rng.choice(body.slots)
                if slot.end <= len(data) and slot.kind in INTS:
                    data, more = mutate_slot(rng, Body(data, [slot]))
                    detail += "; " + more
            return data, detail

        return self._request(rng, index, "boundary", mutate)

    def _null(self, rng, index) -> Case:
        def mutate(rng, body):
            if not body.nonnull:
                return None, ""
            site = rng.choice(body.nonnull)
            data = body.data[: site.start] + site.null + body.data[site.end :]
            return data, f"{site.path}=null"

        return self._request(rng, index, "null", mutate)

    def _bitflip(self, rng, index) -> Case:
        def mutate(rng, body):
            data = bytearray(body.data)
            if not data:
                return None, ""
            flips = []
            for _ in range(rng.randint(1, 4)):
                pos = rng.randrange(len(data))
                bit = rng.randrange(8)
                data[pos] ^= 1 << bit
                flips.append(f"{pos}.{bit}")
            return data, "flips=" + ",".join(flips)

        return self._request(rng, index, "bitflip", mutate)

    def _truncate(self, rng, index) -> Case:
        def mutate(rng, body):
            if not body.data:
                return None, ""
            cut = rng.randrange(len(body.data))
            return body.data[:cut], f"cut={cut}/{len(body.data)}"

        return self._request(rng, index, "truncate", mutate)

    def _records(self, rng, index) -> Case:
        lo, hi = self.apis[ApiKey.PRODUCE]
        ver = rng.randint(lo, min(hi, 12))  # v13+ names topics by id
        payload, topic, detail = record_payload(rng, self.pools)
        acks = rng.choice((-1, -1, 1, 0))
        body = {
            "transactional_id": None, "acks": acks, "timeout_ms": 1000,
            "topic_data": [{"name": topic, "partition_data": [
                {"index": rng.choice((0, 0, 1, 2)), "records": payload}]}],
        }  # fmt: skip
        corr = self._corr(index)
        frame = codec.encode_request(ApiKey.PRODUCE, ver, corr, "fuzz", body)
        frame += sentinel_frame(corr + 1)
        record_kind = detail.split(":")[0].split("@")[0]
        tags = {f"api:{ApiKey.PRODUCE}", "records:" + record_kind}
        return Case(index, "records", ApiKey.PRODUCE, ver, corr, frame, sentinel=True,
                    refuse=record_kind in MUST_REFUSE,
                    detail=f"{detail} topic={topic} acks={acks}", tags=tags)  # fmt: skip

    def _header(self, rng, index) -> Case:
        corr = self._corr(index)
        api, ver = self._pick(rng)
        body = bytes(generate(rng, self.pools, api, ver).data)
        choice = rng.randrange(5)
        if choice == 0:  # an API nobody serves
            api = rng.choice((-1, 99, 0x7FFF, -(1 << 15), 57))
            detail = f"unknown api_key={api}"
        elif choice == 1:  # a version outside the advertised range
            lo, hi = self.apis.get(api, (0, 0))
            ver = rng.choice((hi + 1, lo - 1, 0x7FFF, -1))
            detail = f"unsupported version={ver}"
        elif choice == 2:  # client id length past the frame
            raw = struct.pack(">hhih", api, ver, corr, rng.choice((0x7FFF, -2, 200)))
            return Case(index, "header", api, ver, corr, framed(raw + body[:4]),
                        detail="client_id length", tags={"header"})  # fmt: skip
        elif choice == 3:  # a header cut short
            raw = struct.pack(">hhi", api, ver, corr)[: rng.randint(0, 7)]
            return Case(index, "header", api, ver, corr, framed(raw),
                        detail=f"header of {len(raw)} bytes", tags={"header"})  # fmt: skip
        else:  # flexible header with tagged fields that lie about their size
            if not codec.request_is_flexible(api, ver):
                return self._valid(rng, index)
            raw = struct.pack(">hhih", api, ver, corr, 4) + b"fuzz"
            raw += b"\x01" + b"\x05" + boundary_uvarint(rng)
            return Case(
                index,
                "header",
                api,
                ver,
                corr,
                framed(raw + body),
                detail="header tagged field size",
                tags={"header", f"api:{api}"},
            )
        flex = codec.request_is_flexible(api, ver) if api in self.apis else False
        frame = framed(header(api, ver, corr, flex) + body)
        return Case(index, "header", api, ver, corr, frame, detail=detail, tags={"header"})

    def _garbage(self, rng, index) -> Case:
        payload = rng.randbytes(rng.randint(0, 300))
        return Case(index, "garbage", frame=framed(payload), detail=f"{len(payload)} bytes",
                    tags={"garbage"})  # fmt: skip

    def _half(self, rng, index) -> Case:
        """A frame whose size prefix promises more than is ever sent."""
        api, ver = self._pick(rng)
        corr = self._corr(index)
        body = bytes(generate(rng, self.pools, api, ver).data)
        full = header(api, ver, corr, codec.request_is_flexible(api, ver)) + body
        claimed = rng.choice((len(full) + 1, len(full) + 1000, 10 << 20, 50 << 20))
        sent = rng.randint(0, len(full))
        frame = struct.pack(">i", claimed) + full[:sent]
        if rng.random() < 0.3:
            frame = frame[: rng.randint(1, 3)]  # not even the whole size prefix
        return Case(index, "half", api, ver, corr, frame, hold=rng.uniform(0.2, 1.5),
                    detail=f"claims {claimed}, sends {len(frame)}",
                    tags={"half", f"claim:{claimed}"})  # fmt: skip

    def _oversize(self, rng, index) -> Case:
        size = rng.choice(((1 << 31) - 1, -1, -(1 << 31), 0, (100 << 20) + 1, 1 << 30))
        frame = struct.pack(">i", size) + rng.randbytes(rng.randint(0, 64))
        return Case(index, "oversize", frame=frame, hold=rng.uniform(0.1, 1.0),
                    detail=f"size prefix {size}", tags={"oversize"})  # fmt: skip

    def _burst(self, rng, index) -> Case:
        n = rng.choice((50, 100, 200))
        corr = self._corr(index)
        return Case(index, "burst", ApiKey.API_VERSIONS, 0, corr, sentinel_frame(corr),
                    connections=n, detail=f"{n} connections", tags={"burst"})  # fmt: skip
