"""Broker and topic configuration, with Apache Kafka's keys, types and defaults.

A broker is configured by a server.properties file, `--override key=value` flags and, in the
container image, KAFKA_* environment variables (see cli/broker.py). Topic-level configs
(`retention.ms`, `cleanup.policy`, ...) take their defaults from the broker's `log.*` synonyms,
the way Kafka's LogConfig does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

LONG_MAX = (1 << 63) - 1
INT_MAX = (1 << 31) - 1


class ConfigError(ValueError):
    """An unknown key or a value of the wrong type or range; the message names the key."""


def default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return os.path.join(base, "pykbroker", "data")


# The shipped configuration (config/server.properties in the repository, package data in the
# wheel): what a broker starts from unless given another file.
SHIPPED_PROPERTIES = str(Path(__file__).with_name("etc") / "server.properties")


# --- validators ---------------------------------------------------------------------------


# authorizer.class.name values that mean "Kafka's ACL authorizer" (pykbroker/acl/).
AUTHORIZER_CLASSES = frozenset((
    "kafka.security.authorizer.AclAuthorizer",
    "kafka.security.auth.SimpleAclAuthorizer",
    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
))  # fmt: skip


def at_least(lo):
    def check(v):
        if v < lo:
            return f"Value must be at least {lo}"
        return None

    return check


def between(lo, hi):
    def check(v):
        if v != v or v < lo:  # NaN fails too
            return f"Value must be at least {lo}"
        if v > hi:
            return f"Value must be no more than {hi}"
        return None

    return check


def one_of(*choices):
    """A string among `choices`; for a list, each item among them. An empty list passes, as
    with Kafka's ValidList (an empty cleanup.policy is valid: neither delete nor compact)."""

    def check(v):
        values = v if isinstance(v, list) else [v]
        if any(x not in choices for x in values):
            return f"String must be one of: {', '.join(choices)}"
        return None

    return check


def either(value, other):
    """`value` itself, or whatever `other` accepts (Kafka's -1 = "use the codec default")."""

    def check(v):
        return None if v == value else other(v)

    return check


def must_be(value, reason: str):
    def check(v):
        return None if v == value else reason

    return check


_KAFKA_VERSION = re.compile(r"(0\.(8|9|10|11)|[123]\.[0-9]+)(\.[0-9]+){0,2}(-IV[0-9]+)?")


def kafka_version(v):
    """A Kafka version string as message.format.version takes it (0.10.2, 2.8-IV1, 3.0-IV1)."""
    return None if _KAFKA_VERSION.fullmatch(v) else f"Version {v} is not a valid version"


def throttled_replicas(v):
    """`*` or a list of partition:broker pairs (leader/follower.replication.throttled.replicas)."""
    if v == ["*"] or all(_PAIR.match(x) for x in v):
        return None
    return "Value must be '*' or a list of partitionId:brokerId pairs"


_CONFIG_TYPE_IDS = {"boolean": 1, "string": 2, "int": 3, "short": 4, "long": 5, "double": 6,
                    "list": 7, "class": 8, "password": 9}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ConfigKey:
    name: str
    type: str  # int, long, double, string, boolean, list, password
    default: Any
    doc: str = ""
    validator: Callable[[Any], str | None] | None = None
    # For topic keys: the broker keys that set the default, first set wins, each with the
    # factor that converts its unit (log.retention.hours -> ms) into this key's unit.
    synonyms: tuple[tuple[str, int], ...] = ()
    read_only: bool = False
    sensitive: bool = False  # values never leave the broker (DescribeConfigs returns null)

    @property
    def type_id(self) -> int:
        """DescribeConfigs' ConfigType (BOOLEAN=1 ... PASSWORD=9)."""
        return _CONFIG_TYPE_IDS.get(self.type, 0)

    @property
    def is_sensitive(self) -> bool:
        return self.sensitive or self.type == "password"

    def parse(self, raw: Any) -> Any:
        """Parse a string (or already-typed value) to this key's type; ConfigError if invalid."""
        value = _parse(self, raw)
        if value is not None and self.validator is not None:
            problem = self.validator(value)
            if problem:
                raise ConfigError(f"Invalid value {raw} for configuration {self.name}: {problem}")
        return value

    def render(self, value: Any) -> str | None:
        """A value as Kafka's tools print it."""
        if value is None:
            return None
        if self.type == "boolean":
            return "true" if value else "false"
        if self.type == "list":
            return ",".join(value)
        return str(value)


_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_PAIR = re.compile(r"[0-9]+:[0-9]+")


def _parse(key: ConfigKey, raw: Any) -> Any:
    """Kafka's ConfigDef.parseType: strings are trimmed, numbers are plain decimal digits."""
    if raw is None:
        return None
    t = key.type
    if t in ("int", "short", "long", "double") and isinstance(raw, bool):
        raw = str(raw)
    if t in ("int", "short", "long"):
        text = str(raw).strip()
        hi = {"int": INT_MAX, "short": (1 << 15) - 1, "long": LONG_MAX}[t]
        if not _INTEGER.fullmatch(text) or not -hi - 1 <= int(text) <= hi:
            raise ConfigError(
                f"Invalid value {raw} for configuration {key.name}: Not a number of type {t.upper()}"
            )
        return int(text)
    if t == "double":
        text = str(raw).strip()
        if not isinstance(raw, (int, float)) and not _DECIMAL.fullmatch(text):
            raise ConfigError(
                f"Invalid value {raw} for configuration {key.name}: Not a number of type DOUBLE"
            )
        return float(text)
    if t == "boolean":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text not in ("true", "false"):
            raise ConfigError(
                f"Invalid value {raw} for configuration {key.name}: Expected value to be either "
                "true or false"
            )
        return text == "true"
    if t == "list":
        if isinstance(raw, list):
            return raw
        return [x.strip() for x in str(raw).split(",") if x.strip()]
    return str(raw).strip() if t != "password" else str(raw)


def _keys(*keys: ConfigKey) -> dict[str, ConfigKey]:
    return {k.name: k for k in keys}


_DAY_MS = 86_400_000
_WEEK_MS = 7 * _DAY_MS

# Kafka's replication throttles (kafka-reassign-partitions --throttle sets and clears them).
REPLICATION_THROTTLES = {
    "leader.replication.throttled.rate": "Leader-side replication throttle",
    "follower.replication.throttled.rate": "Follower-side replication throttle",
    "replica.alter.log.dirs.io.max.bytes.per.second": "Throttle of replica moves between log dirs",
}

