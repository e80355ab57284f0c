#!/usr/bin/env bash
# Optional check that pushlog's migrations and dashboard queries run on
# current ClickHouse too, and answer exactly as the server here does:
#
#   deploy/clickhouse/check-current.sh            current ClickHouse only
#   deploy/clickhouse/check-current.sh --compare 127.0.0.1:19000
#
# Current ClickHouse is PyPI's chdb-core (the ClickHouse engine as a Python
# module; about 900 MB installed), kept in a virtualenv under
# .cache/clickhouse-current/. Not part of the test command: it is slow to
# install and the tests run on the Debian 18.16 server.
#
# Environment: CHDB_VERSION (default 26.9.0), PYTHON (default python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
version="${CHDB_VERSION:-26.9.0}"
python="${PYTHON:-python3}"
venv="$repo/.cache/clickhouse-current/venv-$version"

die() { echo "check-current.sh: $*" >&2; exit 1; }

command -v "$python" >/dev/null || die "$python is missing"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import chdb' 2>/dev/null; then
	mkdir -p "$repo/.cache/clickhouse-current"
	printf '*\n' >"$repo/.cache/clickhouse-current/.gitignore"
	"$python" -m venv "$venv" || die "cannot create a virtualenv (Debian: apt-get install python3-venv)"
	echo "check-current.sh: installing chdb-core==$version (large)" >&2
	"$venv/bin/pip" install -q "chdb-core==$version" || die "pip install chdb-core==$version failed"
fi
exec "$venv/bin/python" "$here/check_current.py" "$@"
