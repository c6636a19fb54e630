"""Message bodies, through kafka-python's JSON-schema message classes (`kafka.protocol.*`).

Those classes are generated from Apache Kafka's own message specs, so field names and version
ranges are Kafka's (in snake_case). This module is the only place that touches them: the rest
of the broker sees decoded request objects (attribute access) and builds responses as plain
dicts, which are converted here.
"""

from __future__ import annotations

import struct
import types
from functools import cache
from importlib import resources
from typing import Any

import kafka.protocol.admin  # noqa: F401  (imported for their message classes)
import kafka.protocol.consumer  # noqa: F401
import kafka.protocol.metadata  # noqa: F401
import kafka.protocol.producer  # noqa: F401
from kafka.protocol.api_message import ApiMessage

from . import schemas
from .apis import ApiKey
from .framing import HEADER_FIXED, response_header

_INT32 = struct.Struct(">i")


_EXTRA_CLASSES: list[type] = []  # strong references: __subclasses__() holds only weak ones


def _load_extra_specs() -> None:
    """Make a message class of each spec in `protocol/schemas` (the messages kafka-python lacks),
    the way kafka-python makes its own: the class name is the spec's file name."""
    bundled = {(c.__name__) for c in _all_subclasses(ApiMessage)}
    for entry in sorted(resources.files(schemas).iterdir(), key=lambda e: e.name):
        name, dot, ext = entry.name.partition(".")
        if ext != "json" or name in bundled:
            continue
        _EXTRA_CLASSES.append(types.new_class(name, (ApiMessage,), {"load_json": schemas.__name__}))


def _all_subclasses(cls: type) -> list[type]:
    out, stack = [], list(cls.__subclasses__())
    while stack:
        sub = stack.pop()
        out.append(sub)
        stack.extend(sub.__subclasses__())
    return out


