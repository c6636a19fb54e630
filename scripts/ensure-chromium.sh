#!/bin/sh
# Make a headless browser available to the web console's browser tests: Debian's `chromium`
# package (Playwright drives it; `playwright install` cannot download browsers here). Installed
# only when missing, only as root with apt-get; otherwise say why, and those tests skip with the
# same reason.
if [ -x "${PYKBROKER_CHROMIUM:-/usr/bin/chromium}" ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: chromium not found and can't install it (needs root and apt-get):" \
         "browser tests will be skipped. Install with: apt-get install chromium" >&2
    exit 0
fi
echo "ensure-chromium: installing Debian's chromium package" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get -o DPkg::Lock::Timeout=600 update -qq &&
       apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends chromium >/dev/null; }; then
    echo "ensure-chromium: apt-get install chromium failed: browser tests will be skipped" >&2
fi
exit 0
