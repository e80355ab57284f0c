#!/usr/bin/env bash
# pushlog's test command: every check and every test, on a fresh machine.
#
#   deploy/test.sh
#
# Starts real Kafka (deploy/kafka/kafka.sh), a 3-broker Kafka cluster for the
# failover test (deploy/kafka/cluster.sh) and real ClickHouse
# (deploy/clickhouse/clickhouse.sh) with fresh data, and Redis for the
# autopush-migration test (deploy/redis/redis.sh), exports KAFKA_BROKERS,
# KAFKA_CLUSTER_BROKERS, CLICKHOUSE_ADDR and REDIS_URL, then runs gofmt, go vet, staticcheck, go build,
# go test -count=1 ./... (integration tests included) and a short fuzz pass
# over every FuzzXxx in the tree. The servers are stopped on exit, whatever
# happened. Exits non-zero when anything failed; the summary at the end says
# what. Under CI (CI set) a server that does not come up is a failure; on a
# developer's machine it is a warning and the integration tests skip.
#
# Environment:
#   PUSHLOG_TEST_FUZZTIME        time per fuzz target (default 10s; 0 skips fuzzing)
#   PUSHLOG_TEST_KEEP_SERVICES=1 reuse running servers and their data, and leave
#                                them running afterwards (local iteration)
#   PUSHLOG_TEST_TIMEOUT         go test -timeout (default 25m: the integration package is one binary)
#   PUSHLOG_TEST_DIR             servers' state and test logs (default <repo>/.cache/test)
#   KAFKA_PORT, KAFKA_CONTROLLER_PORT, KAFKA_CLUSTER_PORT, CLICKHOUSE_PORT,
#   CLICKHOUSE_HTTP_PORT, REDIS_PORT the test servers' ports (default: the first free
#                                block from 29092, 29093, 39092, 29000, 28123, 26379 on;
#                                the cluster uses KAFKA_CLUSTER_PORT+0..2 and +10..12)
set -uo pipefail # no -e: every step runs and the summary reports each one

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo" || exit 1

fuzztime="${PUSHLOG_TEST_FUZZTIME:-10s}"
keep="${PUSHLOG_TEST_KEEP_SERVICES:-}"
[[ "$keep" == 0 ]] && keep=""
test_timeout="${PUSHLOG_TEST_TIMEOUT:-25m}"
# Pinned (the newest the module proxy served here; it handles Go 1.26) so CI
# is reproducible; bump deliberately.
staticcheck_version="v0.8.2"

export PUSHLOG_TEST_DIR="${PUSHLOG_TEST_DIR:-$repo/.cache/test}"
# The test servers keep their state apart from ones started by hand.
export CLICKHOUSE_STATE_DIR="${CLICKHOUSE_STATE_DIR:-$PUSHLOG_TEST_DIR/clickhouse}"
export KAFKA_STATE_DIR="${KAFKA_STATE_DIR:-$PUSHLOG_TEST_DIR/kafka}"
export KAFKA_CLUSTER_STATE_DIR="${KAFKA_CLUSTER_STATE_DIR:-$PUSHLOG_TEST_DIR/kafka-cluster}"
export REDIS_STATE_DIR="${REDIS_STATE_DIR:-$PUSHLOG_TEST_DIR/redis}"
mkdir -p "$PUSHLOG_TEST_DIR"

kafka_sh="deploy/kafka/kafka.sh"
cluster_sh="deploy/kafka/cluster.sh"
clickhouse_sh="deploy/clickhouse/clickhouse.sh"
redis_sh="deploy/redis/redis.sh"

results=()
failures=0

banner() { printf '\n==> %s\n' "$*"; }
record() { # record STATUS NAME STARTED [NOTE]
	local line
	line="$(printf '%-5s %-52s %4ds' "$1" "$2" "$((SECONDS - $3))")"
	[[ -n "${4:-}" ]] && line+="  $4"
	results+=("$line")
	[[ "$1" == FAIL ]] && failures=$((failures + 1))
	return 0
}

# step NAME COMMAND...: runs one check and records its outcome.
step() {
	local name="$1" started=$SECONDS
	shift
	banner "$name"
	if "$@"; then
		record PASS "$name" "$started"
	else
		record FAIL "$name" "$started"
	fi
}

in_ci() { [[ -n "${CI:-}" && "${CI:-}" != false && "${CI:-}" != 0 ]]; }

# --- services --------------------------------------------------------------

services_stopped=""

