"""What security costs, in one run: throughput per security protocol, SCRAM handshakes per
second, the authorizer with 10,000 ACLs, and whether kernel TLS is available.

    .venv/bin/python -m bench.security [--seconds 4] [--rounds 2] [--handshake-seconds 4]
                                       [--acls 10000] [--acl-seconds 1] [--acl-rounds 2]

1. Ceilings (bench/ceilings.py, same run): loopback TCP and loopback TLS (OpenSSL's default
   suite, one process encrypting, the other decrypting) process to process, and a sequential
   file write/read. A produce row's ceiling is min(stream, file write), a consume row's
   min(stream, file read), the stream being TLS on SSL and SASL_SSL.
2. One broker (`python -m pykbroker`, its own process) with four listeners: PLAINTEXT,
   SASL_PLAINTEXT and SASL_SSL with SCRAM-SHA-512, SSL (server certificate only; the
   certificates are made for the run). confluent-kafka produces 1 KiB random values (acks=all,
   one partition, linger.ms=5) for --seconds on each listener, then consumes them all from the
   beginning; the listeners take turns for --rounds rounds so a busy machine weighs on each
   alike. Each figure is also given as a ratio to PLAINTEXT and to its ceiling, with the
   broker's CPU milliseconds per MB.
3. SCRAM-SHA-512 authentications per second: two client processes each open a connection,
   authenticate (SaslHandshake, two SaslAuthenticate) and close, again and again, on
   SASL_PLAINTEXT and on SASL_SSL (TLS handshake included). The clients keep the salted
   password (PBKDF2 once per salt, as a client that caches it) so the broker's side is what is
   measured. Each connection starts with ApiVersions, as clients do; the ceiling beside each is
   the same loop without SASL (connect, ApiVersions, close) on PLAINTEXT and SSL.
4. The authorizer with --acls ACLs: bench/authorizer.py's in-process decisions and its two
   brokers (with and without the ACLs) answering Metadata and Produce one at a time.
5. Kernel TLS: whether this Python, OpenSSL and kernel could put TLS records in the kernel
   (ssl.OP_ENABLE_KTLS, the kernel's `tls` upper layer protocol), which would let an SSL
   listener keep sendfile. What was found is printed; the broker does not use it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import multiprocessing as mp
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import authorizer, ceilings
from .common import MB, REPO, Broker, free_port
from .throughput import consume, create_topic, delete_topic, high_watermarks, produce

sys.path.insert(0, str(REPO / "tests"))

from helpers import RawClient  # noqa: E402
from security_helpers import CertificateAuthority  # noqa: E402

from protocol.apis import ApiKey  # noqa: E402

PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL")
USER, PASSWORD = "bench", "bench-secret"
SIZE = 1024


def ktls_status() -> tuple[bool, list[str]]:
    """(usable, facts): can a TLS socket here hand its records to the kernel?"""
    facts, usable = [], True
    if hasattr(ssl, "OP_ENABLE_KTLS"):
        facts.append(f"Python {sys.version.split()[0]} has ssl.OP_ENABLE_KTLS")
    else:
        usable = False
        facts.append(f"Python {sys.version.split()[0]} has no ssl.OP_ENABLE_KTLS (3.12+)")
    facts.append(f"{ssl.OPENSSL_VERSION}")
    ulp = Path("/proc/sys/net/ipv4/tcp_available_ulp")
    if ulp.exists():
        names = ulp.read_text().split()
        facts.append(f"kernel upper layer protocols: {' '.join(names) or 'none'}")
        usable = usable and "tls" in names
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        with socket.create_connection(srv.getsockname()) as c:
            try:
                c.setsockopt(socket.IPPROTO_TCP, 31, b"tls")  # TCP_ULP: what OpenSSL does
                facts.append("setsockopt(TCP_ULP, 'tls') accepted")
            except OSError as e:
                usable = False
                facts.append(f"setsockopt(TCP_ULP, 'tls') fails: {e.strerror} (kernel without "
                             "CONFIG_TLS or the tls module)")  # fmt: skip
            srv.accept()[0].close()
    return usable, facts


def _salted(cache: dict, salt: bytes, iterations: int) -> bytes:
    key = (salt, iterations)
    if key not in cache:
        cache[key] = hashlib.pbkdf2_hmac("sha512", PASSWORD.encode(), salt, iterations)
    return cache[key]


def _scram(client: RawClient, cache: dict) -> None:
    """One SCRAM-SHA-512 authentication (RFC 5802), the salted password cached."""
    r = client.request(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "SCRAM-SHA-512"})
    assert r.error_code == 0, r
    nonce = base64.b64encode(secrets.token_bytes(18)).decode()
    first_bare = f"n={USER},r={nonce}"
    r = client.request(ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": ("n,," + first_bare).encode()})
    assert r.error_code == 0, r
    server_first = bytes(r.auth_bytes).decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    salted = _salted(cache, base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", "sha512").digest()
    stored_key = hashlib.sha512(client_key).digest()
    without_proof = f"c=biws,r={attrs['r']}"
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.new(stored_key, auth_message, "sha512").digest()
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True)))
    r = client.request(ApiKey.SASL_AUTHENTICATE, 2,
                       {"auth_bytes": f"{without_proof},p={proof.decode()}".encode()})  # fmt: skip
    assert r.error_code == 0, r


def _connect_loop(port: int, ca: str | None, scram: bool, seconds: float, out) -> None:
    ctx = None
    if ca:
        ctx = ssl.create_default_context(cafile=ca)
    cache: dict = {}
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        c = RawClient(port)
        if ctx is not None:
            c.sock = ctx.wrap_socket(c.sock, server_hostname="localhost")
        # As clients do: ApiVersions first, then (SASL) the handshake and the SCRAM exchange.
        assert c.request(ApiKey.API_VERSIONS, 3, {}).error_code == 0
        if scram:
            _scram(c, cache)
        c.close()
        n += 1
    out.put(n)


def connections(broker: Broker, port: int, ca: str | None, scram: bool, seconds: float,
                procs: int = 2) -> tuple[int, float, float]:  # fmt: skip
    """(connections, seconds, broker CPU seconds) of `procs` client processes for `seconds`."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    workers = [ctx.Process(target=_connect_loop, args=(port, ca, scram, seconds, q))
               for _ in range(procs)]  # fmt: skip
    for w in workers:
        w.start()
    # Processes start unevenly; the CPU window is the loop's own (seconds), close enough.
    cpu0 = broker.cpu()
    n = sum(q.get(timeout=seconds + 120) for _ in workers)
    cpu = broker.cpu() - cpu0
    for w in workers:
        w.join()
    return n, seconds, cpu


