#!/usr/bin/env bash
# Measures the memory of idle WebSocket connections on a connection node:
# VmRSS growth of the server process per connection, after hello and one
# register each, with N connections held by several pushload processes
# (a process can hold about 19,000 sockets).
#
# Usage:
#   connector/memmeasure.sh                 # builds pushload, runs `pushload serve` itself
#   connector/memmeasure.sh -p PID -u ws://127.0.0.1:8080/ [-d http://127.0.0.1:8081]
#
#   -p PID    measure a running server (e.g. `pushlog serve`) instead
#   -u URL    its WebSocket URL (default ws://127.0.0.1:18080/)
#   -d URL    base URL serving /debug/gc (a full GC + FreeOSMemory before each
#             reading); without it the script just lets the server settle
#   -n N      connections (default 10000)
#   -k K      pushload processes (default 2)
#   -s SECS   settle time before each reading (default 10)
#   -G        do not force a GC even when /debug/gc is available
set -euo pipefail

N=10000 K=2 PID="" URL="ws://127.0.0.1:18080/" DEBUG="" SETTLE=10 GC=1
while getopts "p:u:d:n:k:s:Gh" opt; do
	case $opt in
	p) PID=$OPTARG ;;
	u) URL=$OPTARG ;;
	d) DEBUG=$OPTARG ;;
	n) N=$OPTARG ;;
	k) K=$OPTARG ;;
	s) SETTLE=$OPTARG ;;
	G) GC=0 ;;
	*) sed -n '2,19p' "$0"; exit 2 ;;
	esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
children=()
loaders=()
cleanup() {
	for p in "${children[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "building pushload..."
(cd "$root" && go build -o "$work/pushload" ./cmd/pushload)

if [[ -z $PID ]]; then
	"$work/pushload" serve --listen 127.0.0.1:18080 --debug 127.0.0.1:18081 >"$work/serve.log" 2>&1 &
	PID=$!
	children+=("$PID")
	URL="ws://127.0.0.1:18080/" DEBUG="http://127.0.0.1:18081"
	for _ in $(seq 50); do grep -q LISTENING "$work/serve.log" && break; sleep 0.1; done
	grep -q LISTENING "$work/serve.log" || { cat "$work/serve.log"; exit 1; }
fi

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$PID/status"; }
settle() {
	sleep "$SETTLE"
	if [[ -n $DEBUG && $GC == 1 ]]; then curl -fsS "$DEBUG/debug/gc" >/dev/null; sleep 1; fi
}

# Warm up pools and lazily started parts with a few short-lived connections.
"$work/pushload" conns --url "$URL" --n 200 --hold 0s >/dev/null 2>&1
settle
before=$(rss_kb)
echo "server pid $PID: VmRSS before: ${before} kB"

per=$(( (N + K - 1) / K ))
left=$N
for i in $(seq "$K"); do
	n=$(( left < per ? left : per ))
	left=$(( left - n ))
	"$work/pushload" conns --url "$URL" --n "$n" --hold 24h >"$work/load$i.log" 2>"$work/load$i.err" &
	children+=("$!")
	loaders[i]=$!
done
for i in $(seq "$K"); do
	until grep -q '^READY' "$work/load$i.log"; do
		if ! kill -0 "${loaders[i]}" 2>/dev/null; then
			echo "pushload $i exited:"; cat "$work/load$i.log" "$work/load$i.err"; exit 1
		fi
		sleep 0.5
	done
	grep '^READY' "$work/load$i.log"
done
ok=$(cat "$work"/load*.log | awk '/^READY/ {sub("ok=","",$2); s+=$2} END {print s}')
settle
after=$(rss_kb)
echo "VmRSS after ${ok} idle connections: ${after} kB"
if [[ -n $DEBUG ]]; then curl -fsS "$DEBUG/debug/stats"; echo; fi
awk -v b="$before" -v a="$after" -v n="$ok" \
	'BEGIN { printf "RSS growth per idle connection: %.0f bytes (%.2f KB) over %d connections\n", (a-b)*1024/n, (a-b)/n, n }'
