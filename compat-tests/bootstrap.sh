#!/usr/bin/env bash
# Installs what the matrix needs beyond the Python test extras; every step is optional and
# bounded: a client that cannot be installed shows as `unavailable`, it never fails the run.
#   compat-tests/bootstrap.sh [--quick]   (--quick: skip apt-get update)
cd "$(dirname "$0")"

if ! command -v kcat >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "compat: installing kcat (Debian package)"
    export DEBIAN_FRONTEND=noninteractive
    timeout 120 apt-get install -y -q kcat >/dev/null 2>&1 \
        || { [ "$1" != --quick ] && timeout 180 apt-get update -q >/dev/null 2>&1 \
             && timeout 120 apt-get install -y -q kcat >/dev/null 2>&1; } \
        || echo "compat: kcat could not be installed; its column will show unavailable"
fi

if command -v npm >/dev/null 2>&1; then
    if [ ! -f kafkajs/node_modules/.package-lock.json ] \
        || [ kafkajs/package-lock.json -nt kafkajs/node_modules/.package-lock.json ]; then
        echo "compat: installing kafkajs (npm ci)"
        (cd kafkajs && timeout 180 npm ci --no-audit --no-fund --loglevel=error >/dev/null 2>&1) \
            || echo "compat: npm ci failed; the kafkajs column will show unavailable"
    fi
else
    echo "compat: npm not found; the kafkajs column will show unavailable"
fi
# The failover column and the seed guide's sections 5, 6 and 8 run on a cluster: ZooKeeper.
if [ "$1" != --quick ]; then
    sh ../scripts/ensure-zookeeper.sh
fi
exit 0
