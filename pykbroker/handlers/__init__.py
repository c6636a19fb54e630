"""Request handlers, one module per API family; each registers (api_key, min, max, fn).

A handler takes (RequestContext, request) and returns a response body (a dict of the response's
fields, in kafka-python's snake_case names), an awaitable of one, raw frame bytes/parts, or None
for no response (acks=0).
"""

from protocol.apis import ApiRegistry

REGISTRY = ApiRegistry()

from . import (  # noqa: E402,F401  (registration happens on import)
    acls,
    admin,
    api_versions,
    configs,
    consumer_groups,
    delegation_tokens,
    features,
    fetch,
    groups,
    list_offsets,
    metadata,
    offsets,
    produce,
    producers,
    quotas,
    reassignment,
    replication,
    sasl,
    scram,
    share,
    txn,
)
