"""Record-batch compression codecs (attribute bits 0-2), via cramjam and zlib.

Snappy in Kafka is the xerial framing written by the Java client (a magic header, then
size-prefixed raw snappy blocks); plain raw snappy is read too, as some clients write it.
LZ4 is the standard LZ4 frame format (KIP-57).

Decompression is always bounded: `decompress` never produces more than `limit` bytes, so a small
batch crafted to inflate to gigabytes is refused after at most `limit` bytes of output (zlib's
max_length; cramjam's decompress_into, which stops when its buffer is full; snappy's block
headers, which state their length). The output buffer starts near the input's size and grows by
8x up to the limit, re-running the codec on the rare batch that compresses better than that.
"""

from __future__ import annotations

import gzip
import struct
import zlib

import cramjam

NONE, GZIP, SNAPPY, LZ4, ZSTD = 0, 1, 2, 3, 4
NAMES = {NONE: "none", GZIP: "gzip", SNAPPY: "snappy", LZ4: "lz4", ZSTD: "zstd"}

_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = _XERIAL_MAGIC + struct.pack(">ii", 1, 1)
_XERIAL_BLOCK = 32 * 1024


# Bound on a batch's decompressed records when the caller has no topic config at hand: 8 x
# Kafka's default message.max.bytes (see records.DECOMPRESSION_FACTOR).
DEFAULT_LIMIT = 8 * 1048588
_GROWTH = 8
_FIRST_GUESS = 64 * 1024


class DecompressionError(ValueError):
    """The payload is not valid data for its codec, or (too_large) inflates past the limit."""

    def __init__(self, message: str, too_large: bool = False):
        super().__init__(message)
        self.too_large = too_large


def decompress(codec: int, data, limit: int = DEFAULT_LIMIT) -> bytes:
    """The decompressed payload, at most `limit` bytes; DecompressionError otherwise."""
    try:
        if codec == GZIP:
            return _gzip_decompress(data, limit)
        if codec == SNAPPY:
            return _snappy_decompress(data, limit)
        if codec in (LZ4, ZSTD):
            return _cramjam_decompress(cramjam.lz4 if codec == LZ4 else cramjam.zstd, data, limit)
    except DecompressionError:
        raise
    except Exception as e:  # zlib.error, cramjam.DecompressionError, struct.error ...
        raise DecompressionError(f"{NAMES[codec]}: {e}") from None
    raise DecompressionError(f"unknown compression codec {codec}")


def _too_large(codec: int, limit: int) -> DecompressionError:
    return DecompressionError(
        f"{NAMES[codec]} payload decompresses to more than {limit} bytes", too_large=True
    )


def compress(codec: int, data: bytes) -> bytes:
    if codec == GZIP:
        return gzip.compress(data)
    if codec == SNAPPY:
        blocks = [_XERIAL_HEADER]
        for i in range(0, len(data), _XERIAL_BLOCK):
            block = bytes(cramjam.snappy.compress_raw(data[i : i + _XERIAL_BLOCK]))
            blocks.append(struct.pack(">i", len(block)) + block)
        return b"".join(blocks)
    if codec == LZ4:
        return bytes(cramjam.lz4.compress(data))
    if codec == ZSTD:
        return bytes(cramjam.zstd.compress(data))
    raise ValueError(f"unknown compression codec {codec}")


def _gzip_decompress(data, limit: int) -> bytes:
    """gzip members one after another (as GZIPInputStream reads them), at most limit bytes."""
    out = []
    total = 0
    while True:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        chunk = d.decompress(data, limit - total + 1)
        total += len(chunk)
        if total > limit:
            raise _too_large(GZIP, limit)
        out.append(chunk)
        if not d.eof:
            if d.unconsumed_tail:  # stopped at max_length: exactly limit bytes, more to come
                raise _too_large(GZIP, limit)
            raise DecompressionError("gzip: compressed data ended before the end-of-stream marker")
        data = d.unused_data
        if not data.startswith(b"\x1f\x8b"):  # Java ignores trailing bytes that are no member
            return b"".join(out)


def _cramjam_decompress(codec_module, data, limit: int) -> bytes:
    size = min(limit + 1, max(_FIRST_GUESS, len(data) * _GROWTH))
    while True:
        out = bytearray(size)
        try:
            n = codec_module.decompress_into(data, out)
        except cramjam.DecompressionError as e:
            if "failed to write whole buffer" not in str(e):
                raise
            n = size + 1  # the buffer filled up: more output than it holds
        if n <= limit and n < size:
            del out[n:]
            return out
        if size > limit:
            raise _too_large(LZ4 if codec_module is cramjam.lz4 else ZSTD, limit)
        size = min(limit + 1, size * _GROWTH)


def _snappy_block(block, room: int, limit: int) -> bytes:
    """One raw snappy block, whose header states its length (checked against the room left
    first)."""
    n = cramjam.snappy.decompress_raw_len(block)
    if n > room:
        raise _too_large(SNAPPY, limit)
    out = bytearray(n)
    if cramjam.snappy.decompress_raw_into(block, out) != n:
        raise DecompressionError("snappy: block shorter than its stated length")
    return out


def _snappy_decompress(data, limit: int) -> bytes:
    data = bytes(data)
    if not data.startswith(_XERIAL_MAGIC):
        return _snappy_block(data, limit, limit)
    out = []
    pos = 16
    total = 0
    while pos < len(data):
        (n,) = struct.unpack_from(">i", data, pos)
        pos += 4
        if n < 0 or pos + n > len(data):
            raise DecompressionError("snappy: truncated xerial block")
        block = _snappy_block(data[pos : pos + n], limit - total, limit)
        total += len(block)
        out.append(block)
        pos += n
    return b"".join(out)
