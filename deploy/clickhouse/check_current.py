#!/usr/bin/env python3
"""Checks pushlog's ClickHouse SQL on current ClickHouse, and that it answers
exactly as Debian's 18.16 does.

Current ClickHouse comes from PyPI's chdb-core (ClickHouse embedded in a
Python module; no server needed). The script applies every migration twice,
inserts the same synthetic rows, runs every dashboard query and prints the
answers. With --compare HOST:PORT it does the same on a running server
(clickhouse-client, e.g. the 18.16 that clickhouse.sh starts) and fails when
any answer differs.

Run it through check-current.sh, which installs chdb-core in a virtualenv
under .cache/.
"""
import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DB = "pushlog_check"
# A fixed clock, so both engines see the same window.
NOW = int(time.time()) // 60 * 60
SINCE = NOW - 3600
UNTIL = 4102444800  # no --until: 2100-01-01, as analytics.ReportOptions renders it (18.16 parses no later Date)


def statements(path):
    """Split like analytics.SplitStatements: ';' at a line end, no -- lines."""
    out, cur = [], []
    for line in open(path, encoding="utf-8").read().split("\n"):
        if line.strip().startswith("--"):
            continue
        cur.append(line)
        if line.strip().endswith(";"):
            out.append("\n".join(cur).strip().rstrip(";"))
            cur = []
    rest = "\n".join(cur).strip()
    if rest:
        out.append(rest)
    return [s for s in out if s.strip()]


def render(sql, **kw):
    out = sql.replace("{db}", DB)
    for k, v in kw.items():
        out = out.replace("{" + k + "}", str(v))
    return out


def synthetic_rows():
    """A small mix over two senders, two nodes and two minutes."""
    day = "toDate(toDateTime(%d))"
    t = lambda s: "toDateTime(%d)" % s
    common = lambda s, ms, i, p, o: "%s, %s, %d, 'ev%d', 'u%d', %d, %d" % (day % s, t(s), ms, i, i % 4, p, o)
    rows = []
    base = NOW - 600
    for i in range(30):
        s, ms = base + i * 3, (base + i * 3) * 1000
        sender = "mailto:a@example.com" if i % 3 else ""
        rows.append(("accepted", "%s, 'ch', '%s', 'ab', %d, %d, 'aes128gcm', 60, 'normal', %d" % (
            common(s, ms, i, i % 2, i), sender, i % 2, 100 + i, i % 5 == 0)))
        ref = "'ch', %d, %d, %d, '%s'" % (i % 2, i, ms, sender)
        rows.append(("delivered", "%s, %s, %d, 'n1', 'c1', %d" % (common(s, ms + 5, i, i % 2, 100 + i), ref, 5, 1 + (i % 7 == 0))))
        if i % 4:
            rows.append(("acked", "%s, %s, %d, 100" % (common(s, ms + 10 * i, i, i % 2, 200 + i), ref, 10 * i)))
        elif i % 8:
            rows.append(("expired", "%s, %s, 60000" % (common(s + 60, ms + 60000, i, i % 2, 300 + i), ref)))
        else:
            rows.append(("dropped", "%s, %s, 500, '%s', %d" % (common(s, ms + 500, i, i % 2, 400 + i), ref,
                                                                   ["pending_limit", "deleted"][i % 16 == 0], 1 + 4 * (i % 16 == 0))))
        if i % 10 == 0:
            rows.append(("nacked", "%s, %s, 7, 302" % (common(s, ms + 7, i, i % 2, 500 + i), ref)))
            rows.append(("deleted", "%s, %s, 9" % (common(s, ms + 9, i, i % 2, 600 + i), ref)))
        node = "n%d" % (i % 2)
        rows.append(("connections", "%s, 'connected', '%s', 'c%d', '127.0.0.1:1', %d, 'ua', 0" % (common(s, ms, i, i % 2, 700 + i), node, i, ms)))
        if i % 3 == 0:
            rows.append(("connections", "%s, 'disconnected', '%s', 'c%d', '', 0, '', %d" % (common(s + 1, ms + 1000, i, i % 2, 800 + i), node, i, 1000 * (i + 1))))
        rows.append(("registrations", "%s, 'registered', 'ch', '', 0, ''" % common(s, ms, i, i % 2, 900 + i)))
    return ["INSERT INTO %s.%s VALUES (%s)" % (DB, table, vals) for table, vals in rows]


class Chdb:
    name = "chdb"

    def __init__(self):
        from chdb import session
        self.dir = tempfile.mkdtemp(prefix="pushlog-chdb-")
        self.s = session.Session(self.dir)

    def run(self, sql):
        return str(self.s.query(sql, "TabSeparated")).strip()

    def version(self):
        return self.run("SELECT version()")


class Client:
    def __init__(self, addr):
        self.host, self.port = addr.rsplit(":", 1)
        self.name = "server " + addr

    def run(self, sql):
        r = subprocess.run(["clickhouse-client", "--host", self.host, "--port", self.port, "-q", sql],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(r.stderr.strip())
        return r.stdout.strip()

    def version(self):
        return self.run("SELECT version()")


def check(engine):
    """Runs everything on one engine and returns {query name: answer}."""
    engine.run("DROP DATABASE IF EXISTS %s" % DB)
    engine.run("CREATE DATABASE %s" % DB)
    migrations = sorted(glob.glob(os.path.join(REPO, "analytics", "migrations", "*.sql")))
    engine.run("CREATE TABLE IF NOT EXISTS %s.pushlog_migrations (version UInt32, name String, applied_at DateTime) "
               "ENGINE = MergeTree() ORDER BY version" % DB)
    for _ in range(2):  # idempotent
        for m in migrations:
            for st in statements(m):
                engine.run(render(st))
    for st in synthetic_rows():
        engine.run(st)
    answers = {}
    for q in sorted(glob.glob(os.path.join(REPO, "analytics", "queries", "*.sql"))):
        name = os.path.basename(q)[:-4]
        for variant, kw in (("", dict(sender_filter="", node_filter="")),
                            (" (filtered)", dict(sender_filter="AND vapid_sub = 'mailto:a@example.com'",
                                                 node_filter="AND node = 'n1'"))):
            (st,) = statements(q)
            answers[name + variant] = engine.run(render(st, since=SINCE, limit=20,
                                                        since_date=time.strftime("'%Y-%m-%d'", time.gmtime(SINCE)),
                                                        until=UNTIL, until_date=time.strftime("'%Y-%m-%d'", time.gmtime(UNTIL)),
                                                        **kw))
    engine.run("DROP DATABASE %s" % DB)
    return answers


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--compare", metavar="HOST:PORT", help="also run on this server and compare")
    args = ap.parse_args()
    engines = [Chdb()]
    if args.compare:
        engines.append(Client(args.compare))
    results = []
    for e in engines:
        print("== %s: ClickHouse %s" % (e.name, e.version()))
        res = check(e)
        for name, ans in res.items():
            print("-- %s\n%s" % (name, ans or "(no rows)"))
        results.append(res)
    if len(results) == 2:
        bad = [n for n in results[0] if results[0][n] != results[1][n]]
        if bad:
            for n in bad:
                print("DIFFERENT %s:\n  %s: %r\n  %s: %r" % (n, engines[0].name, results[0][n], engines[1].name, results[1][n]))
            sys.exit(1)
        print("== every answer is identical on both engines")


if __name__ == "__main__":
    main()
