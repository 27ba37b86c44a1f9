#!/usr/bin/env python3
"""Writes the libFuzzer dictionary of the config_keys and url targets (standard library only).

    python3 fuzz/make_dict.py OUT.dict

Tokens: every key name and sample value of the key table (src/config/keys.rs), the hostile
fragments the unit tests share (ODD_INPUTS, src/config/samples.rs), and the URL parts and units
the parsers look for. Read from the sources at each run (scripts/fuzz.sh), so it never goes
stale and is not kept in git.
"""
import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src" / "config"
STRING = r'"((?:[^"\\]|\\.)*)"'
MAX_ENTRY_BYTES = 64

# What the URL and value parsers compare against, beyond the key table's samples.
EXTRA = [
    "s3://", "file:///", "?", "&", "=", "%2F", "%40", "@", "[::1]", ":9000", "endpoint=",
    "region=", "force-path-style=", "forcePathStyle=", "skip-verify=", "skipVerify=",
    "part-size=", "partSize=", "concurrency=", ".s3.", ".amazonaws.com",
    ".digitaloceanspaces.com", ".backblazeb2.com", "s3.filebase.com", ".scw.cloud",
    ".r2.cloudflarestorage.com", "http://", "https://", "localhost", ".local", "KiB", "MiB",
    "GiB", "KB", "MB", "GB", "ms", "us", "\u00b5s", "ns", "h", "m", "s", "off", "on", "true",
    "false", "\n", "secret-access-key=", "access-key-id=", "url=", "type=file",
]


def unescape(s):
    # Rust string escapes used in these files: \\ \" \n \t \0 \u{...}
    s = re.sub(r"\\u\{([0-9a-fA-F]+)\}", lambda m: chr(int(m.group(1), 16)), s)
    return (s.replace("\\n", "\n").replace("\\t", "\t").replace("\\0", "\0")
            .replace('\\"', '"').replace("\\\\", "\\"))


def tokens():
    keys = (SRC / "keys.rs").read_text()
    out = set(re.findall(r'^\s+name: "([^"]+)"', keys, re.M))
    for block in re.findall(r"samples: &\[(.*?)\],", keys, re.S):
        out.update(unescape(s) for s in re.findall(STRING, block))
    samples = (SRC / "samples.rs").read_text()
    odd = re.search(r"static ODD_INPUTS: &\[&str\] = &\[(.*?)\];", samples, re.S)
    out.update(unescape(s) for s in re.findall(STRING, odd.group(1)))
    out.update(EXTRA)
    # libFuzzer refuses dictionary entries longer than 64 bytes.
    return sorted(t for t in out if 0 < len(t.encode()) <= MAX_ENTRY_BYTES)


def entry(token):
    b = token.encode()
    return '"' + "".join(
        chr(c) if 0x20 <= c < 0x7F and chr(c) not in '"\\' else f"\\x{c:02X}" for c in b
    ) + '"'


if __name__ == "__main__":
    pathlib.Path(sys.argv[1]).write_text("\n".join(entry(t) for t in tokens()) + "\n")