BROKER_CONFIGS = _keys(
    ConfigKey("node.id", "int", 1, "The id of this broker.", at_least(0), read_only=True),
    ConfigKey("broker.id", "int", None, "Alias of node.id.", at_least(0), read_only=True),
    ConfigKey(
        "listeners",
        "list",
        ["PLAINTEXT://localhost:9092"],
        "Listener URIs the broker binds, e.g. PLAINTEXT://0.0.0.0:9092.",
        read_only=True,
    ),
    ConfigKey(
        "advertised.listeners",
        "list",
        None,
        "Listener URIs given to clients in metadata; defaults to listeners. A client is given "
        "the addresses of the listener it connected to.",
        read_only=True,
    ),
    ConfigKey(
        "listener.security.protocol.map",
        "list",
        ["PLAINTEXT:PLAINTEXT", "SSL:SSL", "SASL_PLAINTEXT:SASL_PLAINTEXT", "SASL_SSL:SASL_SSL"],
        "Listener name -> security protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL), "
        "NAME:PROTOCOL,...",
        read_only=True,
    ),
    ConfigKey(
        "inter.broker.listener.name",
        "string",
        None,
        "The listener brokers reach each other on (replication, transaction markers); by "
        "default the one named after security.inter.broker.protocol if that is set, else the "
        "one named PLAINTEXT, or else the first. Not with security.inter.broker.protocol.",
        read_only=True,
    ),
    ConfigKey(
        "security.inter.broker.protocol",
        "string",
        "PLAINTEXT",
        "The security protocol brokers use between themselves: the inter-broker listener is "
        "the one named after it (Kafka's ListenerName.forSecurityProtocol). Not with "
        "inter.broker.listener.name.",
        read_only=True,
    ),
    ConfigKey(
        "sasl.mechanism.inter.broker.protocol",
        "string",
        "GSSAPI",
        "The SASL mechanism brokers authenticate to each other with, when the inter-broker "
        "listener is SASL_PLAINTEXT or SASL_SSL: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or "
        "OAUTHBEARER (GSSAPI, Kafka's default, isn't served); the broker's own user name and "
        "password come from the listener's JAAS config (listener.name.<l>.<mechanism>."
        "sasl.jaas.config username/password; OAUTHBEARER: unsecured tokens with the "
        "OAuthBearerLoginModule's unsecuredLoginStringClaim_sub).",
        read_only=True,
    ),
    ConfigKey(
        "log.dirs", "list", None, "Directories where partition logs are kept.", read_only=True
    ),
    ConfigKey(
        "log.dir",
        "string",
        default_data_dir(),
        "Log directory used when log.dirs is not set.",
        read_only=True,
    ),
    ConfigKey(
        "num.partitions",
        "int",
        1,
        "Default number of partitions of auto-created topics.",
        at_least(1),
    ),
    ConfigKey(
        "default.replication.factor",
        "int",
        1,
        "Default replication factor of auto-created topics.",
        at_least(1),
    ),
    ConfigKey(
        "auto.create.topics.enable",
        "boolean",
        True,
        "Create unknown topics on Metadata and Produce requests.",
    ),
    ConfigKey("delete.topic.enable", "boolean", True, "Allow topics to be deleted."),
    # Authorization (pykbroker/acl/): Kafka's ACL authorizer class names turn it on.
    ConfigKey(
        "authorizer.class.name",
        "string",
        "",
        "The authorizer: kafka.security.authorizer.AclAuthorizer or "
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer (ACLs); empty for none.",
        lambda v: (
            None
            if v in AUTHORIZER_CLASSES or v == ""
            else f"Unknown authorizer (known: {', '.join(sorted(AUTHORIZER_CLASSES))})"
        ),
        read_only=True,
    ),  # fmt: skip
    ConfigKey(
        "super.users",
        "string",
        "",
        "Principals allowed everything, separated by semicolons (User:admin;User:bob).",
        read_only=True,
    ),  # fmt: skip
    ConfigKey(
        "allow.everyone.if.no.acl.found",
        "boolean",
        False,
        "Allow an operation on a resource no ACL names at all.",
        read_only=True,
    ),  # fmt: skip
    ConfigKey(
        "message.max.bytes", "int", 1048588, "The largest record batch size allowed.", at_least(0)
    ),
    ConfigKey(
        "socket.request.max.bytes",
        "int",
        104857600,
        "The largest request frame accepted.",
        at_least(1),
    ),
    ConfigKey(
        "queued.max.request.bytes",
        "long",
        104857600,
        "The memory that requests read but not yet answered may hold, across all connections; "
        "when it is used up the broker stops reading from sockets until some is freed (one request "
        "is let through even if larger). -1 for no limit (Kafka's default; ours is bounded).",
    ),
    ConfigKey(
        "connections.max.idle.ms",
        "long",
        600000,
        "Connections with no traffic and no request in progress for this long are closed.",
        at_least(1),
    ),
    # Client quotas and connection limits (Kafka's QuotaConfig and SocketServer keys).
    ConfigKey(
        "quota.window.num",
        "int",
        11,
        "The number of samples to retain in memory for client quotas.",
        at_least(1),
        read_only=True,
    ),
    ConfigKey(
        "quota.window.size.seconds",
        "int",
        1,
        "The time span of each sample for client quotas.",
        at_least(1),
        read_only=True,
    ),
    # Replication throttles' windows (Kafka's ReplicationQuotaManagerConfig).
    ConfigKey(
        "replication.quota.window.num",
        "int",
        11,
        "The number of samples to retain in memory for replication quotas.",
        at_least(1),
        read_only=True,
    ),
    ConfigKey(
        "replication.quota.window.size.seconds",
        "int",
        1,
        "The time span of each sample for replication quotas.",
        at_least(1),
        read_only=True,
    ),
    ConfigKey(
        "max.connections",
        "int",
        INT_MAX,
        "The maximum number of connections the broker "
        "accepts at once; past it the listeners stop accepting until one closes "
        "(per listener: listener.name.<name>.max.connections; the inter-broker listener "
        "is exempt from the broker-wide limit when there are several listeners).",
        at_least(0),
        read_only=True,
    ),
    ConfigKey(
        "max.connections.per.ip",
        "int",
        INT_MAX,
        "The maximum number of connections "
        "from one IP address; a connection past it is closed at once.",
        at_least(0),
        read_only=True,
    ),
    ConfigKey(
        "max.connections.per.ip.overrides",
        "string",
        "",
        "Per-IP or hostname overrides "
        "of max.connections.per.ip, host:count,... e.g. 127.0.0.1:200,hostA:50.",
        read_only=True,
    ),
    ConfigKey(
        "max.connection.creation.rate",
        "int",
        INT_MAX,
        "The most connections the "
        "broker accepts per second (per listener: "
        "listener.name.<name>.max.connection.creation.rate); past it accepting waits.",
        at_least(0),
        read_only=True,
    ),
    # --- security (pykbroker/security/): Kafka's keys and defaults; each may be set for one
    # listener as listener.name.<listener>.<key> (SASL keys also per mechanism,
    # listener.name.<listener>.<mechanism>.sasl.jaas.config). ---
    ConfigKey(
        "sasl.enabled.mechanisms",
        "list",
        ["GSSAPI"],
        "SASL mechanisms served on SASL listeners: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, "
        "OAUTHBEARER "
        "(Kafka's default GSSAPI, Kerberos, is not served: set this on SASL listeners).",
        read_only=True,
    ),
    ConfigKey(
        "sasl.jaas.config",
        "password",
        None,
        "JAAS login context for SASL, as Kafka's: for PLAIN, PlainLoginModule with "
        'user_<name>="<password>" options naming the users.',
        read_only=True,
    ),
    ConfigKey(
        "delegation.token.secret.key",
        "password",
        None,
        "The secret that signs delegation tokens (the same on every broker of a cluster); "
        "unset: delegation tokens are off (DELEGATION_TOKEN_AUTH_DISABLED).",
        read_only=True,
    ),
    ConfigKey(
        "delegation.token.max.lifetime.ms",
        "long",
        604800000,
        "The longest a delegation token may live, renewals included.",
        at_least(1),
        read_only=True,
    ),
    ConfigKey(
        "delegation.token.expiry.time.ms",
        "long",
        86400000,
        "How long a delegation token lives before it needs renewing (the default renewal).",
        at_least(1),
        read_only=True,
    ),
    ConfigKey(
        "delegation.token.expiry.check.interval.ms",
        "long",
        3600000,
        "How often expired delegation tokens are removed.",
        at_least(1),
        read_only=True,
    ),
    ConfigKey(
        "sasl.server.callback.handler.class",
        "string",
        None,
        "The server callback handler of a SASL mechanism (set per listener and mechanism, "
        "listener.name.<l>.oauthbearer.sasl.server.callback.handler.class). For OAUTHBEARER: "
        "unset validates unsecured JWTs (Kafka's default); Kafka's "
        "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler "
        "validates signed JWTs against sasl.oauthbearer.jwks.endpoint.url.",
        read_only=True,
    ),
    ConfigKey(
        "sasl.oauthbearer.jwks.endpoint.url",
        "string",
        None,
        "Where the JSON Web Key Set that signs OAUTHBEARER tokens is: a file: URL, or an "
        "http(s) one read at start-up.",
        read_only=True,
    ),
    ConfigKey(
        "sasl.oauthbearer.expected.audience",
        "list",
        [],
        "Audiences (aud) of which an OAUTHBEARER token must name one; empty: not checked.",
        read_only=True,
    ),
    ConfigKey(
        "sasl.oauthbearer.expected.issuer",
        "string",
        None,
        "The issuer (iss) an OAUTHBEARER token must have; unset: not checked.",
        read_only=True,
    ),
    ConfigKey(
        "sasl.oauthbearer.sub.claim.name",
        "string",
        "sub",
        "The OAUTHBEARER token claim holding the principal's name.",
        read_only=True,
    ),
    ConfigKey(
        "sasl.oauthbearer.scope.claim.name",
        "string",
        "scope",
        "The OAUTHBEARER token claim holding its scope.",
        read_only=True,
    ),
    ConfigKey(
        "sasl.oauthbearer.clock.skew.seconds",
        "int",
        30,
        "Clock difference allowed between the token issuer and the broker.",
        at_least(0),
        read_only=True,
    ),
    ConfigKey(
        "sasl.server.max.receive.size",
        "int",
        524288,
        "The largest request accepted before authentication completes.",
        at_least(1),
        read_only=True,
    ),
    ConfigKey(
        "connections.max.reauth.ms",
        "long",
        0,
        "When positive, a SASL client's session lasts at most this long (KIP-368): the "
        "lifetime is sent in SaslAuthenticate v1+ (shorter if the credential, an OAUTHBEARER "
        "token or a delegation token, expires first), the client re-authenticates on the same "
        "connection, and a connection used after its session expired is closed. 0: sessions "
        "end only with a credential's expiry. Per listener and mechanism: "
        "listener.name.<l>.<mechanism>.connections.max.reauth.ms.",
        read_only=True,
    ),
    ConfigKey(
        "connection.failed.authentication.delay.ms",
        "int",
        100,
        "Delay before answering and closing a connection whose authentication failed.",
        at_least(0),
        read_only=True,
    ),
    ConfigKey(
        "ssl.keystore.type",
        "string",
        "JKS",
        "Key store format: PEM, PKCS12 (needs the cryptography package) or JKS (needs pyjks); "
        "pip install 'pykbroker[keystores]' for the last two.",
        read_only=True,
    ),
    ConfigKey(
        "ssl.keystore.location",
        "string",
        None,
        "The key store file: PEM (the private key and the certificate chain), PKCS12 or JKS "
        "(ssl.keystore.type).",
        read_only=True,
    ),
    ConfigKey(
        "ssl.keystore.password",
        "password",
        None,
        "Key store password: required for PKCS12 and JKS, refused with PEM (as in Kafka).",
        read_only=True,
    ),
    ConfigKey(
        "ssl.keystore.certificate.chain",
        "password",
        None,
        "The certificate chain in PEM, inline (with ssl.keystore.key).",
        read_only=True,
    ),
    ConfigKey(
        "ssl.keystore.key",
        "password",
        None,
        "The private key in PEM (PKCS#8), inline.",
        read_only=True,
    ),
    ConfigKey(
        "ssl.key.password",
        "password",
        None,
        "Password of an encrypted private key.",
        read_only=True,
    ),
    ConfigKey(
        "ssl.truststore.type",
        "string",
        "JKS",
        "Trust store format: PEM, PKCS12 or JKS (as ssl.keystore.type).",
        read_only=True,
    ),
    ConfigKey(
        "ssl.truststore.location",
        "string",
        None,
        "File of the CA certificates client certificates are checked against (PEM, PKCS12 or JKS).",
        read_only=True,
    ),
    ConfigKey(
        "ssl.truststore.password",
        "password",
        None,
        "Trust store password (PKCS12, JKS; without it a JKS store is read unchecked, as Java "
        "does).",
        read_only=True,
    ),
    ConfigKey(
        "ssl.truststore.certificates",
        "password",
        None,
        "Trusted CA certificates in PEM, inline.",
        read_only=True,
    ),
    ConfigKey(
        "ssl.endpoint.identification.algorithm",
        "string",
        "https",
        "How a broker checks another broker's certificate on inter-broker TLS connections: "
        "https, its name must match the host it connects to; empty, not checked.",
        read_only=True,
    ),
    ConfigKey(
        "ssl.protocol",
        "string",
        "TLSv1.3",
        "The TLS protocol of the SSL context (the enabled protocols decide).",
        read_only=True,
    ),
    ConfigKey(
        "ssl.enabled.protocols",
        "list",
        ["TLSv1.2", "TLSv1.3"],
        "TLS versions accepted.",
        one_of("TLSv1.2", "TLSv1.3", "TLSv1.1", "TLSv1"),
        read_only=True,
    ),
    ConfigKey(
        "ssl.cipher.suites",
        "list",
        [],
        "Cipher suites (IANA names, as Kafka takes them, or OpenSSL names); empty: "
        "OpenSSL's defaults. TLS 1.3 suites are always OpenSSL's.",
        read_only=True,
    ),
    ConfigKey(
        "ssl.client.auth",
        "string",
        "none",
        "Client certificates: required, requested (checked if sent) or none.",
        one_of("required", "requested", "none"),
        read_only=True,
    ),
    ConfigKey(
        "ssl.principal.mapping.rules",
        "string",
        "DEFAULT",
        "Rules mapping a client certificate's subject DN to a user name: "
        "RULE:<regex>/<replacement>/[LU], ... or DEFAULT (the whole DN).",
        read_only=True,
    ),
    ConfigKey(
        "log.segment.bytes",
        "int",
        1073741824,
        "The maximum size of a single log segment.",
        at_least(14),
    ),
    ConfigKey("log.roll.ms", "long", None, "Roll a new segment after this long.", at_least(1)),
    ConfigKey(
        "log.roll.hours", "int", 168, "Roll a new segment after this many hours.", at_least(1)
    ),
    ConfigKey("log.retention.ms", "long", None, "How long to keep a log segment; -1 for no limit."),
    ConfigKey("log.retention.minutes", "int", None, "log.retention.ms, in minutes."),
    ConfigKey("log.retention.hours", "int", 168, "log.retention.ms, in hours."),
    ConfigKey(
        "log.retention.bytes", "long", -1, "The maximum size of a partition's log; -1 for no limit."
    ),
    ConfigKey(
        "log.retention.check.interval.ms",
        "long",
        300000,
        "How often retention is checked.",
        at_least(1),
    ),
    ConfigKey(
        "log.cleanup.policy",
        "list",
        ["delete"],
        "delete, compact, or both.",
        one_of("delete", "compact"),
    ),
    ConfigKey(
        "log.index.interval.bytes", "int", 4096, "Bytes between offset index entries.", at_least(0)
    ),
    ConfigKey(
        "log.index.size.max.bytes",
        "int",
        10485760,
        "The maximum size of an offset index.",
        at_least(4),
    ),
    ConfigKey(
        "log.flush.interval.messages",
        "long",
        LONG_MAX,
        "Records appended before the log is fsynced.",
        at_least(1),
    ),
    ConfigKey(
        "log.flush.interval.ms",
        "long",
        None,
        "Milliseconds a record may wait before the log is fsynced.",
    ),
    ConfigKey(
        "log.flush.offset.checkpoint.interval.ms",
        "int",
        60000,
        "How often each log's recovery point is saved to recovery-point-offset-checkpoint.",
        at_least(1),
    ),
    ConfigKey(
        "log.flush.scheduler.interval.ms",
        "long",
        LONG_MAX,
        "How often the flusher checks log.flush.interval.ms.",
    ),
    ConfigKey(
        "log.message.timestamp.type",
        "string",
        "CreateTime",
        "CreateTime or LogAppendTime.",
        one_of("CreateTime", "LogAppendTime"),
    ),
    ConfigKey(
        "log.segment.delete.delay.ms",
        "long",
        60000,
        "Delay before a deleted segment's files are removed.",
        at_least(0),
    ),
    ConfigKey("log.cleaner.enable", "boolean", True, "Run the log cleaner for compacted topics."),
    ConfigKey(
        "log.cleaner.backoff.ms",
        "long",
        15000,
        "Sleep between cleaner runs with nothing to clean.",
        at_least(0),
    ),
    ConfigKey(
        "log.cleaner.dedupe.buffer.size",
        "long",
        134217728,
        "Memory for the cleaner's key -> offset map (bounds the keys cleaned per round).",
        at_least(1024 * 1024),
    ),
    ConfigKey(
        "log.cleaner.io.max.bytes.per.second",
        "double",
        1.7976931348623157e308,
        "Throttle on the cleaner's reads plus writes.",
        at_least(1),
    ),
    ConfigKey("log.cleaner.threads", "int", 1, "Cleaner threads (one is used).", at_least(0)),
    ConfigKey(
        "pykbroker.log.cleaner.process",
        "boolean",
        True,
        "Clean logs in a worker process (on another core) rather than a thread of the broker.",
    ),
    ConfigKey(
        "log.cleaner.min.compaction.lag.ms",
        "long",
        0,
        "Minimum age of a record before it may be compacted.",
        at_least(0),
    ),
    ConfigKey(
        "log.cleaner.max.compaction.lag.ms",
        "long",
        LONG_MAX,
        "Maximum time a record stays uncompacted.",
        at_least(1),
    ),
    ConfigKey(
        "log.cleaner.delete.retention.ms",
        "long",
        _DAY_MS,
        "How long tombstones are kept.",
        at_least(0),
    ),
    ConfigKey(
        "log.cleaner.min.cleanable.ratio",
        "double",
        0.5,
        "Minimum dirty ratio before a log is cleaned.",
        between(0, 1),
    ),
    ConfigKey(
        "compression.type",
        "string",
        "producer",
        "Final compression of a topic's batches.",
        one_of("producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"),
    ),
    ConfigKey(
        "min.insync.replicas", "int", 1, "Minimum ISR size for acks=all produce.", at_least(1)
    ),
    ConfigKey(
        "compression.gzip.level",
        "int",
        -1,
        "The gzip level used when compression.type is gzip (1-9, or -1 for the codec default).",
        either(-1, between(1, 9)),
    ),
    ConfigKey(
        "compression.lz4.level",
        "int",
        9,
        "The lz4 level used when compression.type is lz4.",
        between(1, 17),
    ),
    ConfigKey(
        "compression.zstd.level",
        "int",
        3,
        "The zstd level used when compression.type is zstd.",
        between(-131072, 22),
    ),
    ConfigKey(
        "log.roll.jitter.ms", "long", None, "Maximum random jitter subtracted from the roll time."
    ),
    ConfigKey(
        "log.roll.jitter.hours",
        "int",
        0,
        "log.roll.jitter.ms, in hours.",
        at_least(0),
    ),
    ConfigKey("log.preallocate", "boolean", False, "Preallocate segment files."),
    ConfigKey(
        "log.message.timestamp.before.max.ms",
        "long",
        LONG_MAX,
        "Max age of a record's CreateTime relative to the broker clock.",
        at_least(0),
    ),
    ConfigKey(
        "log.message.timestamp.after.max.ms",
        "long",
        LONG_MAX,
        "Max lead of a record's CreateTime over the broker clock.",
        at_least(0),
    ),
    ConfigKey(
        "log.message.timestamp.difference.max.ms",
        "long",
        LONG_MAX,
        "[DEPRECATED] Max difference between a record's CreateTime and the broker clock; "
        "the default of log.message.timestamp.before.max.ms and .after.max.ms left at theirs.",
        at_least(0),
    ),
    ConfigKey(
        "log.message.format.version",
        "string",
        "3.0-IV1",
        "[DEPRECATED] Default of message.format.version. Ignored, as Kafka 3.x ignores it with "
        "an inter-broker protocol of 3.0 or later (removed in Kafka 4.0).",
        kafka_version,
    ),
    ConfigKey(
        "log.message.downconversion.enable",
        "boolean",
        True,
        "[DEPRECATED] Default of message.downconversion.enable. Ignored: Fetch below v4, the only "
        "requests down-conversion served, is not offered (removed in Kafka 4.0).",
    ),
    ConfigKey(
        "log.local.retention.ms",
        "long",
        -2,
        "Local retention of tiered topics (-2: retention.ms). Tiered storage is not supported.",
        at_least(-2),
    ),
    ConfigKey(
        "log.local.retention.bytes",
        "long",
        -2,
        "Local size limit of tiered topics (-2: retention.bytes). Tiered storage is not supported.",
        at_least(-2),
    ),
    ConfigKey(
        "unclean.leader.election.enable",
        "boolean",
        False,
        "Allow out-of-sync replicas to become leader.",
    ),
    ConfigKey(
        "offsets.topic.num.partitions",
        "int",
        50,
        "Partitions of __consumer_offsets.",
        at_least(1),
        read_only=True,
    ),
    ConfigKey(
        "offsets.topic.replication.factor",
        "int",
        1,
        "Replication factor of __consumer_offsets.",
        at_least(1),
    ),
    ConfigKey(
        "offsets.topic.segment.bytes",
        "int",
        104857600,
        "Segment size of __consumer_offsets.",
        at_least(1),
    ),
    ConfigKey(
        "offsets.retention.minutes",
        "int",
        10080,
        "How long committed offsets of an empty group are kept.",
        at_least(1),
    ),
    ConfigKey(
        "offsets.retention.check.interval.ms",
        "long",
        600000,
        "How often stale offsets are removed.",
        at_least(1),
    ),
    ConfigKey(
        "group.initial.rebalance.delay.ms",
        "int",
        3000,
        "Wait for more members before the first rebalance of an empty group.",
        at_least(0),
    ),
    ConfigKey(
        "group.min.session.timeout.ms",
        "int",
        6000,
        "Smallest session timeout a member may ask for.",
    ),
    ConfigKey(
        "group.max.session.timeout.ms",
        "int",
        1800000,
        "Largest session timeout a member may ask for.",
    ),
    ConfigKey("group.max.size", "int", INT_MAX, "Maximum members of one group.", at_least(1)),
    # Share groups (KIP-932). Kafka 4.1 turns them on with the share.version feature; until
    # finalized features exist here, group.share.enable is that switch (off, as in 4.1).
    ConfigKey("group.share.enable", "boolean", False, "Serve share groups (KIP-932)."),
    ConfigKey(
        "group.share.session.timeout.ms",
        "int",
        45000,
        "Session timeout of share group members.",
        at_least(1),
    ),
    ConfigKey(
        "group.share.heartbeat.interval.ms",
        "int",
        5000,
        "Heartbeat interval given to share group members.",
        at_least(1),
    ),
    ConfigKey(
        "group.share.max.size", "int", 200, "Maximum members of one share group.", between(1, 1000)
    ),
    ConfigKey(
        "group.share.record.lock.duration.ms",
        "int",
        30000,
        "How long an acquired record stays locked to its consumer.",
        between(1000, 3600000),
    ),
    ConfigKey(
        "group.share.min.record.lock.duration.ms",
        "int",
        15000,
        "Smallest lock duration a share group may configure.",
        between(1000, 30000),
    ),
    ConfigKey(
        "group.share.max.record.lock.duration.ms",
        "int",
        60000,
        "Largest lock duration a share group may configure.",
        between(30000, 3600000),
    ),
    ConfigKey(
        "group.share.delivery.count.limit",
        "int",
        5,
        "Deliveries of a record before it is archived.",
        between(2, 10),
    ),
    ConfigKey(
        "group.share.partition.max.record.locks",
        "int",
        2000,
        "In-flight records of one share-partition.",
        between(100, 10000),
    ),
    ConfigKey(
        "group.share.max.share.sessions", "int", 2000, "Share sessions a broker keeps.", at_least(1)
    ),
    ConfigKey(
        "share.coordinator.state.topic.num.partitions",
        "int",
        50,
        "Partitions of __share_group_state.",
        at_least(1),
        read_only=True,
    ),
    ConfigKey(
        "share.coordinator.state.topic.replication.factor",
        "int",
        3,
        "Replication factor of __share_group_state.",
        at_least(1),
    ),
    ConfigKey(
        "share.coordinator.state.topic.min.isr",
        "int",
        2,
        "min.insync.replicas of __share_group_state.",
        at_least(1),
    ),
    ConfigKey(
        "share.coordinator.state.topic.segment.bytes",
        "int",
        104857600,
        "Segment size of __share_group_state.",
        at_least(1),
    ),
    ConfigKey(
        "share.coordinator.snapshot.update.records.per.snapshot",
        "int",
        500,
        "Share state updates written between two snapshots of a share-partition.",
        between(0, 500),
    ),
    ConfigKey(
        "share.coordinator.write.timeout.ms",
        "int",
        5000,
        "How long a share state write waits for __share_group_state replication.",
        at_least(1),
    ),
    ConfigKey(
        "group.consumer.session.timeout.ms",
        "int",
        45000,
        "Session timeout of consumer-protocol (KIP-848) group members.",
        at_least(1),
    ),
    ConfigKey(
        "group.consumer.heartbeat.interval.ms",
        "int",
        5000,
        "Heartbeat interval given to consumer-protocol (KIP-848) group members.",
        at_least(1),
    ),
    ConfigKey(
        "group.consumer.assignors",
        "list",
        ["uniform", "range"],
        "Server-side assignors of consumer-protocol groups; the first is the default.",
        lambda v: None if v and set(v) <= {"uniform", "range"} else "unknown assignor",
    ),
    ConfigKey(
        "group.consumer.max.size",
        "int",
        INT_MAX,
        "Maximum members of one consumer-protocol group.",
        at_least(1),
    ),
    ConfigKey(
        "group.consumer.migration.policy",
        "string",
        "bidirectional",
        "Online conversion between classic and consumer groups: bidirectional, upgrade, "
        "downgrade or disabled.",
        one_of("bidirectional", "upgrade", "downgrade", "disabled"),
    ),
    ConfigKey(
        "offset.metadata.max.bytes",
        "int",
        4096,
        "Largest metadata string a committed offset may carry.",
        at_least(0),
    ),
    ConfigKey(
        "offsets.commit.timeout.ms",
        "int",
        5000,
        "How long an offset commit waits for __consumer_offsets replication.",
        at_least(1),
    ),
    ConfigKey(
        "producer.id.expiration.ms",
        "int",
        _DAY_MS,
        "How long a partition keeps the state of a producer that has written nothing since "
        "(its last batch's timestamp), unless it has a transaction open there.",
        at_least(1),
    ),
    ConfigKey(
        "producer.id.expiration.check.interval.ms",
        "int",
        600000,
        "How often producer state past producer.id.expiration.ms is removed.",
        at_least(1),
        read_only=True,
    ),
    ConfigKey(
        "transactional.id.expiration.ms",
        "int",
        _WEEK_MS,
        "How long an idle transactional id is kept.",
        at_least(1),
    ),
    ConfigKey(
        "transaction.max.timeout.ms",
        "int",
        900000,
        "Largest transaction timeout a producer may ask for.",
        at_least(1),
    ),
    ConfigKey(
        "transaction.state.log.num.partitions",
        "int",
        50,
        "Partitions of __transaction_state.",
        at_least(1),
        read_only=True,
    ),
    ConfigKey(
        "transaction.state.log.replication.factor",
        "int",
        3,
        "Replication factor of __transaction_state (at most the live brokers when created).",
        at_least(1),
    ),
    ConfigKey(
        "transaction.state.log.min.isr",
        "int",
        2,
        "min.insync.replicas of __transaction_state (at most its replication factor).",
        at_least(1),
    ),
    ConfigKey(
        "transaction.state.log.segment.bytes",
        "int",
        104857600,
        "Segment size of __transaction_state.",
        at_least(1),
    ),
    ConfigKey(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        "int",
        10000,
        "How often transactions past their timeout are looked for and aborted.",
        at_least(1),
    ),
    ConfigKey(
        "transaction.remove.expired.transaction.cleanup.interval.ms",
        "int",
        3600000,
        "How often transactional ids past transactional.id.expiration.ms are removed.",
        at_least(1),
    ),
    ConfigKey(
        "transaction.partition.verification.enable",
        "boolean",
        True,
        "Accept a transactional batch only for a partition added to its producer's transaction.",
    ),
    ConfigKey(
        "add.partitions.to.txn.retry.backoff.ms",
        "int",
        20,
        "Transactions v2: how long a produce that adds its partition waits before asking the "
        "coordinator again while the previous transaction completes (CONCURRENT_TRANSACTIONS).",
        at_least(1),
    ),
    ConfigKey(
        "add.partitions.to.txn.retry.backoff.max.ms",
        "int",
        100,
        "Transactions v2: how long in all a produce retries adding its partition.",
        at_least(0),
    ),
    ConfigKey(
        "request.timeout.ms",
        "int",
        30000,
        "How long the broker's own requests (transaction markers, state writes) may take.",
        at_least(0),
    ),
    ConfigKey(
        "zookeeper.connect",
        "string",
        None,
        "ZooKeeper connection string; unset for a single-node broker.",
        read_only=True,
    ),
    ConfigKey("zookeeper.session.timeout.ms", "int", 18000, "ZooKeeper session timeout."),
    ConfigKey(
        "replica.lag.time.max.ms",
        "long",
        30000,
        "A follower that has not caught up in this long leaves the ISR.",
    ),
    ConfigKey("replica.fetch.wait.max.ms", "int", 500, "Max wait of a follower's fetch request."),
    ConfigKey(
        "replica.fetch.max.bytes", "int", 1048576, "Bytes per partition a follower fetches at once."
    ),
    ConfigKey("num.replica.fetchers", "int", 1, "Fetcher connections per source broker."),
    ConfigKey(
        "zookeeper.connection.timeout.ms",
        "int",
        None,
        "How long to wait for a ZooKeeper connection; zookeeper.session.timeout.ms if unset.",
    ),
    ConfigKey("replica.fetch.min.bytes", "int", 1, "Min bytes a follower's fetch waits for."),
    ConfigKey(
        "replica.fetch.response.max.bytes",
        "int",
        10485760,
        "Max bytes of a whole follower fetch response.",
    ),
    ConfigKey(
        "replica.fetch.backoff.ms",
        "int",
        1000,
        "Pause after a follower's fetch fails.",
        at_least(0),
    ),
    ConfigKey("replica.socket.timeout.ms", "int", 30000, "Socket timeout of follower fetches."),
    ConfigKey(
        "controlled.shutdown.enable",
        "boolean",
        True,
        "On SIGTERM, move leadership of this broker's partitions to in-sync followers first.",
    ),
    ConfigKey(
        "controlled.shutdown.max.retries",
        "int",
        3,
        "Controlled shutdown attempts before shutting down anyway.",
        at_least(1),
    ),
    ConfigKey(
        "controlled.shutdown.retry.backoff.ms",
        "long",
        5000,
        "How long each controlled shutdown attempt waits for the moves before the next.",
        at_least(0),
    ),
    ConfigKey(
        "auto.leader.rebalance.enable",
        "boolean",
        True,
        "Move leadership back to each partition's preferred replica when it is in sync.",
    ),
    ConfigKey(
        "leader.imbalance.check.interval.seconds",
        "long",
        300,
        "How often the controller checks leader imbalance.",
        at_least(1),
    ),
    ConfigKey(
        "leader.imbalance.per.broker.percentage",
        "int",
        10,
        "Share of a broker's preferred partitions led elsewhere that triggers a rebalance.",
        between(0, 100),
    ),
    ConfigKey(
        "replica.high.watermark.checkpoint.interval.ms",
        "long",
        5000,
        "How often high watermarks are saved to replication-offset-checkpoint.",
        at_least(1),
    ),
    ConfigKey("broker.rack", "string", None, "Rack of this broker.", read_only=True),
    ConfigKey(
        "replica.selector.class",
        "string",
        None,
        "The replica a leader sends consumers to (KIP-392): "
        "org.apache.kafka.common.replica.RackAwareReplicaSelector picks one in the consumer's "
        "client.rack; unset, consumers read from the leader.",
        read_only=True,
    ),
    *(
        ConfigKey(name, "long", 2**63 - 1, f"{what} (bytes/sec).", at_least(0))  # fmt: skip
        for name, what in REPLICATION_THROTTLES.items()
    ),
    ConfigKey(
        "cluster.id",
        "string",
        None,
        "Cluster id; generated and kept in meta.properties when unset.",
        read_only=True,
    ),
    ConfigKey(
        "metrics.port",
        "int",
        None,
        "Port of the Prometheus /metrics endpoint, on the first listener's host; unset (the "
        "default) to disable, 0 for any free port.",
        between(0, 65535),
    ),
    ConfigKey(
        "console.port",
        "int",
        None,
        "Port of the web console (pykbroker's own, not a Kafka key), on the first listener's "
        "host; unset (the default) to disable, 0 for any free port.",
        between(0, 65535),
    ),
    ConfigKey(
        "console.read.only",
        "boolean",
        False,
        "Web console: refuse every change (create, alter, delete topics, reset offsets).",
    ),
    ConfigKey(
        "console.authentication.method",
        "string",
        None,
        "Web console: NONE (every request acts as console.principal) or BASIC (HTTP Basic "
        "credentials checked against the PLAIN users of the SASL listeners and the stored SCRAM "
        "credentials; Bearer tokens too when a listener enables OAUTHBEARER). Unset: BASIC when "
        "the broker has an authorizer or a SASL listener, NONE otherwise.",
        one_of("NONE", "BASIC"),
    ),
    ConfigKey(
        "console.principal",
        "string",
        "User:ANONYMOUS",
        "Web console: the principal requests act as (authorized by the broker's ACLs) when "
        "console.authentication.method is NONE.",
    ),
    ConfigKey(
        "console.allowed.hosts",
        "list",
        [],
        "Web console: host names a request's Host header may carry besides localhost, "
        "127.0.0.1, [::1], the console's host and the advertised listeners' hosts (DNS "
        "rebinding protection).",
    ),
    ConfigKey(
        "fetch.max.bytes",
        "int",
        57671680,
        "Largest fetch response the broker returns.",
        at_least(1024),
    ),
    ConfigKey(
        "max.request.partition.size.limit",
        "int",
        2000,
        "The maximum number of partitions can be served in one request.",
        at_least(1),
    ),
    ConfigKey(
        "max.incremental.fetch.session.cache.slots",
        "int",
        1000,
        "How many incremental fetch sessions (KIP-227) the broker keeps at most.",
        at_least(0),
        read_only=True,
    ),
    ConfigKey(
        "pykbroker.sendfile.min.bytes",
        "int",
        65536,
        "Record regions smaller than this are copied into the response instead of sent with sendfile.",
        at_least(0),
    ),
)


