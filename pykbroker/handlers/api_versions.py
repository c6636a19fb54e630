"""ApiVersions: derived from the registry, so it advertises exactly what is served."""

from protocol.apis import ApiKey
from protocol.errors import ErrorCode

from . import REGISTRY


@REGISTRY.register(ApiKey.API_VERSIONS, 0, 4)
def handle_api_versions(ctx, request) -> dict:
    return {
        "error_code": ErrorCode.NONE,
        "api_keys": [
            {"api_key": key, "min_version": lo, "max_version": hi}
            for key, lo, hi in REGISTRY.versions()
        ],
        "throttle_time_ms": 0,
    }
