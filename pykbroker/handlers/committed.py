"""Answering only once a change is stored: in a cluster, topic changes are written to ZooKeeper
in the background, and CreateTopics, CreatePartitions and AlterConfigs wait for that write (as
Kafka answers them after its znodes are written). A single broker stores them at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from protocol.errors import ErrorCode, KafkaError


def pending_write(broker, name: str, result: dict, out: list) -> None:
    """Note the in-flight write of topic `name`'s latest change, for `result`'s answer."""
    write = broker.metadata.committed(name)
    if write is not None:
        out.append((result, write))


async def wait_committed(broker, pending: list[tuple[dict, Awaitable]]) -> None:
    """Wait for each write (bounded by request.timeout.ms); a write that failed or didn't end
    in time turns its result into an error."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + broker.config.get("request.timeout.ms") / 1000
    for result, write in pending:
        try:
            await asyncio.wait_for(asyncio.shield(write), max(deadline - loop.time(), 0))
        except KafkaError as e:
            result.update(error_code=e.code, error_message=e.message)
        except TimeoutError:
            result.update(
                error_code=ErrorCode.REQUEST_TIMED_OUT,
                error_message="Timed out waiting for the change to be written to ZooKeeper.",
            )
        except (
            Exception
        ) as e:  # e.g. the ZooKeeper session lost mid-write: an answer, not a hang-up
            result.update(error_code=ErrorCode.UNKNOWN_SERVER_ERROR, error_message=repr(e))