# stop_services stops both servers once (unless keeping them); the EXIT trap
# calls it too, so they stop whatever happened.
stop_services() {
	[[ -n "$services_stopped" ]] && return 0
	services_stopped=1
	if [[ -n "$keep" ]]; then
		banner "leaving Kafka and ClickHouse running (PUSHLOG_TEST_KEEP_SERVICES=1)"
		echo "stop them with: KAFKA_STATE_DIR=$KAFKA_STATE_DIR $kafka_sh stop; CLICKHOUSE_STATE_DIR=$CLICKHOUSE_STATE_DIR $clickhouse_sh stop; KAFKA_CLUSTER_STATE_DIR=$KAFKA_CLUSTER_STATE_DIR $cluster_sh stop"
		return 0
	fi
	banner "stopping Kafka and ClickHouse"
	if [[ -f "$kafka_sh" ]]; then bash "$kafka_sh" stop; fi
	if [[ -f "$cluster_sh" ]]; then bash "$cluster_sh" stop; fi
	if [[ -f "$clickhouse_sh" ]]; then bash "$clickhouse_sh" stop; fi
	if [[ -f "$redis_sh" ]]; then bash "$redis_sh" stop; fi
	return 0
}
on_exit() {
	local rc=$?
	trap - EXIT INT TERM
	stop_services
	exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# export_env runs `SCRIPT env` and exports its NAME=VALUE lines (only those:
# nothing it prints is evaluated as shell).
export_env() {
	local line
	while IFS= read -r line; do
		if [[ "$line" =~ ^([A-Z_][A-Z0-9_]*)=(.*)$ ]]; then
			export "${BASH_REMATCH[1]}=${BASH_REMATCH[2]}"
			echo "export ${BASH_REMATCH[1]}=${BASH_REMATCH[2]}"
		fi
	done < <(bash "$1" env)
}

# service NAME SCRIPT VAR: starts one server (fresh unless keeping) and
# exports what its env command prints. A server that does not come up fails
# the run in CI; elsewhere the integration tests that need it skip.
service() {
	local name="$1" script="$2" var="$3" started=$SECONDS problem=""
	banner "start $name"
	if [[ ! -f "$script" ]]; then
		problem="$script is missing"
	else
		if ! bash "$script" start; then
			problem="$script start failed"
		elif ! export_env "$script" || [[ -z "${!var:-}" ]]; then
			problem="$script env did not print $var"
		fi
	fi
	if [[ -z "$problem" ]]; then
		record PASS "start $name" "$started"
		return
	fi
	unset "$var"
	echo "$problem" >&2
	if in_ci; then
		record FAIL "start $name" "$started" "$problem"
	else
		record WARN "start $name" "$started" "$problem; its integration tests skip"
	fi
}

# fresh_state stops test servers left from an earlier run and deletes their
# state, so every run starts from empty topics and tables.
fresh_state() {
	banner "fresh state for the test servers"
	if [[ -f "$kafka_sh" ]]; then bash "$kafka_sh" reset; fi
	if [[ -f "$cluster_sh" ]]; then bash "$cluster_sh" reset; fi
	if [[ -f "$redis_sh" ]]; then bash "$redis_sh" reset; fi
	if [[ -f "$clickhouse_sh" ]] && bash "$clickhouse_sh" stop; then
		rm -rf "$CLICKHOUSE_STATE_DIR"
	fi
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# choose_ports picks the test servers' ports: those set in the environment
# as given; with PUSHLOG_TEST_KEEP_SERVICES the ones the last run used;
# otherwise the first block, from 29092/29093/29000/28123 on in steps of 100,
# where all are free. So a test run never collides with servers started by
# hand (19xxx) or by another developer on the same machine.
choose_ports() {
	local saved="$PUSHLOG_TEST_DIR/ports.env" line var off ok
	local -A base=([KAFKA_PORT]=29092 [KAFKA_CONTROLLER_PORT]=29093 [KAFKA_CLUSTER_PORT]=39092 [CLICKHOUSE_PORT]=29000 [CLICKHOUSE_HTTP_PORT]=28123 [REDIS_PORT]=26379)
	if [[ -n "$keep" && -f "$saved" ]]; then
		while IFS= read -r line; do
			if [[ "$line" =~ ^([A-Z_]+)=([0-9]+)$ && -n "${base[${BASH_REMATCH[1]}]:-}" && -z "${!BASH_REMATCH[1]:-}" ]]; then
				export "${BASH_REMATCH[1]}=${BASH_REMATCH[2]}"
			fi
		done <"$saved"
	fi
	for off in 0 100 200 300 400 500 600 700 800 900; do
		ok=1
		for var in "${!base[@]}"; do
			if [[ -z "${!var:-}" ]] && ! port_free $((base[$var] + off)); then
				ok=""
				break
			fi
		done
		[[ -n "$ok" ]] && break
	done
	for var in "${!base[@]}"; do
		if [[ -z "${!var:-}" ]]; then
			export "$var=$((base[$var] + off))"
		fi
	done
	: >"$saved"
	for var in KAFKA_PORT KAFKA_CONTROLLER_PORT KAFKA_CLUSTER_PORT CLICKHOUSE_PORT CLICKHOUSE_HTTP_PORT REDIS_PORT; do
		echo "$var=${!var}" >>"$saved"
	done
	echo "test server ports: $(tr '\n' ' ' <"$saved")"
}

# --- checks ----------------------------------------------------------------

# go_files lists the module's Go files: tracked and new, never ignored ones.
go_files() {
	if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
		# -c also lists tracked files deleted from the work tree: drop those.
		git ls-files -co --exclude-standard -- '*.go' | while IFS= read -r f; do
			if [[ -f "$f" ]]; then echo "$f"; fi
		done
	else
		find . \( -name .cache -o -name .git -o -name node_modules -o -name vendor \) -prune -o -name '*.go' -print
	fi
}

check_tools() {
	local ok=0 tool
	for tool in go gofmt git java mvn; do
		if command -v "$tool" >/dev/null; then
			printf '%-6s %s\n' "$tool" "$(command -v "$tool")"
		else
			printf '%-6s MISSING\n' "$tool"
			case "$tool" in
			go | gofmt) ok=1 ;;
			esac
		fi
	done
	go version || ok=1
	# java and mvn are checked (with a clear message) by kafka.sh, which
	# needs mvn only when Kafka is not cached yet.
	return "$ok"
}

check_gofmt() {
	local files unformatted
	# testdata may hold deliberately odd Go files; the go tool ignores it too.
	mapfile -t files < <(go_files | grep -vE '(^|/)testdata/')
	((${#files[@]})) || return 0
	unformatted="$(gofmt -l "${files[@]}")" || return 1
	if [[ -n "$unformatted" ]]; then
		echo "not gofmt-ed (run gofmt -w on them):"
		echo "$unformatted"
		return 1
	fi
}

run_staticcheck() {
	go run "honnef.co/go/tools/cmd/staticcheck@$staticcheck_version" ./...
}

tests_passed=0
tests_failed=0
tests_skipped=0

# count_tests prints "passed failed skipped" from go test -v output, subtests
# included. A package that fails without a failing test (build error, panic,
# timeout, TestMain exit) counts as one failure.
count_tests() {
	awk '
		/^[[:space:]]*--- PASS:/ { pass++ }
		/^[[:space:]]*--- SKIP:/ { skip++ }
		/^[[:space:]]*--- FAIL:/ { fail++; pkgfail++ }
		/^FAIL[[:space:]]+[^[:space:]]+[[:space:]]/ { if (pkgfail == 0) fail++ }
		/^(ok|FAIL|\?)[[:space:]]+[^[:space:]]+[[:space:]]/ { pkgfail = 0 }
		END { printf "%d %d %d\n", pass, fail, skip }
	' "$1"
}

# run_go_test runs every test verbosely into a log, shows the useful part
# (failures, package results, test output) and counts tests and subtests.
run_go_test() {
	local log="$PUSHLOG_TEST_DIR/go-test.log" rc
	go test -count=1 -timeout "$test_timeout" -v ./... 2>&1 | tee "$log" |
		grep --line-buffered -vE '^[[:space:]]*(=== (RUN|PAUSE|CONT|NAME)|--- PASS:)'
	rc=${PIPESTATUS[0]}
	read -r tests_passed tests_failed tests_skipped < <(count_tests "$log")
	if ((rc != 0 && tests_failed == 0)); then
		tests_failed=1
	fi
	echo "go test: $tests_passed passed, $tests_failed failed, $tests_skipped skipped (full log: $log)"
	return "$rc"
}

# fuzz_targets prints "DIR NAME" for every func FuzzXxx in a _test.go file,
# so new fuzzers join the pass without editing this script.
fuzz_targets() {
	local f
	go_files | grep '_test\.go$' | grep -vE '(^|/)(testdata|vendor)/' | sort |
		while IFS= read -r f; do
			grep -hoE '^func Fuzz[A-Za-z0-9_]*\(' "$f" | sed -e 's/^func //' -e 's/($//' |
				while IFS= read -r name; do
					echo "$(dirname "$f") $name"
				done
		done
}

fuzz_one() {
	local dir="$1" name="$2" out rc
	out="$(mktemp)"
	go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "./$dir" 2>&1 | tee "$out"
	rc=${PIPESTATUS[0]}
	# Go's fuzzer can end a run with a bare "context deadline exceeded" when
	# the time is up while a worker is still busy on a slow input (seen on
	# loaded 2-core machines). That is not a finding (no failing input is
	# written); run the target once more. A real crasher fails both times.
	if ((rc != 0)) && grep -q "context deadline exceeded" "$out" && ! grep -q "Failing input written" "$out"; then
		echo "fuzz $name: the fuzzer timed out without a finding; running it again"
		go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "./$dir"
		rc=$?
	fi
	rm -f "$out"
	return "$rc"
}

run_fuzzing() {
	local dir name started
	if [[ "$fuzztime" == 0 || "$fuzztime" == 0s ]]; then
		record SKIP "fuzz" "$SECONDS" "PUSHLOG_TEST_FUZZTIME=0"
		return
	fi
	local targets
	mapfile -t targets < <(fuzz_targets)
	if ((${#targets[@]} == 0)); then
		record SKIP "fuzz" "$SECONDS" "no FuzzXxx functions found"
		return
	fi
	for t in "${targets[@]}"; do
		read -r dir name <<<"$t"
		started=$SECONDS
		banner "fuzz $name in ./$dir for $fuzztime"
		if fuzz_one "$dir" "$name"; then
			record PASS "fuzz ./$dir $name" "$started"
		else
			record FAIL "fuzz ./$dir $name" "$started" "failing input saved under ./$dir/testdata/fuzz/$name/"
		fi
	done
}

# --- run -------------------------------------------------------------------

step "tools" check_tools
if ! command -v go >/dev/null; then
	echo "go is not installed: nothing can be checked" >&2
	exit 1
fi

if [[ -z "$keep" ]]; then
	fresh_state
fi
choose_ports
service Kafka "$kafka_sh" KAFKA_BROKERS
# Three more JVMs for TestKafkaClusterFailover (replication 3,
# min.insync.replicas=2, kill -9 of a leader, two brokers down).
service "Kafka cluster (3 brokers)" "$cluster_sh" KAFKA_CLUSTER_BROKERS
service ClickHouse "$clickhouse_sh" CLICKHOUSE_ADDR
# An autopush-rs Redis backend for the migration test (REDIS_URL).
service Redis "$redis_sh" REDIS_URL

# Real clients for the end-to-end tests: Debian's Firefox ESR, npm web-push,
# pywebpush (installed when missing; a failed install fails the run, and the
# tests that need the client fail in CI).
install_clients() {
	bash deploy/clients/install.sh all && export_env deploy/clients/install.sh
}
step "install test clients (deploy/clients/install.sh)" install_clients

# Debian's chromium, headless, for the console's browser test
# (integration/console_test.go; it fails in CI without it).
install_chromium() {
	command -v chromium >/dev/null && return 0
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq &&
		DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends chromium
}
step "install chromium (console browser test)" install_chromium
# Debian's nghttp (nghttp2-client): an HTTP/2 client that accepts server
# push, for RFC 8030 receipts (integration/receipts_test.go fails in CI
# without it), and curl for the same test's receipt stream (SSE).
install_nghttp() {
	command -v nghttp >/dev/null && command -v curl >/dev/null && return 0
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq &&
		DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends nghttp2-client curl
}
step "install nghttp (receipts over HTTP/2 server push)" install_nghttp
# Debian's prometheus package: promtool checks and unit-tests the alert
# rules, and a real server scrapes pushlog (integration/prometheus_test.go).
step "install prometheus (deploy/prometheus/install.sh)" bash deploy/prometheus/install.sh

step "gofmt" check_gofmt
step "go vet ./..." go vet ./...
step "staticcheck $staticcheck_version ./..." run_staticcheck
step "go build ./..." go build ./...
# A newcomer's path on a fresh clone of HEAD, as README.md writes it: the
# run command, the quick start, status with no flags, the console, Ctrl-C.
step "newcomer path (deploy/newcomer.sh)" bash deploy/newcomer.sh
step "go test -count=1 ./..." run_go_test
run_fuzzing

# Stop the servers before the summary, so the summary closes the output.
stop_services

banner "summary (${SECONDS}s in all)"
printf '  %s\n' "${results[@]}"
if ((failures > 0)); then
	echo "FAILED: $failures step(s) failed"
else
	echo "OK: every step passed"
fi
# The plain closing line CI reads: counts of go tests (subtests included).
echo "tests: $tests_passed passed, $tests_failed failed, $tests_skipped skipped"
((failures == 0))
