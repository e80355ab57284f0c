#!/usr/bin/env bash
# A newcomer's first minutes, as a test: a fresh clone of this repository's
# HEAD follows README.md line by line, with nothing set in the environment.
#
#   deploy/newcomer.sh        (deploy/test.sh runs it as a step)
#
#   1. git clone of HEAD into a temporary directory
#   2. the README's run command (the `go run ./cmd/pushlog serve` line of its
#      first code block), in the background, until its push API answers
#   3. the README's quick start: each `go run ./cmd/pushlog …` line of the
#      "Quick start" section as written; `listen` runs in the background like
#      terminal 1, the others in the foreground; the message `send` sends
#      must reach `listen`
#   4. `pushlog status` with no flags (it finds the embedded broker itself)
#   5. the console answers on its default address
#   6. Ctrl-C (SIGINT) to serve: it stops cleanly (exit 0)
#
# Needs git, go, bash and setsid (util-linux); no curl (HTTP via /dev/tcp).
#
# The commands are taken from the README, so a README line that stops
# working fails this script. Two deviations, so that runs never collide:
# /tmp/ in a quick-start line becomes a directory of this run; and if a
# default port (8080, 8082, 8084) is taken on this machine, the matching
# PUSHLOG_* variable moves it (commands stay as written; CI uses the
# defaults). Every PUSHLOG_*, KAFKA_* and CLICKHOUSE_* variable of the
# caller is unset: a newcomer has none (deploy/test.sh exports some).
#
# Environment:
#   PUSHLOG_NEWCOMER_KEEP=1   keep the clone and logs (path printed at the end)
#   PUSHLOG_NEWCOMER_WAIT     seconds to wait for serve / a message (default 120)
#   PUSHLOG_NEWCOMER_REV      commit to check out instead of HEAD
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
keep="${PUSHLOG_NEWCOMER_KEEP:-}"
wait_s="${PUSHLOG_NEWCOMER_WAIT:-120}"
rev="${PUSHLOG_NEWCOMER_REV:-HEAD}"

for v in $(compgen -e); do
	case "$v" in
	PUSHLOG_* | KAFKA_* | CLICKHOUSE_*) unset "$v" ;;
	esac
done

work="$(mktemp -d "${TMPDIR:-/tmp}/pushlog-newcomer.XXXXXX")"
clone="$work/pushlog"
mkdir -p "$work/tmp"

results=()
failures=0
pgids=()

say() { printf '\n--> %s\n' "$*"; }
pass() { results+=("PASS  $1"); }
fail() {
	results+=("FAIL  $1${2:+  ($2)}")
	failures=$((failures + 1))
	echo "FAIL: $1${2:+: $2}" >&2
}

# start_bg LOG COMMAND: runs a README line in its own process group (like
# a terminal of its own) so Ctrl-C reaches go run and its child; bg_pid is
# its pid and process group.
start_bg() {
	(cd "$clone" && exec setsid bash -c "$2") >"$1" 2>&1 &
	bg_pid=$!
	pgids+=("$bg_pid")
}

# group_members PGID: the pids of a process group (from /proc: no procps
# needed).
group_members() {
	local f line fields
	for f in /proc/[0-9]*/stat; do
		IFS= read -r line 2>/dev/null <"$f" || continue
		read -ra fields <<<"${line##*) }" # state ppid pgrp …
		if [[ "${fields[2]:-}" == "$1" ]]; then
			f="${f#/proc/}"
			echo "${f%/stat}"
		fi
	done
}

