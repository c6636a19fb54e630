"""KIP-368 re-authentication cost: re-authentications per second on open connections, against
a fresh connection + authentication, and against plain request round trips (the ceiling), all
measured in the same run on one broker.

    .venv/bin/python -m bench.reauth [--connections 300] [--rounds 3]

One broker (a subprocess on 127.0.0.1) with a SASL_PLAINTEXT listener, PLAIN and
SCRAM-SHA-512 (the credential stored with AlterUserScramCredentials, 8192 iterations), and
connections.max.reauth.ms=600000 so that sessions have an end and may be renewed. For each
mechanism, --connections connections are authenticated, then each round re-authenticates every
one of them once (SaslHandshake + SaslAuthenticate, one connection at a time; a round starts no
sooner than a second after the last, Kafka's limit of one re-authentication per connection and
second). Beside it, per round: as many new connections opened and authenticated, and as many
ApiVersions round trips on the open connections (the ceiling: what a request costs without any
SASL work; a re-authentication is 2 round trips with PLAIN, 3 with SCRAM, so the ratio printed
is re-authentication round trips per second over ApiVersions ones). The client side caches SCRAM's salted password, so the figures are the broker's cost
plus round trips, not the client's PBKDF2.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import os
import secrets
import sys
import time

from .common import REPO, Broker

sys.path.insert(0, str(REPO / "tests"))

from helpers import RawClient  # noqa: E402

from protocol.apis import ApiKey  # noqa: E402

PASSWORD = "bench-secret"
JAAS = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'user_bench="{PASSWORD}";')  # fmt: skip
TRIPS = {"PLAIN": 2, "SCRAM-SHA-512": 3}  # requests per re-authentication (handshake included)
_SALTED: dict[tuple[bytes, int], bytes] = {}


def _auth(client: RawClient, token: bytes):
    r = client.request(ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": token})
    assert r is not None and r.error_code == 0, r
    return r


def login(client: RawClient, mechanism: str) -> None:
    """One SASL exchange (first authentication or re-authentication)."""
    assert client.request(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": mechanism}).error_code == 0
    if mechanism == "PLAIN":
        _auth(client, f"\0bench\0{PASSWORD}".encode())
        return
    nonce = base64.b64encode(secrets.token_bytes(18)).decode()
    first_bare = f"n=bench,r={nonce}"
    server_first = bytes(_auth(client, f"n,,{first_bare}".encode()).auth_bytes).decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    key = (base64.b64decode(attrs["s"]), int(attrs["i"]))
    salted = _SALTED.get(key)
    if salted is None:
        salted = _SALTED[key] = hashlib.pbkdf2_hmac("sha512", PASSWORD.encode(), *key)
    client_key = hmac.new(salted, b"Client Key", "sha512").digest()
    without_proof = f"c=biws,r={attrs['r']}"
    message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.new(hashlib.sha512(client_key).digest(), message, "sha512").digest()
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True)))
    _auth(client, f"{without_proof},p={proof.decode()}".encode())


def run(connections: int, rounds: int) -> dict:
    broker = Broker({
        "listeners": "SASL_PLAINTEXT://127.0.0.1:{port}",
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": JAAS,
        "connections.max.reauth.ms": "600000",
    })  # fmt: skip
    broker.overrides["listeners"] = f"SASL_PLAINTEXT://127.0.0.1:{broker.port}"
    broker.start()
    out: dict = {}
    try:
        admin = RawClient(broker.port)
        login(admin, "PLAIN")
        salt = os.urandom(16)
        upsert = {"name": "bench", "mechanism": 2, "iterations": 8192, "salt": salt,
                  "salted_password": hashlib.pbkdf2_hmac("sha512", PASSWORD.encode(), salt, 8192)}  # fmt: skip
        r = admin.request(ApiKey.ALTER_USER_SCRAM_CREDENTIALS, 0,
                          {"deletions": [], "upsertions": [upsert]})  # fmt: skip
        assert r.results[0].error_code == 0
        admin.close()
        for mechanism in ("PLAIN", "SCRAM-SHA-512"):
            clients = [RawClient(broker.port) for _ in range(connections)]
            for c in clients:
                login(c, mechanism)
            reauth = fresh = ceiling = 0.0
            last_round = time.monotonic()
            clock = time.perf_counter
            for _ in range(rounds):
                time.sleep(max(0.0, last_round + 1.05 - time.monotonic()))
                last_round = time.monotonic()
                # Interleaved one connection at a time, so the load of this shared machine
                # falls on the three alike.
                for c in clients:
                    t0 = clock()
                    login(c, mechanism)
                    t1 = clock()
                    fresh_client = RawClient(broker.port)
                    login(fresh_client, mechanism)
                    t2 = clock()
                    fresh_client.close()
                    t3 = clock()
                    assert c.request(ApiKey.API_VERSIONS, 3, {}).error_code == 0
                    t4 = clock()
                    reauth += t1 - t0
                    fresh += t2 - t1
                    ceiling += t4 - t3
            for c in clients:
                c.close()
            n = connections * rounds
            out[mechanism] = {
                "reauth_per_s": round(n / reauth),
                "new_connection_auth_per_s": round(n / fresh),
                "api_versions_per_s": round(n / ceiling),
            }
        out["expired_closed_events"] = len(broker.events("expired_session_closed"))
    finally:
        broker.kill()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"load average at start: {os.getloadavg()}")
    result = run(args.connections, args.rounds)
    for mechanism in ("PLAIN", "SCRAM-SHA-512"):
        r = result[mechanism]
        print(
            f"{mechanism:14} re-authentications/s {r['reauth_per_s']:6}   "
            f"new connection + authentication/s {r['new_connection_auth_per_s']:6}   "
            f"ApiVersions round trips/s (ceiling) {r['api_versions_per_s']:6}   "
            f"re-auth round trips / ceiling "
            f"{r['reauth_per_s'] * TRIPS[mechanism] / r['api_versions_per_s']:.2f}"
        )
    print(f"connections closed for an expired session: {result['expired_closed_events']}")
    print(f"load average at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
