"""The hand-written produce-response encoder agrees with kafka-python's generated codec."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocol import codec
from protocol.apis import ApiKey
from protocol.hotpath import ProducePartitionResult, encode_produce_response

partition = st.builds(
    ProducePartitionResult,
    index=st.integers(0, 1000),
    error_code=st.integers(-1, 120),
    base_offset=st.integers(-1, 1 << 62),
    log_append_time_ms=st.integers(-1, 1 << 42),
    log_start_offset=st.integers(-1, 1 << 62),
    error_message=st.none() | st.text(max_size=20),
)
topics = st.lists(
    st.tuples(st.text(min_size=1, max_size=10), st.lists(partition, max_size=3)), max_size=3
)


@given(version=st.integers(3, 12), topics=topics, correlation_id=st.integers(0, 1 << 30))
def test_produce_response_matches_generated_codec(version, topics, correlation_id):
    frame = encode_produce_response(version, correlation_id, topics)
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    assert int.from_bytes(frame[4:8], "big") == correlation_id
    header = 4 + 4 + (1 if version >= 9 else 0)
    decoded = codec.decode_response(ApiKey.PRODUCE, version, frame, header)
    assert decoded.throttle_time_ms == 0
    assert [t.name for t in decoded.responses] == [name for name, _ in topics]
    for t, (_, parts) in zip(decoded.responses, topics, strict=True):
        for got, want in zip(t.partition_responses, parts, strict=True):
            assert (got.index, got.error_code, got.base_offset, got.log_append_time_ms) == (
                want.index, want.error_code, want.base_offset, want.log_append_time_ms,
            )  # fmt: skip
            if version >= 5:
                assert got.log_start_offset == want.log_start_offset
            if version >= 8:
                assert got.error_message == want.error_message
