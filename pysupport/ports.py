#!/usr/bin/env python3
"""Loopback port helpers (standard library only; also a command for scripts/test.sh and
scripts/demo.sh):

    python3 pysupport/ports.py s3      # a base port for scripts/s3-server.sh
    python3 pysupport/ports.py closed  # a loopback port nothing listens on

SeaweedFS (`scripts/s3-server.sh`) uses S3_PORT .. S3_PORT+4 and each of those + 10000 (gRPC), and
wants S3_PORT <= 55000, so a usable base port needs all ten of those free. A port found free may
still be taken before the server binds it: S3Server.start picks again when that happens.
"""
import os
import random
import socket
import sys



def _ephemeral_low(default=32768):
    """The first port the kernel hands out to outgoing connections (Linux's default 32768)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def _s3_port_range():
    """Bases the search draws from: all ten derived ports (base .. base+4, base+10000 ..
    base+10004) lie below the kernel's ephemeral range, so that no outgoing connection can take
    one while a test has the server stopped (a restart after kill -9 failed with "bind: address
    already in use" on a gRPC port of 51280). Each base is at most 55000, as s3-server.sh
    requires. Where the ephemeral range starts too low for that, any base up to 45000."""
    lo, hi = 10000, min(45000, _ephemeral_low() - 10005)
    return (lo, hi) if hi - lo >= 1000 else (20000, 45000)


S3_PORT_RANGE = _s3_port_range()


def _is_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_s3_port(lo=S3_PORT_RANGE[0], hi=S3_PORT_RANGE[1], tries=200):
    """A base port whose 10 derived SeaweedFS ports are all free on 127.0.0.1."""
    rng = random.Random()
    for _ in range(tries):
        base = rng.randrange(lo, hi)
        ports = [base + i for i in range(5)] + [base + 10000 + i for i in range(5)]
        if all(_is_free(p) for p in ports):
            return base
    raise RuntimeError("no free port range for SeaweedFS found on 127.0.0.1 in %d..%d" % (lo, hi))


def port_from_env(name):
    """The port number the environment variable `name` gives, or None when it is unset."""
    value = os.environ.get(name)
    if not value:
        return None
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ValueError("%s=%r: expected a port number (1-65535)" % (name, value))
    return int(value)


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
        sys.exit("usage: ports.py s3|closed (got %r)" % what)
