#!/usr/bin/env bash
# Side-by-side performance of an older commit and the working tree, in the
# same run on the same machine.
#
#   deploy/bench/compare.sh                      # 86c8888 vs the working tree, every scenario
#   deploy/bench/compare.sh -o HEAD~3 -s rate100,idle -r 3
#   deploy/bench/compare.sh -d 3s -w 1s -n 2000 -i 5s -r 1   # a quick check (about 3 minutes)
#
# Builds `pushlog` from the older commit (a git worktree under
# .cache/bench/) and from the working tree, and the load tool
# (cmd/pushload) from the working tree only. Every run starts a fresh
# `pushlog serve` (fresh temp DATA_DIR, free ports, console off, push
# quotas off so the load is not throttled), runs one pushload mode against
# it and stops it. Old and new alternate within each round (old-new, then
# new-old), so a change in the machine's load hits both. With KAFKA_BROKERS
# set the servers use that Kafka (a fresh namespace per run); without it,
# the embedded broker.
#
# By default the server is pinned to CPU 0 and the load tool to CPU 1
# (taskset), so figures are "one server core" and the load tool's own CPU
# does not compete with the server. CPU figures come from the server's
# /proc/PID/stat (utime+stime), so they hold up on a shared machine better
# than rates do; the load average is printed at the start and the end.
#
# Options:
#   -o COMMIT     older commit (default 86c8888)
#   -O BINARY     use this pushlog binary as "old" instead of building COMMIT
#   -N BINARY     use this pushlog binary as "new" instead of building the working tree
#   -s LIST       scenarios, comma-separated (default: all):
#                   rate100    100 pushes/s to connected agents: CPU per push, p50/p99
#                   rate5000   5,000 pushes/s: p99, CPU per push
#                   idle       N idle connections: RSS per connection (no forced GC), idle CPU %
#                   freshjwt   closed loop, a fresh VAPID JWT per push: accepted/s
#                   connected  closed loop to connected agents: accepted/s, delivered/s
#                   offline    closed loop to disconnected agents: accepted/s
#   -r N          rounds (each runs old and new once; default 2)
#   -d DURATION   measured window of the push scenarios (default 10s)
#   -w DURATION   warm-up before each window (default 2s)
#   -n N          idle connections (default 10000)
#   -i DURATION   idle CPU hold (default 30s)
#   -c N          closed-loop senders (default 32)
#   -P            do not pin CPUs
#   -k            keep the work directory (logs, RESULT lines)
#   -h            this help
#
# Output: one RESULT line per run as it finishes, then a table of old and
# new (min–max over the rounds) with the ratio new/old of the medians.
# Exits non-zero if a build, a server or a run failed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"

old_commit=86c8888
scenarios=rate100,rate5000,idle,freshjwt,connected,offline
rounds=2
duration=10s
warmup=2s
idle_n=10000
idle_hold=30s
senders=32
pin=1
keep=""
old_bin=""
new_bin=""

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
while getopts "o:O:N:s:r:d:w:n:i:c:Pkh" opt; do
	case "$opt" in
	o) old_commit="$OPTARG" ;;
	O) old_bin="$(realpath "$OPTARG")" ;;
	N) new_bin="$(realpath "$OPTARG")" ;;
	s) scenarios="$OPTARG" ;;
	r) rounds="$OPTARG" ;;
	d) duration="$OPTARG" ;;
	w) warmup="$OPTARG" ;;
	n) idle_n="$OPTARG" ;;
	i) idle_hold="$OPTARG" ;;
	c) senders="$OPTARG" ;;
	P) pin="" ;;
	k) keep=1 ;;
	h) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
done
for s in ${scenarios//,/ }; do
	case "$s" in
	rate100 | rate5000 | idle | freshjwt | connected | offline) ;;
	*) echo "unknown scenario $s (see -h)" >&2; exit 2 ;;
	esac
done
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "-r must be a positive number" >&2; exit 2; }
if [[ -n "$pin" ]] && { ! command -v taskset >/dev/null || (($(nproc) < 2)); }; then
	echo "taskset missing or fewer than 2 CPUs: not pinning" >&2
	pin=""
fi

cache="$repo/.cache/bench"
mkdir -p "$cache"
work="$(mktemp -d "$cache/run-XXXXXX")"
server_pid=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	if [[ -n "$server_pid" ]]; then
		kill -TERM "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
	fi
	if [[ -z "$keep" ]]; then
		rm -rf "$work"
	else
		echo "work directory kept: $work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$work/old" "$work/new"
