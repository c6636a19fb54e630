"""Bad input: each gets Kafka's treatment, and the broker keeps serving everyone else.

Framing-level garbage and requests the broker can't parse close that one connection, with a
log line naming the peer; bad requests it can parse get Kafka's error codes on an open
connection. A second client, connected throughout, must keep working after every case.
"""

from __future__ import annotations

import random
import socket
import struct
import time
import zlib

import pytest
from helpers import BrokerProcess, RawClient
from wire import partition_response, produce_body, values_batch, wait_for

from protocol import codec
from protocol import records as rb
from protocol.apis import ApiKey
from protocol.errors import ErrorCode
from protocol.framing import HEADER_FIXED

MAX_REQUEST = 104857600  # socket.request.max.bytes default


@pytest.fixture(scope="module")
def bp(tmp_path_factory):
    proc = BrokerProcess(str(tmp_path_factory.mktemp("bad") / "data")).start()
    yield proc
    proc.kill()


@pytest.fixture(scope="module")
def bystander(bp):
    """A client connected for the whole module; it must be served after every bad input."""
    c = RawClient(bp.port)
    yield c
    c.close()


def still_serving(bystander, bp) -> None:
    r = bystander.request(ApiKey.API_VERSIONS, 3, {"client_software_name": "bystander",
                                                   "client_software_version": "1"})  # fmt: skip
    assert r is not None and r.error_code == 0
    fresh = RawClient(bp.port)
    r = fresh.request(ApiKey.METADATA, 9, {"topics": None, "allow_auto_topic_creation": False,
                                           "include_cluster_authorized_operations": False,
                                           "include_topic_authorized_operations": False})  # fmt: skip
    assert r is not None and r.brokers[0].port == bp.port
    fresh.close()


def assert_closed_by_broker(client: RawClient) -> None:
    """The broker closes the connection: reads hit EOF (or a reset), never a response."""
    client.sock.settimeout(10)
    try:
        while True:
            data = client.sock.recv(65536)
            if not data:
                return
    except ConnectionResetError:
        return


def peer_of(client: RawClient) -> str:
    host, port = client.sock.getsockname()[:2]
    return f"{host}:{port}"


def close_logged(bp, client: RawClient | str, *events: str) -> dict:
    """The broker's log line about closing this client's connection."""
    peer = client if isinstance(client, str) else peer_of(client)

    def find():
        for e in bp.lines:
            if e.get("peer") == peer and (not events or e.get("event") in events):
                return e
        return None

    return wait_for(find, 10, f"a log line about {peer}")


def header(api_key: int, version: int, correlation_id: int = 1) -> bytes:
    """A request header: v2 (with an empty tagged-field section) where the api is flexible."""
    tags = b"\x00" if codec.request_is_flexible(api_key, version) else b""
    return HEADER_FIXED.pack(api_key, version, correlation_id) + b"\x00\x04test" + tags


# --- framing ------------------------------------------------------------------------------


def test_random_bytes(bp, bystander):
    rng = random.Random(1234)
    for _ in range(3):
        c = RawClient(bp.port)
        # A plausible size prefix, then noise: the broker must find the frame unparseable.
        noise = bytes(rng.getrandbits(8) for _ in range(500))
        c.send_raw(struct.pack(">i", len(noise)) + noise)
        assert_closed_by_broker(c)
        close_logged(bp, c)
        c.close()
        # Pure noise (whatever its first four bytes say), then the client hangs up.
        c = RawClient(bp.port)
        c.send_raw(bytes(rng.getrandbits(8) for _ in range(2000)))
        c.sock.shutdown(socket.SHUT_WR)
        assert_closed_by_broker(c)
        close_logged(bp, c)
        c.close()
    still_serving(bystander, bp)


def test_oversized_length_prefix(bp, bystander):
    for size in (MAX_REQUEST + 1, 2**31 - 1, -5):
        c = RawClient(bp.port)
        c.send_raw(struct.pack(">i", size) + b"\x00" * 16)
        assert_closed_by_broker(c)
        event = close_logged(bp, c, "invalid_frame")
        assert str(size) in event["reason"]
        c.close()
    still_serving(bystander, bp)


