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
# A large frame's buffer starts at up to 16x what has arrived (a fast client's 1 MiB request
# needs no resize) and then grows 4x at a time: memory follows the bytes actually received.
_FIRST_GROWTH = 16
_GROWTH = 4


class FrameError(Exception):
    """The byte stream is not a sequence of valid Kafka frames; the connection must close."""


class MemoryPool:
    """queued.max.request.bytes: the memory that large request frames may hold, from their first
    byte until the owner is done with them. Sans-io accounting; whoever owns the sockets stops
    reading while a reader is refused.

    Like Kafka's SimpleMemoryPool in non-strict mode, one request may go beyond the pool (so a
    request larger than the whole pool still gets through, and the total stays below the pool
    plus one request), but memory is charged as a frame's buffer grows with the bytes that arrive
    (a few times what has arrived at most, see FrameReader), not for the size its prefix claims
    up front: a size prefix alone costs nothing and blocks no one. The one reader allowed
    past the pool (the overdraft holder) keeps that right until its frame is done, so frames in
    progress can't all wait on each other.
    """

    def __init__(self, size: int):
        self.size = size
        self.available = size
        self.overdraft_holder: object | None = None

    def reserve(self, n: int, owner: object, may_overdraft: bool) -> bool:
        if self.available >= n:
            self.available -= n
            return True
        if may_overdraft and self.overdraft_holder in (None, owner):
            self.overdraft_holder = owner
            self.available -= n
            return True
        return False

    def release(self, n: int) -> None:
        self.available += n

    def end_overdraft(self, owner: object) -> None:
        if self.overdraft_holder is owner:
            self.overdraft_holder = None


class FrameReader:
    """Splits a byte stream into frames (without their 4-byte size prefix).

    Frames up to half the scratch buffer are copied out of it. Larger ones get a buffer of their
    own that grows (4x at a time, from `first_chunk_bytes`) as their bytes arrive, never the claimed
    size up front; with a `pool`, each growth is reserved first, and while the pool refuses,
    `blocked` is True: the owner stops reading the socket and calls `retry()` when memory is
    released. The owner hands every frame back with `done()` once it has answered it.
    """

    def __init__(self, max_frame_bytes: int, scratch_bytes: int = 64 * 1024,
                 pool: MemoryPool | None = None, first_chunk_bytes: int = 64 * 1024):  # fmt: skip
        self.max_frame_bytes = max_frame_bytes
        self._scratch = bytearray(scratch_bytes)
        self._view = memoryview(self._scratch)
        self._small = scratch_bytes // 2  # larger frames get their own (pooled) buffer
        self._first_chunk = first_chunk_bytes
        self._pool = pool
        self._start = 0
        self._end = 0
        self._body: bytearray | None = None  # a large frame being filled in place
        self._body_pos = 0
        self._body_size = 0  # the size its prefix claims
        self._body_capacity = 0  # reserved (and, at the next get_buffer, allocated)
        self._blocked = False  # waiting for the pool, to begin or to grow a large frame
        self._in_overdraft = False  # the frame being read holds the pool's overdraft
        self._overdraft_frame = None  # a finished frame that was read in overdraft
        self.frames: deque[bytearray] = deque()

    @property
    def partial(self) -> bool:
        """True when a frame has been started but not finished."""
        return self._body is not None or self._end > self._start

    @property
    def blocked(self) -> bool:
        return self._blocked

    def get_buffer(self) -> memoryview:
        body = self._body
        if body is not None:
            if len(body) < self._body_capacity:
                body = self._resize(self._body_capacity)
            return memoryview(body)[self._body_pos :]
        if self._end == len(self._scratch):
            self._compact()
        return self._view[self._end :]

    def _resize(self, capacity: int) -> bytearray:
        body = self._body
        grown = bytearray(capacity)  # cheaper than body += bytes(n), and no view can block it
        memoryview(grown)[: self._body_pos] = memoryview(body)[: self._body_pos]
        self._body = grown
        return grown

    def _reserve(self, n: int) -> bool:
        if self._pool is None:
            return True
        if not self._pool.reserve(n, self, may_overdraft=self._overdraft_frame is None):
            return False
        if self._pool.overdraft_holder is self:
            self._in_overdraft = True
        return True

    def _finished(self, frame) -> None:
        """A pooled frame has been read whole."""
        if self._in_overdraft:
            self._overdraft_frame, self._in_overdraft = frame, False
        self.frames.append(frame)

    def buffer_updated(self, nbytes: int) -> None:
        if self._body is not None:
            self._body_pos += nbytes
            if self._body_pos == self._body_size:
                body, self._body = self._body, None
                self._finished(body)
            elif self._body_pos == self._body_capacity:
                self._grow()
            return
        self._end += nbytes
        self._split()

    def _grow(self) -> None:
        """Reserve the next growth of the large frame's buffer (allocated by get_buffer)."""
        capacity = min(self._body_size, _GROWTH * self._body_capacity)
        self._blocked = not self._reserve(capacity - self._body_capacity)
        if not self._blocked:
            self._body_capacity = capacity

    def feed(self, data: bytes) -> None:
        """Copying convenience for tests and tools: push `data` through get_buffer/buffer_updated."""
        view = memoryview(data)
        while view:
            buf = self.get_buffer()
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            buf.release()
            view = view[n:]
            self.buffer_updated(n)

    def retry(self) -> bool:
        """After the pool released memory: go on if it now has room for us."""
        if self._blocked:
            if self._body is not None:
                self._grow()
            else:
                self._split()
        return not self._blocked

    def done(self, frame) -> None:
        """The owner has answered `frame`: its memory goes back to the pool."""
        if self._pool is not None and len(frame) > self._small:
            self._pool.release(len(frame))
            if frame is self._overdraft_frame:
                self._overdraft_frame = None
                self._pool.end_overdraft(self)

    def close(self) -> None:
        """Release the memory of the frame being read and of frames never handed out."""
        if self._pool is not None:
            if self._body is not None:
                self._pool.release(self._body_capacity)
            for frame in self.frames:
                self.done(frame)
            self._pool.end_overdraft(self)
        self._body = None
        self.frames.clear()
        self._blocked = False

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
            if size <= self._small:
                if available < size:
                    break
                self.frames.append(scratch[begin : begin + size])  # a writable copy
                self._start = begin + size
                continue
            if available == 0:
                break  # a size prefix alone costs nothing: wait for the frame's first bytes
            # A large frame: its first chunk (or all of it, when it is already here) is reserved
            # before it leaves the scratch buffer.
            first = max(self._first_chunk, _FIRST_GROWTH * available)
            capacity = size if size <= 2 * first else first  # no resize just short of the end
            self._blocked = not self._reserve(capacity)
            if self._blocked:
                return
            if available >= size:
                self._finished(scratch[begin : begin + size])
                self._start = begin + size
                continue
            body = bytearray(capacity)
            body[:available] = scratch[begin : self._end]
            self._body, self._body_pos = body, available
            self._body_size, self._body_capacity = size, capacity
            self._start = self._end = 0
            if available == capacity:
                self._grow()
            return
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
