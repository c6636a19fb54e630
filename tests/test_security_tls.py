"""SSL listeners: TLS from PEM (Kafka 2.7+ keys), client certificates (ssl.client.auth), the
principal from the certificate (ssl.principal.mapping.rules), and the client libraries."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from helpers import RawClient
from security_helpers import PLAIN_JAAS, CertificateAuthority, TlsRawClient, sessions, tls_overrides

from protocol.apis import ApiKey
from pykbroker.config import BrokerConfig, ConfigError


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    ca = CertificateAuthority(d)
    return {
        "dir": d,
        "ca": ca,
        "server": ca.issue("localhost", server=True),
        "alice": ca.issue({"CN": "alice", "OU": "eng", "O": "Acme", "C": "US"}),
        "expired": ca.issue({"CN": "old"}, expired=True),
        "rogue": CertificateAuthority(d + "/rogue", "Rogue CA").issue({"CN": "alice"}),
    }


def _refused(pki, port, cert) -> bool:
    """True if the broker refuses this client certificate (TLS 1.3 reports it at first read)."""
    try:
        client = TlsRawClient(port, pki["ca"].ca_path, cert)
    except (ssl.SSLError, ConnectionError):
        return True
    try:
        return client.request(ApiKey.API_VERSIONS, 3, {}) is None
    except (ssl.SSLError, ConnectionError):
        return True
    finally:
        client.close()


def test_ssl_listener_serves_anonymous_over_tls(make_broker, pki):
    b = make_broker(tls_overrides(pki["ca"], pki["server"]))
    client = TlsRawClient(b.port, pki["ca"].ca_path)
    try:
        assert client.request(ApiKey.API_VERSIONS, 3, {}).error_code == 0
        (session,) = sessions(b)
        assert (str(session.principal), session.security_protocol) == ("User:ANONYMOUS", "SSL")
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        client.close()
    # A plaintext client on the TLS port gets nothing served.
    raw = RawClient(b.port)
    try:
        assert raw.request(ApiKey.API_VERSIONS, 3, {}) is None
    finally:
        raw.close()


def test_mtls_required_principal_from_certificate(make_broker, pki):
    b = make_broker(tls_overrides(pki["ca"], pki["server"], **{"ssl.client.auth": "required"}))
    client = TlsRawClient(b.port, pki["ca"].ca_path, pki["alice"])
    try:
        assert client.request(ApiKey.API_VERSIONS, 3, {}).error_code == 0
        (session,) = sessions(b)
        # DEFAULT rule: the DN as Java's X500Principal.getName() writes it
        assert str(session.principal) == "User:CN=alice,OU=eng,O=Acme,C=US"
    finally:
        client.close()
    assert _refused(pki, b.port, None)  # no certificate
    assert _refused(pki, b.port, pki["rogue"])  # signed by a CA the broker doesn't trust
    assert _refused(pki, b.port, pki["expired"])


def test_client_auth_requested_and_mapping_rules(make_broker, pki):
    b = make_broker(tls_overrides(pki["ca"], pki["server"], **{
        "ssl.client.auth": "requested",
        # Kafka's documented example rule syntax: first match wins, /L lower-cases
        "ssl.principal.mapping.rules": "RULE:^CN=(.*?),OU=(.*?),O=(.*?),C=(.*?)$/$1@$3/L,DEFAULT",
    }))  # fmt: skip
    client = TlsRawClient(b.port, pki["ca"].ca_path, pki["alice"])
    try:
        assert client.request(ApiKey.API_VERSIONS, 3, {}).error_code == 0
        assert [str(s.principal) for s in sessions(b)] == ["User:alice@acme"]
    finally:
        client.close()
    client = TlsRawClient(b.port, pki["ca"].ca_path)  # requested: none sent is fine
    try:
        assert client.request(ApiKey.API_VERSIONS, 3, {}).error_code == 0
        assert "User:ANONYMOUS" in [str(s.principal) for s in sessions(b)]
    finally:
        client.close()
    assert _refused(pki, b.port, pki["rogue"])  # sent but untrusted: refused


def test_enabled_protocols_and_cipher_suites(make_broker, pki):
    b = make_broker(tls_overrides(pki["ca"], pki["server"], **{
        "ssl.enabled.protocols": "TLSv1.2",
        "ssl.cipher.suites": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    }))  # fmt: skip
    client = TlsRawClient(b.port, pki["ca"].ca_path)
    try:
        assert client.request(ApiKey.API_VERSIONS, 3, {}).error_code == 0
        assert client.sock.version() == "TLSv1.2"
        assert client.sock.cipher()[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"
    finally:
        client.close()
    with pytest.raises(ssl.SSLError):
        TlsRawClient(b.port, pki["ca"].ca_path, minimum_version=ssl.TLSVersion.TLSv1_3)


def test_key_store_file_with_encrypted_key(make_broker, pki, tmp_path):
    chain, key = pki["ca"].issue({"CN": "localhost"}, server=True, key_password="s3cret")
    both = str(tmp_path / "keystore.pem")
    with open(both, "w") as f:  # ssl.keystore.location in PEM: the key and its chain, one file
        f.write(Path(key).read_text() + Path(chain).read_text())
    b = make_broker({"listeners": "SSL://127.0.0.1:0", "ssl.keystore.type": "PEM",
                     "ssl.keystore.location": both, "ssl.key.password": "s3cret"})  # fmt: skip
    client = TlsRawClient(b.port, pki["ca"].ca_path)
    try:
        assert client.request(ApiKey.API_VERSIONS, 3, {}).error_code == 0
    finally:
        client.close()
    with pytest.raises(ConfigError, match="failed to load SSL key store"):
        make_broker({"listeners": "SSL://127.0.0.1:0", "ssl.keystore.type": "PEM",
                     "ssl.keystore.location": both, "ssl.key.password": "wrong"})  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        # Kafka's DefaultSslEngineFactory's message
        (
            {"ssl.keystore.type": "JKS"},
            "SSL key store is specified, but key store password is not specified",
        ),  # fmt: skip
        ({"ssl.keystore.type": "BKS"}, "ssl.keystore.type BKS is not supported"),
        ({"ssl.keystore.password": "x"}, "SSL key store password cannot be specified with PEM"),
        ({"ssl.client.auth": "sometimes"}, "String must be one of: required, requested, none"),
    ],
)
def test_ssl_config_errors(pki, overrides, error, tmp_path):
    from pykbroker.embedded import EmbeddedBroker

    chain, key = pki["server"]
    both = str(tmp_path / "ks.pem")
    with open(both, "w") as f:
        f.write(Path(key).read_text() + Path(chain).read_text())
    props = {"listeners": "SSL://127.0.0.1:0", "ssl.keystore.type": "PEM",
             "ssl.keystore.location": both, **overrides}  # fmt: skip
    with pytest.raises(ConfigError, match=error):
        BrokerConfig(props)  # value errors surface here, store errors when the listener is built
        EmbeddedBroker(data_dir=str(tmp_path / "d"), overrides=props).start()


def test_sasl_ssl_asks_client_certificates_only_when_the_listener_says(make_broker, pki):
    """KIP-684: the broker-wide ssl.client.auth does not apply to SASL_SSL listeners."""
    base = tls_overrides(pki["ca"], pki["server"], listener="SASL_SSL", **{
        "sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_ssl.plain.sasl.jaas.config": PLAIN_JAAS,
    })  # fmt: skip
    b = make_broker({**base, "ssl.client.auth": "required"})
    assert not _refused(pki, b.port, None)
    b = make_broker({**base, "listener.name.sasl_ssl.ssl.client.auth": "required"})
    assert _refused(pki, b.port, None)
    assert not _refused(pki, b.port, pki["alice"])


def test_failed_handshakes_give_back_their_connection_slots(make_broker, pki):
    """max.connections counts a TLS connection from accept; one whose handshake fails (a
    plaintext client, a port scan) must give its slot back, or a few of them would stop the
    listener accepting anyone."""
    import socket

    b = make_broker(tls_overrides(pki["ca"], pki["server"], **{"max.connections": "3"}))
    for _ in range(6):  # twice the limit: each must have been given back
        raw = RawClient(b.port)
        try:
            assert raw.request(ApiKey.API_VERSIONS, 3, {}) is None  # not TLS: refused
        finally:
            raw.close()
        with socket.create_connection(("127.0.0.1", b.port)):
            pass  # connects and closes without a word
    client = TlsRawClient(b.port, pki["ca"].ca_path)
    try:
        assert client.request(ApiKey.API_VERSIONS, 3, {}).error_code == 0
    finally:
        client.close()


def test_healthcheck_speaks_tls_on_a_tls_first_listener(make_broker, pki, capsys):
    """The image's health check (`pykbroker healthcheck`) on a broker whose first listener is
    SASL_SSL (the compose `secure` profile): ApiVersions over TLS, served before SASL."""
    from pykbroker.cli.broker import main

    b = make_broker(tls_overrides(pki["ca"], pki["server"], "SASL_SSL",
                                  **{"sasl.enabled.mechanisms": "PLAIN",
                                     "listener.name.sasl_ssl.plain.sasl.jaas.config": PLAIN_JAAS}))  # fmt: skip
    assert main(["healthcheck", "--override", f"listeners=SASL_SSL://:{b.port}"]) == 0
    assert capsys.readouterr().out.startswith(f"OK: 127.0.0.1:{b.port} answered ApiVersions")
    assert main(["healthcheck", "--bootstrap-server", f"127.0.0.1:{b.port}", "--tls"]) == 0
    capsys.readouterr()
    # Without TLS the broker answers nothing: unhealthy, as a plaintext probe must be.
    assert main(["healthcheck", "--bootstrap-server", f"127.0.0.1:{b.port}", "--timeout",
                 "2"]) == 1  # fmt: skip
    assert "UNHEALTHY" in capsys.readouterr().err
