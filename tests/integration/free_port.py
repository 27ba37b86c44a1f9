#!/usr/bin/env python3
"""Loopback port helpers (stdlib only; used by conftest.py, scripts/test.sh and scripts/demo.sh).

    python3 tests/integration/free_port.py s3      # a base port for scripts/s3-server.sh
    python3 tests/integration/free_port.py closed  # a loopback port nothing listens on

SeaweedFS (`scripts/s3-server.sh`) uses S3_PORT .. S3_PORT+4 and each of those + 10000 (gRPC), and wants
S3_PORT <= 55000, so a usable base port needs all ten of those free.
"""
import random
import socket
import sys


def _is_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_s3_port(lo=20000, hi=45000, tries=200):
    """A base port whose 10 derived SeaweedFS ports are all free on 127.0.0.1."""
    rng = random.Random()
    for _ in range(tries):
        base = rng.randrange(lo, hi)
        ports = [base + i for i in range(5)] + [base + 10000 + i for i in range(5)]
        if all(_is_free(p) for p in ports):
            return base
    raise RuntimeError("no free port range for SeaweedFS found on 127.0.0.1")


def closed_port():
    """A loopback port that nothing listens on (bound once by us, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "s3"
    if what == "s3":
        print(free_s3_port())
    elif what == "closed":
        print(closed_port())
    else:
        sys.exit("usage: free_port.py s3|closed")
