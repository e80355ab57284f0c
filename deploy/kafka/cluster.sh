#!/usr/bin/env bash
# Runs a private 3-node Apache Kafka cluster (KRaft; every node is broker and
# controller, one JVM each) on loopback, for pushlog's failover tests:
# replication factor 3 and min.insync.replicas=2 by default, and broker
# settings that shorten failover (see cluster.properties.in).
#
#   deploy/kafka/cluster.sh start [N]     start every node (or node N), wait until the cluster answers
#   deploy/kafka/cluster.sh stop [N]      stop every node (or node N): TERM, then KILL; idempotent
#   deploy/kafka/cluster.sh kill N        kill -9 node N (a crash: no controlled shutdown)
#   deploy/kafka/cluster.sh restart N     stop node N, then start it
#   deploy/kafka/cluster.sh status        exit 0 when every node runs and answers
#   deploy/kafka/cluster.sh env           print KAFKA_CLUSTER_BROKERS=... (and the state directory)
#   deploy/kafka/cluster.sh reset         stop every node and delete the cluster's data
#   deploy/kafka/cluster.sh logs N [L]    print the end of node N's log
#   deploy/kafka/cluster.sh topics ARGS...   run kafka-topics against the cluster
#
# Nodes are numbered 1..3 (node.id = N). Node N listens on port BASE+N-1
# (39092, 39093, 39094 by default) and its controller on BASE+10+N-1
# (39102..39104): apart from kafka.sh's single node (19092) and the test
# command's (29092). The jars are kafka.sh's (fetched once into the cache).
#
# Environment:
#   KAFKA_HOST                 listen address (default 127.0.0.1)
#   KAFKA_CLUSTER_PORT         first broker port (default 39092)
#   KAFKA_CLUSTER_STATE_DIR    config, data, logs, pids (default $PUSHLOG_TEST_DIR/kafka-cluster,
#                              else <repo>/.cache/kafka-cluster)
#   KAFKA_CACHE_DIR, KAFKA_VERSION, JAVA_HOME   as for kafka.sh
#   KAFKA_CLUSTER_HEAP         maximum heap per node (default 384m)
#   KAFKA_START_TIMEOUT        seconds to wait for the cluster (default 180)
#   KAFKA_STOP_TIMEOUT         seconds between TERM and KILL (default 30)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

nodes=3
version="${KAFKA_VERSION:-4.4.0}"
host="${KAFKA_HOST:-127.0.0.1}"
base="${KAFKA_CLUSTER_PORT:-39092}"
default_state="$repo/.cache/kafka-cluster"
[[ -n "${PUSHLOG_TEST_DIR:-}" ]] && default_state="$PUSHLOG_TEST_DIR/kafka-cluster"
state="${KAFKA_CLUSTER_STATE_DIR:-$default_state}"
cache="${KAFKA_CACHE_DIR:-$repo/.cache/kafka}"
heap="${KAFKA_CLUSTER_HEAP:-384m}"
start_timeout="${KAFKA_START_TIMEOUT:-180}"
stop_timeout="${KAFKA_STOP_TIMEOUT:-30}"
libs="$cache/$version/libs"

name=cluster.sh
# shellcheck source=common.sh
. "$here/common.sh" # die, say, java_bin, port_open, lock

port() { echo $((base + $1 - 1)); }
controller_port() { echo $((base + 10 + $1 - 1)); }
node_dir() { echo "$state/node$1"; }
conf() { echo "$(node_dir "$1")/server.properties"; }
pidfile() { echo "$(node_dir "$1")/kafka.pid"; }

brokers() {
	local n out=""
	for ((n = 1; n <= nodes; n++)); do out+="${out:+,}$host:$(port "$n")"; done
	echo "$out"
}

voters() {
	local n out=""
	for ((n = 1; n <= nodes; n++)); do out+="${out:+,}$n@$host:$(controller_port "$n")"; done
	echo "$out"
}

check_node() {
	[[ "${1:-}" =~ ^[1-3]$ ]] || die "node must be 1, 2 or 3 (got '${1:-}')"
}

