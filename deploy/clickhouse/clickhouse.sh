#!/usr/bin/env bash
# Runs a private ClickHouse server for pushlog's tests and local use.
#
#   deploy/clickhouse/clickhouse.sh start    install if missing, start, wait until it answers
#   deploy/clickhouse/clickhouse.sh stop     stop it (by pid; idempotent)
#   deploy/clickhouse/clickhouse.sh status   exit 0 when running and answering
#   deploy/clickhouse/clickhouse.sh env      print CLICKHOUSE_ADDR=... for the tests
#
# The server is Debian's clickhouse-server package (18.16 on bookworm),
# installed with apt when missing. It never uses the package's own config or
# /var/lib/clickhouse: a config generated from config.xml.in/users.xml beside
# this script points every path under .cache/clickhouse/ of the repository,
# listens on loopback only, and has no interserver port.
#
# Environment:
#   CLICKHOUSE_PORT        native port (default 19000)
#   CLICKHOUSE_HTTP_PORT   HTTP port (default 18123)
#   CLICKHOUSE_STATE_DIR   config, data, logs, pid (default $PUSHLOG_TEST_DIR/clickhouse,
#                          else <repo>/.cache/clickhouse)
#   CLICKHOUSE_START_TIMEOUT seconds to wait for the server (default 60)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
port="${CLICKHOUSE_PORT:-19000}"
http_port="${CLICKHOUSE_HTTP_PORT:-18123}"
default_state="$repo/.cache/clickhouse"
[[ -n "${PUSHLOG_TEST_DIR:-}" ]] && default_state="$PUSHLOG_TEST_DIR/clickhouse"
state="${CLICKHOUSE_STATE_DIR:-$default_state}"
timeout="${CLICKHOUSE_START_TIMEOUT:-60}"
pidfile="$state/clickhouse.pid"
logdir="$state/log"

die() { echo "clickhouse.sh: $*" >&2; exit 1; }
say() { echo "clickhouse.sh: $*" >&2; }

server_bin() { command -v clickhouse-server || command -v clickhouse || true; }

install_server() {
	if [[ -n "$(server_bin)" ]] && command -v clickhouse-client >/dev/null; then
		return
	fi
	command -v apt-get >/dev/null || die "clickhouse-server is not installed and apt-get is missing: install ClickHouse by hand"
	[[ "$(id -u)" == 0 ]] || die "clickhouse-server is not installed; run as root (or: sudo apt-get install clickhouse-server clickhouse-client)"
	say "installing Debian's clickhouse-server and clickhouse-client"
	apt-get update -qq || die "apt-get update failed"
	# policy-rc.d-less machines would start the packaged service on 9000;
	# harmless, but we only ever use our own instance.
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null ||
		die "apt-get install clickhouse-server clickhouse-client failed"
	[[ -n "$(server_bin)" ]] || die "clickhouse-server still missing after apt-get install"
}

running_pid() {
	[[ -f "$pidfile" ]] || return 1
	local pid
	pid="$(cat "$pidfile" 2>/dev/null)"
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	# A recycled pid would belong to another program.
	grep -qa clickhouse "/proc/$pid/cmdline" 2>/dev/null || return 1
	echo "$pid"
}

answers() {
	clickhouse-client --host 127.0.0.1 --port "$port" -q 'SELECT 1' >/dev/null 2>&1
}

write_config() {
	mkdir -p "$state/data" "$state/tmp" "$state/user_files" "$state/format_schemas" "$logdir"
	# The whole state directory is ignored by git without touching .gitignore.
	printf '*\n' >"$state/.gitignore"
	sed -e "s|@STATE@|$state|g" -e "s|@PORT@|$port|g" -e "s|@HTTP_PORT@|$http_port|g" \
		"$here/config.xml.in" >"$state/config.xml"
	cp "$here/users.xml" "$state/users.xml"
}

port_busy() {
	# bash's /dev/tcp connects only when something listens.
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

cmd_start() {
	if pid="$(running_pid)"; then
		if answers; then
			say "already running (pid $pid) on 127.0.0.1:$port"
			return
		fi
	else
		rm -f "$pidfile"
		for p in "$port" "$http_port"; do
			port_busy "$p" && die "port 127.0.0.1:$p is in use by another program (set CLICKHOUSE_PORT / CLICKHOUSE_HTTP_PORT)"
		done
		install_server
		write_config
		local bin
		bin="$(server_bin)"
		if [[ "$(basename "$bin")" == clickhouse ]]; then
			set -- "$bin" server
		else
			set -- "$bin"
		fi
		# setsid: the server outlives the shell (and test process group)
		# that started it; stop kills it by pid.
		(cd "$state" && exec setsid "$@" --config-file="$state/config.xml" \
			</dev/null >>"$logdir/stdout.log" 2>&1) &
		echo $! >"$pidfile"
		pid="$(cat "$pidfile")"
	fi
	local deadline=$((SECONDS + timeout))
	until answers; do
		if ! kill -0 "$pid" 2>/dev/null; then
			rm -f "$pidfile"
			tail -n 20 "$logdir/clickhouse-server.err.log" "$logdir/stdout.log" >&2 2>/dev/null || true
			die "server exited during start-up (logs in $logdir)"
		fi
		if ((SECONDS >= deadline)); then
			die "server (pid $pid) did not answer on 127.0.0.1:$port within ${timeout}s (logs in $logdir)"
		fi
		sleep 0.2
	done
	say "running (pid $pid) on 127.0.0.1:$port (http $http_port), state in $state"
}

cmd_stop() {
	local pid
	if ! pid="$(running_pid)"; then
		rm -f "$pidfile"
		say "not running"
		return
	fi
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 150); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.2
	done
	if kill -0 "$pid" 2>/dev/null; then
		say "pid $pid ignored SIGTERM for 30s; killing"
		kill -KILL "$pid" 2>/dev/null || true
		sleep 0.5
	fi
	rm -f "$pidfile"
	say "stopped (pid $pid)"
}

cmd_status() {
	local pid
	if pid="$(running_pid)" && answers; then
		echo "running (pid $pid) on 127.0.0.1:$port"
		return 0
	fi
	echo "not running"
	return 1
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) echo "CLICKHOUSE_ADDR=127.0.0.1:$port" ;;
*)
	echo "usage: $0 start|stop|status|env" >&2
	exit 2
	;;
esac
