#!/usr/bin/env bash
# Installs Debian's prometheus package (the prometheus server and promtool)
# for the tests of deploy/prometheus (integration/prometheus_test.go):
#
#   deploy/prometheus/install.sh
#
# Does nothing when both binaries are on PATH. Needs root for apt-get;
# retries while another apt/dpkg holds the lock (PUSHLOG_APT_LOCK_WAIT
# seconds, default 600). Exits non-zero when they cannot be installed; the
# tests then fail in CI and skip elsewhere.
set -euo pipefail

say() { printf 'prometheus: %s\n' "$*" >&2; }

if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
	say "$(promtool --version 2>&1 | head -1)"
	exit 0
fi
command -v apt-get >/dev/null || { say "ERROR: apt-get is not available: install prometheus and promtool by hand"; exit 1; }
[[ "$(id -u)" == 0 ]] || { say "ERROR: run as root (or: sudo apt-get install prometheus)"; exit 1; }

lock_wait="${PUSHLOG_APT_LOCK_WAIT:-600}"
apt() { # apt ARGS...: apt-get, waiting for another apt/dpkg's lock
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout="$lock_wait" "$@"
}
say "installing Debian's prometheus with apt-get"
apt update -qq || { say "ERROR: apt-get update failed"; exit 1; }
# --no-install-recommends: no node exporter or other extras. The tests
# start their own server on a free port (where an init system runs, the
# packaged service on :9090 is not used).
apt install -y -qq --no-install-recommends prometheus >&2 || { say "ERROR: apt-get install prometheus failed"; exit 1; }
command -v promtool >/dev/null || { say "ERROR: promtool still missing after apt-get install prometheus"; exit 1; }
say "$(promtool --version 2>&1 | head -1)"
