#!/bin/sh
# What `make test` needs from Debian besides the venv, in one apt-get run (one index update
# instead of one per tool): ZooKeeper for the cluster tests, chromium for the console's browser
# tests, podman, runc and debootstrap for the image tests, kcat for the compatibility matrix.
# Same packages and options as ensure-zookeeper.sh, ensure-chromium.sh, ensure-podman.sh and
# compat-tests/bootstrap.sh, which run afterwards: they find everything in place, or say why
# not (and the tests concerned skip, or fail as root).
cd "$(dirname "$0")" || exit 1
bare=""  # installed without recommends, as ensure-zookeeper.sh and ensure-chromium.sh do
full=""  # with recommends, as ensure-podman.sh and compat-tests/bootstrap.sh do
jar="${PYKBROKER_ZOOKEEPER_JAR:-/usr/share/java/zookeeper.jar}"
if [ ! -f "$jar" ] || ! command -v java >/dev/null 2>&1; then bare="zookeeper"; fi
if [ ! -x "${PYKBROKER_CHROMIUM:-/usr/bin/chromium}" ]; then bare="$bare chromium"; fi
for tool in podman runc debootstrap kcat; do
    command -v "$tool" >/dev/null 2>&1 || full="$full $tool"
done
if [ -n "$bare$full" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-test-tools: installing Debian's$bare$full" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt="apt-get -o DPkg::Lock::Timeout=600"
    # shellcheck disable=SC2086 # the package lists are words
    $apt update -qq && {
        [ -z "$bare" ] || $apt install -y -qq --no-install-recommends $bare >/dev/null
        [ -z "$full" ] || $apt install -y -qq $full >/dev/null
    }
fi
sh ensure-zookeeper.sh
sh ensure-chromium.sh
sh ensure-podman.sh
exec bash ../compat-tests/bootstrap.sh --quick