# interrupt PID [child]: Ctrl-C to the process group, or with "child" to
# the program go run started (go run itself exits 1 when it is interrupted
# whatever the program did, so only the program's own exit tells a clean
# stop; go run then exits with it). Waits and returns the exit status (124
# when it did not stop within 30 s).
interrupt() {
	local pid="$1" i targets=("-$1")
	if [[ "${2:-}" == child ]]; then
		mapfile -t targets < <(group_members "$pid" | grep -vx "$pid")
		((${#targets[@]})) || targets=("-$pid")
	fi
	kill -INT -- "${targets[@]}" 2>/dev/null
	for ((i = 0; i < 60; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.5
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -KILL -- "-$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		return 124
	fi
	wait "$pid"
}

cleanup() {
	local p
	for p in "${pgids[@]}"; do
		kill -KILL -- "-$p" 2>/dev/null
	done
	if [[ -n "$keep" ]]; then
		echo "kept: $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
	local p
	for ((p = 18700 + RANDOM % 1000; ; p++)); do
		if port_free "$p"; then
			echo "$p"
			return
		fi
	done
}

# http_status HOST:PORT PATH: the status code of a GET (no curl needed; a
# subshell, so a refused connection cannot end the script).
http_status() (
	exec 3<>"/dev/tcp/${1%:*}/${1##*:}" || exit 1
	printf 'GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n' "$2" "$1" >&3
	IFS= read -r -t 5 line <&3 || exit 1
	line="${line#HTTP/1.? }"
	echo "${line%% *}"
) 2>/dev/null

# wait_for SECONDS COMMAND...: retries COMMAND every half second, until
# it succeeds, time is up, or COMMAND sets wait_for_gave_up.
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	wait_for_gave_up=""
	until "$@"; do
		((SECONDS < deadline)) && [[ -z "$wait_for_gave_up" ]] || return 1
		sleep 0.5
	done
}

# section NAME: the README's text from "## NAME" to the next level-2 heading.
section() {
	awk -v name="$1" '
		/^## / { on = (index($0, "## " name) == 1); next }
		on { print }
	' "$clone/README.md"
}

# code_lines: the lines of fenced code blocks on stdin that run pushlog.
code_lines() {
	awk '/^```/ { fence = !fence; next } fence && /^go run \.\/cmd\/pushlog / { print }'
}

# --- 1. clone -------------------------------------------------------------

if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
	say "fresh clone of $(git -C "$repo" rev-parse --short "$rev") into $clone"
	if git clone --quiet "$repo" "$clone" && git -C "$clone" checkout --quiet "$(git -C "$repo" rev-parse "$rev")"; then
		pass "git clone"
	else
		fail "git clone" "git clone $repo failed"
		exit 1
	fi
else
	# A source tree without git (an unpacked archive): its files stand in
	# for the clone; the caches and a data directory are left behind.
	say "no git repository at $repo: copying its files into $clone"
	mkdir -p "$clone"
	if tar -C "$repo" --exclude=./.cache --exclude=./pushlog-data -cf - . | tar -C "$clone" -xf -; then
		pass "copy of the source tree (no git)"
	else
		fail "copy of the source tree" "tar failed"
		exit 1
	fi
fi

# --- 2. the run command ---------------------------------------------------

run_line="$(awk '/^```/ { if (fence) exit; fence = 1; next } fence' "$clone/README.md" | grep -m1 -E '^go run \./cmd/pushlog serve' || true)"
if [[ -z "$run_line" ]]; then
	fail "run command" "README's first code block has no 'go run ./cmd/pushlog serve' line"
	exit 1
fi

# Default ports: as the README says, unless this machine has them taken.
http_addr=127.0.0.1:8082 ws_addr=127.0.0.1:8080 console_addr=127.0.0.1:8084
if ! port_free 8082; then
	export PUSHLOG_HTTP_ADDR="127.0.0.1:$(free_port)"
	http_addr="$PUSHLOG_HTTP_ADDR"
fi
if ! port_free 8080; then
	export PUSHLOG_WS_ADDR="127.0.0.1:$(free_port)"
	export PUSHLOG_LISTEN_URL="ws://$PUSHLOG_WS_ADDR/"
	ws_addr="$PUSHLOG_WS_ADDR"
fi
if ! port_free 8084; then
	export PUSHLOG_CONSOLE_ADDR="127.0.0.1:$(free_port)"
	console_addr="$PUSHLOG_CONSOLE_ADDR"
fi
env | grep -E '^PUSHLOG_' | sed 's/^/default port taken here: /'

# heartbeat_ok: serve answers; a serve that exited stops the wait.
heartbeat_ok() {
	[[ "$(http_status "$http_addr" /__heartbeat__)" == 200 ]] && return 0
	kill -0 "$serve_pid" 2>/dev/null || wait_for_gave_up=1
	return 1
}
say "$run_line   (push API $http_addr, WebSocket $ws_addr)"
started=$SECONDS
start_bg "$work/serve.log" "$run_line"
serve_pid=$bg_pid
if wait_for "$wait_s" heartbeat_ok; then
	pass "run command: $run_line (ready in $((SECONDS - started))s)"
else
	fail "run command: $run_line" "no 200 from http://$http_addr/__heartbeat__ within ${wait_s}s; log: $(tail -5 "$work/serve.log")"
	exit 1
fi

# --- 3. quick start -------------------------------------------------------

mapfile -t quick < <(section "Quick start" | code_lines | sed "s#/tmp/#$work/tmp/#g")
if ((${#quick[@]} == 0)); then
	fail "quick start" "README has no 'go run ./cmd/pushlog' lines under '## Quick start'"
fi
listen_pid="" message=""
for line in "${quick[@]}"; do
	case "$line" in
	"go run ./cmd/pushlog serve"*) ;; # already running: the run command
	"go run ./cmd/pushlog listen"*)
		say "terminal 1: $line"
		start_bg "$work/listen.log" "$line"
		listen_pid=$bg_pid
		sub="$(grep -oE -- '--subscription[= ]+[^ ]+' <<<"$line" | sed -E 's/--subscription[= ]+//')"
		if [[ -n "$sub" ]] && ! wait_for "$wait_s" test -s "$sub"; then
			fail "quick start: $line" "no subscription in $sub within ${wait_s}s; log: $(tail -5 "$work/listen.log")"
		fi
		;;
	*)
		say "terminal 2: $line"
		if (cd "$clone" && bash -c "$line") >"$work/step.log" 2>&1; then
			cat "$work/step.log"
			pass "quick start: $line"
		else
			cat "$work/step.log"
			fail "quick start: $line" "exit status $?"
		fi
		if [[ "$line" == "go run ./cmd/pushlog send "* ]]; then
			message="$(sed -nE 's/.*"([^"]*)"[[:space:]]*$/\1/p' <<<"$line")"
		fi
		;;
	esac
done
if [[ -n "$listen_pid" ]]; then
	got_message() { grep -qF "data=\"$message\"" "$work/listen.log"; }
	if [[ -z "$message" ]]; then
		fail "quick start" "no 'send … \"message\"' line to check listen against"
	elif wait_for 30 got_message; then
		grep -F "data=\"$message\"" "$work/listen.log"
		pass "quick start: listen printed \"$message\""
	else
		fail "quick start: listen" "\"$message\" not received within 30s; log: $(tail -5 "$work/listen.log")"
	fi
	interrupt "$listen_pid" || true
else
	fail "quick start" "no 'go run ./cmd/pushlog listen' line"
fi

# --- 4. status with no flags ----------------------------------------------

say "go run ./cmd/pushlog status"
if (cd "$clone" && go run ./cmd/pushlog status) >"$work/status.log" 2>&1; then
	cat "$work/status.log"
	pass "pushlog status (no flags)"
else
	rc=$?
	cat "$work/status.log"
	fail "pushlog status (no flags)" "exit $rc: status does not find the embedded broker by itself yet (issue 16, point 2)"
fi

# --- 5. the console -------------------------------------------------------

serve_help="$(cd "$clone" && go run ./cmd/pushlog serve --help 2>&1)"
if [[ "$serve_help" == *--console-addr* ]]; then
	say "console at http://$console_addr/"
	code="$(http_status "$console_addr" /)"
	if [[ "$code" == 200 ]]; then
		pass "console answers at http://$console_addr/"
	else
		fail "console" "GET http://$console_addr/ answered '${code:-nothing}'"
	fi
else
	# TODO(lead): the console (issue 16 point 4) is not in this build.
	fail "console" "TODO: serve has no --console-addr in this build (issue 16, point 4)"
fi

# --- 6. stop --------------------------------------------------------------

say "Ctrl-C to serve"
if interrupt "$serve_pid" child; then
	pass "serve stopped cleanly on Ctrl-C"
else
	rc=$?
	fail "stop" "serve exited with $rc; log: $(tail -5 "$work/serve.log")"
fi

printf '\nnewcomer path (%ss):\n' "$SECONDS"
printf '  %s\n' "${results[@]}"
((failures == 0))