# need_java finds java (kafka.sh fetch checked its version).
need_java() {
	local java
	java="$(java_bin)"
	[[ -n "$java" ]] || die "java not found (Kafka needs Java 17 or newer)"
	echo "$java"
}

# ensure_libs lets kafka.sh fetch (and version-check Java) once.
ensure_libs() {
	[[ -f "$libs/.complete" ]] && return
	KAFKA_CACHE_DIR="$cache" KAFKA_VERSION="$version" bash "$here/kafka.sh" fetch
}

running_pid() {
	local f pid
	f="$(pidfile "$1")"
	[[ -f "$f" ]] || return 1
	pid="$(cat "$f" 2>/dev/null)"
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	# A recycled pid would belong to another program.
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "kafka.Kafka $(conf "$1")" || return 1
	echo "$pid"
}

write_config() {
	local n="$1" dir
	dir="$(node_dir "$n")"
	mkdir -p "$dir/data" "$dir/logs"
	sed -e "s|@NODE_ID@|$n|g" -e "s|@VOTERS@|$(voters)|g" -e "s|@HOST@|$host|g" \
		-e "s|@PORT@|$(port "$n")|g" -e "s|@CONTROLLER_PORT@|$(controller_port "$n")|g" \
		-e "s|@DATA_DIR@|$dir/data|g" "$here/cluster.properties.in" >"$(conf "$n")"
}

# format_storage formats every node with one cluster id, once.
format_storage() {
	local java="$1" n dir id
	mkdir -p "$state"
	printf '*\n' >"$state/.gitignore"
	if [[ ! -f "$state/cluster-id" ]]; then
		# A Kafka cluster id is 16 random bytes in unpadded base64url.
		head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' >"$state/cluster-id"
	fi
	id="$(cat "$state/cluster-id")"
	for ((n = 1; n <= nodes; n++)); do
		write_config "$n"
		dir="$(node_dir "$n")"
		[[ -f "$dir/data/meta.properties" ]] && continue
		if ! "$java" -Xmx256m -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="$here/tools-log4j2.properties" \
			-cp "$libs/*" kafka.tools.StorageTool format --cluster-id="$id" -c "$(conf "$n")" \
			>"$dir/logs/format.log" 2>&1; then
			cat "$dir/logs/format.log" >&2
			die "formatting node $n ($dir/data) failed"
		fi
	done
}

launch() {
	local java="$1" n="$2" dir opts
	dir="$(node_dir "$n")"
	for f in server.log stdout.log; do
		if [[ -f "$dir/logs/$f" ]]; then mv -f "$dir/logs/$f" "$dir/logs/$f.prev"; fi
	done
	opts=(-Xms128m "-Xmx$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
		-XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
		-Dlog4j2.configurationFile="$here/log4j2.properties"
		-Dkafka.logs.dir="$dir/logs")
	# setsid: the node outlives the shell (and test process group) that
	# started it. 9>&-: it must not inherit (and hold) the lock.
	(cd "$dir" && exec 9>&- && exec setsid "$java" "${opts[@]}" -cp "$libs/*" kafka.Kafka "$(conf "$n")" \
		</dev/null >>"$dir/logs/stdout.log" 2>&1) &
	echo $! >"$(pidfile "$n")"
}

fail_node() {
	local n="$1" dir
	shift
	dir="$(node_dir "$n")"
	say "--- last lines of $dir/logs/server.log ---"
	tail -n 40 "$dir/logs/server.log" >&2 2>/dev/null || true
	die "$*"
}

# wait_node returns once node N said it started and accepts connections.
wait_node() {
	local n="$1" pid="$2" deadline="$3" dir
	dir="$(node_dir "$n")"
	until grep -q 'Kafka Server started' "$dir/logs/server.log" 2>/dev/null && port_open "$(port "$n")"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			rm -f "$(pidfile "$n")"
			fail_node "$n" "node $n exited during start-up (logs in $dir/logs)"
		fi
		((SECONDS < deadline)) || fail_node "$n" "node $n (pid $pid) did not start within ${start_timeout}s"
		sleep 0.25
	done
}

