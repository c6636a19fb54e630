"""HTTP helpers for the web console tests (tests/test_console_*.py)."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

from wire import wait_for  # noqa: F401  (the tests import it from here)


def request(url: str, method: str = "GET", path: str = "/", body=None, headers=None,
            raw: bytes | None = None):  # fmt: skip
    """(status, headers, parsed JSON or bytes) of one request to the console at `url`."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=20)
    try:
        hdrs = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        payload = r.read()
        if r.getheader("Content-Type", "").startswith("application/json"):
            payload = json.loads(payload)
        return r.status, dict(r.getheaders()), payload
    finally:
        conn.close()


def api(url: str, method: str, path: str, body=None, expect: int = 200):
    status, _, data = request(url, method, path, body)
    assert status == expect, (status, data)
    return data


class EventStream:
    """A text/event-stream response read event by event."""

    def __init__(self, url: str, path: str, headers: dict | None = None):
        u = urlsplit(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=20)
        self.conn.request("GET", path, headers=headers or {})
        self.response = self.conn.getresponse()

    def next_event(self) -> tuple[str, dict]:
        """The next named event (comments and retry lines skipped)."""
        name, data = "message", []
        while True:
            line = self.response.readline()
            if not line:
                raise EOFError("event stream closed")
            line = line.decode().rstrip("\n")
            if line == "":
                if data:
                    return name, json.loads("\n".join(data))
                name = "message"
                continue
            field, _, value = line.partition(":")
            if field == "event":
                name = value.strip()
            elif field == "data":
                data.append(value.strip())

    def close(self) -> None:
        self.conn.close()
