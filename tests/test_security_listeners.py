"""Listeners' security protocols and the session principal every connection carries."""

from __future__ import annotations

from helpers import RawClient
from security_helpers import sessions

from protocol.apis import ApiKey
from pykbroker.security.principal import ANONYMOUS, KafkaPrincipal


def test_plaintext_connection_is_user_anonymous_with_client_host(broker):
    client = RawClient(broker.port)
    try:
        assert client.request(ApiKey.API_VERSIONS, 3, {}).error_code == 0
        (session,) = sessions(broker)
        # Kafka's DefaultKafkaPrincipalBuilder: PLAINTEXT -> User:ANONYMOUS
        assert str(session.principal) == "User:ANONYMOUS"
        assert session.principal == ANONYMOUS
        assert session.client_host == "127.0.0.1"
        assert session.listener == "PLAINTEXT"
        assert session.security_protocol == "PLAINTEXT"
    finally:
        client.close()


def test_principal_parse_as_kafka():
    assert KafkaPrincipal.parse("User:alice") == KafkaPrincipal("User", "alice")
    assert KafkaPrincipal.parse("User:CN=a:b,O=c").name == "CN=a:b,O=c"
    assert str(KafkaPrincipal("Group", "ops")) == "Group:ops"
