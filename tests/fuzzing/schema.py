"""Request bodies generated from the JSON message schemas the broker decodes with.

`protocol.codec` decodes requests with kafka-python's message classes, which are built from
Apache Kafka's own JSON specs (`cls.json`). This module walks those same specs: for an
(api key, version) it picks plausible values for every field present in that version (topic,
group and transactional ids from small pools, so requests reach the handlers' real work), and
encodes them by hand, remembering where each numeric field, length prefix and non-nullable
string/array/bytes sits in the output. The mutators in `cases.py` rewrite those slots.
"""

from __future__ import annotations

import random
import struct
import time
import uuid
from dataclasses import dataclass, field
from functools import cache

from protocol import codec
from protocol import records as rb

# Fixed-width integer types: struct format, min, max.
INTS = {
    "int8": (">b", -(1 << 7), (1 << 7) - 1),
    "int16": (">h", -(1 << 15), (1 << 15) - 1),
    "uint16": (">H", 0, (1 << 16) - 1),
    "int32": (">i", -(1 << 31), (1 << 31) - 1),
    "uint32": (">I", 0, (1 << 32) - 1),
    "int64": (">q", -(1 << 63), (1 << 63) - 1),
}


def parse_versions(spec: str | None) -> tuple[int, int]:
    """'3+' -> (3, big), '0-12' -> (0, 12), 'none' or None -> empty."""
    if not spec or spec == "none":
        return (1, 0)
    if spec.endswith("+"):
        return (int(spec[:-1]), 1 << 15)
    lo, _, hi = spec.partition("-")
    return (int(lo), int(hi or lo))


def in_range(version: int, spec: str | None) -> bool:
    lo, hi = parse_versions(spec)
    return lo <= version <= hi


@dataclass(slots=True)
class Slot:
    """Where one encoded field sits in a body: what kind of value, and its byte range."""

    kind: str  # an INTS key, "float64", "uvarint" (a compact length), "len16"/"len32" prefixes
    start: int
    end: int
    path: str
    nullable: bool = False  # for length prefixes: is -1 (null) allowed here


@dataclass(slots=True)
class Site:
    """A string/bytes/array value and the bytes that would encode it as null."""

    start: int
    end: int
    path: str
    null: bytes


@dataclass
class Body:
    data: bytearray = field(default_factory=bytearray)
    slots: list[Slot] = field(default_factory=list)
    nonnull: list[Site] = field(default_factory=list)  # non-nullable: null is a bad request


# --- values --------------------------------------------------------------------------------


@dataclass
class Pools:
    """Names the generator draws from, so that requests hit real topics, groups and ids."""

    topics: list[str]
    groups: list[str] = field(default_factory=lambda: ["fuzz-group-0", "fuzz-group-1"])
    txn_ids: list[str] = field(default_factory=lambda: ["fuzz-txn-0", "fuzz-txn-1"])
    config_names: list[str] = field(
        default_factory=lambda: [
            "retention.ms", "cleanup.policy", "segment.bytes", "max.message.bytes",
            "min.insync.replicas", "compression.type", "message.timestamp.type", "nope.nope",
        ]
    )  # fmt: skip
    config_values: list[str] = field(
        default_factory=lambda: ["1", "-1", "0", "compact", "delete", "gzip", "2147483648", "x"]
    )
    topic_ids: dict[str, bytes] = field(default_factory=dict)  # name -> uuid bytes, if known
    # A compacted topic no generated request names (so none alters its cleanup.policy): keyless
    # records sent there must be refused.
    compacted: str = "fuzz-compacted-only"

    def string(self, rng: random.Random, name: str, entity: str | None) -> str:
        lname = name.lower()
        if entity == "topicName" or "topic" in lname:
            return rng.choice(self.topics)
        if entity == "groupId" or "group" in lname:
            return rng.choice(self.groups)
        if entity == "transactionalId" or "transactional" in lname:
            return rng.choice(self.txn_ids)
        if "protocoltype" in lname:
            return "consumer"
        if lname in ("resourcename",):
            return rng.choice([*self.topics, "1", ""])
        if "value" in lname:
            return rng.choice(self.config_values)
        if lname in ("name", "configname", "key") or "config" in lname:
            return rng.choice(self.config_names)
        if "member" in lname or "instance" in lname:
            return rng.choice(["", "fuzz-member", "consumer-1-abc"])
        return rng.choice(["", "fuzz", "range", "roundrobin", "0"])


_NOW_MS = int(time.time() * 1000)


