"""PKCS12 and JKS key and trust stores (ssl.keystore.type / ssl.truststore.type), as Kafka reads
them through the JVM: a store password, the key's own password (ssl.key.password, else the
store's), the chain, the trusted CAs. The stores are made here from certificates made here:
PKCS12 with `cryptography`, JKS with `pyjks` (no keytool on these machines)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from security_helpers import CertificateAuthority, TlsRawClient, sessions

from protocol.apis import ApiKey
from pykbroker.config import ConfigError


def _load(chain_path: str, key_path: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    certs = x509.load_pem_x509_certificates(Path(chain_path).read_bytes())
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), None)
    return key, certs


def pkcs12_keystore(path, chain_key, password: str) -> str:
    from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

    key, (cert, *cas) = _load(*chain_key)
    data = pkcs12.serialize_key_and_certificates(b"broker", key, cert, cas,
                                                 BestAvailableEncryption(password.encode()))  # fmt: skip
    Path(path).write_bytes(data)
    return str(path)


def pkcs12_truststore(path, ca: CertificateAuthority, password: str) -> str:
    from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

    data = pkcs12.serialize_key_and_certificates(None, None, None, [ca.cert],
                                                 BestAvailableEncryption(password.encode()))  # fmt: skip
    Path(path).write_bytes(data)
    return str(path)


def jks_keystore(path, chain_key, store_password: str, key_password: str) -> str:
    import jks
    from cryptography.hazmat.primitives import serialization

    key, certs = _load(*chain_key)
    der_key = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
    chain = [c.public_bytes(serialization.Encoding.DER) for c in certs]
    entry = jks.PrivateKeyEntry.new("broker", chain, der_key, "pkcs8")
    entry.encrypt(key_password)
    jks.KeyStore.new("jks", [entry]).save(str(path), store_password)
    return str(path)


def jks_truststore(path, ca: CertificateAuthority, password: str) -> str:
    import jks
    from cryptography.hazmat.primitives import serialization

    entry = jks.TrustedCertEntry.new("ca", ca.cert.public_bytes(serialization.Encoding.DER))
    jks.KeyStore.new("jks", [entry]).save(str(path), password)
    return str(path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("stores")
    ca = CertificateAuthority(str(d))
    server = ca.issue("localhost", server=True)
    return {"dir": d, "ca": ca, "server": server, "alice": ca.issue({"CN": "alice", "O": "Acme"}),
            "p12": pkcs12_keystore(d / "broker.p12", server, "store-pw"),
            "p12-trust": pkcs12_truststore(d / "trust.p12", ca, "trust-pw"),
            "jks": jks_keystore(d / "broker.jks", server, "store-pw", "key-pw"),
            "jks-trust": jks_truststore(d / "trust.jks", ca, "trust-pw")}  # fmt: skip


def _mtls(pki, kind: str, **extra) -> dict:
    ext = {"PKCS12": "p12", "JKS": "jks"}[kind]
    return {
        "listeners": "SSL://127.0.0.1:0",
        "ssl.keystore.type": kind,
        "ssl.keystore.location": pki[ext],
        "ssl.keystore.password": "store-pw",
        "ssl.truststore.type": kind,
        "ssl.truststore.location": pki[f"{ext}-trust"],
        "ssl.truststore.password": "trust-pw",
        "ssl.client.auth": "required",
        **extra,
    }


@pytest.mark.parametrize("kind", ["PKCS12", "JKS"])
def test_store_serves_tls_and_checks_client_certificates(make_broker, pki, kind):
    extra = {"ssl.key.password": "key-pw"} if kind == "JKS" else {}
    b = make_broker(_mtls(pki, kind, **extra))
    # The chain from the key store verifies against the CA; the trust store admits alice.
    client = TlsRawClient(b.port, pki["ca"].ca_path, pki["alice"])
    try:
        assert client.request(ApiKey.API_VERSIONS, 3, {}).error_code == 0
        (session,) = sessions(b)
        assert str(session.principal) == "User:CN=alice,O=Acme"  # Kafka's DEFAULT rule
    finally:
        client.close()
    # A client certificate from another CA is refused: the trust store holds this CA only.
    rogue = CertificateAuthority(str(pki["dir"] / f"rogue-{kind}"), "Rogue CA").issue("alice")
    refused = False
    try:
        other = TlsRawClient(b.port, pki["ca"].ca_path, rogue)
        refused = other.request(ApiKey.API_VERSIONS, 3, {}) is None
        other.close()
    except (ssl.SSLError, ConnectionError):
        refused = True
    assert refused


def test_confluent_kafka_over_a_pkcs12_listener(make_broker, pki):
    from confluent_kafka.admin import AdminClient

    b = make_broker(_mtls(pki, "PKCS12"))
    chain, key = pki["alice"]
    admin = AdminClient({"bootstrap.servers": f"localhost:{b.port}", "security.protocol": "SSL",
                         "ssl.ca.location": pki["ca"].ca_path, "ssl.certificate.location": chain,
                         "ssl.key.location": key})  # fmt: skip
    assert admin.list_topics(timeout=15).brokers


def test_jks_trust_store_without_password(make_broker, pki):
    """Java reads a trust store with no password (no integrity check); so does pykbroker."""
    props = _mtls(pki, "JKS", **{"ssl.key.password": "key-pw"})
    del props["ssl.truststore.password"]
    b = make_broker(props)
    client = TlsRawClient(b.port, pki["ca"].ca_path, pki["alice"])
    try:
        assert client.request(ApiKey.API_VERSIONS, 3, {}).error_code == 0
    finally:
        client.close()


@pytest.mark.parametrize(
    ("kind", "change", "error"),
    [
        ("PKCS12", {"ssl.keystore.password": "wrong"}, "failed to load SSL key store"),
        ("JKS", {"ssl.keystore.password": "wrong"}, "failed to load SSL key store"),
        # The key's own password missing: Kafka then tries the store's, which is wrong here.
        ("JKS", {}, "failed to load SSL key store"),
        ("PKCS12", {"ssl.truststore.password": "wrong"}, "failed to load SSL trust store"),
        ("JKS", {"ssl.truststore.password": "wrong", "ssl.key.password": "key-pw"},
         "failed to load SSL trust store"),
        ("PKCS12", {"ssl.keystore.password": None},
         "SSL key store is specified, but key store password is not specified"),
        ("PKCS12", {"ssl.truststore.location": None, "ssl.truststore.certificates": "x"},
         "ssl.truststore.certificates requires ssl.truststore.type=PEM"),
    ],
)  # fmt: skip
def test_store_errors(make_broker, pki, kind, change, error):
    props = _mtls(pki, kind)
    for k, v in change.items():
        if v is None:
            props.pop(k)
        else:
            props[k] = v
    with pytest.raises(ConfigError, match=error):
        make_broker(props)


def test_missing_package_is_named(make_broker, pki, monkeypatch):
    """Without pyjks (an optional dependency) a JKS store fails with what to install."""
    import sys

    monkeypatch.setitem(sys.modules, "jks", None)  # import jks -> ImportError
    with pytest.raises(ConfigError, match=r"JKS stores need the `pyjks` package"):
        make_broker(_mtls(pki, "JKS", **{"ssl.key.password": "key-pw"}))
