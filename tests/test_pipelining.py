"""Pipelining: requests sent back-to-back on one connection are answered in request order.

acks=0 produce requests get no response at all; a failing one closes the connection (Kafka's
way of telling a fire-and-forget producer), after answering what came before it.
"""

from __future__ import annotations

import struct

from helpers import RawClient
from wire import fetch_body, produce_body, values_batch

from protocol import codec
from protocol.apis import ApiKey

API_VERSIONS = (
    ApiKey.API_VERSIONS,
    3,
    {"client_software_name": "p", "client_software_version": "1"},
)
METADATA = (ApiKey.METADATA, 9, {"topics": None, "allow_auto_topic_creation": False,
                                 "include_cluster_authorized_operations": False,
                                 "include_topic_authorized_operations": False})  # fmt: skip


def list_offsets(topic: str) -> tuple:
    return (ApiKey.LIST_OFFSETS, 7, {"replica_id": -1, "isolation_level": 0, "topics": [
        {"name": topic, "partitions": [{"partition_index": 0, "timestamp": -1,
                                        "current_leader_epoch": -1}]}]})  # fmt: skip


def produce(topic: str, value: bytes, acks: int = 1, corrupt: bool = False) -> tuple:
    batch = values_batch([value])
    if corrupt:
        batch[-1] ^= 0xFF
    return (ApiKey.PRODUCE, 9, produce_body(topic, bytes(batch), acks=acks))


def send_all(client: RawClient, requests: list[tuple]) -> list[int]:
    """Write every request in one go; returns their correlation ids."""
    frames, ids = [], []
    for api_key, version, body in requests:
        client.correlation_id += 1
        ids.append(client.correlation_id)
        frames.append(codec.encode_request(api_key, version, client.correlation_id, "pipe", body))
    client.send_raw(b"".join(frames))
    return ids


def read_responses(client: RawClient, requests: list[tuple], ids: list[int]) -> list:
    """Responses, decoded by the api of the request each claims to answer (in arrival order)."""
    by_id = dict(zip(ids, requests, strict=True))
    out = []
    while True:
        frame = client.recv_frame()
        if frame is None:
            return out
        corr = struct.unpack_from(">i", frame, 0)[0]
        api_key, version, _ = by_id[corr]
        offset = 4 + (1 if codec.response_is_flexible(api_key, version) else 0)
        out.append((corr, codec.decode_response(api_key, version, frame, offset)))
        if corr == ids[-1]:
            return out


def test_back_to_back_requests_are_answered_in_order(broker):
    c = RawClient(broker.port)
    requests = [
        API_VERSIONS,
        produce("pipe", b"first"),
        # A fetch that waits its full max_wait: everything after it must still come after it.
        (ApiKey.FETCH, 12, fetch_body([("pipe", 0, 1)], max_wait_ms=300, min_bytes=1 << 20)),
        METADATA,
        produce("pipe", b"fire-and-forget", acks=0),  # no response
        list_offsets("pipe"),
        produce("pipe", b"third", acks=-1),
        API_VERSIONS,
    ]
    ids = send_all(c, requests)
    responses = read_responses(c, requests, ids)
    answered = [i for i in ids if i != ids[4]]
    assert [corr for corr, _ in responses] == answered
    by_corr = dict(responses)
    assert by_corr[ids[1]].responses[0].partition_responses[0].base_offset == 0
    assert by_corr[ids[5]].topics[0].partitions[0].offset == 2  # the acks=0 record is there
    assert by_corr[ids[6]].responses[0].partition_responses[0].base_offset == 2
    c.close()


def test_many_pipelined_produces(broker):
    """More requests than the connection queues at once: reading pauses and resumes."""
    c = RawClient(broker.port)
    requests = [produce("many", b"m%d" % i) for i in range(300)]
    ids = send_all(c, requests)
    responses = read_responses(c, requests, ids)
    assert [corr for corr, _ in responses] == ids
    offsets = [r.responses[0].partition_responses[0].base_offset for _, r in responses]
    assert offsets == list(range(300))
    c.close()


def test_acks_zero_produces_get_no_response(broker):
    c = RawClient(broker.port)
    requests = [produce("quiet", b"q%d" % i, acks=0) for i in range(50)] + [list_offsets("quiet")]
    ids = send_all(c, requests)
    responses = read_responses(c, requests, ids)
    assert [corr for corr, _ in responses] == [ids[-1]]
    assert responses[0][1].topics[0].partitions[0].offset == 50
    c.close()


def test_bad_acks_zero_produce_closes_after_earlier_answers(broker):
    c = RawClient(broker.port)
    requests = [
        METADATA,
        produce("bad0", b"ok", acks=0),
        produce("bad0", b"bad", acks=0, corrupt=True),
        API_VERSIONS,  # never answered: the connection is gone
    ]
    ids = send_all(c, requests)
    responses = read_responses(c, requests, ids)
    assert [corr for corr, _ in responses] == [ids[0]]
    assert c.recv_frame() is None
    c.close()
    other = RawClient(broker.port)
    r = other.request(*list_offsets("bad0"))
    assert r.topics[0].partitions[0].offset == 1  # the good acks=0 record, not the bad one
    other.close()