def gen_int(rng: random.Random, kind: str, name: str) -> int:
    lo, hi = INTS[kind][1:]
    lname = name.lower()
    if lname == "acks":
        return rng.choice((-1, 0, 1))
    if "timeout" in lname or "wait" in lname or "interval" in lname:
        return rng.choice((0, 10, 100))
    if "timestamp" in lname or lname == "time":
        return rng.choice((-1, -2, _NOW_MS))
    if "epoch" in lname or "producerid" in lname or lname.endswith("replicaid"):
        return rng.choice((-1, 0))
    if "isolation" in lname:
        return rng.choice((0, 1))
    if "resourcetype" in lname:
        return rng.choice((2, 4))  # TOPIC, BROKER
    if "operation" in lname or "permission" in lname or "patterntype" in lname:
        return rng.choice((0, 1, 2, 3))
    if "brokerid" in lname or "nodeid" in lname or lname == "leaderid":
        return rng.choice((1, 0, -1))
    if "partitions" in lname or "numpartitions" in lname or lname == "count":
        return rng.choice((1, 2, 3, -1))
    if "replicationfactor" in lname:
        return rng.choice((1, -1))
    if "maxbytes" in lname or "max_bytes" in lname:
        return rng.choice((1 << 20, 100, 0))
    return max(lo, min(hi, rng.choice((0, 0, 1, 2, 3, -1))))


def small_batch(rng: random.Random, *, compression: int = 0, keyless: bool | None = None):
    n = rng.randint(1, 4)
    recs = []
    for i in range(n):
        key = None if (keyless if keyless is not None else rng.random() < 0.3) else b"k%d" % i
        recs.append(rb.Record(i, _NOW_MS, key, rng.randbytes(rng.randint(0, 64))))
    return rb.build_batch(recs, compression_type=compression)


# --- the walker ----------------------------------------------------------------------------


@cache
def _common_structs(api_key: int) -> dict[str, list]:
    spec = codec.request_class(api_key).json
    return {s["name"]: s["fields"] for s in spec.get("commonStructs", [])}


@cache
def request_spec(api_key: int) -> dict:
    return codec.request_class(api_key).json


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


