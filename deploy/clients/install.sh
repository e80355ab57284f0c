#!/usr/bin/env bash
# Installs the real push clients the integration tests drive (issue 5):
#
#   deploy/clients/install.sh [all|firefox|npm|python|env]...   (default: all)
#
#   firefox  Debian's firefox-esr and libnss3-tools (certutil), with apt-get
#            when missing (needs root; retries while another apt/dpkg holds
#            the lock). Never a browser download of its own.
#   npm      npm `web-push`, exactly as locked in deploy/clients/npm/
#            (package.json + package-lock.json), into <repo>/.cache/npm
#            (git-ignored) with `npm ci`; skipped when the lock is unchanged.
#   python   a virtual environment <repo>/.cache/venv with the pinned
#            pywebpush of deploy/clients/requirements.txt; skipped when the
#            requirements are unchanged.
#   env      prints NAME=VALUE lines the tests read (PUSHLOG_FIREFOX,
#            PUSHLOG_CERTUTIL, PUSHLOG_WEBPUSH_NODE_MODULES, PUSHLOG_PYTHON);
#            the tests find the same paths by themselves when these are unset.
#
# Exits non-zero naming the client that could not be installed; the tests
# then fail in CI (CI set) and skip elsewhere.
#
# Environment:
#   PUSHLOG_CLIENTS_DIR   where npm and the venv go (default <repo>/.cache)
#   PUSHLOG_APT_LOCK_WAIT seconds to wait for another apt/dpkg (default 600)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${PUSHLOG_CLIENTS_DIR:-$repo/.cache}"
npm_dir="$cache/npm"
venv_dir="$cache/venv"
lock_wait="${PUSHLOG_APT_LOCK_WAIT:-600}"

say() { printf 'clients: %s\n' "$*" >&2; }
die() {
	say "ERROR: $*"
	exit 1
}

# --- firefox ---------------------------------------------------------------

firefox_bin() { command -v firefox-esr || true; }
certutil_bin() { command -v certutil || true; }

# apt_retry runs an apt-get command, retrying while another apt or dpkg
# holds its lock (engineers and CI may install at the same moment). Other
# failures are final at once.
apt_retry() {
	local deadline=$((SECONDS + lock_wait)) out rc
	while :; do
		set +e
		out="$(DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=60 "$@" 2>&1)"
		rc=$?
		set -e
		if ((rc == 0)); then
			return 0
		fi
		if grep -qiE 'Could not get lock|Unable to lock|is another process using it|dpkg was interrupted' <<<"$out" && ((SECONDS < deadline)); then
			if grep -q 'dpkg was interrupted' <<<"$out"; then
				# Only when no dpkg runs: another one's half-done install is
				# theirs to finish.
				if ! pgrep -x dpkg >/dev/null && ! pgrep -x apt-get >/dev/null; then
					dpkg --configure -a >&2 || true
				fi
			fi
			say "apt is busy (another install is running); retrying in 5s"
			sleep 5
			continue
		fi
		printf '%s\n' "$out" >&2
		return "$rc"
	done
}

# apt_install WHAT PKG...: installs Debian packages (apt-get update first).
apt_install() {
	local what="$1"
	shift
	command -v apt-get >/dev/null || die "$what is missing and apt-get is not available: install $* by hand"
	[[ "$(id -u)" == 0 ]] || die "$what is missing; run as root (or: sudo apt-get install $*)"
	say "installing Debian's $* with apt-get"
	apt_retry update -qq || die "apt-get update failed"
	apt_retry install -y -qq --no-install-recommends "$@" || die "apt-get install $* failed"
}

install_firefox() {
	if [[ -n "$(firefox_bin)" && -n "$(certutil_bin)" ]]; then
		say "firefox-esr: $(firefox_bin) ($("$(firefox_bin)" --version 2>/dev/null || echo '?')); certutil: $(certutil_bin)"
		return 0
	fi
	apt_install "firefox-esr/certutil" firefox-esr libnss3-tools
	[[ -n "$(firefox_bin)" ]] || die "firefox-esr still missing after apt-get install"
	[[ -n "$(certutil_bin)" ]] || die "certutil still missing after apt-get install libnss3-tools"
	say "firefox-esr: $("$(firefox_bin)" --version 2>/dev/null || echo '?')"
}

