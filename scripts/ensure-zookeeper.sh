#!/bin/sh
# Make a ZooKeeper server available to the cluster tests: Debian's `zookeeper` package (it runs
# on the Java that the package pulls in). Installed only when missing, only as root with apt-get;
# otherwise say why, and the cluster tests skip themselves with the same reason.
jar="${PYKBROKER_ZOOKEEPER_JAR:-/usr/share/java/zookeeper.jar}"
if [ -f "$jar" ] && command -v java >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-zookeeper: ZooKeeper not found and can't install it (needs root and apt-get):" \
         "cluster tests will be skipped. Install with: apt-get install zookeeper" >&2
    exit 0
fi
echo "ensure-zookeeper: installing Debian's zookeeper package" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends zookeeper >/dev/null; }; then
    echo "ensure-zookeeper: apt-get install zookeeper failed: cluster tests will be skipped" >&2
fi
exit 0