def start_broker(ca: CertificateAuthority) -> tuple[Broker, dict[str, int]]:
    chain, key = ca.issue("localhost", server=True)
    ports = {p: free_port() for p in PROTOCOLS}
    b = Broker({
        "listeners": ",".join(f"{p}://127.0.0.1:{ports[p]}" for p in PROTOCOLS),
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.certificate.chain": Path(chain).read_text(),
        "ssl.keystore.key": Path(key).read_text(),
        "auto.create.topics.enable": "false",
    }, port=ports["PLAINTEXT"])  # fmt: skip
    b.start()
    subprocess.run([sys.executable, "-m", "pykbroker.cli.configs", "--bootstrap-server",
                    b.bootstrap, "--alter", "--entity-type", "users", "--entity-name", USER,
                    "--add-config", f"SCRAM-SHA-512=[iterations=4096,password={PASSWORD}]"],
                   check=True, capture_output=True, cwd=REPO)  # fmt: skip
    return b, ports


def client_config(protocol: str, ca: str) -> dict:
    config: dict = {"security.protocol": protocol}
    if protocol.startswith("SASL"):
        config.update({"sasl.mechanism": "SCRAM-SHA-512", "sasl.username": USER,
                       "sasl.password": PASSWORD})  # fmt: skip
    if protocol.endswith("SSL"):
        config["ssl.ca.location"] = ca
    return config


