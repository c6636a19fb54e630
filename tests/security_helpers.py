"""Shared by the security tests: broker overrides for SASL/TLS listeners, a raw SASL client,
and certificates made at test time with the `cryptography` package (no key is committed)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from helpers import RawClient

from protocol.apis import ApiKey

PLAIN_JAAS = (
    "org.apache.kafka.common.security.plain.PlainLoginModule required "
    'username="admin" password="admin-secret" '
    'user_admin="admin-secret" user_alice="alice-secret";'
)
# The same with a second ordinary user, bob (tests of what one user may and the other may not).
PLAIN_JAAS_WITH_BOB = PLAIN_JAAS[:-1] + ' user_bob="bob-secret";'


def sasl_plaintext_overrides(mechanisms: str = "PLAIN", **extra) -> dict:
    return {
        "listeners": "SASL_PLAINTEXT://127.0.0.1:0",
        "sasl.enabled.mechanisms": mechanisms,
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": PLAIN_JAAS,
        **extra,
    }


class TlsRawClient(RawClient):
    """RawClient over TLS (a client certificate if given)."""

    def __init__(self, port: int, ca: str, cert: tuple[str, str] | None = None, **ctx_opts):
        import ssl

        ctx = ssl.create_default_context(cafile=ca)
        for k, v in ctx_opts.items():
            setattr(ctx, k, v)
        if cert is not None:
            ctx.load_cert_chain(*cert)
        super().__init__(port)
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")


def tls_overrides(ca, server: tuple[str, str], listener: str = "SSL", **extra) -> dict:
    chain, key = server
    return {
        "listeners": f"{listener}://127.0.0.1:0",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.certificate.chain": Path(chain).read_text(),
        "ssl.keystore.key": Path(key).read_text(),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": ca.ca_path,
        **extra,
    }


def sessions(b) -> list:
    """The sessions of an EmbeddedBroker's open connections (read on its loop)."""
    return b.call(lambda: [c.session for c in b.broker.connections])


def handshake(client: RawClient, mechanism: str, version: int = 1):
    return client.request(ApiKey.SASL_HANDSHAKE, version, {"mechanism": mechanism})


def authenticate(client: RawClient, token: bytes, version: int = 2):
    return client.request(ApiKey.SASL_AUTHENTICATE, version, {"auth_bytes": token})


def scram_client_exchange(client: RawClient, mechanism: str, user: str, password: str,
                          version: int = 2, final_nonce=lambda ours, server: server,
                          extensions: str = ""):  # fmt: skip
    """A SCRAM exchange written from RFC 5802 (independent of the broker's code); returns the
    final SaslAuthenticate response, or the first one if it failed. `extensions`, e.g.
    ",tokenauth=true", follow the nonce in the client's first message (Kafka's ScramExtensions)."""
    h = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}[mechanism]
    nonce = base64.b64encode(secrets.token_bytes(18)).decode()
    first_bare = f"n={user},r={nonce}{extensions}"
    r1 = authenticate(client, ("n,," + first_bare).encode(), version)
    if r1 is None or r1.error_code:
        return r1
    server_first = bytes(r1.auth_bytes).decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    salted = hashlib.pbkdf2_hmac(
        h, password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
    )
    client_key = hmac.new(salted, b"Client Key", h).digest()
    stored_key = hashlib.new(h, client_key).digest()
    without_proof = f"c=biws,r={final_nonce(nonce, attrs['r'])}"
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.new(stored_key, auth_message, h).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    final = f"{without_proof},p={base64.b64encode(proof).decode()}"
    r2 = authenticate(client, final.encode(), version)
    if r2 is not None and r2.error_code == 0:
        server_key = hmac.new(salted, b"Server Key", h).digest()
        expected = base64.b64encode(hmac.new(server_key, auth_message, h).digest()).decode()
        assert bytes(r2.auth_bytes).decode() == f"v={expected}"
    return r2


# --- certificates ---------------------------------------------------------------------------


class CertificateAuthority:
    """A CA made for one test session; signs server and client certificates into tmp files."""

    def __init__(self, directory: str, name: str = "Test CA"):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name).issuer_name(self.name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )  # fmt: skip
        self.ca_path = self._write(f"{name.replace(' ', '_')}.crt", self._pem(self.cert))

    @staticmethod
    def _pem(obj) -> str:
        from cryptography.hazmat.primitives import serialization

        return obj.public_bytes(serialization.Encoding.PEM).decode()

    def _write(self, filename: str, text: str) -> str:
        path = os.path.join(self.dir, filename)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path

    def issue(self, subject: dict[str, str] | str, *, server: bool = False, days: int = 30,
              expired: bool = False, key_password: str | None = None) -> tuple[str, str]:  # fmt: skip
        """(certificate chain path, PKCS#8 key path) for a subject like {"CN": "alice", "O": "x"}."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        oids = {"CN": NameOID.COMMON_NAME, "O": NameOID.ORGANIZATION_NAME,
                "OU": NameOID.ORGANIZATIONAL_UNIT_NAME, "C": NameOID.COUNTRY_NAME,
                "L": NameOID.LOCALITY_NAME, "ST": NameOID.STATE_OR_PROVINCE_NAME}  # fmt: skip
        if isinstance(subject, str):
            subject = {"CN": subject}
        # Given in RFC 2253 order (CN first); a certificate lists them the other way round.
        name = x509.Name([x509.NameAttribute(oids[k], v) for k, v in reversed(subject.items())])
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        start = now - datetime.timedelta(days=10 if expired else 1)
        end = now - datetime.timedelta(days=1) if expired else now + datetime.timedelta(days=days)
        builder = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(self.name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
        )  # fmt: skip
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                             x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
                critical=False,
            )  # fmt: skip
            usage = ExtendedKeyUsageOID.SERVER_AUTH
        else:
            usage = ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        encryption = (serialization.BestAvailableEncryption(key_password.encode())
                      if key_password else serialization.NoEncryption())  # fmt: skip
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        ).decode()
        self.issued = getattr(self, "issued", 0) + 1  # never overwrite an earlier one's files
        base = "_".join(subject.values()).replace(" ", "_") + f"_{self.issued}"
        chain = self._write(base + ".crt", self._pem(cert) + self._pem(self.cert))
        return chain, self._write(base + ".key", key_pem)
