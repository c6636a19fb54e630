"""kafka-configs for users' SCRAM credentials, as Kafka's ConfigCommand does it with
--bootstrap-server: AlterUserScramCredentials (the tool salts and hashes the password, the
broker never sees it) and DescribeUserScramCredentials.

    kafka-configs --bootstrap-server localhost:9092 --alter --entity-type users --entity-name alice \\
        --add-config 'SCRAM-SHA-256=[iterations=8192,password=alice-secret]'
    kafka-configs --bootstrap-server localhost:9092 --alter --entity-type users --entity-name alice \\
        --delete-config SCRAM-SHA-256
    kafka-configs --bootstrap-server localhost:9092 --describe --entity-type users
"""

from __future__ import annotations

import re
import secrets

from protocol.sasl.scram import MECHANISMS, MIN_ITERATIONS, salted_password
from pykbroker.cli import common
from pykbroker.cli.common import CommandError

DEFAULT_ITERATIONS = 4096  # ConfigCommand's DefaultScramIterations
MECHANISM_IDS = {"SCRAM-SHA-256": 1, "SCRAM-SHA-512": 2}
MECHANISM_NAMES = {v: k for k, v in MECHANISM_IDS.items()}
_CREDENTIAL = re.compile(r"(?:iterations=(-?[0-9]*),)?password=(.*)", re.S)


def is_scram(key: str) -> bool:
    return key in MECHANISMS


def alter(admin, user: str, to_add: dict[str, str], to_delete: list[str]) -> None:
    from kafka.protocol.admin import AlterUserScramCredentialsRequest

    if user == "":
        raise CommandError("The use of --entity-default or --user-defaults is not allowed with "
                           "User SCRAM Credentials using --bootstrap-server.")  # fmt: skip
    deletions = [(user, MECHANISM_IDS[m]) for m in to_delete]
    upsertions = []
    for mechanism, value in to_add.items():
        m = _CREDENTIAL.fullmatch(value)
        if m is None:
            raise CommandError(f"Invalid credential property {mechanism}={value}")
        iterations = int(m[1]) if m[1] not in (None, "", "-1") else DEFAULT_ITERATIONS
        if iterations < MIN_ITERATIONS:
            raise CommandError(f"Iterations {iterations} is less than the minimum "
                               f"{MIN_ITERATIONS} required for {mechanism}")  # fmt: skip
        salt = secrets.token_bytes(32)
        salted = salted_password(mechanism, m[2].encode(), salt, iterations)
        upsertions.append((user, MECHANISM_IDS[mechanism], iterations, salt, salted))
    response = common.send(admin, AlterUserScramCredentialsRequest(
        deletions=deletions, upsertions=upsertions))  # fmt: skip
    for result in response.results:
        common.check(result.error_code, result.error_message)


def describe(admin, names: list[str]) -> None:
    """SCRAM credential lines, as ConfigCommand prints them after the quota lines; users
    without credentials print nothing."""
    from kafka.protocol.admin import DescribeUserScramCredentialsRequest

    request = DescribeUserScramCredentialsRequest(users=[(n,) for n in names] if names else None)
    response = common.send(admin, request)
    common.check(response.error_code, response.error_message)
    for result in response.results:
        if result.error_code == 91:  # RESOURCE_NOT_FOUND: not among the users listed
            continue
        if result.error_code:
            error = common.BrokerError(result.error_code, result.error_message)
            print(f"Error retrieving SCRAM credential configs for user-principal '{result.user}': "
                  f"{error.qualified}")  # fmt: skip
            continue
        infos = ", ".join(f"{MECHANISM_NAMES.get(i.mechanism, i.mechanism)}=iterations={i.iterations}"
                          for i in result.credential_infos)  # fmt: skip
        print(f"SCRAM credential configs for user-principal '{result.user}' are {infos}")