def _topic(name, type_, default, doc, validator=None, synonyms=()):
    return ConfigKey(name, type_, default, doc, validator, tuple(synonyms))


TOPIC_CONFIGS = _keys(
    _topic(
        "cleanup.policy",
        "list",
        ["delete"],
        "delete, compact, or both (compact,delete).",
        one_of("delete", "compact"),
        [("log.cleanup.policy", 1)],
    ),
    _topic(
        "retention.ms",
        "long",
        _WEEK_MS,
        "How long a segment is kept before deletion; -1 for no limit.",
        at_least(-1),
        [
            ("log.retention.ms", 1),
            ("log.retention.minutes", 60_000),
            ("log.retention.hours", 3_600_000),
        ],
    ),
    _topic(
        "retention.bytes",
        "long",
        -1,
        "The maximum size of a partition's log before old segments are deleted.",
        None,
        [("log.retention.bytes", 1)],
    ),
    _topic(
        "segment.bytes",
        "int",
        1073741824,
        "The segment file size.",
        at_least(14),
        [("log.segment.bytes", 1)],
    ),
    _topic(
        "segment.ms",
        "long",
        _WEEK_MS,
        "Roll a segment after this long even if it is not full.",
        at_least(1),
        [("log.roll.ms", 1), ("log.roll.hours", 3_600_000)],
    ),
    _topic(
        "segment.jitter.ms",
        "long",
        0,
        "Random jitter subtracted from segment.ms.",
        at_least(0),
        [("log.roll.jitter.ms", 1), ("log.roll.jitter.hours", 3_600_000)],
    ),
    _topic(
        "segment.index.bytes",
        "int",
        10485760,
        "The size of a segment's offset index.",
        at_least(4),
        [("log.index.size.max.bytes", 1)],
    ),
    _topic(
        "index.interval.bytes",
        "int",
        4096,
        "Bytes between offset index entries.",
        at_least(0),
        [("log.index.interval.bytes", 1)],
    ),
    _topic(
        "max.message.bytes",
        "int",
        1048588,
        "The largest record batch size allowed.",
        at_least(0),
        [("message.max.bytes", 1)],
    ),
    _topic(
        "message.timestamp.type",
        "string",
        "CreateTime",
        "CreateTime or LogAppendTime.",
        one_of("CreateTime", "LogAppendTime"),
        [("log.message.timestamp.type", 1)],
    ),
    _topic(
        "min.compaction.lag.ms",
        "long",
        0,
        "Minimum age of a record before it may be compacted.",
        at_least(0),
        [("log.cleaner.min.compaction.lag.ms", 1)],
    ),
    _topic(
        "max.compaction.lag.ms",
        "long",
        LONG_MAX,
        "Maximum time a record stays uncompacted.",
        at_least(1),
        [("log.cleaner.max.compaction.lag.ms", 1)],
    ),
    _topic(
        "delete.retention.ms",
        "long",
        _DAY_MS,
        "How long tombstones are kept on compacted topics.",
        at_least(0),
        [("log.cleaner.delete.retention.ms", 1)],
    ),
    _topic(
        "min.cleanable.dirty.ratio",
        "double",
        0.5,
        "Minimum dirty ratio before a log is compacted.",
        between(0, 1),
        [("log.cleaner.min.cleanable.ratio", 1)],
    ),
    _topic(
        "file.delete.delay.ms",
        "long",
        60000,
        "Delay before a deleted segment's files are removed.",
        at_least(0),
        [("log.segment.delete.delay.ms", 1)],
    ),
    _topic(
        "flush.messages",
        "long",
        LONG_MAX,
        "Records appended before the log is fsynced.",
        at_least(1),
        [("log.flush.interval.messages", 1)],
    ),
    _topic(
        "flush.ms",
        "long",
        LONG_MAX,
        "Milliseconds a record may wait before the log is fsynced.",
        at_least(0),
        [("log.flush.interval.ms", 1), ("log.flush.scheduler.interval.ms", 1)],
    ),
    _topic(
        "compression.type",
        "string",
        "producer",
        "Final compression of the topic's batches.",
        one_of("producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"),
        [("compression.type", 1)],
    ),
    _topic(
        "min.insync.replicas",
        "int",
        1,
        "Minimum ISR size for acks=all produce.",
        at_least(1),
        [("min.insync.replicas", 1)],
    ),
    _topic(
        "unclean.leader.election.enable",
        "boolean",
        False,
        "Allow out-of-sync replicas to become leader.",
        None,
        [("unclean.leader.election.enable", 1)],
    ),
    _topic(
        "preallocate",
        "boolean",
        False,
        "Preallocate segment files (accepted, not used).",
        None,
        [("log.preallocate", 1)],
    ),
    _topic(
        "message.timestamp.before.max.ms",
        "long",
        LONG_MAX,
        "Max age of a record's CreateTime relative to the broker clock.",
        at_least(0),
        [("log.message.timestamp.before.max.ms", 1)],
    ),
    _topic(
        "message.timestamp.after.max.ms",
        "long",
        LONG_MAX,
        "Max lead of a record's CreateTime over the broker clock.",
        at_least(0),
        [("log.message.timestamp.after.max.ms", 1)],
    ),
    _topic(
        "message.timestamp.difference.max.ms",
        "long",
        LONG_MAX,
        "[DEPRECATED] Max difference between a record's CreateTime and the broker clock; "
        "used for message.timestamp.before.max.ms and .after.max.ms left at their default.",
        at_least(0),
        [("log.message.timestamp.difference.max.ms", 1)],
    ),
    _topic(
        "message.format.version",
        "string",
        "3.0-IV1",
        "[DEPRECATED] The message format the broker writes. Accepted and ignored, as Kafka 3.x "
        "ignores it with an inter-broker protocol of 3.0 or later (removed in Kafka 4.0).",
        kafka_version,
        [("log.message.format.version", 1)],
    ),
    _topic(
        "message.downconversion.enable",
        "boolean",
        True,
        "[DEPRECATED] Whether old consumers' fetches may be down-converted to older message "
        "formats. Accepted and ignored: Fetch below v4, the only requests it applied to, is not "
        "offered (removed in Kafka 4.0).",
        None,
        [("log.message.downconversion.enable", 1)],
    ),
    _topic(
        "compression.gzip.level",
        "int",
        -1,
        "The gzip level used when compression.type is gzip (1-9, or -1 for the codec default).",
        either(-1, between(1, 9)),
        [("compression.gzip.level", 1)],
    ),
    _topic(
        "compression.lz4.level",
        "int",
        9,
        "The lz4 level used when compression.type is lz4.",
        between(1, 17),
        [("compression.lz4.level", 1)],
    ),
    _topic(
        "compression.zstd.level",
        "int",
        3,
        "The zstd level used when compression.type is zstd.",
        between(-131072, 22),
        [("compression.zstd.level", 1)],
    ),
    _topic(
        "leader.replication.throttled.replicas",
        "list",
        [],
        "Replicas (partitionId:brokerId, or *) whose leader-side replication is throttled "
        "(leader.replication.throttled.rate on their broker).",
        throttled_replicas,
    ),
    _topic(
        "follower.replication.throttled.replicas",
        "list",
        [],
        "Replicas (partitionId:brokerId, or *) whose follower-side replication is throttled "
        "(follower.replication.throttled.rate on their broker).",
        throttled_replicas,
    ),
    _topic(
        "local.retention.ms",
        "long",
        -2,
        "Local retention of tiered topics (-2: retention.ms). Tiered storage is not supported.",
        at_least(-2),
        [("log.local.retention.ms", 1)],
    ),
    _topic(
        "local.retention.bytes",
        "long",
        -2,
        "Local size limit of tiered topics (-2: retention.bytes). Tiered storage is not supported.",
        at_least(-2),
        [("log.local.retention.bytes", 1)],
    ),
    _topic(
        "remote.storage.enable",
        "boolean",
        False,
        "Tiered storage for the topic. Not supported: must be false.",
        must_be(
            False,
            "Tiered Storage functionality is disabled in the broker. Topic cannot be configured "
            "with remote log storage.",
        ),
    ),
)


