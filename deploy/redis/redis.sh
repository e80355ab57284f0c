#!/usr/bin/env bash
# Runs a private Redis server for pushlog's autopush-migration test (an
# autopush-rs Redis backend, loaded by the test) and local use.
#
#   deploy/redis/redis.sh start    install if missing, start, wait until it answers
#   deploy/redis/redis.sh stop     stop it (by pid; idempotent)
#   deploy/redis/redis.sh status   exit 0 when running and answering
#   deploy/redis/redis.sh env      print REDIS_URL=... for the tests
#   deploy/redis/redis.sh reset    stop it and delete its state
#
# The server is Debian's redis-server package, installed with apt when
# missing. It never uses the package's config, service or /var/lib/redis:
# it runs from the command line, listens on loopback only, keeps no
# snapshot (the tests load what they need) and writes its pid and log under
# the state directory.
#
# Environment:
#   REDIS_PORT           port (default 16379)
#   REDIS_STATE_DIR      pid, log (default $PUSHLOG_TEST_DIR/redis, else <repo>/.cache/redis)
#   REDIS_START_TIMEOUT  seconds to wait for the server (default 30)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
port="${REDIS_PORT:-16379}"
default_state="$repo/.cache/redis"
[[ -n "${PUSHLOG_TEST_DIR:-}" ]] && default_state="$PUSHLOG_TEST_DIR/redis"
state="${REDIS_STATE_DIR:-$default_state}"
timeout="${REDIS_START_TIMEOUT:-30}"
pidfile="$state/redis.pid"

die() { echo "redis.sh: $*" >&2; exit 1; }
say() { echo "redis.sh: $*" >&2; }

install_server() {
	if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
		return
	fi
	command -v apt-get >/dev/null || die "redis-server is not installed and apt-get is missing: install Redis by hand"
	[[ "$(id -u)" == 0 ]] || die "redis-server is not installed; run as root (or: sudo apt-get install redis-server)"
	say "installing Debian's redis-server"
	local i
	for i in $(seq 1 60); do # another apt/dpkg may hold the lock
		if apt-get -o DPkg::Lock::Timeout=60 update -qq &&
			DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=60 install -y -qq --no-install-recommends redis-server redis-tools >/dev/null; then
			break
		fi
		((i < 60)) || die "apt-get install redis-server failed"
		say "apt-get failed (busy?); retrying in 5s"
		sleep 5
	done
	command -v redis-server >/dev/null || die "redis-server still missing after apt-get install"
}

running_pid() {
	[[ -f "$pidfile" ]] || return 1
	local pid
	pid="$(cat "$pidfile" 2>/dev/null)"
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	# A recycled pid would belong to another program.
	grep -q redis-server "/proc/$pid/cmdline" 2>/dev/null || return 1
	echo "$pid"
}

answers() { [[ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" == PONG ]]; }

cmd_start() {
	install_server
	if running_pid >/dev/null && answers; then
		say "already running on 127.0.0.1:$port"
		return
	fi
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		die "port $port is taken by another program (set REDIS_PORT)"
	fi
	mkdir -p "$state"
	redis-server --port "$port" --bind 127.0.0.1 --protected-mode yes \
		--save '' --appendonly no --dir "$state" \
		--daemonize yes --pidfile "$pidfile" --logfile "$state/redis.log" ||
		die "redis-server did not start (see $state/redis.log)"
	local deadline=$((SECONDS + timeout))
	until answers; do
		((SECONDS < deadline)) || die "redis-server not answering on 127.0.0.1:$port after ${timeout}s (see $state/redis.log)"
		sleep 0.2
	done
	say "running on 127.0.0.1:$port (pid $(running_pid || echo '?'))"
}

cmd_stop() {
	local pid
	pid="$(running_pid)" || return 0
	kill "$pid" 2>/dev/null || true
	local deadline=$((SECONDS + 15))
	while kill -0 "$pid" 2>/dev/null; do
		if ((SECONDS >= deadline)); then
			kill -9 "$pid" 2>/dev/null || true
			break
		fi
		sleep 0.2
	done
	rm -f "$pidfile"
	say "stopped"
}

cmd_status() {
	running_pid >/dev/null && answers
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) echo "REDIS_URL=redis://127.0.0.1:$port/0" ;;
reset) cmd_stop && rm -rf "$state" ;;
*) die "usage: $0 start|stop|status|env|reset" ;;
esac
