"""Ports for servers that come back on the same port: a cluster's brokers and ZooKeeper, a
broker killed and started again on its data.

A port the kernel hands out for a bind to port 0 lies in its ephemeral range, where every
outgoing connection takes its local port too: while a broker is down between a kill and its
restart, a client connection of a test running alongside (`make test` runs three at a time)
can take that port, and the restart fails with `address already in use`. These ports are
picked below that range instead, where only another explicit bind can land, and checked free.
"""

from __future__ import annotations

import random
import socket

LOWEST = 20000  # above the registered ports our own tools use (9092, 9404, 9021, 19092...)


def _ephemeral_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default range starts here


def _kernel_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def restartable_port() -> int:
    """A free port on 127.0.0.1 outside the ephemeral range (one from the kernel where that
    range leaves no room below it)."""
    top = _ephemeral_start()
    if top - LOWEST < 1000:
        return _kernel_port()
    rng = random.SystemRandom()
    for _ in range(100):
        port = rng.randrange(LOWEST, top)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return _kernel_port()