_TOPIC_KEY_DEFAULTS = {name: key.default for name, key in TOPIC_CONFIGS.items()}


def validate_topic_values(values: dict[str, Any]) -> None:
    """Checks across keys, on a topic's effective values (Kafka's LogConfig.validateValues)."""
    min_lag, max_lag = values.get("min.compaction.lag.ms"), values.get("max.compaction.lag.ms")
    if min_lag is not None and max_lag is not None and min_lag > max_lag:
        raise ConfigError(
            f"conflict topic config setting min.compaction.lag.ms ({min_lag}) > "
            f"max.compaction.lag.ms ({max_lag})"
        )


# Topic keys Kafka 3.x still accepts but ignores (KIP-724, KIP-896): stored and described,
# a warning logged when set, never applied.
DEPRECATED_TOPIC_CONFIGS = frozenset({"message.format.version", "message.downconversion.enable"})


def warn_deprecated_topic_configs(
    topic: str, configs: dict[str, str], previous: dict[str, str] | None = None
) -> None:
    """Log the deprecated keys a topic has just been given: accepted, stored, described, and
    ignored, as Kafka 3.x does with message.format.version (and 4.0 with both)."""
    previous = previous or {}
    for key in sorted(DEPRECATED_TOPIC_CONFIGS & configs.keys()):
        if previous.get(key) != configs[key]:
            structlog.get_logger(__name__).warning(
                "deprecated_topic_config_ignored", topic=topic, key=key, value=configs[key],
                reason="deprecated in Kafka 3.x and removed in 4.0; it has no effect here",
            )  # fmt: skip


