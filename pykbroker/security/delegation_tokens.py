"""Delegation tokens (KIP-48, KIP-373), as Kafka's DelegationTokenManager.

A token is an id and an HMAC-SHA512 of that id under `delegation.token.secret.key` (every broker
of a cluster has the same secret, so the HMAC is recomputed, never stored). A client
authenticates with SCRAM using the id as user name, the base64 HMAC as password and the
`tokenauth=true` extension; it then acts as the token's owner. What is stored is Kafka's
token znode (`/delegation_token/tokens/<id>` in ZooKeeper, the metadata file on a single
broker): owner, requester, renewers, issue/expiry/max timestamps. The decisions here are plain
code on (token info, principal, now); the handlers do the I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from dataclasses import dataclass, field, replace

from protocol.errors import ErrorCode, KafkaError
from protocol.sasl.scram import MECHANISMS, MIN_ITERATIONS, new_credential

ZNODE_VERSION = 3  # Kafka's DelegationTokenInfoZNode version with tokenRequester


@dataclass(frozen=True)
class TokenInfo:
    token_id: str
    owner: str  # a principal as Kafka writes it, "User:alice"
    requester: str
    renewers: tuple[str, ...] = ()
    issue_ms: int = 0
    expiry_ms: int = 0
    max_ms: int = 0

    def to_json(self) -> dict:
        """Kafka's token znode."""
        return {"version": ZNODE_VERSION, "owner": self.owner, "tokenRequester": self.requester,
                "renewers": list(self.renewers), "issueTimestamp": self.issue_ms,
                "maxTimestamp": self.max_ms, "expiryTimestamp": self.expiry_ms,
                "tokenId": self.token_id}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict) -> TokenInfo:
        return cls(d["tokenId"], d["owner"], d.get("tokenRequester", d["owner"]),
                   tuple(d.get("renewers", ())), d["issueTimestamp"], d["expiryTimestamp"],
                   d["maxTimestamp"])  # fmt: skip

    def owner_or_renewer(self, principal: str) -> bool:
        return principal in (self.owner, self.requester) or principal in self.renewers


@dataclass
class DelegationTokenManager:
    """Kafka's DelegationTokenManager, over a dict of token id -> TokenInfo kept by the caller's
    metadata store. `secret` None: tokens are off (DELEGATION_TOKEN_AUTH_DISABLED)."""

    secret: bytes | None
    max_lifetime_ms: int = 7 * 24 * 3600 * 1000  # delegation.token.max.lifetime.ms
    renew_ms: int = 24 * 3600 * 1000  # delegation.token.expiry.time.ms
    _credentials: dict = field(default_factory=dict)  # (token id, mechanism) -> credential

    @property
    def enabled(self) -> bool:
        return self.secret is not None

    def hmac(self, token_id: str) -> bytes:
        return hmac.new(self.secret, token_id.encode(), hashlib.sha512).digest()

    def _check_enabled(self) -> None:
        if not self.enabled:
            raise KafkaError(ErrorCode.DELEGATION_TOKEN_AUTH_DISABLED,
                             "Delegation Token feature is not enabled")  # fmt: skip

    def create(self, owner: str, requester: str, renewers: list[str], max_lifetime_ms: int,
               now: int) -> TokenInfo:  # fmt: skip
        self._check_enabled()
        lifetime = (
            self.max_lifetime_ms if max_lifetime_ms <= 0
            else min(max_lifetime_ms, self.max_lifetime_ms)
        )  # fmt: skip
        max_ms = now + lifetime
        # Kafka's CoreUtils.generateUuidAsBase64: a random UUID, url-safe base64 unpadded.
        token_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        return TokenInfo(token_id, owner, requester, tuple(renewers), now,
                         min(max_ms, now + self.renew_ms), max_ms)  # fmt: skip

    def find(self, tokens: dict[str, TokenInfo], mac: bytes) -> TokenInfo:
        self._check_enabled()
        for info in tokens.values():
            if hmac.compare_digest(self.hmac(info.token_id), mac):
                return info
        raise KafkaError(ErrorCode.DELEGATION_TOKEN_NOT_FOUND)

    def _renewable(self, info: TokenInfo, principal: str, now: int) -> None:
        if not info.owner_or_renewer(principal):
            raise KafkaError(ErrorCode.DELEGATION_TOKEN_OWNER_MISMATCH)
        if info.max_ms < now or info.expiry_ms < now:
            raise KafkaError(ErrorCode.DELEGATION_TOKEN_EXPIRED)

    def renew(self, info: TokenInfo, principal: str, period_ms: int, now: int) -> TokenInfo:
        self._renewable(info, principal, now)
        period = self.renew_ms if period_ms < 0 else period_ms
        return replace(info, expiry_ms=min(info.max_ms, now + period))

    def expire(self, info: TokenInfo, principal: str, period_ms: int, now: int
               ) -> TokenInfo | None:  # fmt: skip
        """The token with its new expiry, or None: expire it at once (a negative period)."""
        self._renewable(info, principal, now)
        if period_ms < 0:
            return None
        return replace(info, expiry_ms=min(info.max_ms, now + period_ms))

    def credential(self, info: TokenInfo | None, mechanism: str, now: int):
        """(SCRAM credential, owner name, expiry ms) to authenticate with token `info`; None if
        tokens are off, the token is unknown or it has expired."""
        if not self.enabled or info is None or info.expiry_ms < now or mechanism not in MECHANISMS:
            return None
        key = (info.token_id, mechanism)
        cred = self._credentials.get(key)
        if cred is None:
            password = base64.b64encode(self.hmac(info.token_id)).decode()
            cred = new_credential(mechanism, password, MIN_ITERATIONS)
            self._credentials[key] = cred
        # The owner's name (Kafka's DelegationTokenCredentialCallback.tokenOwner): the
        # connection becomes User:<name>.
        return cred, info.owner.partition(":")[2], info.expiry_ms

    @staticmethod
    def expired(tokens: dict[str, TokenInfo], now: int) -> list[str]:
        """Ids of tokens past their expiry (Kafka removes them every
        delegation.token.expiry.check.interval.ms)."""
        return [t for t, info in tokens.items() if info.expiry_ms < now]
