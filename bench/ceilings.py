"""Ceilings measured in the same run: what this machine can do without the broker.

- loopback TCP between two processes (bytes/s), 1 MiB writes, and a request/response
  round trip (the floor under any end-to-end latency);
- the same stream over TLS (Python's ssl on both ends, OpenSSL's default suite): what
  encrypting and decrypting costs one core each, the ceiling of an SSL listener;
- sequential file write (including the final fsync) and read (page cache) in 1 MiB chunks,
  in the same temporary folder the broker's log dir would use.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import tempfile
import time

from .common import percentile

CHUNK = 1 << 20


def _sender(port: int, seconds: float, tls: bool = False) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    if tls:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # a ceiling: encryption only
        sock = ctx.wrap_socket(sock)
    buf = b"\0" * CHUNK
    with sock:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            sock.sendall(buf)


def _stream(seconds: float, ctx=None) -> tuple[float, str | None]:
    """(bytes/s, cipher suite or None) from a sender process to this one over 127.0.0.1,
    through TLS when `ctx` (a server context) is given."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        proc = mp.get_context("spawn").Process(
            target=_sender, args=(srv.getsockname()[1], seconds, ctx is not None)
        )
        proc.start()
        conn, _ = srv.accept()
        cipher = None
        if ctx is not None:
            conn = ctx.wrap_socket(conn, server_side=True)
            cipher = conn.cipher()[0]
        total = 0
        buf = bytearray(CHUNK)
        t0 = None
        with conn:
            while True:
                try:
                    n = conn.recv_into(buf)
                except (OSError, EOFError):  # a TLS peer may close without close_notify
                    n = 0
                if not n:
                    break
                if t0 is None:
                    t0 = time.monotonic()
                total += n
        elapsed = time.monotonic() - t0
        proc.join()
    return total / elapsed, cipher


def tcp_throughput(seconds: float = 3.0) -> float:
    """Bytes/s from one process to another over 127.0.0.1."""
    return _stream(seconds)[0]


def tls_throughput(certfile: str, keyfile: str, seconds: float = 3.0) -> tuple[float, str]:
    """(bytes/s, cipher suite) of a TLS stream from one process to another over 127.0.0.1; the
    receiving end holds `certfile`/`keyfile`."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile, keyfile)
    return _stream(seconds, ctx)


def _echo(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            data = s.recv(4096)
            if not data:
                return
            s.sendall(data)


def tcp_round_trip(count: int = 5000, size: int = 1024) -> dict[str, float]:
    """Round trip of a `size`-byte message to another process and back: p50/p99/p999 (ms)."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        proc = mp.get_context("spawn").Process(target=_echo, args=(srv.getsockname()[1],))
        proc.start()
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        msg = b"x" * size
        samples = []
        with conn:
            for _ in range(count):
                t0 = time.perf_counter()
                conn.sendall(msg)
                got = 0
                while got < size:
                    got += len(conn.recv(size - got))
                samples.append((time.perf_counter() - t0) * 1000)
        proc.join()
    samples.sort()
    return {q: percentile(samples, v) for q, v in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999))}


def file_write_read(size: int = 512 << 20, folder: str | None = None) -> tuple[float, float]:
    """(write bytes/s including fsync, read bytes/s from the page cache) for one file."""
    buf = os.urandom(CHUNK)
    fd, path = tempfile.mkstemp(prefix="bench-ceiling-", dir=folder)
    try:
        t0 = time.monotonic()
        written = 0
        while written < size:
            written += os.write(fd, buf)
        os.fsync(fd)
        write_bps = written / (time.monotonic() - t0)
        os.lseek(fd, 0, os.SEEK_SET)
        t0 = time.monotonic()
        read = 0
        while True:
            chunk = os.read(fd, CHUNK)
            if not chunk:
                break
            read += len(chunk)
        read_bps = read / (time.monotonic() - t0)
    finally:
        os.close(fd)
        os.unlink(path)
    return write_bps, read_bps
