"""ApiVersions: derived from the registry, so it advertises exactly what is served.

Every client connection starts with ApiVersions, and encoding its ~35 entries through the codec
costs milliseconds; a burst of new connections would hold the event loop for that long each
(the fuzzer's 200-connection bursts stalled it 0.8 s). The body only changes with the registry,
so it is encoded once per version and each response is just a header in front of it.
"""

from functools import lru_cache

from protocol import codec
from protocol.apis import ApiKey
from protocol.errors import ErrorCode
from protocol.framing import response_header
from pykbroker.features import FEATURES

from . import REGISTRY, share


@lru_cache(maxsize=16)
def _body(version: int, versions: tuple, epoch: int, finalized: tuple) -> bytes:
    body = {
        "error_code": ErrorCode.NONE,
        "api_keys": [{"api_key": k, "min_version": lo, "max_version": hi} for k, lo, hi in versions],
        "throttle_time_ms": 0,
    }  # fmt: skip
    if version >= 3:
        # Features supported from level 0 are left out before v4 (KAFKA-17011: older clients
        # refuse a minimum of 0); every one of ours starts at 0.
        body["supported_features"] = [
            {"name": f.name, "min_version": f.min_version, "max_version": f.max_version}
            for f in sorted(FEATURES.values(), key=lambda f: f.name)
            if version >= 4 or f.min_version > 0
        ]
        body["finalized_features_epoch"] = epoch
        body["finalized_features"] = [
            {"name": name, "max_version_level": lvl, "min_version_level": lvl}
            for name, lvl in finalized
        ]
    return codec.encode_body(ApiKey.API_VERSIONS, version, body)


@REGISTRY.register(ApiKey.API_VERSIONS, 0, 4)
def handle_api_versions(ctx, request) -> bytes:
    versions = REGISTRY.versions()
    if not share.enabled(ctx.broker):  # Kafka hides them until share.version is finalized
        versions = [v for v in versions if v[0] not in share.SHARE_APIS]
    metadata = ctx.broker.metadata
    body = _body(
        ctx.api_version, tuple(versions), metadata.features_epoch,
        tuple(sorted(metadata.features.items())),
    )  # fmt: skip
    # ApiVersions responses always have header v0 (KIP-511).
    payload = response_header(ctx.header.correlation_id, False) + body
    return len(payload).to_bytes(4, "big") + payload
