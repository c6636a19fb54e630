"""EmbeddedBroker: a real broker on an ephemeral port, in a background thread of this process.

    with EmbeddedBroker() as broker:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers)

Also an async context manager (`async with EmbeddedBroker() as broker:`); the broker always runs
on its own thread and event loop, so blocking clients in the caller's thread don't stall it.

It starts from the shipped config/server.properties (development values: consumer groups form
at once, short session timeouts allowed), or from `properties` (a path; None for Kafka's
built-in defaults alone), then `overrides`. Its data directory and listener are its own: the
file's log.dirs/log.dir and listeners are not used.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
from typing import Any

from pykbroker.config import SHIPPED_PROPERTIES, BrokerConfig, load_properties

# Keys of a properties file an embedded broker replaces with its own.
_OWN_KEYS = ("log.dirs", "log.dir", "listeners", "advertised.listeners")


class EmbeddedBroker:
    def __init__(self, data_dir: str | None = None, overrides: dict[str, Any] | None = None,
                 host: str = "127.0.0.1", port: int = 0,
                 properties: str | os.PathLike | None = SHIPPED_PROPERTIES):  # fmt: skip
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="pykbroker-")
        props = load_properties(os.fspath(properties)) if properties is not None else {}
        for key in _OWN_KEYS:
            props.pop(key, None)
        props.update({"log.dir": self.data_dir, "listeners": f"PLAINTEXT://{host}:{port}"})
        props.update({k: str(v) for k, v in (overrides or {}).items()})
        self.config = BrokerConfig(props)
        self.broker = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        return self.broker.port

    @property
    def bootstrap_servers(self) -> str:
        host, port = self.broker.bound[0]
        return f"{host}:{port}"

    @property
    def metrics_url(self) -> str | None:
        """http://host:port/metrics when started with the `metrics.port` override (0: any)."""
        server = self.broker.metrics_server
        if server is None:
            return None
        return f"http://{self.broker.bound[0][0]}:{server.port}/metrics"

    @property
    def console_url(self) -> str | None:
        """http://host:port/ of the web console when started with `console.port` (0: any)."""
        console = self.broker.console
        if console is None:
            return None
        return f"http://{self.broker.bound[0][0]}:{console.port}/"

    def start(self) -> EmbeddedBroker:
        import uvloop

        from pykbroker.broker import Broker
        from pykbroker.logs import configure_for_embedding

        configure_for_embedding()

        ready = threading.Event()

        def run() -> None:
            loop = uvloop.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self.broker = Broker(self.config)
                loop.run_until_complete(self.broker.start())
            except BaseException as e:  # surfaced in start()
                self._error = e
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="pykbroker", daemon=True)
        self._thread.start()
        ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def call(self, fn, *args) -> Any:
        """Run fn(*args) on the broker's loop (for tests that inspect broker state)."""

        async def invoke():
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(invoke(), self._loop).result(30)

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        if self.broker is not None:
            asyncio.run_coroutine_threadsafe(self.broker.stop(), self._loop).result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._thread = None

    def cleanup(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.cleanup()

    async def __aenter__(self) -> EmbeddedBroker:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc) -> None:
        await asyncio.to_thread(self.stop)
        self.cleanup()