# start_nodes launches the given nodes (those not running) together: a
# KRaft node waits for a quorum of controllers before it reports started.
start_nodes() {
	local java n pid started=$SECONDS deadline=$((SECONDS + start_timeout))
	local -a pids=()
	java="$(need_java)" || exit 1
	ensure_libs
	format_storage "$java"
	for n in "$@"; do
		if pid="$(running_pid "$n")"; then
			pids[n]="$pid"
			continue
		fi
		rm -f "$(pidfile "$n")"
		for p in "$(port "$n")" "$(controller_port "$n")"; do
			port_open "$p" && die "port $host:$p is in use by another program (set KAFKA_CLUSTER_PORT)"
		done
		launch "$java" "$n"
		pids[n]="$(cat "$(pidfile "$n")")"
	done
	for n in "$@"; do wait_node "$n" "${pids[n]}" "$deadline"; done
	say "node(s) $* running after $((SECONDS - started))s on $(brokers), state in $state"
}

stop_node() {
	local n="$1" pid deadline
	if ! pid="$(running_pid "$n")"; then
		rm -f "$(pidfile "$n")"
		return
	fi
	kill -TERM "$pid" 2>/dev/null || true
	deadline=$((SECONDS + stop_timeout))
	while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
	if kill -0 "$pid" 2>/dev/null; then
		say "node $n (pid $pid) ignored SIGTERM for ${stop_timeout}s; killing"
		kill -KILL "$pid" 2>/dev/null || true
		while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
	fi
	rm -f "$(pidfile "$n")"
	say "stopped node $n (pid $pid)"
}

kill_node() {
	local n="$1" pid
	pid="$(running_pid "$n")" || die "node $n is not running"
	kill -KILL "$pid"
	while kill -0 "$pid" 2>/dev/null; do sleep 0.02; done
	rm -f "$(pidfile "$n")"
	say "killed node $n (pid $pid) with SIGKILL"
}

all_nodes() { seq 1 "$nodes"; }

cmd_status() {
	local n pid rc=0
	for n in $(all_nodes); do
		if pid="$(running_pid "$n")" && port_open "$(port "$n")"; then
			echo "node $n: running (pid $pid) on $host:$(port "$n")"
		else
			echo "node $n: not running"
			rc=1
		fi
	done
	return "$rc"
}

cmd="${1:-}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
start)
	lock
	if [[ -n "${1:-}" ]]; then
		check_node "$1"
		start_nodes "$1"
	else
		# shellcheck disable=SC2046 # node numbers
		start_nodes $(all_nodes)
	fi
	;;
stop)
	lock
	if [[ -n "${1:-}" ]]; then
		check_node "$1"
		stop_node "$1"
	else
		# Stopped together: one by one, the last two would each wait for
		# a controller quorum that is already leaving.
		for n in $(all_nodes); do
			if pid="$(running_pid "$n")"; then kill -TERM "$pid" 2>/dev/null || true; fi
		done
		for n in $(all_nodes); do stop_node "$n"; done
	fi
	;;
kill)
	check_node "${1:-}"
	lock
	kill_node "$1"
	;;
restart)
	check_node "${1:-}"
	lock
	stop_node "$1"
	start_nodes "$1"
	;;
status) cmd_status ;;
env)
	echo "KAFKA_CLUSTER_BROKERS=$(brokers)"
	echo "KAFKA_CLUSTER_STATE_DIR=$state"
	;;
reset)
	lock
	for n in $(all_nodes); do
		if pid="$(running_pid "$n")"; then kill -TERM "$pid" 2>/dev/null || true; fi
	done
	for n in $(all_nodes); do stop_node "$n"; done
	rm -rf "$state"/node* "$state/cluster-id"
	say "deleted the cluster's data in $state"
	;;
logs)
	check_node "${1:-}"
	tail -n "${2:-100}" "$(node_dir "$1")/logs/server.log"
	;;
topics)
	ensure_libs
	java="$(need_java)" || exit 1
	timeout 120 "$java" -Xmx256m -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="$here/tools-log4j2.properties" \
		-cp "$libs/*" org.apache.kafka.tools.TopicCommand --bootstrap-server "$(brokers)" "$@"
	;;
*)
	echo "usage: $0 start [N]|stop [N]|kill N|restart N|status|env|reset|logs N [L]|topics ARGS..." >&2
	exit 2
	;;
esac