class Generator:
    """Encodes one request body of (api_key, version), recording slots and non-null sites."""

    def __init__(self, rng: random.Random, pools: Pools, api_key: int, version: int,
                 full: bool = False):  # fmt: skip
        self.full = full  # every field present: arrays of 1-2, no nulls, every tagged field
        self.rng = rng
        self.pools = pools
        self.api_key = api_key
        self.version = version
        self.flexible = codec.request_is_flexible(api_key, version)
        self.common = _common_structs(api_key)
        self.body = Body()

    def generate(self) -> Body:
        self._struct(request_spec(self.api_key)["fields"], "")
        return self.body

    # Each emitter appends to self.body.data.

    def _out(self) -> bytearray:
        return self.body.data

    def _slot(self, kind: str, start: int, path: str, nullable: bool = False) -> None:
        self.body.slots.append(Slot(kind, start, len(self._out()), path, nullable))

    def _struct(self, fields: list[dict], path: str) -> None:
        v = self.version
        tagged = []
        for f in fields:
            if not in_range(v, f.get("versions")):
                continue
            if "tag" in f and in_range(v, f.get("taggedVersions")):
                tagged.append(f)
                continue
            self._field(f, f"{path}.{f['name']}" if path else f["name"])
        if self.flexible:
            self._tagged(tagged, path)

    def _tagged(self, tagged: list[dict], path: str) -> None:
        out = self._out()
        chosen = [f for f in tagged if self.full or self.rng.random() < 0.5]
        start = len(out)
        out += _uvarint(len(chosen))
        self._slot("uvarint", start, f"{path}#tags")
        for f in sorted(chosen, key=lambda f: f["tag"]):
            out += _uvarint(f["tag"])
            # Encode the value on its own to learn its size; slots inside are not kept.
            sub = Generator(self.rng, self.pools, self.api_key, self.version, self.full)
            sub._field(f, f"{path}.{f['name']}")
            out += _uvarint(len(sub.body.data))
            out += sub.body.data

    def _nullable(self, f: dict) -> bool:
        return in_range(self.version, f.get("nullableVersions"))

    def _field(self, f: dict, path: str) -> None:
        t = f["type"]
        out = self._out()
        start = len(out)
        if t.startswith("[]"):
            self._array(f, t[2:], path)
        elif t in INTS:
            fmt, lo, hi = INTS[t]
            default = f.get("default")
            if default not in (None, "") and self.rng.random() < 0.2:
                try:
                    value = int(default, 0) if isinstance(default, str) else int(default)
                except (ValueError, TypeError):
                    value = gen_int(self.rng, t, f["name"])
            else:
                value = gen_int(self.rng, t, f["name"])
            out += struct.pack(fmt, max(lo, min(hi, value)))
            self._slot(t, start, path)
        elif t == "bool":
            out.append(self.rng.choice((0, 1)))
            self._slot("int8", start, path)
        elif t == "float64":
            out += struct.pack(">d", self.rng.choice((0.0, 1.5, -1.0)))
            self._slot("float64", start, path)
        elif t == "uuid":
            ids = list(self.pools.topic_ids.values())
            if ids and self.rng.random() < 0.7:
                out += self.rng.choice(ids)
            else:
                out += self.rng.choice((bytes(16), uuid.UUID(int=self.rng.getrandbits(128)).bytes))
        elif t == "string":
            value = self.pools.string(self.rng, f["name"], f.get("entityType"))
            if self._nullable(f) and not self.full and self.rng.random() < 0.2:
                value = None
            self._string(value, path, f)
        elif t == "bytes":
            null = self._nullable(f) and not self.full and self.rng.random() < 0.2
            value = None if null else self.rng.randbytes(8)
            self._bytes(value, path, f)
        elif t == "records":
            value = None if self.rng.random() < 0.05 else bytes(small_batch(self.rng))
            self._bytes(value, path, f)
        elif t in self.common or f.get("fields") is not None:
            if self._nullable(f):
                # A nullable struct is led by an int8 as Kafka writes it: -1 null, 1 present.
                if not self.full and self.rng.random() < 0.2:
                    out.append(0xFF)
                    self._slot("int8", start, path + "#null")
                    return
                out.append(1)
                self._slot("int8", start, path + "#null")
            self._struct(f.get("fields") or self.common[t], path)
        else:
            raise ValueError(f"unknown schema type {t} at {path}")

    def _length(self, n: int | None, path: str, f: dict, *, wide: bool) -> None:
        """A length prefix: compact uvarint (flexible) or int16/int32; None is null."""
        out = self._out()
        start = len(out)
        nullable = self._nullable(f)
        if self.flexible:
            out += _uvarint(0 if n is None else n + 1)
            self._slot("uvarint", start, path + "#len", nullable)
        elif wide:
            out += struct.pack(">i", -1 if n is None else n)
            self._slot("len32", start, path + "#len", nullable)
        else:
            out += struct.pack(">h", -1 if n is None else n)
            self._slot("len16", start, path + "#len", nullable)

    def _null_bytes(self, wide: bool) -> bytes:
        if self.flexible:
            return b"\x00"
        return b"\xff\xff\xff\xff" if wide else b"\xff\xff"

    def _site(self, start: int, path: str, f: dict, wide: bool) -> None:
        if not self._nullable(f):
            null = self._null_bytes(wide)
            self.body.nonnull.append(Site(start, len(self._out()), path, null))

    def _string(self, value: str | None, path: str, f: dict) -> None:
        start = len(self._out())
        raw = None if value is None else value.encode()
        self._length(None if raw is None else len(raw), path, f, wide=False)
        if raw:
            self._out().extend(raw)
        self._site(start, path, f, wide=False)

    def _bytes(self, value: bytes | None, path: str, f: dict) -> None:
        start = len(self._out())
        self._length(None if value is None else len(value), path, f, wide=True)
        if value:
            self._out().extend(value)
        self._site(start, path, f, wide=True)

    def _array(self, f: dict, item: str, path: str) -> None:
        out = self._out()
        start = len(out)
        n = self.rng.choice((1, 2) if self.full else (0, 1, 1, 1, 2, 3))
        if self._nullable(f) and not self.full and self.rng.random() < 0.15:
            self._length(None, path, f, wide=True)
            return
        self._length(n, path, f, wide=True)
        sub = {"name": f["name"], "type": item, "versions": "0+"}
        for i in range(n):
            if f.get("fields") is not None or item in self.common:
                self._struct(f.get("fields") or self.common[item], f"{path}[{i}]")
            else:
                self._field(sub, f"{path}[{i}]")
        self._site(start, path, f, wide=True)


def generate(rng: random.Random, pools: Pools, api_key: int, version: int,
             full: bool = False) -> Body:  # fmt: skip
    return Generator(rng, pools, api_key, version, full).generate()