# Broker keys that change at runtime, for one broker or as the cluster-wide default (Kafka's
# DynamicLogConfig: the broker synonym of each topic config, i.e. the topics' defaults, except
# log.message.format.version, which Kafka never reconfigures).
DYNAMIC_BROKER_CONFIGS = frozenset(
    k.synonyms[0][0] for k in TOPIC_CONFIGS.values() if k.synonyms
) - {"log.message.format.version"} | frozenset(REPLICATION_THROTTLES)
# Where a broker value comes from, highest precedence first (DescribeConfigs' ConfigSource).
DYNAMIC_BROKER, DYNAMIC_DEFAULT, STATIC, DEFAULT = (
    "DYNAMIC_BROKER_CONFIG", "DYNAMIC_DEFAULT_BROKER_CONFIG", "STATIC_BROKER_CONFIG",
    "DEFAULT_CONFIG",
)  # fmt: skip


def parse_dynamic_broker_configs(raw: dict[str, str]) -> dict[str, Any]:
    """Validate dynamic broker configs: ConfigError naming keys that can't change at runtime
    (Kafka's "Cannot update these configs dynamically") or a bad value."""
    fixed = sorted(name for name in raw if name not in DYNAMIC_BROKER_CONFIGS)
    if fixed:
        raise ConfigError(f"Cannot update these configs dynamically: {', '.join(fixed)}")
    return {name: BROKER_CONFIGS[name].parse(value) for name, value in raw.items()}


