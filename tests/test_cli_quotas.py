"""kafka-configs for client quotas: users, clients, <user, client> and defaults, Kafka's output.

Expected lines are Kafka's ConfigCommand's (tools/.../ConfigCommand.java): "Quota configs for
user-principal 'alice' are producer_byte_rate=1024.0, consumer_byte_rate=2048.0" (doubles as
Java prints them, keys in Java HashMap order), "Completed updating config for user alice."
"""

from __future__ import annotations

from cli_helpers import tool

BS = ("--bootstrap-server", "localhost:9092")


def configs(broker, *args):
    return tool("kafka-configs", *args, *BS, port=broker.port)


def test_user_client_and_default_quotas(broker):
    r = configs(broker, "--alter", "--entity-type", "users", "--entity-name", "alice",
                "--add-config", "producer_byte_rate=1024,consumer_byte_rate=2048")  # fmt: skip
    assert (r.returncode, r.lines) == (0, ["Completed updating config for user alice."])
    r = configs(broker, "--describe", "--entity-type", "users", "--entity-name", "alice")
    assert r.lines == [
        "Quota configs for user-principal 'alice' are producer_byte_rate=1024.0, "
        "consumer_byte_rate=2048.0"
    ]
    r = configs(broker, "--alter", "--entity-type", "clients", "--entity-default",
                "--add-config", "request_percentage=200")  # fmt: skip
    assert r.lines == ["Completed updating default config for clients in the cluster."]
    r = configs(broker, "--alter", "--entity-type", "users", "--entity-name", "alice",
                "--entity-type", "clients", "--entity-name", "app",
                "--add-config", "producer_byte_rate=512")  # fmt: skip
    assert r.lines == ["Completed updating config for user alice."]
    r = configs(broker, "--alter", "--user-defaults", "--add-config", "consumer_byte_rate=1e7")
    assert r.lines == ["Completed updating default config for users in the cluster."]

    r = configs(broker, "--describe", "--entity-type", "clients", "--entity-default")
    assert r.lines == ["Quota configs for the default client-id are request_percentage=200.0"]
    r = configs(broker, "--describe", "--entity-type", "users", "--entity-name", "alice",
                "--entity-type", "clients", "--entity-name", "app")  # fmt: skip
    assert r.lines == [
        "Quota configs for user-principal 'alice', client-id 'app' are producer_byte_rate=512.0"
    ]
    # Every user entity (strict: not the <user, client> ones).
    r = configs(broker, "--describe", "--entity-type", "users")
    assert sorted(r.lines) == [
        "Quota configs for the default user-principal are consumer_byte_rate=1.0E7",
        "Quota configs for user-principal 'alice' are producer_byte_rate=1024.0, "
        "consumer_byte_rate=2048.0",
    ]

    r = configs(broker, "--alter", "--entity-type", "users", "--entity-name", "alice",
                "--delete-config", "consumer_byte_rate")  # fmt: skip
    assert r.returncode == 0
    r = configs(broker, "--describe", "--user", "alice")
    assert r.lines == ["Quota configs for user-principal 'alice' are producer_byte_rate=1024.0"]


def test_quota_errors(broker):
    r = configs(broker, "--alter", "--entity-type", "clients", "--entity-name", "c",
                "--add-config", "SCRAM-SHA-256=[password=x]")  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (
        "Only quota configs can be added for 'clients' using --bootstrap-server. Unexpected "
        "config names: SCRAM-SHA-256"
    )
    r = configs(broker, "--alter", "--entity-type", "users", "--entity-name", "u",
                "--add-config", "retention.ms=5")  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (
        "Only quota and SCRAM credential configs can be added for 'users' using "
        "--bootstrap-server. Unexpected config names: retention.ms"
    )
    r = configs(broker, "--alter", "--entity-type", "users", "--entity-name", "u",
                "--delete-config", "producer_byte_rate")  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == "Invalid config(s): producer_byte_rate"
    r = configs(broker, "--alter", "--entity-type", "users", "--entity-name", "u",
                "--add-config", "producer_byte_rate=fast")  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (
        "Cannot parse quota configuration value for producer_byte_rate: fast"
    )
    # The broker's refusal comes back as Kafka's InvalidRequestException.
    r = configs(broker, "--alter", "--entity-type", "users", "--entity-name", "u",
                "--add-config", "producer_byte_rate=1.5")  # fmt: skip
    assert r.returncode == 1
    assert "Configuration producer_byte_rate must be a LONG value" in r.stderr
    r = configs(broker, "--alter", "--entity-type", "ips", "--entity-name", "10.0.0.1",
                "--add-config", "connection_creation_rate=10")  # fmt: skip
    assert r.lines == ["Completed updating config for ip 10.0.0.1."]
    r = configs(broker, "--describe", "--entity-type", "ips")
    assert r.lines == ["Quota configs for ip '10.0.0.1' are connection_creation_rate=10.0"]
