# Helpers shared by kafka.sh and cluster.sh (sourced; not a command).
# The sourcing script sets: name (for messages), host, state, start_timeout.

die() { echo "$name: $*" >&2; exit 1; }
say() { echo "$name: $*" >&2; }

# java_bin prints the java to run (JAVA_HOME first), or nothing.
java_bin() {
	if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
		echo "$JAVA_HOME/bin/java"
	else
		command -v java || true
	fi
}

port_open() {
	# bash's /dev/tcp connects only when something listens.
	(exec 3<>"/dev/tcp/$host/$1") 2>/dev/null
}

# lock serialises commands on one state directory: two at once (two
# terminals, a test restarting a node while another stops one) must not
# race on a pid file or both launch a broker.
lock() {
	mkdir -p "$state"
	if command -v flock >/dev/null; then
		exec 9>"$state/.lock"
		flock -w "$((start_timeout + 60))" 9 || die "another $name holds $state/.lock"
	fi
}
