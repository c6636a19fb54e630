"""Size-prefixed frames and request/response headers.

Sans-io: `FrameReader` is fed by whoever owns the socket (the server's BufferedProtocol reads
straight into the buffer it hands out), and returns whole frames. Large frames get a buffer of
their own so their bytes are read from the socket exactly once.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

_INT32 = struct.Struct(">i")
HEADER_FIXED = struct.Struct(">hhi")  # api_key, api_version, correlation_id


class FrameError(Exception):
    """The byte stream is not a sequence of valid Kafka frames; the connection must close."""


class FrameReader:
    """Splits a byte stream into frames (without their 4-byte size prefix)."""

    def __init__(self, max_frame_bytes: int, scratch_bytes: int = 64 * 1024):
        self.max_frame_bytes = max_frame_bytes
        self._scratch = bytearray(scratch_bytes)
        self._view = memoryview(self._scratch)
        self._start = 0
        self._end = 0
        self._body: bytearray | None = None  # a large frame being filled in place
        self._body_pos = 0
        self.frames: deque[bytearray] = deque()

    @property
    def partial(self) -> bool:
        """True when a frame has been started but not finished."""
        return self._body is not None or self._end > self._start

    def get_buffer(self) -> memoryview:
        if self._body is not None:
            return memoryview(self._body)[self._body_pos :]
        if self._end == len(self._scratch):
            self._compact()
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        if self._body is not None:
            self._body_pos += nbytes
            if self._body_pos == len(self._body):
                self.frames.append(self._body)
                self._body = None
            return
        self._end += nbytes
        self._split()

    def feed(self, data: bytes) -> None:
        """Copying convenience for tests and tools: push `data` through get_buffer/buffer_updated."""
        view = memoryview(data)
        while view:
            buf = self.get_buffer()
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            view = view[n:]
            self.buffer_updated(n)

    def _compact(self) -> None:
        n = self._end - self._start
        self._scratch[:n] = self._scratch[self._start : self._end]
        self._start, self._end = 0, n

    def _split(self) -> None:
        scratch = self._scratch
        while self._end - self._start >= 4:
            size = _INT32.unpack_from(scratch, self._start)[0]
            if size < 0 or size > self.max_frame_bytes:
                raise FrameError(f"frame size {size} outside 0..{self.max_frame_bytes}")
            begin = self._start + 4
            available = self._end - begin
            if available >= size:
                self.frames.append(scratch[begin : begin + size])  # a writable copy
                self._start = begin + size
                continue
            if size > len(scratch) // 2:
                body = bytearray(size)
                body[:available] = scratch[begin : self._end]
                self._body, self._body_pos = body, available
                self._start = self._end = 0
                return
            break
        if self._start == self._end:
            self._start = self._end = 0
        elif self._start > len(scratch) // 2:
            self._compact()


def frame(payload_parts: list[bytes]) -> bytes:
    """Prefix the concatenation of payload_parts with its size."""
    body = b"".join(payload_parts)
    return _INT32.pack(len(body)) + body


@dataclass(slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body_offset: int  # where the request body starts in the frame


def read_uvarint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise FrameError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise FrameError("varint too long")


def skip_tagged_fields(buf, pos: int) -> int:
    count, pos = read_uvarint(buf, pos)
    for _ in range(count):
        _tag, pos = read_uvarint(buf, pos)
        size, pos = read_uvarint(buf, pos)
        pos += size
    if pos > len(buf):
        raise FrameError("truncated tagged fields")
    return pos


def parse_request_header(buf, flexible_for) -> RequestHeader:
    """Parse a request header (v1, or v2 when flexible_for(api_key, api_version) says so).

    client_id is never a compact string, even in header v2 (KIP-482 kept it that way so that
    an ApiVersions request of any version can be parsed by any broker).
    """
    if len(buf) < 10:
        raise FrameError(f"request of {len(buf)} bytes is shorter than a request header")
    api_key, api_version, correlation_id = HEADER_FIXED.unpack_from(buf, 0)
    n = int.from_bytes(buf[8:10], "big", signed=True)
    pos = 10
    client_id = None
    if n >= 0:
        if pos + n > len(buf):
            raise FrameError("truncated client_id")
        client_id = bytes(buf[pos : pos + n]).decode("utf-8", "replace")
        pos += n
    if flexible_for(api_key, api_version):
        pos = skip_tagged_fields(buf, pos)
    return RequestHeader(api_key, api_version, correlation_id, client_id, pos)


def response_header(correlation_id: int, flexible: bool) -> bytes:
    """Response header v0, or v1 (an empty tagged-field section) for flexible responses."""
    return _INT32.pack(correlation_id) + (b"\x00" if flexible else b"")