# --- npm web-push ----------------------------------------------------------

# stamp_ok FILE SOURCES...: FILE holds the checksum of SOURCES (up to date).
stamp_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

install_npm() {
	if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
		apt_install "node/npm" nodejs npm
	fi
	local stamp
	stamp="$(stamp_of "$here/npm/package.json" "$here/npm/package-lock.json")"
	if [[ -f "$npm_dir/.stamp" && "$(cat "$npm_dir/.stamp")" == "$stamp" && -f "$npm_dir/node_modules/web-push/package.json" ]]; then
		say "npm web-push: up to date in $npm_dir"
		return 0
	fi
	say "installing npm web-push (locked) into $npm_dir"
	mkdir -p "$npm_dir"
	cp "$here/npm/package.json" "$here/npm/package-lock.json" "$npm_dir/"
	(cd "$npm_dir" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2) ||
		die "npm ci (web-push) failed in $npm_dir"
	node -e 'require(process.argv[1])' "$npm_dir/node_modules/web-push" ||
		die "web-push does not load from $npm_dir/node_modules"
	echo "$stamp" >"$npm_dir/.stamp"
	say "npm web-push: $(node -p 'require(process.argv[1]).version' "$npm_dir/node_modules/web-push/package.json")"
}

# --- pywebpush -------------------------------------------------------------

python_bin() {
	local p
	for p in python3 python; do
		if command -v "$p" >/dev/null && "$p" -c 'import sys, venv; sys.exit(sys.version_info < (3, 8))' 2>/dev/null; then
			command -v "$p"
			return
		fi
	done
}

install_python() {
	local py stamp
	py="$(python_bin)"
	if [[ -z "$py" ]]; then
		apt_install "python3 with venv" python3 python3-venv
		py="$(python_bin)"
	fi
	[[ -n "$py" ]] || die "python3 (3.8+ with venv) is not installed: apt-get install python3-venv"
	stamp="$(stamp_of "$here/requirements.txt")"
	if [[ -f "$venv_dir/.stamp" && "$(cat "$venv_dir/.stamp")" == "$stamp" && -x "$venv_dir/bin/python" ]] &&
		"$venv_dir/bin/python" -c 'import pywebpush' 2>/dev/null; then
		say "pywebpush: up to date in $venv_dir"
		return 0
	fi
	say "making $venv_dir with $py and installing pywebpush (pinned)"
	rm -rf "$venv_dir"
	"$py" -m venv "$venv_dir" || die "python -m venv $venv_dir failed (Debian: apt-get install python3-venv)"
	"$venv_dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
		-r "$here/requirements.txt" >&2 || die "pip install -r deploy/clients/requirements.txt failed"
	"$venv_dir/bin/python" -c 'import pywebpush' || die "pywebpush does not import in $venv_dir"
	echo "$stamp" >"$venv_dir/.stamp"
	say "pywebpush: $("$venv_dir/bin/python" -m pip show pywebpush 2>/dev/null | sed -n 's/^Version: //p')"
}

print_env() {
	echo "PUSHLOG_FIREFOX=$(firefox_bin)"
	echo "PUSHLOG_CERTUTIL=$(certutil_bin)"
	echo "PUSHLOG_WEBPUSH_NODE_MODULES=$npm_dir/node_modules"
	echo "PUSHLOG_PYTHON=$venv_dir/bin/python"
}

main() {
	local what=("$@") todo=() w failed=()
	((${#what[@]})) || what=(all)
	for w in "${what[@]}"; do
		case "$w" in
		all) todo+=(firefox npm python) ;;
		firefox | npm | python | env) todo+=("$w") ;;
		*) die "unknown argument $w (want all|firefox|npm|python|env)" ;;
		esac
	done
	# Each client in its own subshell, so one that fails (die) does not
	# stop the others; the exit status names every failure.
	for w in "${todo[@]}"; do
		case "$w" in
		env) print_env ;;
		*) ("install_$w") || failed+=("$w") ;;
		esac
	done
	if ((${#failed[@]})); then
		die "could not install: ${failed[*]}"
	fi
}

main "$@"