LISTENER_PREFIX = "listener.name."
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


class BrokerConfig:
    """The broker's effective configuration: parsed values keyed by Kafka's names, from
    server.properties (static) under the dynamic configs stored in the cluster metadata."""

    def __init__(self, props: dict[str, str] | None = None):
        props = dict(props or {})
        self.originals = props
        self.values: dict[str, Any] = {}
        self.unknown: dict[str, str] = {}
        self.dynamic_broker: dict[str, Any] = {}  # this broker's dynamic configs
        self.dynamic_default: dict[str, Any] = {}  # the cluster-wide dynamic defaults
        # listener.name.<listener>[.<mechanism>].<key>: (LISTENER, MECHANISM or None, key) -> value
        self.listener_overrides: dict[tuple[str, str | None, str], Any] = {}
        for name, raw in props.items():
            key = BROKER_CONFIGS.get(name)
            if key is None:
                if not self._listener_override(name, raw):
                    self.unknown[name] = raw  # Kafka logs and ignores unknown keys
                continue
            self.values[name] = key.parse(raw)

    def _listener_override(self, name: str, raw: str) -> bool:
        if not name.startswith(LISTENER_PREFIX):
            return False
        listener, _, key = name[len(LISTENER_PREFIX) :].partition(".")
        mechanism = None
        if key not in BROKER_CONFIGS:  # listener.name.<l>.<mechanism>.sasl.jaas.config
            mechanism, _, key = key.partition(".")
            if key not in BROKER_CONFIGS or not (
                key.startswith("sasl.") or key == "connections.max.reauth.ms"
            ):
                return False
        config = BROKER_CONFIGS[key]
        try:
            value = config.parse(raw)
        except ConfigError as e:
            raise ConfigError(str(e).replace(f"configuration {key}", f"configuration {name}"))
        self.listener_overrides[(listener.upper(), mechanism and mechanism.upper(), key)] = value
        return True

    def for_listener(self, listener: str, name: str, mechanism: str | None = None) -> Any:
        """A key's value for one listener: listener.name.<listener>.<mechanism>.<key>, then
        listener.name.<listener>.<key>, then the key itself (Kafka's listener prefixes)."""
        overrides = self.listener_overrides
        if overrides:
            listener = listener.upper()
            if mechanism is not None and (listener, mechanism, name) in overrides:
                return overrides[(listener, mechanism, name)]
            if (listener, None, name) in overrides:
                return overrides[(listener, None, name)]
        return self.get(name)

    def _layers(self) -> tuple[tuple[dict[str, Any], str], ...]:
        return (
            (self.dynamic_broker, DYNAMIC_BROKER),
            (self.dynamic_default, DYNAMIC_DEFAULT),
            (self.values, STATIC),
        )

    def get(self, name: str) -> Any:
        # Read on request paths (fetch.max.bytes per Fetch): plain lookups, in _layers' order.
        if name in self.dynamic_broker:
            return self.dynamic_broker[name]
        if name in self.dynamic_default:
            return self.dynamic_default[name]
        if name in self.values:
            return self.values[name]
        return BROKER_CONFIGS[name].default

    def source(self, name: str) -> str:
        """Where get(name) comes from: DYNAMIC_BROKER, DYNAMIC_DEFAULT, STATIC or DEFAULT."""
        return next((source for layer, source in self._layers() if name in layer), DEFAULT)

    def is_set(self, name: str) -> bool:
        """Set in server.properties (or an --override)."""
        return name in self.values

    def set_dynamic(self, per_broker: dict[str, str], default: dict[str, str]) -> list[str]:
        """Take the stored dynamic configs; returns the keys left out (stored values this
        version can't use, which Kafka also logs and skips)."""
        skipped = []
        layers = []
        for raw in (per_broker, default):
            parsed = {}
            for name, value in raw.items():
                try:
                    parsed.update(parse_dynamic_broker_configs({name: value}))
                except ConfigError:
                    skipped.append(name)
            layers.append(parsed)
        self.dynamic_broker, self.dynamic_default = layers
        return skipped

    def set(self, name: str, raw: Any) -> None:
        self.values[name] = BROKER_CONFIGS[name].parse(raw)

    @property
    def node_id(self) -> int:
        if self.is_set("node.id"):
            return self.get("node.id")
        if self.is_set("broker.id"):
            return self.get("broker.id")
        return self.get("node.id")

    @property
    def log_dirs(self) -> list[str]:
        dirs = self.get("log.dirs")
        return dirs if dirs else [self.get("log.dir")]

    @property
    def listeners(self) -> list[tuple[str, str, int]]:
        return [parse_listener(x) for x in self.get("listeners")]

    @property
    def advertised_listeners(self) -> list[tuple[str, str, int]]:
        adv = self.get("advertised.listeners")
        return [parse_listener(x) for x in adv] if adv else self.listeners

    def security_protocols(self) -> dict[str, str]:
        """listener.security.protocol.map as a dict (ConfigError if malformed)."""
        out = {}
        for item in self.get("listener.security.protocol.map"):
            name, sep, protocol = item.partition(":")
            if not sep or not name or not protocol:
                raise ConfigError(f"Invalid listener.security.protocol.map entry {item!r}")
            out[name.strip().upper()] = protocol.strip().upper()
        return out

    def inter_broker_listener_name(self) -> str:
        if self.is_set("inter.broker.listener.name"):
            if self.is_set("security.inter.broker.protocol"):
                raise ConfigError("Only one of inter.broker.listener.name and "
                                  "security.inter.broker.protocol should be set.")  # fmt: skip
            return self.get("inter.broker.listener.name").upper()
        if self.is_set("security.inter.broker.protocol"):
            protocol = self.get("security.inter.broker.protocol").upper()
            if protocol not in SECURITY_PROTOCOLS:
                raise ConfigError(f"Invalid value {protocol} for configuration "
                                  f"security.inter.broker.protocol: one of "
                                  f"{', '.join(SECURITY_PROTOCOLS)}")  # fmt: skip
            return protocol
        names = [name.upper() for name, _, _ in self.listeners]
        return "PLAINTEXT" if "PLAINTEXT" in names else names[0]

    def advertised_endpoints(self, bound: list[tuple[str, int]]) -> dict[str, tuple[str, int]]:
        """Listener name -> (host, port) given to clients, from the listeners as bound (same
        order as `listeners`). Checked as Kafka does at start-up: names unique, each with a
        known security protocol, advertised names among the listeners, the
        inter-broker listener among them. A listener with port 0 is advertised with the port it
        got; a wildcard host with this machine's name."""
        import socket

        protocols = self.security_protocols()
        names = [name.upper() for name, _, _ in self.listeners]
        if len(set(names)) != len(names):
            raise ConfigError(f"Each listener must have a different name, listeners: {names}")
        for name in names:
            protocol = protocols.get(name)
            if protocol is None:
                raise ConfigError(f"No security protocol defined for listener {name}")
            if protocol not in SECURITY_PROTOCOLS:
                raise ConfigError(
                    f"Listener {name}: unknown security protocol {protocol} (one of "
                    f"{', '.join(SECURITY_PROTOCOLS)})"
                )
        by_name = dict(zip(names, bound, strict=True))
        if self.is_set("advertised.listeners"):
            advertised = [(n.upper(), h, p) for n, h, p in self.advertised_listeners]
        else:
            advertised = [(n, h, p) for n, (h, p) in by_name.items()]
        endpoints: dict[str, tuple[str, int]] = {}
        for name, host, port in advertised:
            if name not in by_name:
                raise ConfigError(
                    f"advertised.listeners listener names must be equal to or a subset of the "
                    f"ones defined in listeners; {name} is not in {names}"
                )
            if name in endpoints:
                raise ConfigError(f"Each advertised listener must have a different name: {name}")
            if port == 0:
                port = by_name[name][1]
            if host in ("0.0.0.0", "::", ""):
                host = socket.getfqdn()
            endpoints[name] = (host, port)
        inter = self.inter_broker_listener_name()
        if inter not in endpoints:
            raise ConfigError(
                f"inter.broker.listener.name must be a listener name defined in "
                f"advertised.listeners: {inter} is not in {sorted(endpoints)}"
            )
        return endpoints

    def topic_default(self, name: str) -> tuple[Any, str, str | None]:
        """(value, source, broker synonym) of a topic config at broker level: dynamic, then
        static, then default, and within each the synonyms in order (ms before hours)."""
        key = TOPIC_CONFIGS[name]
        for layer, source in self._layers():
            for broker_key, factor in key.synonyms:
                if broker_key in layer:
                    return _scaled(layer[broker_key], factor), source, broker_key
        for broker_key, factor in key.synonyms:
            default = BROKER_CONFIGS[broker_key].default
            if default is not None:
                return _scaled(default, factor), DEFAULT, broker_key
        return key.default, DEFAULT, None

    def topic_defaults(self) -> dict[str, Any]:
        return {name: self.topic_default(name)[0] for name in TOPIC_CONFIGS}