def test_truncated_frame(bp, bystander):
    c = RawClient(bp.port)
    frame = codec.encode_request(ApiKey.METADATA, 9, 1, "trunc", {"topics": None})
    c.send_raw(frame[: len(frame) // 2])
    still_serving(bystander, bp)  # the half-sent request blocks nobody
    peer = peer_of(c)
    c.sock.close()
    close_logged(bp, peer, "connection_closed_mid_frame")
    still_serving(bystander, bp)


def test_frame_shorter_than_a_header(bp, bystander):
    c = RawClient(bp.port)
    c.send_raw(struct.pack(">i", 3) + b"abc")
    assert_closed_by_broker(c)
    close_logged(bp, c, "invalid_request_header")
    c.close()
    still_serving(bystander, bp)


# --- unknown or unsupported apis ---------------------------------------------------------


@pytest.mark.parametrize(
    "api_key, version",
    [(999, 0), (-1, 0), (ApiKey.METADATA, 99), (ApiKey.PRODUCE, 2), (ApiKey.FETCH, 3)],
)
def test_unknown_api_or_version_closes_the_connection(bp, bystander, api_key, version):
    c = RawClient(bp.port)
    payload = header(api_key, version) + b"\x00" * 8
    c.send_raw(struct.pack(">i", len(payload)) + payload)
    assert_closed_by_broker(c)
    event = close_logged(bp, c, "unsupported_request")
    assert (event["api_key"], event["api_version"]) == (api_key, version)
    c.close()
    still_serving(bystander, bp)


def test_api_versions_of_unknown_version_gets_a_v0_answer(bp, bystander):
    c = RawClient(bp.port)
    payload = header(ApiKey.API_VERSIONS, 127, correlation_id=77) + b"\x01\x02\x03"
    c.send_raw(struct.pack(">i", len(payload)) + payload)
    frame = c.recv_frame()
    assert frame is not None
    assert struct.unpack_from(">i", frame, 0)[0] == 77  # response header v0
    resp = codec.decode_response(ApiKey.API_VERSIONS, 0, frame, 4)
    assert resp.error_code == ErrorCode.UNSUPPORTED_VERSION
    versions = {k.api_key: (k.min_version, k.max_version) for k in resp.api_keys}
    assert versions[ApiKey.API_VERSIONS] == (0, 4)
    # The connection stays usable: the client retries with a version it now knows.
    assert c.request(ApiKey.API_VERSIONS, 3, {"client_software_name": "x",
                                              "client_software_version": "1"}).error_code == 0  # fmt: skip
    c.close()
    still_serving(bystander, bp)


def test_malformed_body_closes_the_connection(bp, bystander):
    c = RawClient(bp.port)
    payload = header(ApiKey.METADATA, 9) + b"\x7f\xff\xff"  # an array claiming 2^31 topics
    c.send_raw(struct.pack(">i", len(payload)) + payload)
    assert_closed_by_broker(c)
    close_logged(bp, c, "malformed_request")
    c.close()
    payload = header(ApiKey.PRODUCE, 9) + b"\xff\xff\x00"  # cut off after transactional_id
    c = RawClient(bp.port)
    c.send_raw(struct.pack(">i", len(payload)) + payload)
    assert_closed_by_broker(c)
    close_logged(bp, c, "malformed_request")
    c.close()
    still_serving(bystander, bp)


# --- bad records -------------------------------------------------------------------------


def produce_error(client: RawClient, topic: str, records: bytes | None, version: int = 9):
    r = partition_response(client.request(ApiKey.PRODUCE, version, produce_body(topic, records)))
    return ErrorCode(r.error_code), r.error_message


def test_corrupt_crc_is_corrupt_message(bp, bystander):
    c = RawClient(bp.port)
    batch = values_batch([b"one", b"two"])
    batch[-1] ^= 0x55
    assert produce_error(c, "crc", bytes(batch))[0] == ErrorCode.CORRUPT_MESSAGE
    # Length fields that lie are corrupt too.
    batch = values_batch([b"one"])
    struct.pack_into(">i", batch, 8, len(batch) + 100)
    assert produce_error(c, "crc", bytes(batch))[0] == ErrorCode.CORRUPT_MESSAGE
    assert produce_error(c, "crc", bytes(batch[:30]))[0] == ErrorCode.CORRUPT_MESSAGE
    # The connection is still fine, and nothing was appended.
    r = partition_response(c.request(ApiKey.PRODUCE, 9, produce_body("crc", values_batch([b"ok"]))))
    assert (r.error_code, r.base_offset) == (0, 0)
    c.close()
    still_serving(bystander, bp)


def test_batch_above_message_max_bytes(bp, bystander):
    c = RawClient(bp.port)
    batch = values_batch([b"x" * 1_048_576])  # 1 MiB of value plus overhead > 1048588
    code, message = produce_error(c, "big", bytes(batch))
    assert code == ErrorCode.MESSAGE_TOO_LARGE
    fits = values_batch([b"x" * (1_048_588 - 61 - 20)])
    assert len(fits) <= 1_048_588
    assert produce_error(c, "big", bytes(fits))[0] == ErrorCode.NONE
    c.close()
    still_serving(bystander, bp)


def legacy_message_set(magic: int) -> bytes:
    """One message of the pre-0.11 format (magic 0 or 1), as old clients wrote it."""
    key, value = b"k", b"legacy"
    body = struct.pack(">bb", magic, 0)
    if magic == 1:
        body += struct.pack(">q", int(time.time() * 1000))
    body += struct.pack(">i", len(key)) + key + struct.pack(">i", len(value)) + value
    message = struct.pack(">I", zlib.crc32(body)) + body
    return struct.pack(">qi", 0, len(message)) + message


@pytest.mark.parametrize("magic", [0, 1])
def test_legacy_magic_is_unsupported_for_message_format(bp, bystander, magic):
    c = RawClient(bp.port)
    code, _ = produce_error(c, "legacy", legacy_message_set(magic), version=3)
    assert code == ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT
    c.close()
    still_serving(bystander, bp)


def test_null_records_and_two_batches(bp, bystander):
    c = RawClient(bp.port)
    assert produce_error(c, "nulls", None)[0] == ErrorCode.INVALID_RECORD
    two = bytes(values_batch([b"a"])) + bytes(values_batch([b"b"]))
    assert produce_error(c, "nulls", two)[0] == ErrorCode.INVALID_RECORD
    c.close()
    still_serving(bystander, bp)


def with_attributes(batch: bytearray, attributes: int) -> bytes:
    """The batch with other attribute bits and a CRC to match (so only the attributes are bad)."""
    from crc32c import crc32c

    struct.pack_into(">h", batch, rb.ATTRIBUTES_OFFSET, attributes)
    struct.pack_into(">I", batch, 17, crc32c(bytes(batch[rb.CRC_START :])))
    return bytes(batch)


def test_attributes_clients_may_not_use(bp, bystander):
    c = RawClient(bp.port)
    control = with_attributes(values_batch([b"\x00\x00\x00\x00"]), rb.CONTROL_MASK)
    assert produce_error(c, "attrs", control)[0] == ErrorCode.INVALID_RECORD
    unknown_codec = with_attributes(values_batch([b"x"]), 5)
    assert produce_error(c, "attrs", unknown_codec)[0] == ErrorCode.CORRUPT_MESSAGE
    assert produce_error(c, "attrs", b"")[0] == ErrorCode.INVALID_RECORD
    zstd = bytes(values_batch([b"z" * 100], compression_type=4))
    for version in (3, 6):
        assert produce_error(c, "attrs", zstd, version)[0] == ErrorCode.UNSUPPORTED_COMPRESSION_TYPE
    assert produce_error(c, "attrs", zstd, 7)[0] == ErrorCode.NONE
    c.close()
    still_serving(bystander, bp)


def test_acks_zero_bad_produce_closes_the_connection(bp, bystander):
    c = RawClient(bp.port)
    batch = values_batch([b"x"])
    batch[-1] ^= 1
    c.correlation_id += 1
    c.send_raw(codec.encode_request(ApiKey.PRODUCE, 9, c.correlation_id, "acks0",
                                    produce_body("acks0", bytes(batch), acks=0)))  # fmt: skip
    assert_closed_by_broker(c)
    close_logged(bp, c)
    c.close()
    still_serving(bystander, bp)


def test_invalid_acks(bp, bystander):
    c = RawClient(bp.port)
    body = produce_body("acks", bytes(values_batch([b"x"])), acks=2)
    r = partition_response(c.request(ApiKey.PRODUCE, 9, body))
    assert r.error_code == ErrorCode.INVALID_REQUIRED_ACKS
    c.close()


# --- topics ------------------------------------------------------------------------------

ILLEGAL_NAMES = ["", ".", "..", "a" * 250, "has space", "slash/es", "ümlaut", "star*"]


def create_topics(client: RawClient, topics: list[dict], version: int = 7, validate_only=False):
    entries = [
        {"name": t["name"], "num_partitions": t.get("num_partitions", 1),
         "replication_factor": t.get("replication_factor", 1), "assignments": [],
         "configs": [{"name": k, "value": v} for k, v in t.get("configs", {}).items()]}
        for t in topics
    ]  # fmt: skip
    resp = client.request(ApiKey.CREATE_TOPICS, version, {"topics": entries, "timeout_ms": 5000,
                                                          "validate_only": validate_only})  # fmt: skip
    return {t.name: t for t in resp.topics}


def test_illegal_topic_names(bp, bystander):
    c = RawClient(bp.port)
    results = create_topics(c, [{"name": n} for n in ILLEGAL_NAMES])
    for name in ILLEGAL_NAMES:
        assert results[name].error_code == ErrorCode.INVALID_TOPIC_EXCEPTION, name
        assert results[name].error_message
    md = c.request(ApiKey.METADATA, 9, {"topics": [{"name": n} for n in ILLEGAL_NAMES[1:]],
                                        "allow_auto_topic_creation": True,
                                        "include_cluster_authorized_operations": False,
                                        "include_topic_authorized_operations": False})  # fmt: skip
    assert {t.name: t.error_code for t in md.topics} == {
        n: ErrorCode.INVALID_TOPIC_EXCEPTION for n in ILLEGAL_NAMES[1:]
    }
    for name in ("has space", ".."):
        assert produce_error(c, name, bytes(values_batch([b"x"])))[0] == (
            ErrorCode.INVALID_TOPIC_EXCEPTION
        )
    c.close()
    still_serving(bystander, bp)


def test_create_topic_errors(bp, bystander):
    c = RawClient(bp.port)
    r = create_topics(c, [{"name": "rf2", "replication_factor": 2}])["rf2"]
    assert r.error_code == ErrorCode.INVALID_REPLICATION_FACTOR
    assert r.error_message == (
        "Unable to replicate the partition 2 time(s): The target replication factor of 2 "
        "cannot be reached because only 1 broker(s) are registered."
    )
    for n in (0, -2):
        r = create_topics(c, [{"name": f"parts{n}", "num_partitions": n}])[f"parts{n}"]
        assert r.error_code == ErrorCode.INVALID_PARTITIONS
    assert create_topics(c, [{"name": "twice"}])["twice"].error_code == 0
    r = create_topics(c, [{"name": "twice"}])["twice"]
    assert r.error_code == ErrorCode.TOPIC_ALREADY_EXISTS
    assert r.error_message == "Topic 'twice' already exists."
    r = create_topics(c, [{"name": "badcfg", "configs": {"cleanup.policy": "sometimes"}}])
    assert r["badcfg"].error_code == ErrorCode.INVALID_CONFIG
    r = create_topics(c, [{"name": "dry", "num_partitions": 3}], validate_only=True)["dry"]
    assert (r.error_code, r.num_partitions) == (0, 3)
    md = c.request(ApiKey.METADATA, 9, {"topics": [{"name": "dry"}, {"name": "rf2"}],
                                        "allow_auto_topic_creation": False,
                                        "include_cluster_authorized_operations": False,
                                        "include_topic_authorized_operations": False})  # fmt: skip
    assert {t.error_code for t in md.topics} == {ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}
    c.close()
    still_serving(bystander, bp)


def test_unknown_partition(bp, bystander):
    c = RawClient(bp.port)
    create_topics(c, [{"name": "onepart"}])
    r = partition_response(c.request(ApiKey.PRODUCE, 9, produce_body(
        "onepart", bytes(values_batch([b"x"])), partition=5)))  # fmt: skip
    assert r.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    c.close()
