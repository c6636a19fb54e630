#!/bin/sh
# The compose `secure` profile's one-shot set-up, as the super user `admin` over SASL_SSL once
# the broker answers: a SCRAM-SHA-512 credential for `alice`, and ACLs that let her produce to
# and consume from topics (and use groups) whose names start with `app-`. Nothing else is
# allowed to her (allow.everyone.if.no.acl.found=false). Run again, it changes nothing.
set -eu

bootstrap="${PYKBROKER_BOOTSTRAP:-broker-secure:9094}"
cat > /tmp/admin.properties <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="${PYKBROKER_ADMIN_PASSWORD}";
ssl.truststore.type=PEM
ssl.truststore.location=/broker/certs/ca.crt
PROPS
chmod 600 /tmp/admin.properties

tries=0
until [ -s /broker/certs/ca.crt ] \
    && kafka-configs --bootstrap-server "$bootstrap" --command-config /tmp/admin.properties \
        --alter --entity-type users --entity-name alice \
        --add-config "SCRAM-SHA-512=[iterations=8192,password=${PYKBROKER_ALICE_PASSWORD}]"; do
    tries=$((tries + 1))
    if [ "$tries" -ge 60 ]; then
        echo "secure-init: the broker at $bootstrap did not answer" >&2
        exit 1
    fi
    sleep 1
done
kafka-acls --bootstrap-server "$bootstrap" --command-config /tmp/admin.properties --add \
    --allow-principal User:alice --producer --consumer \
    --topic app- --group app- --resource-pattern-type prefixed
kafka-acls --bootstrap-server "$bootstrap" --command-config /tmp/admin.properties --list
echo "secure-init: done" >&2