def _scaled(value, factor):
    if isinstance(value, int) and factor != 1 and value >= 0:
        return value * factor
    return value


def parse_listener(uri: str) -> tuple[str, str, int]:
    """'PLAINTEXT://host:9092' -> ('PLAINTEXT', 'host', 9092); an empty host means all."""
    if "://" not in uri:
        raise ConfigError(f"Invalid listener {uri!r}: expected NAME://host:port")
    name, rest = uri.split("://", 1)
    host, _, port = rest.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return name, host, int(port)
    except ValueError:
        raise ConfigError(f"Invalid listener {uri!r}: bad port") from None


def parse_topic_configs(raw: dict[str, str | None]) -> dict[str, Any]:
    """Validate topic config overrides; ConfigError names the first bad key."""
    out = {}
    for name, value in raw.items():
        key = TOPIC_CONFIGS.get(name)
        if key is None:
            raise ConfigError(f"Unknown topic config name: {name}")
        if value is None:
            raise ConfigError(f"Null value not supported for topic configs: {name}")
        out[name] = key.parse(value)
    validate_topic_values({**_TOPIC_KEY_DEFAULTS, **out})
    return out


def load_properties(path: str) -> dict[str, str]:
    """Read a Java-style .properties file (key=value or key: value, # and ! comments)."""
    props: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    pending = ""
    for line in lines:
        line = pending + line.strip()
        pending = ""
        if not line or line[0] in "#!":
            continue
        if line.endswith("\\"):
            pending = line[:-1]
            continue
        for i, ch in enumerate(line):
            if ch in "=:":
                props[line[:i].strip()] = line[i + 1 :].strip()
                break
        else:
            props[line] = ""
    return props