def _message_classes() -> dict[tuple[int, str], type[ApiMessage]]:
    found: dict[tuple[int, str], type[ApiMessage]] = {}
    stack = list(ApiMessage.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if getattr(cls, "_class_version", None) is None and getattr(cls, "_json", None):
            found[(cls.API_KEY, cls.type)] = cls
    return found


_load_extra_specs()
_CLASSES = _message_classes()


def request_class(api_key: int) -> type[ApiMessage]:
    return _CLASSES[(api_key, "request")]


def response_class(api_key: int) -> type[ApiMessage]:
    return _CLASSES[(api_key, "response")]


@cache
def request_is_flexible(api_key: int, api_version: int) -> bool:
    cls = _CLASSES.get((api_key, "request"))
    return cls is not None and cls.flexible_version_q(api_version)


@cache
def response_is_flexible(api_key: int, api_version: int) -> bool:
    # ApiVersions responses always use header v0, so that a client that does not yet know the
    # broker's versions can read them (KIP-511).
    if api_key == ApiKey.API_VERSIONS:
        return False
    cls = _CLASSES.get((api_key, "response"))
    return cls is not None and cls.flexible_version_q(api_version)


@cache
def response_has_throttle_time(api_key: int) -> bool:
    """Whether a response has a throttle_time_ms field (in the versions that carry it)."""
    cls = _CLASSES.get((api_key, "response"))
    return cls is not None and "throttle_time_ms" in cls._struct.fields


class MalformedRequest(ValueError):
    """A request body that cannot be read per its schema; the connection must close (Kafka's
    generated readers throw on the same input, and its SocketServer closes the connection)."""


def decode_request(api_key: int, api_version: int, buf, offset: int) -> Any:
    """Decode a request body, rejecting what Kafka's generated code rejects: a length running
    past the end, and a null (negative length) in a field that is not nullable in this version
    (kafka-python decodes both without complaint)."""
    view = memoryview(buf)[offset:]
    request, end = _request_decoder(api_key, api_version)(view, 0)
    if end > len(view):  # a length ran past the end (slicing doesn't fail; Kafka's reads do)
        raise MalformedRequest(f"request body truncated: {end - len(view)} bytes missing")
    _check_nulls(request, _null_plan(api_key, api_version))
    return request


@cache
def _request_decoder(api_key: int, api_version: int):
    """kafka-python's generated decoder, called directly so that its end position is seen."""
    cls = request_class(api_key)
    flexible = cls.flexible_version_q(api_version)
    return cls._struct.compiled_decode_from(
        api_version, compact=flexible, tagged=flexible, data_class=cls[None]
    )


# A null-check plan: (field name, nullable, kind, plan of the nested struct) for each untagged
# field that can be null on the wire and either must not be, or holds structs that must be
# checked. Fields of fixed size (ints, bools, uuids) can't be null and aren't listed.
_LEAF, _STRINGS, _STRUCT, _STRUCTS = range(4)
_NULLABLE_TYPES = ("string", "bytes", "records")


@cache
def _null_plan(api_key: int, api_version: int) -> tuple:
    return _plan_for(request_class(api_key)._struct, api_version)


def _plan_for(struct, version: int) -> tuple:
    plan = []
    for f in struct.untagged_fields(version):
        nullable = f.nullable_for_version_q(version)
        if f.is_struct_array():
            entry = (f.name, nullable, _STRUCTS, _plan_for(f.array_of, version))
        elif f.is_struct():
            entry = (f.name, nullable, _STRUCT, _plan_for(f, version))
        elif f.is_array():
            strings = f.array_of.type_str in _NULLABLE_TYPES
            entry = (f.name, nullable, _STRINGS if strings else _LEAF, ())
        elif f.type_str in _NULLABLE_TYPES:
            entry = (f.name, nullable, _LEAF, ())
        else:
            continue
        if not nullable or entry[3] or entry[2] == _STRINGS:
            plan.append(entry)
    return tuple(plan)


def _check_nulls(obj, plan: tuple) -> None:
    for name, nullable, kind, inner in plan:
        value = getattr(obj, name)
        if value is None:
            if nullable:
                continue
            raise MalformedRequest(f"non-nullable field {name} was serialized as null")
        if kind == _STRUCTS:
            if inner:
                for item in value:
                    _check_nulls(item, inner)
        elif kind == _STRUCT:
            _check_nulls(value, inner)
        elif kind == _STRINGS and None in value:
            raise MalformedRequest(f"non-nullable field {name} element was serialized as null")


def decode_response(api_key: int, api_version: int, buf, offset: int = 0) -> Any:
    view = memoryview(buf)[offset:]
    return response_class(api_key).decode(view, version=api_version)


def _container(cls, version: int, value: Any) -> Any:
    """Turn nested dicts into kafka-python data containers of the right (nested) types."""
    if not isinstance(value, dict):
        return value
    fields = cls._struct.fields
    kwargs = {}
    for name, v in value.items():
        field = fields[name]
        if v is not None and field.is_struct_array():
            v = [_container(field.data_class, version, item) for item in v]
        elif v is not None and field.is_struct():
            v = _container(field.data_class, version, v)
        kwargs[name] = v
    return cls(version=version, **kwargs)


def encode_body(
    api_key: int, api_version: int, body: dict | Any, *, request: bool = False
) -> bytes:
    cls = request_class(api_key) if request else response_class(api_key)
    msg = _container(cls, api_version, body)
    return bytes(msg.encode(version=api_version))


def encode_response(api_key: int, api_version: int, correlation_id: int, body: dict | Any) -> bytes:
    """A whole response frame: size, header (v0 or v1), body."""
    payload = response_header(correlation_id, response_is_flexible(api_key, api_version))
    payload += encode_body(api_key, api_version, body)
    return _INT32.pack(len(payload)) + payload


def encode_request(
    api_key: int, api_version: int, correlation_id: int, client_id: str | None, body: dict | Any
) -> bytes:
    """A whole request frame (header v1, or v2 when flexible); used by the broker's own clients."""
    header = HEADER_FIXED.pack(api_key, api_version, correlation_id)
    if client_id is None:
        header += b"\xff\xff"
    else:
        cid = client_id.encode()
        header += len(cid).to_bytes(2, "big") + cid
    if request_is_flexible(api_key, api_version):
        header += b"\x00"
    payload = header + encode_body(api_key, api_version, body, request=True)
    return _INT32.pack(len(payload)) + payload
