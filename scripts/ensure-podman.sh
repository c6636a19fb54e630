#!/bin/sh
# Make podman available to the image tests (tests/test_image.py): Debian's podman with runc
# (the default runtime crun is refused setrlimit on these machines) and debootstrap (the tests
# build a stand-in for the Dockerfile's base image, since no container registry is reachable).
# Installed only when missing, only as root with apt-get; otherwise say why, and the image tests
# skip themselves with the same reason.
if command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1 \
    && command -v debootstrap >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-podman: podman, runc or debootstrap not found and can't install them (needs" \
         "root and apt-get): image tests will be skipped. Install with:" \
         "apt-get install podman runc debootstrap" >&2
    exit 0
fi
echo "ensure-podman: installing Debian's podman, runc and debootstrap" >&2
export DEBIAN_FRONTEND=noninteractive
apt="apt-get -o DPkg::Lock::Timeout=600"
if ! { $apt update -qq && $apt install -y -qq podman runc debootstrap >/dev/null; }; then
    echo "ensure-podman: apt-get install podman runc debootstrap failed: image tests will be" \
         "skipped" >&2
fi
exit 0