class LogConfig:
    """A topic's effective log settings: overrides on top of the broker's defaults."""

    __slots__ = ("values", "overrides", "timestamp_limits")

    def __init__(self, defaults: dict[str, Any], overrides: dict[str, Any] | None = None):
        self.overrides = dict(overrides or {})
        self.values = {**defaults, **self.overrides}
        self.timestamp_limits = self._timestamp_limits()

    def _timestamp_limits(self) -> tuple[int, int] | None:
        """(before, after): how far a CreateTime record's timestamp may lie behind and ahead
        of the broker clock (KIP-937), or None when nothing is to be checked (both at Long.MAX,
        or a LogAppendTime topic, whose timestamps the broker sets), so the produce path pays
        nothing by default. As in Kafka 3.x, a limit left at Long.MAX takes the deprecated
        message.timestamp.difference.max.ms instead."""
        if self.log_append_time:
            return None
        difference = self.values["message.timestamp.difference.max.ms"]
        before = self.values["message.timestamp.before.max.ms"]
        after = self.values["message.timestamp.after.max.ms"]
        before = difference if before == LONG_MAX else before
        after = difference if after == LONG_MAX else after
        if before == LONG_MAX and after == LONG_MAX:
            return None
        return before, after

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    @property
    def segment_bytes(self) -> int:
        return self.values["segment.bytes"]

    @property
    def segment_ms(self) -> int:
        return self.values["segment.ms"]

    @property
    def index_interval_bytes(self) -> int:
        return self.values["index.interval.bytes"]

    @property
    def max_index_entries(self) -> int:
        return max(self.values["segment.index.bytes"] // 8, 1)

    @property
    def max_message_bytes(self) -> int:
        return self.values["max.message.bytes"]

    @property
    def log_append_time(self) -> bool:
        return self.values["message.timestamp.type"] == "LogAppendTime"

    @property
    def compact(self) -> bool:
        return "compact" in self.values["cleanup.policy"]

    @property
    def delete(self) -> bool:
        return "delete" in self.values["cleanup.policy"]

    @property
    def flush_messages(self) -> int:
        return self.values["flush.messages"]

    @property
    def flush_ms(self) -> int:
        return self.values["flush.ms"]
