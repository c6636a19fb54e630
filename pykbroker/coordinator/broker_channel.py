"""Connections from this broker to the others, for the transaction coordinator's own requests:
WriteTxnMarkers to partition leaders, and AddPartitionsToTxn (verify only) from a partition
leader to the coordinator of a transactional id (Kafka's TransactionMarkerChannelManager and
AddPartitionsToTxnManager network clients).

One connection per destination broker, opened on first use; requests are pipelined and matched
to their responses by correlation id. Any failure closes the connection and fails every request
waiting on it with ConnectionError; the next request reconnects.
"""

from __future__ import annotations

import asyncio
import struct
from typing import TYPE_CHECKING, Any

import structlog

from protocol import codec

if TYPE_CHECKING:
    from pykbroker.broker import Broker

log = structlog.get_logger(__name__)

_SIZE = struct.Struct(">i")


class BrokerChannel:
    def __init__(self, broker: Broker, node_id: int, client_id: str):
        self.broker = broker
        self.node_id = node_id
        self.client_id = client_id
        self.correlation_id = 0
        self.pending: dict[int, tuple[asyncio.Future, int, int]] = {}
        self.writer: asyncio.StreamWriter | None = None
        self.reauth_at: float | None = None  # when the SASL session wants re-authenticating
        self.reader_task: asyncio.Task | None = None
        self._connecting: asyncio.Future | None = None

    async def _connect(self) -> None:
        if self.writer is not None:
            reauth_at = self.reauth_at
            if reauth_at is None or self.pending or asyncio.get_running_loop().time() < reauth_at:
                return
            # The SASL session is ending (KIP-368): this channel's reader task owns the socket,
            # so rather than re-authenticate in-band, a fresh connection between requests.
            self.close("session_reauthentication")
        if self._connecting is not None:
            await asyncio.shield(self._connecting)
            return
        loop = asyncio.get_running_loop()
        self._connecting = loop.create_future()
        try:
            node = next(
                (b for b in self.broker.metadata.brokers() if b.node_id == self.node_id), None
            )
            if node is None:
                raise ConnectionError(f"broker {self.node_id} is not alive")
            timeout = self.broker.config.get("request.timeout.ms") / 1000
            security = self.broker.inter_broker
            if security is None:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(node.host, node.port), timeout
                )
                self.reauth_at = None
            else:  # the inter-broker listener's TLS and SASL
                reader, writer, self.reauth_at = await security.open_connection(
                    node.host, node.port, self.client_id, timeout
                )
            self.writer = writer
            self.reader_task = loop.create_task(self._read_loop(reader, writer))
            self._connecting.set_result(None)
        except BaseException as e:
            self._connecting.set_exception(ConnectionError(repr(e)))
            self._connecting.exception()  # retrieved: waiters get it through shield
            raise ConnectionError(f"cannot connect to broker {self.node_id}: {e!r}") from None
        finally:
            self._connecting = None

    async def request(self, api_key: int, version: int, body: dict, timeout_s: float) -> Any:
        await self._connect()
        self.correlation_id = (self.correlation_id + 1) & 0x7FFFFFFF
        cid = self.correlation_id
        fut = asyncio.get_running_loop().create_future()
        self.pending[cid] = (fut, api_key, version)
        self.writer.write(codec.encode_request(api_key, version, cid, self.client_id, body))
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            self.close("request_timed_out")
            raise ConnectionError(f"request to broker {self.node_id} timed out") from None
        finally:
            self.pending.pop(cid, None)

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = _SIZE.unpack(await reader.readexactly(4))[0]
                frame = await reader.readexactly(size)
                cid = _SIZE.unpack_from(frame)[0]
                entry = self.pending.get(cid)
                if entry is None:
                    continue  # timed out meanwhile
                fut, api_key, version = entry
                offset = 4 + (1 if codec.response_is_flexible(api_key, version) else 0)
                try:
                    response = codec.decode_response(api_key, version, frame, offset)
                except Exception as e:
                    if not fut.done():
                        fut.set_exception(ConnectionError(f"undecodable response: {e!r}"))
                    continue
                if not fut.done():
                    fut.set_result(response)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.debug("broker_channel_closed", node=self.node_id, error=repr(e))
        finally:
            if self.writer is writer:
                self._fail_pending(f"connection to broker {self.node_id} closed")
                writer.close()
                self.writer = None

    def _fail_pending(self, why: str) -> None:
        for fut, _, _ in self.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError(why))
        self.pending.clear()

    def close(self, why: str = "closed") -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.close()
        if self.reader_task is not None:
            self.reader_task.cancel()
            self.reader_task = None
        self._fail_pending(why)


class BrokerChannels:
    """The channels of one broker, by destination node id."""

    def __init__(self, broker: Broker, client_id: str):
        self.broker = broker
        self.client_id = client_id
        self.channels: dict[int, BrokerChannel] = {}

    def get(self, node_id: int) -> BrokerChannel:
        ch = self.channels.get(node_id)
        if ch is None:
            ch = self.channels[node_id] = BrokerChannel(self.broker, node_id, self.client_id)
        return ch

    def close(self) -> None:
        for ch in self.channels.values():
            ch.close()
        self.channels.clear()
