#!/bin/sh
# Installs the Debian programs some tests run against, when they are missing and we are root:
# prometheus-pushgateway (metrics push tests) and chromium (the dashboard's browser tests).
# Without root (or without apt-get) it prints what is missing and carries on: the tests that
# need a program fail with a message naming it, so nothing is skipped silently.
set -eu

# program path, then the Debian package providing it
TOOLS="/usr/bin/prometheus-pushgateway:prometheus-pushgateway /usr/bin/chromium:chromium"

missing=""
for tool in $TOOLS; do
    path=${tool%%:*}
    package=${tool#*:}
    [ -x "$path" ] || missing="$missing $package"
done
[ -n "$missing" ] || exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-tools: missing:$missing; install them as root" >&2
    exit 0
fi
echo "install-test-tools: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086 # one word per package
apt-get install -y --no-install-recommends $missing >/dev/null \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends $missing >/dev/null; } \
    || echo "install-test-tools: could not install$missing" >&2
