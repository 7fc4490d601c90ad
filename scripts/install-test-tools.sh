#!/bin/sh
# Installs the Debian programs some tests run against, when they are missing and we are root.
# Without root (or without apt-get) it prints what is missing and carries on: the tests that
# need a program fail with a message naming it, so nothing is skipped silently.
set -eu

PUSHGATEWAY=/usr/bin/prometheus-pushgateway

if [ -x "$PUSHGATEWAY" ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-tools: $PUSHGATEWAY is missing; install prometheus-pushgateway as root" >&2
    exit 0
fi
echo "install-test-tools: installing prometheus-pushgateway" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends prometheus-pushgateway >/dev/null \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends prometheus-pushgateway >/dev/null; } \
    || echo "install-test-tools: could not install prometheus-pushgateway" >&2
