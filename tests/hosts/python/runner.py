"""SQL runner for the installed Python package (the protocol: tests/hosts/README.md).

    python runner.py DB < steps.json > results.json

Loads the extension with litestream_sqlite.load(), as a user of the wheel does, then runs each
SQL statement on the one connection in autocommit mode.
"""
import json
import sqlite3
import sys

import litestream_sqlite


def main():
    steps = json.load(sys.stdin)
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    litestream_sqlite.load(conn)
    results = []
    for sql in steps:
        try:
            row = conn.execute(sql).fetchone()
            results.append({"value": None if row is None or row[0] is None else str(row[0])})
        except sqlite3.Error as e:
            results.append({"error": str(e)})
    conn.close()
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
