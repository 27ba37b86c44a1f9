"""Support code shared by the tests (tests/) and the benchmarks (bench/): one module per concept.

    paths          where things are, derived from the repository root (no machine paths)
    awsenv         the one environment for child processes (loopback test credentials)
    ports          free loopback ports (also a command: `python3 pysupport/ports.py s3|closed`)
    s3server       SeaweedFS on loopback through scripts/s3-server.sh
    s3client       boto3 client with retries, listing, emptying
    s3proxy        fault, TLS and delay proxy in front of the S3 server
    extension      the extension under test: its path, SQL surface, configuration pairs
    shell          the /usr/bin/sqlite3 host: scripts in sql/, restores, database comparisons
    hostside       helpers for programs run BY /usr/bin/python3 (standard library only)
    pyhost         running /usr/bin/python3 hosts: snippets (PyHost) and host programs
    reference      the reference Litestream binary: install, run, sidecar
    ltx            LTX decoding (tests/tools/ltx_check.py) and replica layout checks
    crash_host     the crash writer host program (run by /usr/bin/python3)
    crash_trials   SIGKILL crash trials (bench/crash.py and tests/reliability)
    report         statistics and machine facts for benchmark reports
    fixtures       pytest fixtures (s3, bucket, ext, litestream_bin, pyhost)

Rules: nothing here imports from tests/ or bench/; modules a /usr/bin/python3 host program loads
(paths, hostside) use the standard library only; importing this package itself imports nothing.
Tests get it on sys.path through `pythonpath` in their pytest.ini; bench scripts and host
programs put the repository root on sys.path themselves.
"""
