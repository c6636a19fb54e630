"""What every Python driver shares: its command line, checks, and the result line it prints.

A driver is run once per feature:

    python drivers/<client>.py FEATURE --bootstrap 127.0.0.1:PORT --prefix NAME [--role member]

It prints progress on stderr and, last, one line `RESULT {"status": ..., "detail": ...}` on
stdout, where status is `pass`, `fail` or `n/a` (the client library has no such feature).
Topic `<prefix>.<suffix>` for each of the feature's topics was created by the runner.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable


class NotSupported(Exception):
    """The client library under test has no way to do this."""


class CheckFailed(AssertionError):
    pass


def check(condition: object, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def deadline_loop(seconds: float, what: str):
    """Iterate until the caller breaks; raise CheckFailed after `seconds` (no fixed sleeps)."""
    end = time.monotonic() + seconds
    while True:
        if time.monotonic() > end:
            raise CheckFailed(f"timed out after {seconds:.0f}s waiting for {what}")
        yield


class Context:
    def __init__(self, args: argparse.Namespace):
        self.bootstrap: str = args.bootstrap
        self.prefix: str = args.prefix
        self.role: str = args.role
        self.feature: str = args.feature
        self.host, port = self.bootstrap.rsplit(":", 1)
        self.port = int(port)
        self.group = f"{self.prefix}.group"

    def topic(self, suffix: str = "t") -> str:
        return f"{self.prefix}.{suffix}"

    def spawn(self, role: str) -> subprocess.Popen:
        """This driver again, for the same feature, in another role (e.g. a group member)."""
        cmd = [sys.executable, "-u", sys.argv[0], self.feature, "--bootstrap", self.bootstrap,
               "--prefix", self.prefix, "--role", role]  # fmt: skip
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def emit(status: str, detail: str = "") -> None:
    print("RESULT " + json.dumps({"status": status, "detail": detail}), flush=True)


def main(features: dict[str, Callable[[Context], str | None]]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("feature")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--role", default="main")
    args = p.parse_args()
    fn = features.get(args.feature)
    if fn is None:
        emit("n/a", "no driver for this feature")
        sys.exit(3)
    ctx = Context(args)
    try:
        detail = fn(ctx)
    except NotSupported as e:
        emit("n/a", str(e))
        code = 3
    except CheckFailed as e:
        emit("fail", str(e))
        code = 1
    except BaseException as e:  # a client error is a failure of the feature, reported with its type
        traceback.print_exc()
        emit("fail", f"{type(e).__name__}: {e}")
        code = 1
    else:
        emit("pass", detail or "")
        code = 0
    sys.stdout.flush()
    sys.stderr.flush()
    # Some clients keep non-daemon threads alive; the result is out, so leave now.
    os._exit(code)


# Shared expectations, so every driver checks the same thing.
def pc_records(n: int = 10) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """produce_consume: (key, value, headers) for n records."""
    return [
        (f"key-{i}".encode(), f"value-{i}".encode(), [("h1", f"hv-{i}".encode()), ("h2", b"")])
        for i in range(n)
    ]


def compressible(i: int) -> bytes:
    return (f"record-{i:05d}-" + "abcdefgh" * 32).encode()


def big_value(size: int) -> bytes:
    return os.urandom(size)