if [[ -n "$old_bin" ]]; then
	old_commit="$old_bin"
	ln -s "$old_bin" "$work/old/pushlog"
else
	old_sha="$(git rev-parse --verify "$old_commit^{commit}")"
	old_tree="$cache/old-${old_sha:0:12}"
	if [[ ! -e "$old_tree/go.mod" ]]; then
		# -f: a worktree of an earlier run whose directory was deleted is
		# still registered.
		git worktree add -f --detach "$old_tree" "$old_sha" >/dev/null
	fi
	echo "building old pushlog ($old_commit = ${old_sha:0:12})..."
	(cd "$old_tree" && go build -o "$work/old/pushlog" ./cmd/pushlog)
fi
if [[ -n "$new_bin" ]]; then
	ln -s "$new_bin" "$work/new/pushlog"
else
	echo "building new pushlog (working tree of $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo ', with uncommitted changes'))..."
	go build -o "$work/new/pushlog" ./cmd/pushlog
fi
echo "building pushload (working tree)..."
go build -o "$work/pushload" ./cmd/pushload

# free_port prints a loopback port that was free a moment ago, never one
# of the shared test servers' fixed ports.
free_port() {
	local p
	while :; do
		p="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo $((20000 + RANDOM % 30000)))"
		case "$p" in 19092 | 19000 | 18123 | 29092 | 29000 | 3909[2-4]) continue ;; esac
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
}

server_cpu=() load_cpu=()
if [[ -n "$pin" ]]; then
	server_cpu=(taskset -c 0)
	load_cpu=(taskset -c 1)
fi

# start_server SIDE LABEL: runs SIDE's pushlog; sets server_pid, ws_url,
# debug_url. A port picked free can be taken before the server binds it
# (the load tool's thousands of client sockets use the same ephemeral
# range): then it starts again on other ports, at most three times.
start_server() {
	local _
	for _ in 1 2 3; do
		start_server_once "$@" && return 0
		grep -q "address already in use" "$work/serve-$2.log" 2>/dev/null || return 1
		echo "pushlog ($1): a port was taken before it bound; starting again on other ports" >&2
	done
	return 1
}

start_server_once() {
	local side="$1" label="$2" http ws dbg data
	http="$(free_port)" ws="$(free_port)" dbg="$(free_port)"
	data="$work/data-$label"
	mkdir -p "$data"
	local env=(
		PUSHLOG_DATA_DIR="$data"
		PUSHLOG_HTTP_ADDR="127.0.0.1:$http"
		PUSHLOG_WS_ADDR="127.0.0.1:$ws"
		PUSHLOG_DEBUG_ADDR="127.0.0.1:$dbg"
		PUSHLOG_CONSOLE_ADDR=off
		PUSHLOG_LOG_LEVEL=warn
		PUSHLOG_PUSH_QUOTA_VAPID_RATE=-1
		PUSHLOG_PUSH_QUOTA_SUBSCRIPTION_RATE=-1
	)
	if [[ -n "${KAFKA_BROKERS:-}" ]]; then
		env+=(KAFKA_BROKERS="$KAFKA_BROKERS" PUSHLOG_NAMESPACE="bench-$label-$$-$RANDOM")
	else
		env+=(KAFKA_BROKERS= PUSHLOG_EMBEDDED_KAFKA_ADDR=127.0.0.1:0)
	fi
	env "${env[@]}" "${server_cpu[@]}" "$work/$side/pushlog" serve >"$work/serve-$label.log" 2>&1 &
	server_pid=$!
	ws_url="ws://127.0.0.1:$ws/"
	debug_url="http://127.0.0.1:$dbg"
	local i
	for ((i = 0; i < 600; i++)); do
		if ! kill -0 "$server_pid" 2>/dev/null; then
			echo "pushlog ($side) exited during start-up:" >&2
			tail -20 "$work/serve-$label.log" >&2
			server_pid=""
			return 1
		fi
		if curl -fsS -o /dev/null "http://127.0.0.1:$http/__lbheartbeat__" 2>/dev/null &&
			(exec 3<>"/dev/tcp/127.0.0.1/$ws") 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	echo "pushlog ($side) not ready after 60s:" >&2
	tail -20 "$work/serve-$label.log" >&2
	stop_server
	return 1
}