def throughput(b: Broker, ports: dict, ca: str, seconds: float, rounds: int,
               max_bytes: int) -> dict:  # fmt: skip
    """Per protocol: [produce bytes, produce s, produce CPU s, consume bytes, consume s, CPU s]."""
    totals = {p: [0.0] * 6 for p in PROTOCOLS}
    for r in range(rounds):
        for proto in PROTOCOLS:
            topic = f"sec-{proto.lower()}-{r}"
            create_topic(b.bootstrap, topic, 1)
            boot, config = f"127.0.0.1:{ports[proto]}", client_config(proto, ca)
            cpu0 = b.cpu()
            p = produce("confluent", boot, topic, SIZE, "all", seconds, max_bytes, config)
            cpu1 = b.cpu()
            assert high_watermarks(b.bootstrap, topic, 1) == p["msgs"], "records lost"
            cpu2 = b.cpu()
            c = consume("confluent", boot, topic, 1, p["msgs"], SIZE, config=config)
            cpu3 = b.cpu()
            assert c["msgs"] == p["msgs"], (c, p)
            delete_topic(b.bootstrap, topic)
            for i, x in enumerate((p["bytes"], p["seconds"], cpu1 - cpu0,
                                   c["bytes"], c["seconds"], cpu3 - cpu2)):  # fmt: skip
                totals[proto][i] += x
            print(f"  round {r + 1} {proto}: produce {p['bytes'] / p['seconds'] / MB:,.1f} MB/s, "
                  f"consume {c['bytes'] / c['seconds'] / MB:,.1f} MB/s", flush=True)  # fmt: skip
    return totals


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=4.0, help="producing per listener per round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--max-mib", type=int, default=1024, help="cap on one produce run")
    p.add_argument("--handshake-seconds", type=float, default=4.0)
    p.add_argument("--acls", type=int, default=10_000)
    p.add_argument("--acl-seconds", type=float, default=1.0)
    p.add_argument("--acl-rounds", type=int, default=2)
    args = p.parse_args(argv)
    t_start = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="bench-security-")
    try:
        ca = CertificateAuthority(os.path.join(tmp, "certs"))

        print("== ceilings (same run)", flush=True)
        tcp = ceilings.tcp_throughput(2.0)
        tls_bps, cipher = ceilings.tls_throughput(*ca.issue("localhost", server=True), 2.0)
        fw, fr = ceilings.file_write_read(256 << 20)
        print(f"loopback TCP {tcp / MB:,.0f} MB/s; loopback TLS ({cipher}) {tls_bps / MB:,.0f} "
              f"MB/s; file write (fsync) {fw / MB:,.0f} MB/s, read (page cache) {fr / MB:,.0f} MB/s")  # fmt: skip

        usable, facts = ktls_status()
        print(f"== kernel TLS: {'available' if usable else 'not available'}")
        for f in facts:
            print(f"  {f}")

        b, ports = start_broker(ca)
        try:
            print(f"== throughput, confluent-kafka 1 KiB acks=all 1 partition, {args.rounds} "
                  f"rounds of {args.seconds:g} s per listener", flush=True)  # fmt: skip
            t = throughput(b, ports, ca.ca_path, args.seconds, args.rounds, args.max_mib << 20)
            pb0, ps0, _, cb0, cs0, _ = t["PLAINTEXT"]
            base = (pb0 / ps0, cb0 / cs0)
            print(
                "| listener | produce MB/s | vs PLAINTEXT | % of ceiling | broker CPU ms/MB "
                "| consume MB/s | vs PLAINTEXT | % of ceiling | broker CPU ms/MB |"
            )
            print("|---|---|---|---|---|---|---|---|---|")
            for proto, (pb, ps, pc, cb, cs, cc) in t.items():
                stream = tls_bps if proto.endswith("SSL") else tcp
                prod, cons = pb / ps, cb / cs
                print(f"| {proto} | {prod / MB:,.1f} | {prod / base[0]:.2f} | "
                      f"{prod / min(stream, fw):.1%} | {pc / (pb / MB) * 1000:.2f} | "
                      f"{cons / MB:,.1f} | {cons / base[1]:.2f} | {cons / min(stream, fr):.1%} | "
                      f"{cc / (cb / MB) * 1000:.2f} |")  # fmt: skip

            print(f"== connections per second, 2 client processes, {args.rounds} rounds of "
                  f"{args.handshake_seconds:g} s each", flush=True)  # fmt: skip
            cases = (("SASL_PLAINTEXT", None, True, "SCRAM-SHA-512 on SASL_PLAINTEXT"),
                     ("PLAINTEXT", None, False, "ceiling: no SASL, PLAINTEXT"),
                     ("SASL_SSL", ca.ca_path, True, "SCRAM-SHA-512 on SASL_SSL (TLS handshake too)"),
                     ("SSL", ca.ca_path, False, "ceiling: no SASL, SSL (TLS handshake)"))  # fmt: skip
            sums = {label: [0, 0.0, 0.0] for *_, label in cases}
            for _ in range(args.rounds):  # taking turns, as the throughput rows do
                for proto, cafile, scram, label in cases:
                    got = connections(b, ports[proto], cafile, scram, args.handshake_seconds)
                    sums[label] = [a + x for a, x in zip(sums[label], got, strict=True)]
            # Broker CPU per connection is the steadier figure on a shared machine; 1000 / it is
            # what one broker core could accept and authenticate per second.
            for label, (n, secs, cpu) in sums.items():
                print(f"{label}: {n / secs:,.0f} connections/s, broker CPU {cpu / n * 1000:.2f} "
                      f"ms each (one broker core: {n / cpu:,.0f}/s)", flush=True)  # fmt: skip
        finally:
            b.cleanup()

        print(f"== authorizer, {args.acls:,} ACLs", flush=True)
        d = authorizer.decisions(args.acls, args.acl_seconds)
        print(f"authorize() in process: {d['cached']:,.0f} decisions/s on a cache hit, "
              f"{d['uncached']:,.0f}/s each question new; a bare dict lookup {d['dict']:,.0f}/s")  # fmt: skip
        for api, f in authorizer.end_to_end(args.acls, args.acl_seconds, args.acl_rounds).items():
            print(f"{api}, one request at a time: {f['rate0']:,.0f} requests/s without an "
                  f"authorizer, {f['rate1']:,.0f} with {args.acls:,} ACLs "
                  f"({f['rate1'] / f['rate0']:.1%}); broker CPU {f['cpu0']:,.0f} us and "
                  f"{f['cpu1']:,.0f} us per request")  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"(took {time.monotonic() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