stop_server() {
	[[ -n "$server_pid" ]] || return 0
	kill -TERM "$server_pid" 2>/dev/null || true
	local i
	for ((i = 0; i < 300; i++)); do
		kill -0 "$server_pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$server_pid" 2>/dev/null || true
	wait "$server_pid" 2>/dev/null || true
	server_pid=""
}

# set_load_args SCENARIO: sets args to the scenario's pushload command line.
set_load_args() {
	local common=(--ws "$ws_url" --pid "$server_pid")
	local closed=(--agents 1000 --concurrency "$senders" --duration "$duration" --warmup "$warmup")
	case "$1" in
	rate100) args=(rate "${common[@]}" --rate 100 --agents 100 --duration "$duration" --warmup "$warmup") ;;
	rate5000) args=(rate "${common[@]}" --rate 5000 --agents 1000 --duration "$duration" --warmup "$warmup") ;;
	idle) args=(idle "${common[@]}" --debug "$debug_url" --n "$idle_n" --hold "$idle_hold") ;;
	freshjwt) args=(fresh-jwt "${common[@]}" "${closed[@]}") ;;
	connected) args=(connected "${common[@]}" "${closed[@]}") ;;
	offline) args=(offline "${common[@]}" "${closed[@]}") ;;
	esac
}

results="$work/results.txt"
: >"$results"
failed=0
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for s in ${scenarios//,/ }; do
	for ((r = 1; r <= rounds; r++)); do
		order=(old new)
		((r % 2 == 0)) && order=(new old)
		for side in "${order[@]}"; do
			label="$s-$side-$r"
			if ! start_server "$side" "$label"; then
				failed=1
				continue
			fi
			set_load_args "$s"
			if "${load_cpu[@]}" "$work/pushload" "${args[@]}" >"$work/load-$label.log" 2>&1; then
				line="$(grep '^RESULT ' "$work/load-$label.log" | tail -1 || true) load1=$(cut -d' ' -f1 /proc/loadavg)"
				echo "$s $side $r ${line#RESULT }" >>"$results"
				echo "[$label] ${line#RESULT }"
			else
				echo "[$label] pushload failed:" >&2
				tail -20 "$work/load-$label.log" >&2
				failed=1
			fi
			stop_server
		done
	done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

# The table: per scenario and figure, old and new min–max over the rounds
# and the ratio new/old of the medians.
awk '
BEGIN {
	n = split("rate100:cpu_per_push_ms rate100:p50_ms rate100:p99_ms rate100:server_cpu_pct " \
		"rate5000:p99_ms rate5000:p99_from_schedule_ms rate5000:p50_ms rate5000:cpu_per_push_ms rate5000:lost rate5000:client_cpu_pct " \
		"idle:rss_per_conn_kb idle:rss_per_conn_gc_kb idle:idle_cpu_pct " \
		"freshjwt:accepted_per_s freshjwt:cpu_per_push_ms freshjwt:server_cpu_pct freshjwt:client_cpu_pct " \
		"connected:accepted_per_s connected:delivered_per_s connected:cpu_per_push_ms " \
		"offline:accepted_per_s offline:cpu_per_push_ms", want, " ")
}
{
	for (i = 4; i <= NF; i++) {
		split($i, kv, "=")
		k = $1 ":" kv[1]
		vals[k, $2] = vals[k, $2] " " kv[2]
	}
}
function sorted(s, a,    m, i, j, t) {
	m = split(s, a, " ")
	for (i = 2; i <= m; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
	return m
}
function median(a, m) { return m % 2 ? a[(m+1)/2] : (a[m/2] + a[m/2+1]) / 2 }
function span(a, m) { return m == 0 ? "-" : (a[1] == a[m] ? a[1] : a[1] "–" a[m]) }
END {
	printf "| scenario | figure | old (%s) | new (%s) | new/old |\n|---|---|---|---|---|\n", oldname, newname
	for (w = 1; w <= n; w++) {
		k = want[w]
		if (!((k, "old") in vals) && !((k, "new") in vals)) continue
		mo = sorted(vals[k, "old"], o); mn = sorted(vals[k, "new"], nw)
		ratio = "-"
		if (mo > 0 && mn > 0 && median(o, mo) + 0 != 0) ratio = sprintf("%.2f×", median(nw, mn) / median(o, mo))
		split(k, parts, ":")
		printf "| %s | %s | %s | %s | %s |\n", parts[1], parts[2], span(o, mo), span(nw, mn), ratio
	}
}' oldname="$old_commit" newname="${new_bin:-working tree}" "$results"
exit "$failed"
